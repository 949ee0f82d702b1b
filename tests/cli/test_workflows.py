"""The `hf-hope` workflows end to end: continual, evaluate and retrofit on a tiny model, quick runs on SmolLM2."""

import json
import math
import warnings

import pytest
import torch
from huggingface_hub import ModelCard
from transformers import AutoModelForCausalLM

import hf_hope
from hf_hope.cli import main

from ..helpers import QUICK_TINY
from .command_errors import fail

pytestmark = pytest.mark.usefixtures("one_thread")


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
    other_types = (("lowrank", "rank", 2, "low-rank change"), ("units", "units", 6, "hidden units, mixed with them"))
    for init, size, value, card in other_types:
        folder = tmp_path / init
        main(
            ["retrofit", "--model", str(tiny_dir), "--output_dir", str(folder), "--init", init, f"--{size}", str(value)]
        )
        model = AutoModelForCausalLM.from_pretrained(folder)
        assert [level[size] for level in model.config.cms_adapter["levels"]] == [None, value, value]
        torch.testing.assert_close(model(tokens).logits, base(tokens).logits, rtol=0, atol=0)
        assert card in ModelCard.load(folder / "README.md").text
    assert "units=1.5 is invalid" in fail(
        ["retrofit", "--model", str(tiny_dir), "--output_dir", "x", "--init", "units", "--units", "1.5"], capsys
    )

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
def test_replay_over_seeds_with_retention_on_smollm2(smollm2_dir, data_cache, tmp_path):
    # One strategy on the real model (each SmolLM2 run costs about two minutes here); ewc and cms+replay run on
    # the tiny model in tests/continual.
    out = tmp_path / "run"
    main(
        ["continual", "--quick", "--use_cpu", "--model", str(smollm2_dir), "--output_dir", str(out)]
        + ["--data_cache_dir", data_cache, "--strategies", "replay", "--seeds", "0", "1"]
    )
    results = json.loads((out / "results.json").read_text())
    [group] = results["groups"]
    assert group["group"] == "replay" and group["seeds"] == [0, 1] and group["std"]["final_average"] is not None
    assert 0 < group["mean"]["retention"] < 2
    for run in results["runs"].values():
        assert all(math.isfinite(value) for row in run["matrix"] for value in row)
        # replay counts what it replayed, from the second task on
        assert [timing.get("replay_tokens", 0) > 0 for timing in run["timings"]] == [False, True, True]
    assert (out / "plots" / "pareto.png").is_file()


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

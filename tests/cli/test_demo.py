"""`hf-hope demo`, the README's main job: its flags, and `--quick` end to end on the real SmolLM2 and domain stream."""

import json
import math
import warnings

import pytest
from huggingface_hub import ModelCard

from hf_hope.cli import build_parser
from hf_hope.cli.continual_demo import DemoSettings, demo_strategies, run_demo
from hf_hope.data import MissingSourceError


def test_cli_parses_demo_flags():
    args = build_parser().parse_args(["demo", "--quick", "--output_dir", "x"])
    assert (args.command, args.quick, args.output_dir) == ("demo", True, "x")


def test_both_strategies_get_the_same_budget():
    full, cms = demo_strategies(quick=False)
    assert (full.strategy, cms.strategy) == ("full", "cms")
    budget = ("steps_per_task", "batch_size", "block_size", "max_eval_blocks", "seed")
    assert all(getattr(full, name) == getattr(cms, name) for name in budget)
    assert cms.steps_per_task % cms.cms_periods[0] == 0  # the slow level never loses accumulated gradients


@pytest.mark.slow
def test_the_quick_demo_compares_full_fine_tuning_and_cms(smollm2_dir, tmp_path, capsys):
    models = tmp_path / "models"
    models.mkdir()
    (models / "SmolLM2-135M-Instruct").symlink_to(smollm2_dir)
    settings = DemoSettings(
        output_dir=str(tmp_path / "demo"),
        quick=True,
        model_cache_dir=str(models),
        data_cache_dir=str(tmp_path / "data"),
    )
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            results = run_demo(settings)
    except MissingSourceError as error:
        pytest.skip(str(error))
    printed, errors = capsys.readouterr()
    assert not [warning for warning in caught if "pin_memory" in str(warning.message)]
    assert "\x1b[" not in printed + errors and "\r" not in printed + errors  # a log: no progress bars
    evaluations = [line for line in printed.splitlines() if line.startswith(("full, ", "cms, "))]
    assert len(evaluations) == 2 * 4  # each strategy: before training and after each of the three domains

    assert results["tasks"] == ["code", "news", "literature"] and list(results["runs"]) == ["full", "cms"]
    for run in results["runs"].values():
        assert all(math.isfinite(value) for row in run["matrix"] for value in row)
        assert math.isfinite(run["summary"]["relative_forgetting"])
    assert json.loads((tmp_path / "demo" / "results.json").read_text()) == json.loads(json.dumps(results))
    card = ModelCard.load(tmp_path / "demo" / "cms" / "task_2" / "README.md")
    assert "| 2 | 16 | 1.0 |" in card.text and "| 3 | 1 | 1.0 |" in card.text
    assert not (tmp_path / "demo" / "cms" / "task_0").exists()  # only each strategy's last model is kept
    assert "relative forgetting" in printed
    assert run_demo(settings)["runs"] == results["runs"]  # a finished demo is read back, not trained again

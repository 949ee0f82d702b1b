"""Continual experiments: several strategies compared in one run folder, plots, model cards, resume and errors."""

import csv
import json
import struct

import pytest
from datasets import Dataset, DatasetDict
from huggingface_hub import ModelCard
from transformers.testing_utils import CaptureLogger

from hf_hope.continual import ContinualSettings, format_comparison, metric_direction, named_runs, run_experiment
from hf_hope.continual import experiment as experiment_module
from hf_hope.continual import plots as plots_module
from hf_hope.data import load_domains

from .test_continual_runner import CountTrainings, char_ids, factory, settings

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def domains(tmp_path_factory):
    return load_domains(excerpts=True, cache_dir=str(tmp_path_factory.mktemp("data")))


def png_size(path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk, after checking the signature."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def experiment(domains, run_dir, strategies, **kwargs):
    return run_experiment(
        factory,
        domains,
        strategies,
        run_dir,
        tokenizer=char_ids,
        base_model="tiny-llama",
        data_description="The packaged excerpts of the code, news and literature domains.",
        **kwargs,
    )


def test_two_strategies_end_to_end_resume_and_the_run_folder(domains, tmp_path, capsys):
    experiment(domains, tmp_path, [settings("full")])
    capsys.readouterr()
    counter = CountTrainings()
    results = experiment(domains, tmp_path, [settings("full"), settings("cms")], callbacks=[counter])
    assert counter.started == len(domains)  # only cms trained: the finished full run is read back
    lines = capsys.readouterr().out.splitlines()  # one per evaluation of the run that trained
    assert [line.split(":")[0] for line in lines] == ["cms, before training"] + [
        f"cms, after {task}" for task in domains
    ]

    names = list(domains)
    assert json.loads((tmp_path / "results.json").read_text()) == results
    assert results["tasks"] == names and list(results["runs"]) == ["full", "cms"]
    assert results["metric"] == "perplexity" and results["higher_is_better"] is False
    for name, run in results["runs"].items():
        saved = json.loads((tmp_path / name / "results.json").read_text())
        assert run["matrix"] == saved["matrix"] and run["summary"] == saved["summary"]
        assert run["settings"]["strategy"] == name and len(run["timings"]) == len(names)

    with open(tmp_path / "comparison.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [row["run"] for row in rows] == ["full", "cms"]
    for row in rows:
        summary = results["runs"][row["run"]]["summary"]
        for key in ("final_average", "relative_forgetting", "forgetting", "backward_transfer", "plasticity"):
            assert float(row[key]) == summary[key]
        assert [float(row[f"final_{task}"]) for task in names] == summary["final_per_task"]
    table = (tmp_path / "comparison.md").read_text()
    assert table.strip() == format_comparison(results)
    assert "perplexity (lower is better)" in table and table.count("\n| ") == 3  # header + 2 runs

    assert sorted(results["plots"]) == ["plots/R_cms.png", "plots/R_full.png", "plots/curves.png", "plots/pareto.png"]
    assert [group["group"] for group in results["groups"]] == ["full", "cms"]
    assert results["groups"][0]["mean"]["plasticity"] == results["runs"]["full"]["summary"]["plasticity"]
    assert results["groups"][0]["std"]["plasticity"] is None and results["format"] == 2
    assert set(results["chosen"]["strategies"]) == {"full", "cms"} and results["chosen"]["reference"] == "full"
    for plot in results["plots"]:
        width, height = png_size(tmp_path / plot)
        assert 200 <= width <= 4000 and 200 <= height <= 4000

    for name in ("full", "cms"):
        matrix = results["runs"][name]["matrix"]
        for index in range(len(names)):
            card = ModelCard.load(tmp_path / name / f"task_{index}" / "README.md")
            assert card.data.base_model == "tiny-llama" and card.data.library_name == "transformers"
            assert {"hf_hope", "continual-learning", name} <= set(card.data.tags)
            assert f"| {names[index]} | " + " | ".join(f"{value:.4g}" for value in matrix[index]) in card.text
            assert " -> ".join(names[: index + 1]) in card.text
            assert f"](../../plots/R_{name}.png)" in card.text and "](../../plots/curves.png)" in card.text
            assert "](../../plots/pareto.png)" in card.text
            if name == "cms":  # levels: the frozen pretrained FFN, then the new levels of periods 2 and 1
                assert "| 1 | frozen | 1.0 |\n| 2 | 2 | 1.0 |\n| 3 | 1 | 1.0 |" in card.text
                assert "import hf_hope" in card.text
            else:
                assert "None: every trained parameter updates at every optimizer step" in card.text

    again = CountTrainings()
    assert experiment(domains, tmp_path, [settings("full"), settings("cms")], callbacks=[again]) == results
    assert again.started == 0


def test_seeds_of_a_group_run_in_nested_folders_and_are_aggregated(domains, tmp_path, capsys):
    runs = {f"full/seed_{seed}": settings("full", seed=seed) for seed in (0, 1)}
    results = experiment(domains, tmp_path, runs)
    assert [line.split(":")[0] for line in capsys.readouterr().out.splitlines()][:2] == [
        "full/seed_0, before training",
        "full/seed_0, after code",
    ]
    assert list(results["runs"]) == ["full/seed_0", "full/seed_1"]
    for seed in (0, 1):
        saved = json.loads((tmp_path / "full" / f"seed_{seed}" / "results.json").read_text())
        assert (
            saved["settings"]["seed"] == seed and results["runs"][f"full/seed_{seed}"]["folder"] == f"full/seed_{seed}"
        )
        card = ModelCard.load(tmp_path / "full" / f"seed_{seed}" / "task_0" / "README.md")
        assert f"](../../../plots/R_full_seed_{seed}.png)" in card.text
    (group,) = results["groups"]
    assert group["group"] == "full" and group["seeds"] == [0, 1]
    plasticity = [results["runs"][name]["summary"]["plasticity"] for name in runs]
    assert group["mean"]["plasticity"] == pytest.approx(sum(plasticity) / 2)
    assert group["std"]["plasticity"] == pytest.approx(abs(plasticity[0] - plasticity[1]) / 2**0.5)
    table = (tmp_path / "comparison.md").read_text()
    assert "| full | " in table and " ± " in table and "| full/seed_1 | " in table
    assert "plots/pareto.png" in results["plots"]


def test_a_lora_run_gets_a_peft_loading_snippet(domains, tmp_path):
    results = experiment(domains, tmp_path, {"lora-r4": settings("lora")})
    assert list(results["runs"]) == ["lora-r4"]
    card = ModelCard.load(tmp_path / "lora-r4" / "task_2" / "README.md")
    assert card.data.library_name == "peft" and "lora" in card.data.tags
    assert "PeftModel.from_pretrained(base" in card.text


def test_a_run_folder_of_other_settings_stops_the_experiment_before_any_training(domains, tmp_path):
    experiment(domains, tmp_path / "old", [settings("cms")])
    (tmp_path / "old" / "cms").rename(tmp_path / "cms")
    counter = CountTrainings()
    with pytest.raises(ValueError, match="other settings.*learning_rate"):
        experiment(domains, tmp_path, [settings("full"), settings("cms", learning_rate=1e-3)], callbacks=[counter])
    assert counter.started == 0 and not (tmp_path / "full").exists()


def test_a_task_too_small_for_one_validation_block_stops_the_experiment_before_anything_is_written(domains, tmp_path):
    short = DatasetDict(train=domains["news"]["train"], validation=Dataset.from_dict({"text": ["too short"]}))
    tasks = [("code", domains["code"]), ("short", short)]
    with pytest.raises(ValueError, match="'short': the 'validation' split has 1 examples, fewer than one block of 32"):
        experiment(tasks, tmp_path / "experiment", [settings("full"), settings("cms")])
    assert not (tmp_path / "experiment").exists()


def test_finished_runs_are_not_checked_again(domains, tmp_path, monkeypatch):
    experiment(domains, tmp_path, [settings("full")])
    checked = []
    monkeypatch.setattr(experiment_module, "check_tasks", lambda *args: checked.append(args))
    experiment(domains, tmp_path, [settings("full")])
    assert checked == []


def test_run_names():
    assert list(named_runs([settings("full"), settings("cms")])) == ["full", "cms"]
    twice = {"cms": settings("cms"), "cms-fast": settings("cms", learning_rate=1e-1)}
    assert named_runs(twice) == twice
    with pytest.raises(ValueError, match="'cms' appears twice.*mapping"):
        named_runs([settings("cms"), settings("cms")])
    with pytest.raises(ValueError, match="not usable as a folder name"):
        named_runs({"../up": settings("full")})
    with pytest.raises(ValueError, match="not usable as a folder name"):
        named_runs({"plots": settings("full")})
    with pytest.raises(TypeError, match="expected ContinualSettings"):
        named_runs({"full": {"strategy": "full"}})
    seeded = {"full-lr0.1/seed_0": settings("full"), "full-lr0.1/seed_3": settings("full", seed=3)}
    assert named_runs(seeded) == seeded
    with pytest.raises(ValueError, match="not usable as a folder name"):
        named_runs({"full/seed_x": settings("full")})
    with pytest.raises(ValueError, match="not usable as a folder name"):
        named_runs({"plots/seed_0": settings("full")})
    with pytest.raises(ValueError, match="'full/seed_1' has settings of seed 0; its name says seed 1"):
        named_runs({"full/seed_1": settings("full")})
    with pytest.raises(ValueError, match="'full' is also the group of runs full/seed_<n>"):
        named_runs({"full": settings("full"), "full/seed_1": settings("full", seed=1)})
    with pytest.raises(ValueError, match="would share the plot R_full_seed_0.png"):
        named_runs({"full/seed_0": settings("full"), "full_seed_0": settings("full")})
    with pytest.raises(ValueError, match="full/seed_0 and full/seed_1 differ in more than their seed"):
        named_runs({"full/seed_0": settings("full"), "full/seed_1": settings("full", seed=1, learning_rate=1.0)})


def test_the_metric_direction_comes_from_the_results():
    assert metric_direction({"metric": "perplexity"}) == ("perplexity", False)
    assert metric_direction({"metric": "accuracy"}) == ("accuracy", True)
    assert metric_direction({"metric": "bleu", "higher_is_better": True}) == ("bleu", True)
    with pytest.raises(ValueError, match="metric 'bleu', whose direction is unknown"):
        metric_direction({"metric": "bleu"})


def test_an_accuracy_comparison_reads_higher_is_better():
    summary = {
        "final_average": 0.5,
        "relative_forgetting": 0.25,
        "forgetting": 0.2,
        "backward_transfer": -0.2,
        "plasticity": 0.7,
        "final_per_task": [0.4, 0.6],
    }
    run = {"strategy": "cms", "summary": summary, "timings": [{"train_seconds": 1.0}, {"train_seconds": 2.0}]}
    comparison = {"metric": "accuracy", "higher_is_better": True, "tasks": ["a", "b"], "runs": {"cms": run}}
    from hf_hope.continual.experiment import comparison_rows

    comparison["comparison"] = comparison_rows(comparison)
    assert comparison["comparison"][0]["forward_transfer"] is None
    table = format_comparison(comparison)
    assert table.startswith("accuracy (higher is better)")
    assert "| cms | 0.5 | 25.0% | 0.2 | -0.2 | - | 0.7 | 0.4 | 0.6 | 3.0 |" in table


def test_plots_without_matplotlib_warn_once_and_can_be_required(tmp_path, monkeypatch):
    runs = {"full": {"matrix": [[2.0, 3.0], [2.5, 2.2]], "initial": [4.0, 5.0]}}
    monkeypatch.setattr(plots_module, "plots_available", lambda: False)
    with CaptureLogger(plots_module.logger) as captured:
        assert plots_module.write_plots(runs, ["a", "b"], "perplexity", False, tmp_path) == []
    assert captured.out.count("matplotlib is not installed") == 1
    assert 'pip install "hf-hope[plots]"' in captured.out
    with pytest.raises(ImportError, match=r'pip install "hf-hope\[plots\]"'):
        plots_module.write_plots(runs, ["a", "b"], "perplexity", False, tmp_path, require=True)
    assert not list(tmp_path.iterdir())


def test_plots_of_an_accuracy_matrix(tmp_path):
    pytest.importorskip("matplotlib")
    runs = {"a": {"matrix": [[0.9, 0.1], [0.5, 0.8]]}, "b": {"matrix": [[0.9, 0.0], [0.85, 0.8]], "initial": None}}
    paths = plots_module.write_plots(runs, ["t0", "t1"], "accuracy", True, tmp_path)
    assert [path.name for path in paths] == ["R_a.png", "R_b.png", "curves.png"]
    assert all(png_size(path)[0] > 100 for path in paths)
    assert not list(tmp_path.glob("*.tmp"))


def test_curves_have_a_panel_per_task_and_one_legend_of_readable_run_names():
    pytest.importorskip("matplotlib")
    runs = {
        "full": {"strategy": "full", "matrix": [[12.0, 60.0], [15.0, 40.0]], "initial": [17.0, 64.0]},
        "cms-fast": {"strategy": "cms", "matrix": [[12.5, 61.0], [13.0, 41.0]], "initial": [17.0, 64.0]},
        "joint": {
            "strategy": "joint",
            "matrix": [[13.0, 42.0]] * 2,
            "initial": [17.0, 64.0],
            "joint_row_repeated": True,
        },
    }
    figure = plots_module.curves_figure(runs, ["code", "news"], "perplexity")
    panels = [axes for axes in figure.axes if axes.get_visible()]
    assert [axes.get_title() for axes in panels] == ["code", "news"]
    assert all(axes.get_legend() is None for axes in panels) and len(figure.legends) == 1
    names = [text.get_text() for text in figure.legends[0].get_texts()]
    assert names == ["Full fine-tuning", "CMS adapter (cms-fast)", "Joint (multi-task)"]
    code = panels[0]
    assert code.get_ylim()[1] < 20  # code's own range, not shared with news' perplexities around 60
    assert [line.get_linestyle() for line in code.get_lines()[:3]] == ["-", "-", "--"]
    heatmap = plots_module.matrix_figure(
        runs["cms-fast"]["matrix"], ["code", "news"], "perplexity", False, "CMS adapter"
    )
    assert heatmap.axes[0].get_title() == "R: CMS adapter"
    assert plots_module.run_title("lora", {"strategy": "lora"}) == "LoRA"


def test_unknown_strategy_in_settings_is_a_clear_error():
    with pytest.raises(ValueError, match="Unknown strategy 'no-such-strategy'"):
        ContinualSettings(strategy="no-such-strategy")

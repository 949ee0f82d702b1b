"""`run_experiment`: several continual fine-tuning runs on one stream, compared side by side in one run folder.

    run_dir/<run>/              each run's own folder (`run_continual`): progress, results.json, matrix.csv, task_<i>/
    run_dir/<run>/task_<i>/README.md   a model card next to every saved model (and its tokenizer, when it has one),
                                       linking the run's plots
    run_dir/results.json        every run's settings, matrix, initial scores, summary and timings, and the comparison
    run_dir/comparison.csv      one row per run: final average, forgetting, transfer, plasticity, final per task
    run_dir/comparison.md       the same as a markdown table (what the CLI prints)
    run_dir/plots/              R_<run>.png (R as a heatmap) and curves.png (each task's score over the stream)

A run is named by its strategy, or by the key of the mapping it is given in (so one strategy can run twice, e.g.
with two learning rates). Each run resumes on its own: a finished run is read back, not trained again; every run's
folder is checked against its settings before any run trains. Each evaluation prints one line (run, what the model
has learnt, each task's score), and each training run shows a progress bar on a terminal. The metric
(its name and direction) is read from the runs' results, so perplexity and accuracy streams are both compared the
right way round.
"""

import csv
import io
import os
import re
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase, TrainerCallback

from ..conversion.atomic_write import write_text_atomically
from ..conversion.folder_lock import folder_lock
from ..model_card import write_model_card
from .blocks import Tokenizer
from .classification import ClassificationSettings
from .plots import CURVES_NAME, PLOTS_DIR, matrix_plot_name, run_title, write_plots
from .progress import evaluation_line
from .run_folder import RESULTS_NAME, saved_progress, task_dir, write_json
from .runner import Tasks, run_continual, run_identity, task_pairs
from .settings import ContinualSettings
from .strategies import ModelFactory, get_strategy

FORMAT_VERSION = 1
COMPARISON_CSV = "comparison.csv"
COMPARISON_MARKDOWN = "comparison.md"
# Whether a higher score is better, for the metrics the runner reports (a result may also say so itself).
METRIC_HIGHER_IS_BETTER = {"perplexity": False, "loss": False, "accuracy": True}
SUMMARY_COLUMNS = (
    ("final_average", "final average"),
    ("relative_forgetting", "relative forgetting"),
    ("forgetting", "forgetting"),
    ("backward_transfer", "backward transfer"),
    ("forward_transfer", "forward transfer"),
    ("plasticity", "plasticity"),
)
_RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.=-]*")

Strategies = Sequence[ContinualSettings] | Mapping[str, ContinualSettings]


def run_experiment(
    model_factory: ModelFactory,
    tasks: Tasks,
    strategies: Strategies,
    run_dir: str | Path,
    *,
    tokenizer: Tokenizer,
    base_model: str,
    data_description: str,
    callbacks: Sequence[TrainerCallback] = (),
    classification: ClassificationSettings | None = None,
    require_plots: bool = False,
) -> dict[str, Any]:
    """Run (or resume) `run_continual` for each of `strategies` into `run_dir/<run>`, then compare the runs.

    Args:
        model_factory, tasks, tokenizer, callbacks, classification: as for `run_continual`, shared by every run.
        strategies: the runs' settings: a sequence (each run named by its strategy, which must then be distinct)
            or a mapping `{run name: settings}`.
        run_dir: the experiment's folder (see the module docstring).
        base_model: the base model's name or path, for the results and the model cards.
        data_description: what the tasks are, for the model cards.
        require_plots: raise ImportError instead of warning when matplotlib is missing.

    Returns:
        What `run_dir/results.json` holds: `runs` (each run's results), `comparison` (one row per run, see
        `comparison_rows`), `metric`, `higher_is_better`, `tasks` and `plots` (paths relative to `run_dir`).
    """
    runs = named_runs(strategies)
    run_dir = Path(run_dir)
    names = [name for name, _ in task_pairs(tasks)]
    for name, settings in runs.items():  # a folder of other settings stops the experiment before any training
        saved_progress(run_dir / name, run_identity(settings, classification), names)
    run_dir.mkdir(parents=True, exist_ok=True)
    with folder_lock(run_dir):  # a second process on this folder stops here (FolderInUseError)
        return _run_locked(
            model_factory,
            runs,
            tasks,
            run_dir,
            tokenizer=tokenizer,
            base_model=base_model,
            data_description=data_description,
            callbacks=callbacks,
            classification=classification,
            require_plots=require_plots,
        )


def _run_locked(
    model_factory: ModelFactory,
    runs: dict[str, ContinualSettings],
    tasks: Tasks,
    run_dir: Path,
    *,
    tokenizer: Tokenizer,
    base_model: str,
    data_description: str,
    callbacks: Sequence[TrainerCallback],
    classification: ClassificationSettings | None,
    require_plots: bool,
) -> dict[str, Any]:
    """`run_experiment` once it holds `run_dir`'s lock."""
    results: dict[str, dict[str, Any]] = {}
    for name, settings in runs.items():
        results[name] = run_continual(
            model_factory,
            tasks,
            settings,
            run_dir / name,
            tokenizer=tokenizer,
            callbacks=callbacks,
            classification=classification,
            on_evaluation=partial(_print_evaluation, name),
        )
    metric, higher_is_better = shared_metric(results)
    task_names = next(iter(results.values()))["tasks"]
    plots = write_plots(results, task_names, metric, higher_is_better, run_dir / PLOTS_DIR, require=require_plots)
    for name, run in results.items():
        figures = _figures(name, run, plots, metric)
        _finish_task_folders(run_dir / name, run, tokenizer, base_model, data_description, metric, name, figures)

    experiment = {
        "format": FORMAT_VERSION,
        "base_model": base_model,
        "data_description": data_description,
        "tasks": task_names,
        "metric": metric,
        "higher_is_better": higher_is_better,
        "runs": {name: _run_summary(run, run_dir / name, run_dir) for name, run in results.items()},
    }
    experiment["comparison"] = comparison_rows(experiment)
    experiment["plots"] = [str(path.relative_to(run_dir)) for path in plots]
    write_text_atomically(run_dir / COMPARISON_CSV, comparison_csv(experiment))
    write_text_atomically(run_dir / COMPARISON_MARKDOWN, format_comparison(experiment) + "\n")
    write_json(run_dir / RESULTS_NAME, experiment)
    return experiment


def named_runs(strategies: Strategies) -> dict[str, ContinualSettings]:
    """`{run name: settings}`: a mapping as given, a sequence named by strategy; names must be folder-safe."""
    if isinstance(strategies, Mapping):
        runs = dict(strategies)
    else:
        runs = {}
        for settings in strategies:
            if settings.strategy in runs:
                raise ValueError(
                    f"Strategy {settings.strategy!r} appears twice; give the runs as a mapping {{name: settings}} "
                    "to name each one (e.g. {'cms': ..., 'cms-lr1e-3': ...})."
                )
            runs[settings.strategy] = settings
    if not runs:
        raise ValueError("Give at least one strategy to run.")
    for name, settings in runs.items():
        reserved = (PLOTS_DIR, RESULTS_NAME, COMPARISON_CSV, COMPARISON_MARKDOWN)
        if not isinstance(name, str) or not _RUN_NAME.fullmatch(name) or name in reserved:
            raise ValueError(
                f"Run name {name!r} is not usable as a folder name: use letters, digits and _ . = - "
                f"(and none of {', '.join(reserved)})."
            )
        if not isinstance(settings, ContinualSettings):
            raise TypeError(f"Run {name!r}: expected ContinualSettings, got {type(settings).__name__}.")
    return runs


def metric_direction(results: Mapping[str, Any]) -> tuple[str, bool]:
    """The metric name of one run's results and whether higher is better (from the results, else the name)."""
    metric = results.get("metric")
    if "higher_is_better" in results:
        return metric, bool(results["higher_is_better"])
    if metric not in METRIC_HIGHER_IS_BETTER:
        raise ValueError(
            f"The results report metric {metric!r}, whose direction is unknown: known metrics are "
            f"{sorted(METRIC_HIGHER_IS_BETTER)}, or the results must say `higher_is_better`."
        )
    return metric, METRIC_HIGHER_IS_BETTER[metric]


def shared_metric(results: Mapping[str, Mapping[str, Any]]) -> tuple[str, bool]:
    """The one metric every run reports; runs measured differently cannot be compared."""
    directions = {name: metric_direction(run) for name, run in results.items()}
    if len(set(directions.values())) != 1:
        raise ValueError(f"The runs report different metrics ({directions}); compare runs of one stream only.")
    return next(iter(directions.values()))


def comparison_rows(experiment: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per run: strategy, the summary's means (None where not measured), final score per task, seconds."""
    rows = []
    for name, run in experiment["runs"].items():
        summary = run["summary"]
        row = {"run": name, "strategy": run["strategy"]}
        row.update({key: summary.get(key) for key, _ in SUMMARY_COLUMNS})
        finals = zip(experiment["tasks"], summary["final_per_task"], strict=True)
        row.update({f"final_{task}": value for task, value in finals})
        row["train_seconds"] = sum(timing["train_seconds"] for timing in run["timings"])
        rows.append(row)
    return rows


def comparison_csv(experiment: Mapping[str, Any]) -> str:
    rows = experiment["comparison"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows({key: "" if value is None else value for key, value in row.items()} for row in rows)
    return buffer.getvalue()


def format_comparison(experiment: Mapping[str, Any]) -> str:
    """The comparison as a markdown table (readable as plain text), with a line saying how to read it."""
    metric, better = experiment["metric"], "higher" if experiment["higher_is_better"] else "lower"
    tasks = experiment["tasks"]
    header = ["run", *(label for _, label in SUMMARY_COLUMNS), *(f"final {task}" for task in tasks), "train s"]
    lines = [
        f"{metric} ({better} is better) on each task's validation set after the whole stream "
        f"({' -> '.join(tasks)}). Forgetting: positive = worse on earlier tasks at the end; "
        "transfer: positive = better.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for row in experiment["comparison"]:
        cells = [row["run"]]
        for key, _ in SUMMARY_COLUMNS:
            value = row[key]
            cells.append("-" if value is None else f"{value:.1%}" if key == "relative_forgetting" else f"{value:.4g}")
        cells += [f"{row[f'final_{task}']:.4g}" for task in tasks]
        cells.append(f"{row['train_seconds']:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def model_results_table(run: Mapping[str, Any], last_row: int, metric: str) -> str:
    """Markdown: the base model's score on each task, then the score after each training run up to `last_row`.

    Each row is labelled with what its training run trained, as the run's timings recorded it.
    """
    tasks = run["tasks"]
    lines = [f"| {metric} after training | " + " | ".join(tasks) + " | mean |", "|" + "---|" * (len(tasks) + 2)]
    rows = [("(base model)", run["initial"])] if run.get("initial") else []
    rows += [(run["timings"][i]["task"], run["matrix"][i]) for i in range(last_row + 1)]
    for label, scores in rows:
        lines.append(
            f"| {label} | " + " | ".join(f"{value:.4g}" for value in scores) + f" | {sum(scores) / len(scores):.4g} |"
        )
    return "\n".join(lines)


def _finish_task_folders(
    folder: Path,
    run: Mapping[str, Any],
    tokenizer: Tokenizer,
    base_model: str,
    data_description: str,
    metric: str,
    name: str,
    figures: Sequence[tuple[str, Path]],
) -> None:
    """Save the tokenizer and write a model card, linking `figures` (caption, path), into every saved task model."""
    settings, tasks = run["settings"], run["tasks"]
    strategy = get_strategy(settings["strategy"])
    for index in range(len(run["timings"])):
        model_dir = task_dir(folder, index)
        if not model_dir.is_dir():  # removed by keep_task_models=False
            continue
        if isinstance(tokenizer, PreTrainedTokenizerBase):
            tokenizer.save_pretrained(str(model_dir))
        trained = strategy.trained_on(tasks, index)
        write_model_card(
            model_dir,
            base_model=base_model,
            model_name=f"{Path(base_model).name} continual {name}, after {trained.split(' -> ')[-1]}",
            data_description=f"{data_description}\n\n{strategy.card_section(settings, trained)}",
            results_table=model_results_table(run, index, metric),
            figures=[(caption, Path(os.path.relpath(path, model_dir)).as_posix()) for caption, path in figures],
            tags=["continual-learning", strategy.name],
        )


def _print_evaluation(run: str, label: str, metric: str, scores: Mapping[str, float]) -> None:
    print(evaluation_line(run, label, metric, scores), flush=True)  # flushed: a log shows it as it happens


def _figures(name: str, run: Mapping[str, Any], plots: Sequence[Path], metric: str) -> list[tuple[str, Path]]:
    """The plots a run's model cards show, as (caption, path), of those written."""
    captions = {
        matrix_plot_name(name): f"R of {run_title(name, run)}: {metric} on each task (columns) after each training "
        "run (rows)",
        CURVES_NAME: f"Each task's {metric} over the stream, every run of the experiment",
    }
    return [(captions[path.name], path) for path in plots if path.name in captions]


def _run_summary(run: Mapping[str, Any], folder: Path, run_dir: Path) -> dict[str, Any]:
    keys = ("strategy", "settings", "metric", "matrix", "initial", "summary", "timings", "joint_row_repeated")
    return {**{key: run.get(key) for key in keys}, "folder": str(folder.relative_to(run_dir))}

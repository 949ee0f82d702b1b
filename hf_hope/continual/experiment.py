"""`run_experiment`: several continual fine-tuning runs on one stream, compared side by side in one run folder.

    run_dir/<run>/              each run's own folder (`run_continual`): progress, results.json, matrix.csv, task_<i>/
                                (a run named <group>/seed_<n> is in run_dir/<group>/seed_<n>/)
    run_dir/<run>/task_<i>/README.md   a model card next to every saved model (and its tokenizer, when it has one),
                                       linking the run's plots
    run_dir/results.json        every run's settings, matrix, initial scores, summary and timings, the comparison
                                (one row per run), the groups (mean and std over seeds) and the chosen learning rate
                                per strategy (see `hf_hope.continual.comparison`)
    run_dir/comparison.csv      one row per run: final average, forgetting, transfer, plasticity, final per task;
                                with seeds, then one row per group of <figure>_mean and <figure>_std
    run_dir/comparison.md       the same as markdown tables (what the CLI prints)
    run_dir/plots/              R_<run>.png (R as a heatmap), curves.png (each task's score over the stream) and
                                pareto.png (plasticity against forgetting, one point per group)

A run is named by its strategy, or by the key of the mapping it is given in (so one strategy can run twice, e.g.
with two learning rates); `<group>/seed_<n>` names one seed of a group, whose runs must differ by their seed only.
Each run resumes on its own: a finished run is read back, not trained again; every run's
folder is checked against its settings before any run trains. Each evaluation prints one line (run, what the model
has learnt, each task's score), and each training run shows a progress bar on a terminal. The metric
(its name and direction) is read from the runs' results, so perplexity and accuracy streams are both compared the
right way round.
"""

import os
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict
from transformers import PreTrainedTokenizerBase, TrainerCallback

from ..conversion.atomic_write import write_text_atomically
from ..conversion.folder_lock import folder_lock, refuse_if_in_use
from ..model_card import write_model_card
from .blocks import Tokenizer
from .classification import ClassificationSettings
from .comparison import (
    choose_learning_rates,
    comparison_csv,
    comparison_rows,
    format_comparison,
    group_rows,
    split_run_name,
)
from .pareto import PARETO_NAME, write_pareto_plot
from .plots import CURVES_NAME, PLOTS_DIR, matrix_plot_name, run_title, write_plots
from .progress import evaluation_line
from .retention import retention_ratio
from .run_folder import RESULTS_NAME, refuse_several_processes, task_dir, write_json
from .runner import Tasks, check_tasks, is_finished, retention_set, run_continual, run_identity, task_pairs
from .settings import ContinualSettings
from .strategies import ModelFactory, get_strategy

FORMAT_VERSION = 2  # 2: groups (mean and std over seeds) and chosen
COMPARISON_CSV = "comparison.csv"
COMPARISON_MARKDOWN = "comparison.md"
# Whether a higher score is better, for the metrics the runner reports (a result may also say so itself).
METRIC_HIGHER_IS_BETTER = {"perplexity": False, "loss": False, "accuracy": True}
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
    retention: Dataset | DatasetDict | None = None,
) -> dict[str, Any]:
    """Run (or resume) `run_continual` for each of `strategies` into `run_dir/<run>`, then compare the runs.

    Args:
        model_factory, tasks, tokenizer, callbacks, classification, retention: as for `run_continual`, shared by
            every run.
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
    task_list = task_pairs(tasks)
    refuse_several_processes()
    refuse_if_in_use(run_dir)
    checked = set()
    for name, settings in runs.items():  # before anything is written: a folder of other settings, a too small task
        identity = run_identity(settings, classification, retention_set(retention, tokenizer, settings))
        shape = (settings.block_size, settings.batch_size, settings.max_eval_blocks, settings.eval_batch_size)
        if not is_finished(run_dir / name, identity, task_list, settings) and shape not in checked:
            check_tasks(task_list, tokenizer, settings, classification)
            checked.add(shape)
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
            retention=retention,
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
    retention: Dataset | DatasetDict | None,
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
            retention=retention,
        )
    metric, higher_is_better = shared_metric(results)
    task_names = next(iter(results.values()))["tasks"]
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
    experiment["groups"] = group_rows(experiment["comparison"])
    experiment["chosen"] = choose_learning_rates(experiment["groups"], higher_is_better)
    plots = write_plots(results, task_names, metric, higher_is_better, run_dir / PLOTS_DIR, require=require_plots)
    if plots:  # matplotlib is there (write_plots has warned when it is not)
        plots.append(write_pareto_plot(experiment["groups"], metric, higher_is_better, run_dir / PLOTS_DIR))
    for name, run in results.items():
        figures = _figures(name, run, plots, metric)
        _finish_task_folders(run_dir / name, run, tokenizer, base_model, data_description, metric, name, figures)
    experiment["plots"] = [str(path.relative_to(run_dir)) for path in plots]
    write_text_atomically(run_dir / COMPARISON_CSV, comparison_csv(experiment))
    write_text_atomically(run_dir / COMPARISON_MARKDOWN, format_comparison(experiment) + "\n")
    write_json(run_dir / RESULTS_NAME, experiment)
    return experiment


def named_runs(strategies: Strategies) -> dict[str, ContinualSettings]:
    """`{run name: settings}`: a mapping as given, a sequence named by strategy; names must be folder-safe.

    A name `<group>/seed_<n>` is one seed of a group: its settings must have seed n, and the runs of a group must
    share every other setting (and no run may be named by the group alone).
    """
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
    reserved = (PLOTS_DIR, RESULTS_NAME, COMPARISON_CSV, COMPARISON_MARKDOWN)
    groups: dict[str, list[tuple[int | None, ContinualSettings]]] = {}
    for name, settings in runs.items():
        group, seed = split_run_name(name)
        if group in reserved:
            raise ValueError(f"Run name {name!r} is not usable as a folder name: none of {', '.join(reserved)}.")
        if not isinstance(settings, ContinualSettings):
            raise TypeError(f"Run {name!r}: expected ContinualSettings, got {type(settings).__name__}.")
        if seed is not None and settings.seed != seed:
            raise ValueError(f"Run {name!r} has settings of seed {settings.seed}; its name says seed {seed}.")
        groups.setdefault(group, []).append((seed, settings))
    for group, members in groups.items():
        _check_group(group, members)
    plot_names: dict[str, str] = {}
    for name in runs:  # "a/seed_0" and "a_seed_0" would share one R plot
        other = plot_names.setdefault(matrix_plot_name(name), name)
        if other != name:
            raise ValueError(f"Runs {other!r} and {name!r} would share the plot {matrix_plot_name(name)}: rename one.")
    return runs


def _check_group(group: str, members: Sequence[tuple[int | None, ContinualSettings]]) -> None:
    """A group is one run named `group`, or runs `group/seed_<n>` whose settings differ by their seed only."""
    seeds = [seed for seed, _ in members]
    if len(members) > 1 and None in seeds:
        raise ValueError(f"Run {group!r} is also the group of runs {group}/seed_<n>: name it {group}/seed_<n> too.")
    first = {**members[0][1].to_dict(), "seed": None}
    for seed, settings in members[1:]:
        if {**settings.to_dict(), "seed": None} != first:
            raise ValueError(
                f"Runs {group}/seed_{members[0][0]} and {group}/seed_{seed} differ in more than their seed; "
                "the seeds of a group must share every other setting."
            )


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
    if run.get("retention"):  # scores[0] is the base model's, scores[i + 1] the one after training run i
        retention_metric, higher_is_better = metric_direction(run["retention"])
        base, after = run["retention"]["scores"][0], run["retention"]["scores"][last_row + 1]
        lines += [
            "",
            f"General text never trained on (the retention set): {retention_metric} {base:.4g} before training, "
            f"{after:.4g} after {run['timings'][last_row]['task']} "
            f"(retention {retention_ratio(base, after, higher_is_better):.3f}).",
        ]
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
        PARETO_NAME: "Plasticity against forgetting, every group of the experiment (mean and std over seeds)",
    }
    return [(captions[path.name], path) for path in plots if path.name in captions]


def _run_summary(run: Mapping[str, Any], folder: Path, run_dir: Path) -> dict[str, Any]:
    keys = ("strategy", "settings", "metric", "matrix", "initial", "summary", "timings", "joint_row_repeated")
    keys += ("retention",) if "retention" in run else ()
    return {**{key: run.get(key) for key in keys}, "folder": str(folder.relative_to(run_dir))}

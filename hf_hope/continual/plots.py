"""PNG plots of a continual experiment: R as an annotated heatmap per run, and each task's score over the stream.

`curves.png` has one panel per task, each with its own y range (so a task whose scores are low is not squashed
against the axis of the others), one line per run, named by its strategy's readable title, in one legend for the
figure; a dotted line marks where the task was learnt, so forgetting is the rise after it.

matplotlib is an optional extra (`pip install "hf-hope[plots]"`). Figures are drawn with `matplotlib.figure.Figure`
(Agg, no display needed) rather than pyplot, so the backend and state of the calling program are left alone.
Without it `write_plots` skips the plots with one warning, unless they are required. `pareto.png` (plasticity
against forgetting per group) is drawn by `pareto.py`.
"""

import importlib.util
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from transformers.utils import logging

from ..conversion.atomic_write import atomic_file
from .strategies import STRATEGY_REGISTRY

logger = logging.get_logger(__name__)

PLOTS_INSTALL = 'pip install "hf-hope[plots]"'
PLOTS_DIR = "plots"
CURVES_NAME = "curves.png"
CURVE_PANELS_PER_ROW = 4


def plots_available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def write_plots(
    runs: Mapping[str, Mapping[str, Any]],
    tasks: Sequence[str],
    metric: str,
    higher_is_better: bool,
    output_dir: str | Path,
    *,
    require: bool = False,
) -> list[Path]:
    """Write `R_<run>.png` per run and `curves.png` into `output_dir`; returns the paths written.

    `runs` maps a run's name to its results (`matrix`, and if present `initial`, `strategy` and
    `joint_row_repeated`). Without matplotlib this warns once and returns `[]`, or raises ImportError when `require`
    is set.
    """
    if not plots_available():
        message = f"matplotlib is not installed, so no plots were drawn; install it with `{PLOTS_INSTALL}`."
        if require:
            raise ImportError(message)
        logger.warning(message)
        return []
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, results in runs.items():
        figure = matrix_figure(results["matrix"], tasks, metric, higher_is_better, run_title(name, results))
        paths.append(save_figure(figure, output_dir / matrix_plot_name(name)))
    paths.append(save_figure(curves_figure(runs, tasks, metric), output_dir / CURVES_NAME))
    return paths


def matrix_plot_name(run_name: str) -> str:
    return "R_" + re.sub(r"[^A-Za-z0-9_.-]", "_", run_name) + ".png"


def run_title(name: str, results: Mapping[str, Any]) -> str:
    """A run as plots name it: its strategy's title ("CMS adapter"), with the run's name if that says more."""
    strategy = results.get("strategy", name)
    title = getattr(STRATEGY_REGISTRY.get(strategy), "title", None) or strategy
    return title if name == strategy else f"{title} ({name})"


def matrix_figure(
    matrix: Sequence[Sequence[float]], tasks: Sequence[str], metric: str, higher_is_better: bool, title: str
) -> Any:
    """R as a heatmap, one annotated cell per (trained task, evaluated task); better scores are brighter."""
    from matplotlib import colors
    from matplotlib.figure import Figure

    values = [[float(value) for value in row] for row in matrix]
    flat = [value for row in values for value in row]
    log_scale = min(flat) > 0 and max(flat) / min(flat) > 10
    norm = colors.LogNorm(min(flat), max(flat)) if log_scale else None
    size = 1.2 + 0.9 * len(tasks)
    figure = Figure(figsize=(size + 1.5, size), layout="constrained")
    axes = figure.subplots()
    image = axes.imshow(values, cmap="viridis" if higher_is_better else "viridis_r", norm=norm)
    axes.set_xticks(range(len(tasks)), labels=list(tasks), rotation=30, ha="right")
    axes.set_yticks(range(len(values)), labels=list(tasks))
    axes.set_xlabel(f"evaluated on ({metric})")
    axes.set_ylabel("after training")
    axes.set_title(f"R: {title}")
    for i, row in enumerate(values):
        for j, value in enumerate(row):
            red, green, blue, _ = image.cmap(image.norm(value))
            dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
            axes.text(j, i, f"{value:.3g}", ha="center", va="center", color="white" if dark else "black")
    figure.colorbar(image, ax=axes, label=f"{metric} ({'higher' if higher_is_better else 'lower'} is better)")
    return figure


def curves_figure(runs: Mapping[str, Mapping[str, Any]], tasks: Sequence[str], metric: str) -> Any:
    """One panel per task: its score before training (if measured) and after each task, one line per run."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    columns = min(len(tasks), CURVE_PANELS_PER_ROW)
    rows = -(-len(tasks) // columns)
    figure = Figure(figsize=(3.6 * columns + 2, 3.2 * rows), layout="constrained")
    panels = figure.subplots(rows, columns, squeeze=False).flatten()
    for unused in panels[len(tasks) :]:
        unused.set_visible(False)
    measured_before = all(results.get("initial") for results in runs.values())
    labels = (["before"] if measured_before else []) + list(tasks)
    palette = colormaps["tab10" if len(runs) <= 10 else "tab20"]  # a distinct colour per run up to 20
    for j, (axes, task) in enumerate(zip(panels, tasks, strict=False)):
        scores_of_task = []
        for index, (name, results) in enumerate(runs.items()):
            scores = ([results["initial"][j]] if measured_before else []) + [row[j] for row in results["matrix"]]
            scores_of_task += scores
            axes.plot(
                range(len(scores)),
                scores,
                marker="o",
                label=run_title(name, results),
                color=palette(index % palette.N),
                linestyle="--" if results.get("joint_row_repeated") else "-",
            )
        axes.axvline(j + int(measured_before), color="grey", linestyle=":", linewidth=1)  # where it was learnt
        axes.set_xticks(range(len(labels)), labels=labels, rotation=30, ha="right")
        axes.set_xlabel("after training")
        axes.set_title(task)
        if min(scores_of_task) > 0 and max(scores_of_task) / min(scores_of_task) > 10:
            axes.set_yscale("log")
        axes.grid(alpha=0.3)
    for axes in panels[::columns]:
        axes.set_ylabel(metric)
    handles, names = panels[0].get_legend_handles_labels()
    figure.legend(handles, names, title="run", loc="outside right upper", fontsize="small")
    return figure


def save_figure(figure: Any, path: Path) -> Path:
    """Save `figure` as a PNG at `path`, atomically (a reader never sees half a file)."""
    with atomic_file(path) as temporary:
        figure.savefig(temporary, format="png", dpi=100)
    return path

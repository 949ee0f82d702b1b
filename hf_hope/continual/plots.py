"""PNG plots of a continual experiment: R as an annotated heatmap per run, and each task's score over the stream.

matplotlib is an optional extra (`pip install "hf-hope[plots]"`). Figures are drawn with `matplotlib.figure.Figure`
(Agg, no display needed) rather than pyplot, so the backend and state of the calling program are left alone.
Without it `write_plots` skips the plots with one warning, unless they are required.
"""

import importlib.util
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from transformers.utils import logging

from ..conversion.atomic_write import atomic_file

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

    `runs` maps a run's name to its results (`matrix` and, if measured, `initial`). Without matplotlib this warns
    once and returns `[]`, or raises ImportError when `require` is set.
    """
    if not plots_available():
        message = f"matplotlib is not installed, so no plots were drawn; install it with `{PLOTS_INSTALL}`."
        if require:
            raise ImportError(message)
        logger.warning(message)
        return []
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = [
        plot_matrix(results["matrix"], tasks, metric, higher_is_better, output_dir / matrix_plot_name(name), name)
        for name, results in runs.items()
    ]
    paths.append(plot_curves(runs, tasks, metric, output_dir / CURVES_NAME))
    return paths


def matrix_plot_name(run_name: str) -> str:
    return "R_" + re.sub(r"[^A-Za-z0-9_.-]", "_", run_name) + ".png"


def plot_matrix(
    matrix: Sequence[Sequence[float]],
    tasks: Sequence[str],
    metric: str,
    higher_is_better: bool,
    path: Path,
    title: str,
) -> Path:
    """R as a heatmap, one annotated cell per (trained task, evaluated task); better scores are brighter."""
    from matplotlib import colors
    from matplotlib.figure import Figure

    values = [[float(value) for value in row] for row in matrix]
    flat = [value for row in values for value in row]
    log_scale = min(flat) > 0 and max(flat) / min(flat) > 10
    norm = colors.LogNorm(min(flat), max(flat)) if log_scale else None
    size = 1.2 + 0.9 * len(tasks)
    figure = Figure(figsize=(size + 1.5, size))
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
    return _save(figure, path)


def plot_curves(runs: Mapping[str, Mapping[str, Any]], tasks: Sequence[str], metric: str, path: Path) -> Path:
    """One panel per run: each task's score before training (if measured) and after each task of the stream."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    columns = min(len(runs), CURVE_PANELS_PER_ROW)
    rows = -(-len(runs) // columns)
    figure = Figure(figsize=(4.5 * columns, 3.8 * rows))
    panels = figure.subplots(rows, columns, sharey=True, squeeze=False).flatten()
    for unused in panels[len(runs) :]:
        unused.set_visible(False)
    scores = [value for results in runs.values() for row in results["matrix"] for value in row]
    log_scale = min(scores) > 0 and max(scores) / min(scores) > 10
    palette = colormaps["tab10" if len(tasks) <= 10 else "tab20"]  # a distinct colour per task up to 20
    for axes, (name, results) in zip(panels, runs.items(), strict=False):
        initial = results.get("initial")
        labels = (["before"] if initial else []) + list(tasks)
        for j, task in enumerate(tasks):
            scores = ([initial[j]] if initial else []) + [row[j] for row in results["matrix"]]
            axes.plot(range(len(scores)), scores, marker="o", label=task, color=palette(j % palette.N))
        axes.set_xticks(range(len(labels)), labels=labels, rotation=30, ha="right")
        axes.set_xlabel("after training")
        axes.set_title(name)
        if log_scale:
            axes.set_yscale("log")
        axes.grid(alpha=0.3)
    for axes in panels[::columns]:
        axes.set_ylabel(metric)
    panels[len(runs) - 1].legend(title="task", fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1))
    return _save(figure, path)


def _save(figure: Any, path: Path) -> Path:
    figure.tight_layout()
    with atomic_file(path) as temporary:
        figure.savefig(temporary, format="png", dpi=100, bbox_inches="tight")  # the legend sits outside the panels
    return path

"""`pareto.png`: plasticity against forgetting, one point per group of an experiment, each method's frontier.

x is the mean plasticity (the score right after learning each task), y the mean relative forgetting, or the
forgetting when a group lacks a finite relative forgetting (`forgetting_key`; the axis label says which), both means
over the group's seeds with their sample std as error bars. Each method (a strategy, or a CMS level type:
`comparison.method_of`) has its colour, and its Pareto frontier (the groups no other group of that method beats on
both axes) is drawn as a line: the learning rates worth considering. Lower forgetting is always better; the
plasticity's better direction is the metric's (lower perplexity, higher accuracy). Drawn with
`matplotlib.figure.Figure`, as in `plots`.
"""

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .comparison import forgetting_key
from .plots import save_figure

PARETO_NAME = "pareto.png"


def pareto_frontier(points: Sequence[tuple[float, float]], higher_is_better: bool) -> list[int]:
    """The indices of the non-dominated (plasticity, forgetting) points, by increasing plasticity.

    A point dominates another when it is at least as good on both (plasticity in the metric's direction, forgetting
    lower) and better on one. Equal points are all kept.
    """

    def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
        plasticity_a, plasticity_b = (a[0], b[0]) if higher_is_better else (-a[0], -b[0])
        at_least = plasticity_a >= plasticity_b and a[1] <= b[1]
        return at_least and (plasticity_a > plasticity_b or a[1] < b[1])

    front = [i for i, point in enumerate(points) if not any(dominates(other, point) for other in points)]
    return sorted(front, key=lambda i: points[i][0])


def pareto_figure(groups: Sequence[Mapping[str, Any]], metric: str, higher_is_better: bool) -> Any:
    """The figure: one point per group (mean ± std over seeds), a colour and a frontier line per method."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    forgetting = forgetting_key(groups)
    methods = list(dict.fromkeys(group.get("method", group["strategy"]) for group in groups))
    palette = colormaps["tab10" if len(methods) <= 10 else "tab20"]
    figure = Figure(figsize=(7, 5), layout="constrained")
    axes = figure.subplots()
    for index, method in enumerate(methods):
        members = [group for group in groups if group.get("method", group["strategy"]) == method]
        points = [(group["mean"]["plasticity"], group["mean"][forgetting]) for group in members]
        color = palette(index % palette.N)
        axes.errorbar(
            [x for x, _ in points],
            [y for _, y in points],
            xerr=[group["std"]["plasticity"] or 0 for group in members],
            yerr=[group["std"][forgetting] or 0 for group in members],
            fmt="o",
            color=color,
            capsize=3,
            label=method,
        )
        for group, (x, y) in zip(members, points, strict=True):
            axes.annotate(group["group"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize="small")
        front = pareto_frontier(points, higher_is_better)
        axes.plot([points[i][0] for i in front], [points[i][1] for i in front], color=color, linewidth=1.5)
    better = "higher" if higher_is_better else "lower"
    axes.set_xlabel(f"plasticity: mean {metric} right after learning each task ({better} is better)")
    axes.set_ylabel(f"{forgetting.replace('_', ' ')} (lower is better)")
    axes.set_title("Plasticity against forgetting (mean ± std over seeds; lines: Pareto frontiers)")
    axes.grid(alpha=0.3)
    axes.legend(title="method", fontsize="small")
    return figure


def write_pareto_plot(
    groups: Sequence[Mapping[str, Any]], metric: str, higher_is_better: bool, output_dir: str | Path
) -> Path:
    """Write `output_dir/pareto.png` (matplotlib must be installed: see `plots.write_plots`); returns its path."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    return save_figure(pareto_figure(groups, metric, higher_is_better), output_dir / PARETO_NAME)

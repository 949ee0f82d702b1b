"""The comparison of an experiment's runs: one row per run, the mean and std over seeds per group, the chosen rate.

A run is named `<group>` or `<group>/seed_<n>`: the runs of one group differ by their seed only, so a group is one
configuration (a strategy and its learning rate) and its runs are repeats of it. A group's method is its strategy,
or, for a strategy with a `variant_setting` set to another value than its default, the strategy and that value (`cms
(lowrank)`): CMS level types are compared as methods of their own. `comparison_rows` gives one row per run;
`group_rows` the mean and the sample standard deviation (ddof=1; None, not 0, for a group of one run) over a group's
runs of every numeric figure of the rows: the summary's means (any numeric key of the summary, so a figure added to
it later is picked up), the final score on each task and the training seconds. `choose_learning_rates` picks one
group per method by `CHOSEN_RULE`. `format_comparison` and `comparison_csv` write it all out.
"""

import csv
import io
import math
import re
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from .settings import ContinualSettings
from .strategies import get_strategy

SUMMARY_COLUMNS = (
    ("final_average", "final average"),
    ("relative_forgetting", "relative forgetting"),
    ("forgetting", "forgetting"),
    ("backward_transfer", "backward transfer"),
    ("forward_transfer", "forward transfer"),
    ("plasticity", "plasticity"),
)
ROW_LABELS = ("run", "group", "seed", "strategy", "method", "learning_rate")  # what a row is, not what it measured
PLASTICITY_TOLERANCE = 0.02
CHOSEN_RULE = (
    "Chosen learning rate per method (a strategy, or a CMS level type): among the method's groups whose mean "
    f"plasticity is within {PLASTICITY_TOLERANCE:.0%} (relative) of the best mean plasticity of the full "
    "fine-tuning groups (of the method's own groups when there is no full run), or better, the one with the lowest "
    "mean {forgetting}; when none is within, the one with the best mean plasticity (marked 'none within')."
)
_GROUP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.=+-]*")
_SEEDED_NAME = re.compile(r"(?P<group>.+)/seed_(?P<seed>0|[1-9][0-9]*)")


def split_run_name(name: str) -> tuple[str, int | None]:
    """`"full/seed_2"` -> `("full", 2)`, `"full"` -> `("full", None)`; a ValueError for an unusable name.

    The group must be folder-safe (letters, digits and _ . = + -, starting with a letter or digit).
    """
    seeded = _SEEDED_NAME.fullmatch(name) if isinstance(name, str) else None
    group, seed = (seeded["group"], int(seeded["seed"])) if seeded else (name, None)
    if not isinstance(group, str) or not _GROUP_NAME.fullmatch(group):
        raise ValueError(
            f"Run name {name!r} is not usable as a folder name: use letters, digits and _ . = + -, optionally "
            "followed by /seed_<n> for one seed of a group."
        )
    return group, seed


def comparison_rows(experiment: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per run: what it is (run, group, seed, strategy, learning rate), then its figures.

    The figures are the summary's means of `SUMMARY_COLUMNS` (None where not measured), then any other numeric
    summary key, the final score per task (`final_<task>`) and the training seconds.
    """
    extra = extra_summary_keys(run["summary"] for run in experiment["runs"].values())
    rows = []
    for name, run in experiment["runs"].items():
        summary = run["summary"]
        group, seed = split_run_name(name)
        learning_rate = (run.get("settings") or {}).get("learning_rate")
        row = {"run": name, "group": group, "seed": seed, "strategy": run["strategy"], "method": method_of(run)}
        row["learning_rate"] = learning_rate
        row.update({key: summary.get(key) for key, _ in SUMMARY_COLUMNS})
        row.update({key: summary.get(key) for key in extra})
        finals = zip(experiment["tasks"], summary["final_per_task"], strict=True)
        row.update({f"final_{task}": value for task, value in finals})
        row["train_seconds"] = sum(timing["train_seconds"] for timing in run["timings"])
        rows.append(row)
    return rows


def method_of(run: Mapping[str, Any]) -> str:
    """The run's strategy, followed by its `variant_setting`'s value in parentheses where that is not the default."""
    setting = get_strategy(run["strategy"]).variant_setting
    return method_name(run["strategy"], (run.get("settings") or {}).get(setting) if setting else None)


def method_name(strategy: str, variant: Any) -> str:
    """`strategy`, or `strategy (variant)` when `variant` is given and is not its `variant_setting`'s default."""
    setting = get_strategy(strategy).variant_setting
    if variant is None or setting is None or variant == getattr(ContinualSettings(), setting):
        return strategy
    return f"{strategy} ({variant})"


def extra_summary_keys(summaries: Any) -> list[str]:
    """The numeric summary keys beyond `SUMMARY_COLUMNS` (and `num_tasks`), in the order they first appear."""
    known = {key for key, _ in SUMMARY_COLUMNS} | {"num_tasks"}
    keys: dict[str, None] = {}
    for summary in summaries:
        keys.update({key: None for key, value in summary.items() if key not in known and _is_number(value)})
    return list(keys)


def group_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One entry per group, in the order of its first run: mean and std over its runs of every figure.

    Each entry: `group`, `strategy`, `learning_rate`, `runs` (names), `seeds` (None for an unseeded run), and
    `mean` / `std` mapping each figure of the rows to the mean and sample std (ddof=1) over the runs that measured
    it (None where none did; std None with fewer than two).
    """
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["group"], []).append(row)
    entries = []
    for group, members in groups.items():
        figures = [key for key in members[0] if key not in ROW_LABELS]
        entry = {
            "group": group,
            "strategy": members[0]["strategy"],
            "method": members[0].get("method", members[0]["strategy"]),
            "learning_rate": members[0]["learning_rate"],
            "runs": [row["run"] for row in members],
            "seeds": [row["seed"] for row in members],
            "mean": {},
            "std": {},
        }
        for key in figures:
            entry["mean"][key], entry["std"][key] = mean_std([row.get(key) for row in members])
        entries.append(entry)
    return entries


def mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof=1) of the values that are not None; std None for fewer than two."""
    measured = [float(value) for value in values if value is not None]
    if not measured:
        return None, None
    mean = math.fsum(measured) / len(measured)
    return mean, statistics.stdev(measured) if len(measured) > 1 else None


def forgetting_key(groups: Sequence[Mapping[str, Any]]) -> str:
    """`relative_forgetting` when every group has a finite mean of it, else `forgetting` (the Pareto y, the rule)."""
    relative = [group["mean"].get("relative_forgetting") for group in groups]
    return (
        "relative_forgetting" if all(_is_number(value) and math.isfinite(value) for value in relative) else "forgetting"
    )


def choose_learning_rates(
    groups: Sequence[Mapping[str, Any]], higher_is_better: bool, tolerance: float = PLASTICITY_TOLERANCE
) -> dict[str, Any]:
    """One group per method by `CHOSEN_RULE`, from the groups' mean plasticity and mean forgetting.

    The reference is the best mean plasticity (highest if `higher_is_better`, else lowest) of the `full` groups, or
    of the method's own groups when there is no `full` group; a group is within when its plasticity is at most
    `tolerance * |reference|` worse than it. Among those, the lowest mean forgetting (`forgetting_key`) wins (the
    first on ties); when none is within, the best plasticity, with `within` False.

    Returns `{"rule", "forgetting", "reference", "strategies": {method: {"group", "learning_rate",
    "plasticity", "forgetting", "reference_plasticity", "within"}}}`; `reference` is "full" or None.
    """
    forgetting = forgetting_key(groups)
    best = max if higher_is_better else min
    full = [group["mean"]["plasticity"] for group in groups if group["strategy"] == "full"]
    strategies: dict[str, list[Mapping[str, Any]]] = {}
    for group in groups:
        strategies.setdefault(group.get("method", group["strategy"]), []).append(group)
    chosen = {}
    for strategy, members in strategies.items():
        plasticities = [group["mean"]["plasticity"] for group in members]
        reference = best(full) if full else best(plasticities)

        def worse_by(plasticity: float, reference: float = reference) -> float:
            return reference - plasticity if higher_is_better else plasticity - reference

        within = [group for group in members if worse_by(group["mean"]["plasticity"]) <= tolerance * abs(reference)]
        if within:
            pick = min(within, key=lambda group: group["mean"][forgetting])
        else:
            pick = min(members, key=lambda group: worse_by(group["mean"]["plasticity"]))
        chosen[strategy] = {
            "group": pick["group"],
            "learning_rate": pick["learning_rate"],
            "plasticity": pick["mean"]["plasticity"],
            "forgetting": pick["mean"][forgetting],
            "reference_plasticity": reference,
            "within": bool(within),
        }
    return {
        "rule": CHOSEN_RULE.format(forgetting=forgetting.replace("_", " ")),
        "forgetting": forgetting,
        "reference": "full" if full else None,
        "strategies": chosen,
    }


def comparison_csv(experiment: Mapping[str, Any]) -> str:
    """CSV of the comparison: one row per run; with seeds then two rows per group, its mean and its std.

    With seeds a `stat` column says which a row is (`run`, `mean` or `std`); a group's rows are named
    `<group> (mean)` and `<group> (std)` and hold the figures in the runs' columns.
    """
    rows = [dict(row) for row in experiment["comparison"]]
    if _seeded(experiment):
        rows = [{**row, "stat": "run"} for row in rows]
        for group in experiment["groups"]:
            labels = {"group": group["group"], "strategy": group["strategy"], "learning_rate": group["learning_rate"]}
            for stat in ("mean", "std"):
                rows.append({"run": f"{group['group']} ({stat})", **labels, "stat": stat, **group[stat]})
    fields = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n", restval="")
    writer.writeheader()
    writer.writerows({key: "" if value is None else value for key, value in row.items()} for row in rows)
    return buffer.getvalue()


def format_comparison(experiment: Mapping[str, Any]) -> str:
    """The comparison as markdown (readable as plain text), with a line saying how to read it.

    Without seeds: one row per run. With seeds: one row per group of `mean ± std` over its seeds, then one row per
    run. When a strategy ran with several learning rates, the chosen one per strategy follows, with the rule.
    """
    metric, better = experiment["metric"], "higher" if experiment["higher_is_better"] else "lower"
    tasks = experiment["tasks"]
    lines = [
        f"{metric} ({better} is better) on each task's validation set after the whole stream "
        f"({' -> '.join(tasks)}). Forgetting: positive = worse on earlier tasks at the end; "
        "transfer: positive = better.",
        "",
    ]
    rows = experiment["comparison"]
    if _seeded(experiment):
        lines[0] += " Groups: mean ± sample std over seeds (std - with one seed)."
        groups = experiment["groups"]
        lines += _table("group", [group["group"] for group in groups], groups, tasks, _group_cell)
        lines += ["", "Per seed:", ""]
    lines += _table("run", [row["run"] for row in rows], rows, tasks, _row_cell)
    chosen = experiment.get("chosen")
    if chosen and len({row["group"] for row in rows}) > len(chosen["strategies"]):
        lines += ["", format_chosen(chosen)]
    return "\n".join(lines)


def format_chosen(chosen: Mapping[str, Any]) -> str:
    """The rule, then one line per strategy: the chosen group, its rate, plasticity and forgetting."""
    lines = [chosen["rule"]]
    label = chosen["forgetting"].replace("_", " ")
    for strategy, pick in chosen["strategies"].items():
        lines.append(
            f"- {strategy}: {pick['group']} (learning rate {pick['learning_rate']!r}): plasticity "
            f"{pick['plasticity']:.4g} (reference {pick['reference_plasticity']:.4g}), {label} "
            f"{_format(chosen['forgetting'], pick['forgetting'])}" + ("" if pick["within"] else " (none within)")
        )
    return "\n".join(lines)


def _table(first: str, labels: Sequence[str], entries: Sequence[Any], tasks: Sequence[str], cell: Any) -> list[str]:
    """Markdown rows of `entries`: `cell(entry, key)` per summary column, extra figure, final per task, seconds."""
    columns = [key for key, _ in SUMMARY_COLUMNS]
    columns += [key for key in _figure_keys(entries) if key not in columns and not key.startswith("final_")]
    header = [first, *(dict(SUMMARY_COLUMNS).get(key, key.replace("_", " ")) for key in columns)]
    header += [*(f"final {task}" for task in tasks), "train s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    keys = [*columns, *(f"final_{task}" for task in tasks), "train_seconds"]
    for label, entry in zip(labels, entries, strict=True):
        lines.append("| " + " | ".join([label, *(cell(entry, key) for key in keys)]) + " |")
    return lines


def _figure_keys(entries: Sequence[Any]) -> list[str]:
    """The figures of the table's entries (a group's means or a run's row), without the training seconds."""
    keys = entries[0]["mean"] if "mean" in entries[0] else entries[0]
    return [key for key in keys if key not in (*ROW_LABELS, "train_seconds")]


def _row_cell(row: Mapping[str, Any], key: str) -> str:
    return f"{row[key]:.1f}" if key == "train_seconds" else _format(key, row.get(key))


def _group_cell(group: Mapping[str, Any], key: str) -> str:
    mean, std = group["mean"].get(key), group["std"].get(key)
    if key == "train_seconds":
        return f"{mean:.1f}" if std is None else f"{mean:.1f} ± {std:.1f}"
    return _format(key, mean) if std is None else f"{_format(key, mean)} ± {_format(key, std)}"


def _format(key: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1%}" if key == "relative_forgetting" else f"{value:.4g}"


def _seeded(experiment: Mapping[str, Any]) -> bool:
    return any(row["seed"] is not None for row in experiment["comparison"])


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)

"""Domain-incremental benchmark: SmolLM2-135M on code -> news -> literature, every strategy on one token budget.

Each group below is one configuration (a strategy and its learning rate); each runs once per `--seeds` seed as
`<group>/seed_<n>`, one `hf_hope.continual.run_continual` run on the same data and budget (64 optimizer steps of 4
blocks of 128 tokens per domain, 24 validation blocks per domain), scored on the retention set (the Python
documentation's prose, never trained on) when the documentation is installed. `run_experiment` compares the runs
(mean and sample std over seeds per group, the chosen learning rate per strategy, the Pareto plot) and writes it all
into `--output_dir` (default `benchmarks/results/continual_domains`, whose figures are kept in git). Finished runs
are read back, so the benchmark can be stopped and resumed in pieces, in this checkout or a fresh one, or extended
with more groups or seeds; only the last task model of each run is kept, and git ignores it.

It then prints the targets, met or missed, on the chosen group of each method (means over seeds; a difference
counts only when it is larger than the seed standard deviation of both sides):
- `cms` forgetting at most half of full fine-tuning's, at new-domain perplexity at most 1.05x full's;
- `cms` final average better than `ffn`'s (the same parameters with no level clock) by more than one std;
- retention (base perplexity / perplexity after the stream on the retention set) at least 0.95 for `cms`;
- (these three for each CMS level type that ran, against `ffn` of the same type)
- `cms+replay` the best final average of every run but `joint`;
- every other CMS level type (a method of its own, `cms (lowrank)`) forgetting no more than copy init's, at
  new-domain perplexity at most 1.02x copy init's.

Run: `python benchmarks/bench_continual_domains.py` (about 10 minutes per run on two CPU cores), `--runs full-lr1e-4
cms-lr3e-4` to choose groups, `--seeds 0 1 2` for more seeds, `--list` to list the groups, `--finished_only` to
compare what has run (every group and seed with results in the folder) without training.
"""

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from smollm2_experiment import listed, run_on_smollm2  # sibling module: run as a script

from hf_hope.continual import ContinualSettings
from hf_hope.continual.comparison import method_name
from hf_hope.data import load_domains, load_retention_if_available

BUDGET = {
    "steps_per_task": 64,
    "batch_size": 4,
    "block_size": 128,
    "max_eval_blocks": 24,
    "eval_batch_size": 8,
    "keep_task_models": False,
}
TEXT_CAPS = {"max_train_chars": 400_000, "max_validation_chars": 60_000}
GROUPS = {  # in the order they run: the comparisons the targets need first
    "full-lr1e-4": ContinualSettings(strategy="full", learning_rate=1e-4),
    "cms-lr3e-4": ContinualSettings(strategy="cms", learning_rate=3e-4, cms_init="copy"),
    "ffn-lr3e-4": ContinualSettings(strategy="ffn", learning_rate=3e-4, cms_init="copy"),  # cms's, no clock
    "replay-lr1e-4": ContinualSettings(strategy="replay", learning_rate=1e-4),
    "cms+replay-lr3e-4": ContinualSettings(strategy="cms+replay", learning_rate=3e-4, cms_init="copy"),
    "ewc-lr1e-4": ContinualSettings(strategy="ewc", learning_rate=1e-4),
    "lora-lr1e-3": ContinualSettings(strategy="lora", learning_rate=1e-3),
    "full-lr3e-5": ContinualSettings(strategy="full", learning_rate=3e-5),
    "full-lr3e-4": ContinualSettings(strategy="full", learning_rate=3e-4),
    "cms-lr1e-4": ContinualSettings(strategy="cms", learning_rate=1e-4, cms_init="copy"),
    "joint-lr1e-4": ContinualSettings(strategy="joint", learning_rate=1e-4),
    "cms-lowrank-lr1e-3": ContinualSettings(strategy="cms", learning_rate=1e-3, cms_init="lowrank"),
    "cms-lowrank-lr3e-4": ContinualSettings(strategy="cms", learning_rate=3e-4, cms_init="lowrank"),
    "cms-units-lr3e-4": ContinualSettings(strategy="cms", learning_rate=3e-4, cms_init="units"),
    "cms-units-lr1e-3": ContinualSettings(strategy="cms", learning_rate=1e-3, cms_init="units"),
    "cms-units-lr3e-3": ContinualSettings(strategy="cms", learning_rate=3e-3, cms_init="units"),
}
FORGETTING_SHARE, PLASTICITY_RATIO, RETENTION_FLOOR = 0.5, 1.05, 0.95
LEVEL_TYPE_PLASTICITY_RATIO = 1.02  # a cheaper CMS level type against copy init


def seeded_runs(groups: list[str], seeds: list[int]) -> dict[str, ContinualSettings]:
    """`{<group>/seed_<n>: settings}` for every group and seed, on the benchmark's budget."""
    device = {"use_cpu": not torch.cuda.is_available()}
    return {
        f"{group}/seed_{seed}": replace(GROUPS[group], **BUDGET, **device, seed=seed)
        for group in groups
        for seed in seeds
    }


def check_targets(experiment: dict[str, Any]) -> list[str]:
    """One line per target of the module docstring, on each method's chosen group: its figures and met/missed.

    The `cms` targets are checked for every CMS level type that ran, each against `ffn` and `cms+replay` of the
    same type.
    """
    groups = {group["group"]: group for group in experiment["groups"]}
    chosen = {method: groups[pick["group"]] for method, pick in experiment["chosen"]["strategies"].items()}
    lines = [
        "chosen: "
        + ", ".join(f"{method} {group['group']} ({len(group['runs'])} seed(s))" for method, group in chosen.items())
    ]
    full = chosen.get("full")
    for level_type in dict.fromkeys(_level_type(method) for method in chosen if _level_type(method)):
        name = method_name("cms", level_type)
        cms, ffn = chosen[name], chosen.get(method_name("ffn", level_type))
        if full:
            share = _mean(cms, "relative_forgetting") / _mean(full, "relative_forgetting")
            ratio = _mean(cms, "plasticity") / _mean(full, "plasticity")
            apart = _apart(cms, full, "relative_forgetting")
            met = share <= FORGETTING_SHARE and ratio <= PLASTICITY_RATIO and apart
            lines.append(
                f"{name} forgetting {share:.2f}x full's (<= {FORGETTING_SHARE}), new-domain ppl {ratio:.3f}x full's "
                f"(<= {PLASTICITY_RATIO}), apart by more than the std: {apart}: {_verdict(met)}"
            )
        if ffn:
            gain = _mean(ffn, "final_average") - _mean(cms, "final_average")  # perplexity: lower is better
            met = gain > 0 and _apart(cms, ffn, "final_average")
            lines.append(
                f"{name} final average {_mean(cms, 'final_average'):.4g} vs {method_name('ffn', level_type)} "
                f"{_mean(ffn, 'final_average'):.4g} (better by {gain:.4g}, by more than one std: {_verdict(met)})"
            )
        if _mean(cms, "retention") is not None:
            retention = _mean(cms, "retention")
            met = retention >= RETENTION_FLOOR
            lines.append(f"{name} retention {retention:.3f} (>= {RETENTION_FLOOR}): {_verdict(met)}")
    if any(experiment["runs"][run]["strategy"] == "cms+replay" for run in experiment["runs"]):
        finals = {row["run"]: row["final_average"] for row in experiment["comparison"] if row["strategy"] != "joint"}
        best = min(finals, key=finals.get)
        met = experiment["runs"][best]["strategy"] == "cms+replay"
        lines.append(f"best final average of the non-joint runs: {best} ({finals[best]:.4g}): {_verdict(met)}")
    return lines + _level_type_targets(chosen)


def _level_type_targets(chosen: dict[str, dict[str, Any]]) -> list[str]:
    """One line per CMS level type other than copy init: its forgetting and new-domain perplexity against copy's."""
    types = {_level_type(method): group for method, group in chosen.items() if _level_type(method)}
    copy = types.pop("copy", None)
    lines = []
    for level_type, group in types.items() if copy else ():
        forgetting, copy_forgetting = _mean(group, "relative_forgetting"), _mean(copy, "relative_forgetting")
        ratio = _mean(group, "plasticity") / _mean(copy, "plasticity")
        met = forgetting <= copy_forgetting and ratio <= LEVEL_TYPE_PLASTICITY_RATIO
        lines.append(
            f"cms {level_type} ({group['group']}) forgetting {forgetting:+.3f} against copy init's "
            f"{copy_forgetting:+.3f}, new-domain ppl {ratio:.3f}x copy's (<= {LEVEL_TYPE_PLASTICITY_RATIO}): "
            + _verdict(met)
        )
    return lines


def _level_type(method: str) -> str | None:
    """The CMS level type of a `cms` method (`cms` alone: the default one), else None."""
    if method == "cms":
        return ContinualSettings().cms_init
    if method.startswith("cms (") and method.endswith(")"):
        return method[len("cms (") : -1]
    return None


def _mean(group: dict[str, Any], key: str) -> float | None:
    return group["mean"].get(key)


def _apart(first: dict[str, Any], second: dict[str, Any], key: str) -> bool:
    """Whether the two groups' means differ by more than either group's seed std (False with one seed)."""
    stds = [group["std"].get(key) for group in (first, second)]
    if any(std is None for std in stds):
        return False
    return abs(_mean(first, key) - _mean(second, key)) > max(stds)


def _verdict(met: bool) -> str:
    return "met" if met else "missed"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", default=list(GROUPS), choices=list(GROUPS), metavar="GROUP")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--output_dir", default=str(Path(__file__).parent / "results" / "continual_domains"))
    parser.add_argument("--list", action="store_true", help="list the groups and exit")
    parser.add_argument(
        "--finished_only",
        action="store_true",
        help="compare only the runs (of --runs and --seeds) whose results are in --output_dir; train nothing",
    )
    args = parser.parse_args()
    runs = seeded_runs(args.runs, args.seeds)
    if args.finished_only:
        runs = {
            name: settings
            for name, settings in runs.items()
            if (Path(args.output_dir) / name / "results.json").is_file()
        }
    if listed(args, runs):
        return
    run_on_smollm2(
        load_domains(**TEXT_CAPS),
        runs,
        args.output_dir,
        "code -> news -> literature, at most 400,000 training and 60,000 validation characters each",
        check_targets,
        retention=load_retention_if_available(),
    )


if __name__ == "__main__":
    main()

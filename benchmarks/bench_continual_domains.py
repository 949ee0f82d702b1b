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
from pathlib import Path
from typing import Any

from smollm2_experiment import (  # sibling module: run as a script
    add_group_arguments,
    apart,
    best_non_joint_line,
    chosen_groups,
    chosen_line,
    level_type,
    listed,
    mean,
    run_on_smollm2,
    selected_runs,
    verdict,
)

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
    "ffn-units-lr1e-3": ContinualSettings(strategy="ffn", learning_rate=1e-3, cms_init="units"),
    "cms+replay-units-lr1e-3": ContinualSettings(strategy="cms+replay", learning_rate=1e-3, cms_init="units"),
}
FORGETTING_SHARE, PLASTICITY_RATIO, RETENTION_FLOOR = 0.5, 1.05, 0.95
LEVEL_TYPE_PLASTICITY_RATIO = 1.02  # a cheaper CMS level type against copy init


def check_targets(experiment: dict[str, Any]) -> list[str]:
    """One line per target of the module docstring, on each method's chosen group: its figures and met/missed.

    The `cms` targets are checked for every CMS level type that ran, each against `ffn` and `cms+replay` of the
    same type.
    """
    chosen = chosen_groups(experiment)
    lines = [chosen_line(chosen)]
    full = chosen.get("full")
    for kind in dict.fromkeys(level_type(method) for method in chosen if level_type(method)):
        name = method_name("cms", kind)
        cms, ffn = chosen[name], chosen.get(method_name("ffn", kind))
        if full:
            share = mean(cms, "relative_forgetting") / mean(full, "relative_forgetting")
            ratio = mean(cms, "plasticity") / mean(full, "plasticity")
            distinct = apart(cms, full, "relative_forgetting")
            met = share <= FORGETTING_SHARE and ratio <= PLASTICITY_RATIO and distinct
            lines.append(
                f"{name} forgetting {share:.2f}x full's (<= {FORGETTING_SHARE}), new-domain ppl {ratio:.3f}x full's "
                f"(<= {PLASTICITY_RATIO}), apart by more than the std: {distinct}: {verdict(met)}"
            )
        if ffn:
            gain = mean(ffn, "final_average") - mean(cms, "final_average")  # perplexity: lower is better
            met = gain > 0 and apart(cms, ffn, "final_average")
            lines.append(
                f"{name} final average {mean(cms, 'final_average'):.4g} vs {method_name('ffn', kind)} "
                f"{mean(ffn, 'final_average'):.4g} (better by {gain:.4g}, by more than one std: {verdict(met)})"
            )
        if mean(cms, "retention") is not None:
            retention = mean(cms, "retention")
            met = retention >= RETENTION_FLOOR
            lines.append(f"{name} retention {retention:.3f} (>= {RETENTION_FLOOR}): {verdict(met)}")
    lines += best_non_joint_line(experiment)
    return lines + _level_type_targets(chosen)


def _level_type_targets(chosen: dict[str, dict[str, Any]]) -> list[str]:
    """One line per CMS level type other than copy init: its forgetting and new-domain perplexity against copy's."""
    types = {level_type(method): group for method, group in chosen.items() if level_type(method)}
    copy = types.pop("copy", None)
    lines = []
    for kind, group in types.items() if copy else ():
        forgetting, copy_forgetting = mean(group, "relative_forgetting"), mean(copy, "relative_forgetting")
        ratio = mean(group, "plasticity") / mean(copy, "plasticity")
        met = forgetting <= copy_forgetting and ratio <= LEVEL_TYPE_PLASTICITY_RATIO
        lines.append(
            f"cms {kind} ({group['group']}) forgetting {forgetting:+.3f} against copy init's "
            f"{copy_forgetting:+.3f}, new-domain ppl {ratio:.3f}x copy's (<= {LEVEL_TYPE_PLASTICITY_RATIO}): "
            + verdict(met)
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_group_arguments(parser, GROUPS, Path(__file__).parent / "results" / "continual_domains")
    args = parser.parse_args()
    runs = selected_runs(args, GROUPS, BUDGET)
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

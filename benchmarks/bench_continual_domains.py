"""Domain-incremental benchmark: SmolLM2-135M on code -> news -> literature, every strategy on one token budget.

Each group below is one configuration (a strategy and its learning rate); each runs once per `--seeds` seed as
`<group>/seed_<n>`, one `hf_hope.continual.run_continual` run on the same data and budget (64 optimizer steps of 4
blocks of 128 tokens per domain, 24 validation blocks per domain), scored on the retention set (the Python
documentation's prose, never trained on) when the documentation is installed. `run_experiment` compares the runs
(mean and sample std over seeds per group, the chosen learning rate per strategy, the Pareto plot) and writes it all
into `--output_dir` (default `benchmarks/results/continual_domains`, whose figures are kept in git). Finished runs
are read back, so the benchmark can be stopped and resumed in pieces, in this checkout or a fresh one, or extended
with more groups or seeds; only the last task model of each run is kept, and git ignores it.

It then prints the targets, met or missed, on the chosen group of each strategy (means over seeds; a difference
counts only when it is larger than the seed standard deviation of both sides):
- `cms` forgetting at most half of full fine-tuning's, at new-domain perplexity at most 1.05x full's;
- `cms` final average better than `ffn`'s (the same parameters with no level clock) by more than one std;
- `cms+replay` the best final average of every run but `joint`;
- retention (base perplexity / perplexity after the stream on the retention set) at least 0.95 for `cms`.

Run: `python benchmarks/bench_continual_domains.py` (about 10 minutes per run on two CPU cores), `--runs full-lr1e-4
cms-lr3e-4` to choose groups, `--seeds 0 1 2` for more seeds, `--list` to list the groups.
"""

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from smollm2_experiment import listed, run_on_smollm2  # sibling module: run as a script

from hf_hope.continual import ContinualSettings
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
    "cms-lr3e-4": ContinualSettings(strategy="cms", learning_rate=3e-4),
    "ffn-lr3e-4": ContinualSettings(strategy="ffn", learning_rate=3e-4),  # cms's parameters, no clock
    "replay-lr1e-4": ContinualSettings(strategy="replay", learning_rate=1e-4),
    "cms+replay-lr3e-4": ContinualSettings(strategy="cms+replay", learning_rate=3e-4),
    "ewc-lr1e-4": ContinualSettings(strategy="ewc", learning_rate=1e-4),
    "lora-lr1e-3": ContinualSettings(strategy="lora", learning_rate=1e-3),
    "full-lr3e-5": ContinualSettings(strategy="full", learning_rate=3e-5),
    "full-lr3e-4": ContinualSettings(strategy="full", learning_rate=3e-4),
    "cms-lr1e-4": ContinualSettings(strategy="cms", learning_rate=1e-4),
    "joint-lr1e-4": ContinualSettings(strategy="joint", learning_rate=1e-4),
    "cms-lowrank-lr1e-3": ContinualSettings(strategy="cms", learning_rate=1e-3, cms_init="lowrank"),
    "cms-lowrank-lr3e-4": ContinualSettings(strategy="cms", learning_rate=3e-4, cms_init="lowrank"),
}
FORGETTING_SHARE, PLASTICITY_RATIO, RETENTION_FLOOR = 0.5, 1.05, 0.95


def seeded_runs(groups: list[str], seeds: list[int]) -> dict[str, ContinualSettings]:
    """`{<group>/seed_<n>: settings}` for every group and seed, on the benchmark's budget."""
    device = {"use_cpu": not torch.cuda.is_available()}
    return {
        f"{group}/seed_{seed}": replace(GROUPS[group], **BUDGET, **device, seed=seed)
        for group in groups
        for seed in seeds
    }


def check_targets(experiment: dict[str, Any]) -> list[str]:
    """One line per target of the module docstring, on each strategy's chosen group: its figures and met/missed."""
    groups = {group["group"]: group for group in experiment["groups"]}
    chosen = {strategy: groups[pick["group"]] for strategy, pick in experiment["chosen"]["strategies"].items()}
    lines = [
        "chosen: "
        + ", ".join(f"{strategy} {group['group']} ({len(group['runs'])} seed(s))" for strategy, group in chosen.items())
    ]
    cms, full, ffn = chosen.get("cms"), chosen.get("full"), chosen.get("ffn")
    if cms and full:
        share = _mean(cms, "relative_forgetting") / _mean(full, "relative_forgetting")
        ratio = _mean(cms, "plasticity") / _mean(full, "plasticity")
        apart = _apart(cms, full, "relative_forgetting")
        met = share <= FORGETTING_SHARE and ratio <= PLASTICITY_RATIO and apart
        lines.append(
            f"cms forgetting {share:.2f}x full's (<= {FORGETTING_SHARE}), new-domain ppl {ratio:.3f}x full's "
            f"(<= {PLASTICITY_RATIO}), apart by more than the std: {apart}: {_verdict(met)}"
        )
    if cms and ffn:
        gain = _mean(ffn, "final_average") - _mean(cms, "final_average")  # perplexity: lower is better
        met = gain > 0 and _apart(cms, ffn, "final_average")
        lines.append(
            f"cms final average {_mean(cms, 'final_average'):.4g} vs ffn {_mean(ffn, 'final_average'):.4g} "
            f"(better by {gain:.4g}, by more than one std: {_verdict(met)})"
        )
    if "cms+replay" in chosen:
        finals = {row["run"]: row["final_average"] for row in experiment["comparison"] if row["strategy"] != "joint"}
        best = min(finals, key=finals.get)
        met = experiment["runs"][best]["strategy"] == "cms+replay"
        lines.append(f"best final average of the non-joint runs: {best} ({finals[best]:.4g}): {_verdict(met)}")
    if cms and _mean(cms, "retention") is not None:
        retention = _mean(cms, "retention")
        lines.append(f"cms retention {retention:.3f} (>= {RETENTION_FLOOR}): {_verdict(retention >= RETENTION_FLOOR)}")
    return lines


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
    args = parser.parse_args()
    if listed(args, seeded_runs(args.runs, args.seeds)):
        return
    run_on_smollm2(
        load_domains(**TEXT_CAPS),
        seeded_runs(args.runs, args.seeds),
        args.output_dir,
        "code -> news -> literature, at most 400,000 training and 60,000 validation characters each",
        check_targets,
        retention=load_retention_if_available(),
    )


if __name__ == "__main__":
    main()

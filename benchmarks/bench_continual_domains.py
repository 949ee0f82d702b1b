"""Domain-incremental benchmark: SmolLM2-135M on code -> news -> literature, every strategy on one token budget.

Each configuration below is one run of `hf_hope.continual.run_continual` (the same seeds, data and budget: 32
optimizer steps of 4 blocks of 128 tokens per domain, 24 validation blocks per domain); `run_experiment` compares
them and writes the results, matrices, plots and model cards into `--output_dir`. Each run is also scored on the
retention set (the Python documentation's prose) when the documentation is installed. Finished runs are read back, so
the benchmark can be stopped and resumed, or extended with more configurations.

It then checks the targets against full fine-tuning (`full`) and LoRA, for every CMS configuration and for `ffn`
(the CMS configuration's parameters with every level at period 1, no level clock: the ablation of the clock):
- relative forgetting at most half of full fine-tuning's;
- perplexity on each new domain (right after learning it) within 1.1x of full fine-tuning's;
- less forgetting than LoRA at equal or better new-domain perplexity (`lora` and `lora-lr1e-3`).

Run: `python benchmarks/bench_continual_domains.py` (about 6 minutes per configuration on two CPU cores),
`--runs full cms-consolidate` to choose configurations, `--list` to list them.
"""

import argparse
from dataclasses import replace

import torch
from smollm2_experiment import add_run_arguments, listed, run_on_smollm2  # sibling module: run as a script

from hf_hope.continual import ContinualSettings
from hf_hope.data import load_domains, load_retention_if_available

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
    "ffn-copy-lr3e-4": ContinualSettings(strategy="ffn", learning_rate=3e-4),  # cms's parameters, no clock
    "replay": ContinualSettings(strategy="replay", learning_rate=1e-4),
    "ewc": ContinualSettings(strategy="ewc", learning_rate=1e-4),
    "cms+replay-copy-lr3e-4": ContinualSettings(strategy="cms+replay", learning_rate=3e-4),
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
        if not name.startswith(("cms-", "ffn")):
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
    add_run_arguments(parser, CONFIGURATIONS, list(CONFIGURATIONS), "bench_continual_domains")
    args = parser.parse_args()
    if listed(args, CONFIGURATIONS):
        return

    use_cpu = not torch.cuda.is_available()
    run_on_smollm2(
        load_domains(**TEXT_CAPS),
        {name: replace(CONFIGURATIONS[name], **BUDGET, use_cpu=use_cpu) for name in args.runs},
        args.output_dir,
        "code -> news -> literature, at most 400,000 training and 60,000 validation characters each",
        check_targets,
        retention=load_retention_if_available(),
    )


if __name__ == "__main__":
    main()

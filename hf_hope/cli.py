"""The `hf-hope` command."""

import argparse
from collections.abc import Sequence
from dataclasses import fields

from .demo import DemoSettings, run_demo


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-hope",
        description="Nested Learning for Hugging Face transformers: HOPE models, CMS adapters and level clocks.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="train a small HOPE model on Python source, save, reload and generate (about 2 minutes on a CPU)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for field in fields(DemoSettings):
        demo.add_argument(f"--{field.name}", type=type(field.default), default=field.default)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        run_demo(DemoSettings(**{field.name: getattr(args, field.name) for field in fields(DemoSettings)}))


if __name__ == "__main__":
    main()

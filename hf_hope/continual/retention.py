"""Retention of general ability: a held-out set's score before a stream and after each task.

The retention set is never trained on (by default the Python documentation's prose, `hf_hope.data.load_retention`,
which is in none of the built-in streams' tasks). It is scored in one of two ways:

- `RetentionSet`, a text (a `text` column): its perplexity, on blocks cut as the stream's validation blocks are
  (same `block_size` and `max_eval_blocks`). Lower is better, so `retention = perplexity before training /
  perplexity after the stream`: 0.9 means the perplexity rose by 11%.
- `LabelledRetentionSet`, labelled data (a `text` column and a `datasets.ClassLabel` `label` column): its
  accuracy, each text classified as `hf_hope.continual.classification` does (default prompt and answer templates),
  predicting among the retention set's own labels. Higher is better, so `retention = accuracy after the stream /
  accuracy before training`: 0.9 means a tenth of the base model's accuracy was lost.

Either way 1.0 means the general ability is kept and < 1 that some was lost. Accuracy can be 0, which would leave
the ratio undefined: a retention set on which the base model scores 0 is refused (`check_base_score`), right after
the base model is scored and before any training, rather than reporting an infinite or undefined retention. The set
is scored with every stream, labelled or not, since the question is whether the model keeps what it could do.
"""

import hashlib
import json
from dataclasses import fields
from typing import Any

import torch
from datasets import ClassLabel, Dataset, DatasetDict
from torch import nn

from .answer_scoring import AnswerTree
from .blocks import Tokenizer, task_blocks
from .classification import ClassificationSettings, accuracy, answer_ids, task_examples
from .perplexity import perplexity

RETENTION_SPLIT = "validation"
DEFAULT_MAX_EXAMPLES = next(
    setting.default for setting in fields(ClassificationSettings) if setting.name == "max_eval_examples"
)


class RetentionSet:
    """The retention text as blocks, scored by perplexity (lower is better)."""

    metric = "perplexity"
    higher_is_better = False

    def __init__(
        self,
        data: Dataset | DatasetDict,
        tokenizer: Tokenizer,
        block_size: int,
        max_blocks: int | None,
        batch_size: int,
    ) -> None:
        self.blocks = task_blocks("retention", as_split(data), RETENTION_SPLIT, tokenizer, block_size, max_blocks)
        self.batch_size = batch_size

    def identity(self) -> str:
        """A fingerprint of the blocks, so that a run resumes only with the same retention text."""
        return hashlib.sha256(self.blocks.numpy().tobytes()).hexdigest()[:16]

    def evaluate(self, model: nn.Module, device: torch.device | str) -> float:
        return perplexity(model, self.blocks, self.batch_size, device)


class LabelledRetentionSet:
    """Labelled retention data as classification examples, scored by accuracy among its own labels (higher is better).

    At most `max_examples` examples are scored (None: all), taken in turn from each label as a capped task's are.
    """

    metric = "accuracy"
    higher_is_better = True

    def __init__(
        self, data: Dataset | DatasetDict, tokenizer: Tokenizer, max_examples: int | None = DEFAULT_MAX_EXAMPLES
    ) -> None:
        data = as_split(data)
        names = class_label_names(data)
        if names is None:
            raise ValueError(
                f"A labelled retention set needs a {RETENTION_SPLIT!r} split with a `text` column and a "
                "datasets.ClassLabel `label` column, which names the labels; load the file with "
                "load_retention_text(path, label_column=...)."
            )
        self.settings = ClassificationSettings(label_names=names)
        if len(self.settings.label_names) < 2:
            raise ValueError(
                f"The labelled retention set has one label ({self.settings.label_names[0]!r}): predicting among one "
                "label always scores 1. Give data with at least two labels, or score it by perplexity (no label "
                "column)."
            )
        self.examples = task_examples("retention", data, RETENTION_SPLIT, tokenizer, self.settings, max_examples)
        self.labels = list(range(len(self.settings.label_names)))
        answers = [answer_ids(label, tokenizer, self.settings) for label in self.labels]
        self.tree = AnswerTree(answers, self.settings.label_names)

    def identity(self) -> str:
        """A fingerprint of the tokenized examples and the label names: a run resumes only with the same set."""
        examples = [[example.prompt_ids, example.answer_ids, example.label] for example in self.examples]
        payload = json.dumps({"label_names": self.settings.label_names, "examples": examples})
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def evaluate(self, model: nn.Module, device: torch.device | str) -> float:
        """The share of the examples whose most likely label (among the set's labels) is theirs."""
        return accuracy(model, self.examples, self.labels, self.tree, self.settings.search_width, device)


GeneralSet = RetentionSet | LabelledRetentionSet


def as_split(data: Dataset | DatasetDict) -> DatasetDict:
    """`data` as a DatasetDict with the retention split (a bare Dataset becomes that split)."""
    return data if isinstance(data, DatasetDict) else DatasetDict({RETENTION_SPLIT: data})


def class_label_names(data: DatasetDict) -> list[str] | None:
    """The label names of the retention split's `label` column when it is a `ClassLabel` (labelled data), else None."""
    if RETENTION_SPLIT not in data:
        return None
    feature = data[RETENTION_SPLIT].features.get("label")
    return list(feature.names) if isinstance(feature, ClassLabel) else None


def check_base_score(general: GeneralSet, score: float) -> None:
    """Refuse a retention set on which the base model scores 0 accuracy, before any training.

    `retention` is accuracy after / accuracy before, undefined for a base accuracy of 0 (and a base model that
    knows nothing of the set cannot lose anything on it), so such a set measures nothing.
    """
    if general.higher_is_better and score == 0:
        raise ValueError(
            f"The base model scores {general.metric} 0 on the labelled retention set, so retention (accuracy after / "
            "accuracy before) is undefined. Give a retention set the base model gets some of right (e.g. more "
            "examples or fewer labels), or score it by perplexity (no label column)."
        )


def retention_ratio(base: float, after: float, higher_is_better: bool) -> float:
    """`after / base` for a score where higher is better, else `base / after`: 1.0 kept, < 1 lost."""
    return after / base if higher_is_better else base / after


def retention_summary(scores: list[float], metric: str, higher_is_better: bool) -> dict[str, Any]:
    """What results report: the score before training and after each training run, and the retention ratio."""
    return {"metric": metric, "scores": scores, "retention": retention_ratio(scores[0], scores[-1], higher_is_better)}

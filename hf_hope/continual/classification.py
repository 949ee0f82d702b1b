"""Text classification as language modelling, for class-incremental streams such as CLINC150.

Each example becomes a prompt and an answer, tokenized separately and concatenated:

    prompt = "Utterance: {text}\\nIntent:"     answer = " {label}\\n"    (label: the readable label name)

Training is causal language modelling on prompt + answer with the loss on the answer tokens only (the prompt's
labels are -100); one optimizer step is `batch_size` examples, right-padded to the longest in the batch (padding
is masked out of attention and loss, so it changes nothing). Prediction ranks every candidate label by the
log-likelihood of its answer given the prompt, `log p(answer | prompt)` = the SUM of its tokens' log-probabilities.
The sum, not the per-token mean, because the answers end with a newline, so no answer is a prefix of another
("pto request" vs "pto request status"): the candidates are then disjoint continuations and the sum is the
model's probability of each, whose argmax is the model's most probable label. A mean would favour long names
whose later tokens are nearly certain once the first is chosen.

The candidates are every label of the whole stream (all tasks, seen or not: the task-agnostic class-incremental
setting; 150 intents for CLINC150), so that the accuracy of task j after task i is comparable across i and j.
The prediction is exact without scoring every candidate: `answer_scoring.most_likely_answer` searches the prefix
tree of the answers best first, sharing the prompt's KV cache.
"""

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from datasets import DatasetDict
from torch import nn
from torch.utils.data import Dataset
from transformers import PreTrainedTokenizerBase

from .answer_scoring import AnswerTree, most_likely_answer
from .blocks import Tasks, Tokenizer

IGNORE_INDEX = -100  # label of a position without loss (the prompt, padding)


@dataclass
class ClassificationSettings:
    """How labelled tasks (`text` and integer `label` columns) are turned into text and scored.

    Everything but `search_width` ties a run folder (resume refuses a change).
    """

    label_names: list[str] = field(metadata={"help": "the text of each label id, e.g. hf_hope.data.intent_names()"})
    prompt_template: str = field(default="Utterance: {text}\nIntent:", metadata={"help": "the prompt; has {text}"})
    answer_template: str = field(
        default=" {label}\n", metadata={"help": "the answer the model learns; has {label}; end it with a separator"}
    )
    max_eval_examples: int | None = field(
        default=100,
        metadata={"help": "cap on validation examples per task, taken in turn from each label (None: all)"},
    )
    search_width: int = field(
        default=16,
        metadata={"help": "answer prefixes extended per forward pass when searching the top answer (speed only)"},
    )

    def __post_init__(self) -> None:
        self.label_names = list(self.label_names)
        if not self.label_names or not all(isinstance(name, str) and name for name in self.label_names):
            raise ValueError("label_names must be a non-empty list of non-empty strings (the text of each label id).")
        if "{text}" not in self.prompt_template or "{label}" not in self.answer_template:
            raise ValueError("prompt_template needs a {text} field and answer_template a {label} field.")
        if self.max_eval_examples is not None and self.max_eval_examples < 1:
            raise ValueError(f"max_eval_examples={self.max_eval_examples!r} is invalid: use None or an int >= 1.")
        if self.search_width < 1:
            raise ValueError(f"search_width={self.search_width!r} is invalid: it must be >= 1.")

    def identity(self) -> dict[str, Any]:
        """The settings that change the results (what a run folder is tied to)."""
        values = asdict(self)
        del values["search_width"]
        return values


@dataclass(frozen=True)
class LabelledExample:
    prompt_ids: list[int]
    answer_ids: list[int]
    label: int


def encode(text: str, tokenizer: Tokenizer) -> list[int]:
    """The token ids of `text` without special tokens (a `transformers` tokenizer or a callable)."""
    if isinstance(tokenizer, PreTrainedTokenizerBase):
        return tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    return list(tokenizer(text))


def answer_ids(label: int, tokenizer: Tokenizer, settings: ClassificationSettings) -> list[int]:
    """The tokens of the answer that names `label`."""
    if not 0 <= label < len(settings.label_names):
        raise ValueError(f"Label {label} has no name: label_names has {len(settings.label_names)} entries.")
    ids = encode(settings.answer_template.format(label=settings.label_names[label]), tokenizer)
    if not ids:
        raise ValueError(f"The answer of label {label} ({settings.label_names[label]!r}) tokenizes to nothing.")
    return ids


def task_examples(
    task: str,
    dataset: DatasetDict,
    split: str,
    tokenizer: Tokenizer,
    settings: ClassificationSettings,
    max_examples: int | None = None,
) -> list[LabelledExample]:
    """The tokenized examples of one split of one task; a clear error if it is missing, malformed or empty.

    With `max_examples`, the examples are taken in turn from each label (first of every label, then second, ...)
    in the split's order, so that a capped evaluation covers every label evenly.
    """
    if split not in dataset:
        raise ValueError(f"Task {task!r} has no {split!r} split (it has {sorted(dataset)}).")
    columns = dataset[split].column_names
    if not {"text", "label"} <= set(columns):
        raise ValueError(f"Task {task!r}: the {split!r} split needs 'text' and 'label' columns (it has {columns}).")
    texts, labels = dataset[split]["text"], dataset[split]["label"]
    if not texts:
        raise ValueError(f"Task {task!r}: the {split!r} split has no examples; every task needs some in each split.")
    order = list(range(len(texts)))
    if max_examples is not None:
        order = sorted(order, key=_rank_within_label(labels).__getitem__)[:max_examples]  # stable sort
    answers = {label: answer_ids(label, tokenizer, settings) for label in set(labels)}
    return [
        LabelledExample(
            encode(settings.prompt_template.format(text=texts[i]), tokenizer), answers[labels[i]], labels[i]
        )
        for i in order
    ]


def _rank_within_label(labels: Sequence[int]) -> list[int]:
    """For each position, how many earlier positions have the same label."""
    counts: dict[int, int] = {}
    ranks = []
    for label in labels:
        ranks.append(counts.get(label, 0))
        counts[label] = ranks[-1] + 1
    return ranks


class AnswerOnlyDataset(Dataset):
    """Examples as causal-LM sequences prompt + answer whose labels are -100 on the prompt."""

    def __init__(self, examples: Sequence[LabelledExample]) -> None:
        self.examples = list(examples)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        example = self.examples[index]
        return {
            "input_ids": example.prompt_ids + example.answer_ids,
            "labels": [IGNORE_INDEX] * len(example.prompt_ids) + example.answer_ids,
        }


def pad_batch(features: Sequence[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
    """Right-pad `input_ids` (with 0, masked out by `attention_mask`) and `labels` (with -100) to the longest."""
    longest = max(len(feature["input_ids"]) for feature in features)
    batch = {"input_ids": [], "attention_mask": [], "labels": []}
    for feature in features:
        padding = longest - len(feature["input_ids"])
        batch["input_ids"].append(feature["input_ids"] + [0] * padding)
        batch["attention_mask"].append([1] * len(feature["input_ids"]) + [0] * padding)
        batch["labels"].append(feature["labels"] + [IGNORE_INDEX] * padding)
    return {name: torch.tensor(values, dtype=torch.long) for name, values in batch.items()}


class ClassificationStream:
    """The tasks of a labelled stream, tokenized: training datasets, and accuracy over all the stream's labels."""

    metric = "accuracy"
    higher_is_better = True
    collator = staticmethod(pad_batch)

    def __init__(self, tasks: Tasks, tokenizer: Tokenizer, settings: ClassificationSettings, batch_size: int) -> None:
        self.train = [task_examples(name, data, "train", tokenizer, settings) for name, data in tasks]
        for (name, _), examples in zip(tasks, self.train, strict=True):
            if len(examples) < batch_size:
                raise ValueError(
                    f"Task {name!r} has {len(examples)} training examples, fewer than one batch of {batch_size}. "
                    "Lower batch_size or give it more examples."
                )
        self.validation = [
            task_examples(name, data, "validation", tokenizer, settings, settings.max_eval_examples)
            for name, data in tasks
        ]
        self.labels = sorted({example.label for examples in self.train + self.validation for example in examples})
        self.answers = [answer_ids(label, tokenizer, settings) for label in self.labels]
        self.tree = AnswerTree(self.answers, [settings.label_names[label] for label in self.labels])
        self.search_width = settings.search_width

    def train_dataset(self, indices: Sequence[int]) -> Dataset:
        return AnswerOnlyDataset([example for index in indices for example in self.train[index]])

    def budget(self, steps: int, batch_size: int) -> dict[str, int]:
        return {"train_examples": steps * batch_size}

    def evaluate(self, model: nn.Module, device: torch.device | str) -> list[float]:
        """The accuracy on each task's validation examples, predicting among all the stream's labels."""
        return [self.evaluate_task(model, index, device) for index in range(len(self.validation))]

    def evaluate_task(self, model: nn.Module, index: int, device: torch.device | str) -> float:
        """The accuracy on the validation examples of task `index`, predicting among all the stream's labels."""
        return accuracy(model, self.validation[index], self.labels, self.tree, self.search_width, device)


def accuracy(
    model: nn.Module,
    examples: Sequence[LabelledExample],
    labels: Sequence[int],
    tree: AnswerTree,
    search_width: int,
    device: torch.device | str,
) -> float:
    """The share of `examples` whose most likely answer (among `tree.answers`, naming `labels`) is their label."""
    was_training = model.training
    model.eval()
    try:
        correct = 0
        for example in examples:
            best = most_likely_answer(model, example.prompt_ids, tree, search_width, device)
            correct += labels[best] == example.label
    finally:
        model.train(was_training)
    return correct / len(examples)

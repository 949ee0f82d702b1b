"""The user's own tasks for `hf-hope continual --tasks`: one file or folder per task, in stream order.

`load_tasks(paths)` reads each path as one task, named after its file stem (or folder name):

- `.txt`: one document per block of text between blank lines (paragraphs; in code, the blank-line separated
  functions and classes). Not the whole file as one document, because the validation split holds out whole
  documents, so that no validation text is seen in training: a one-document task could not be split without
  cutting text mid-way. Training joins the documents again (EOS-separated) into fixed-length blocks, so the cut
  costs little context. A `.txt` file has no columns (`text_column` does not apply) and no labels.
- `.jsonl` / `.json`, `.csv`, `.parquet`: one document per row, read with `datasets.load_dataset`.
- a folder written by `datasets.save_to_disk` (a `Dataset`, or a `DatasetDict` with a `train` split), read with
  `datasets.load_from_disk`.

Only `text_column` (renamed to `text`) and, when given, `label_column` are kept. Labels (strings or ints) become
int ids into `label_names`, the sorted union (as strings) of every task's training labels, so that one id means
one label across the stream, as `ClassificationSettings(label_names=...)` needs. The validation split is the
source's own `validation` split when it has one, else a `seed`ed hold-out of `validation_fraction` of the
documents (at least one in each split). Every check runs here, before a run writes anything (only `datasets`
caches the files it parses, in its own cache), and an error names the file.
"""

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import ClassLabel, Dataset, DatasetDict, concatenate_datasets, load_dataset, load_from_disk
from datasets.exceptions import DatasetGenerationError

BUILDERS = {".txt": None, ".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
BLANK_LINES = re.compile(r"\n\s*\n")


@dataclass(frozen=True)
class UserTasks:
    """The tasks in stream order, as `run_continual` takes them, and the text of each label id (None: unlabelled)."""

    tasks: list[tuple[str, DatasetDict]]
    label_names: list[str] | None


def load_tasks(
    paths: Sequence[str | Path],
    *,
    text_column: str = "text",
    label_column: str | None = None,
    validation_fraction: float = 0.1,
    seed: int = 0,
) -> UserTasks:
    """Read one task per path (see the module docstring), check them all and split each into train and validation."""
    paths = [Path(path) for path in paths]
    if len(paths) < 2:
        raise ValueError(f"Give at least two tasks (files or folders), got {[str(path) for path in paths]}.")
    if not 0 < validation_fraction < 1:
        raise ValueError(f"validation_fraction={validation_fraction!r} is invalid: it must be between 0 and 1.")
    if label_column is not None and label_column == text_column:
        raise ValueError(f"text_column and label_column are both {text_column!r}: give two different columns.")
    names = _task_names(paths)
    for path in paths:
        _check_path(path, label_column)
    tasks = [_task(path, text_column, label_column, validation_fraction, seed) for path in paths]
    if label_column is None:
        return UserTasks([(name, DatasetDict(task)) for name, task in zip(names, tasks, strict=True)], None)
    label_names = sorted({label for task in tasks for label in task["train"]["label"]})
    labelled = [_with_label_ids(path, task, label_names) for path, task in zip(paths, tasks, strict=True)]
    return UserTasks(list(zip(names, labelled, strict=True)), label_names)


def load_retention_text(path: str | Path, text_column: str = "text", label_column: str | None = None) -> DatasetDict:
    """A general text (or labelled data) to measure retention on, from a file or folder of a format `load_tasks` reads.

    Every document of it is scored (train and validation splits alike: it is never trained on), as one `validation`
    split with a `text` column. With `label_column` (not for a .txt file) it also has a `label` column: each label
    (a string or an int) as an id into the sorted union of the file's labels as strings, a `datasets.ClassLabel`,
    so that the label names travel with the data and the retention set is scored by accuracy among them.
    """
    path = Path(path)
    if label_column is not None and label_column == text_column:
        raise ValueError(f"text_column and label_column are both {text_column!r}: give two different columns.")
    _check_path(path, label_column)
    if path.suffix.lower() == ".txt" and path.is_file():
        text_column = "text"
    splits = [_columns(path, split, dataset, text_column, label_column) for split, dataset in _read(path).items()]
    data = concatenate_datasets(splits)
    return DatasetDict(validation=data if label_column is None else _with_class_label(data))


def _task_names(paths: list[Path]) -> list[str]:
    """Each task's name (the file stem, or the folder name); two paths of one name are an error."""
    names = [path.name if path.is_dir() else path.stem for path in paths]
    for index, name in enumerate(names):
        if name in names[:index]:
            raise ValueError(
                f"{paths[names.index(name)]} and {paths[index]} would both be task {name!r}: task names (file "
                "stems) must be distinct; rename one."
            )
    return names


def _check_path(path: Path, label_column: str | None) -> None:
    """Fail fast, before reading any task, on a missing file, an unknown format or labels asked of a .txt file."""
    if not path.exists():
        raise FileNotFoundError(f"Task file {path} does not exist.")
    suffix = path.suffix.lower()
    if path.is_file() and suffix not in BUILDERS:
        raise ValueError(
            f"Task file {path} has an unknown format: use a file ending in {', '.join(BUILDERS)} or a folder "
            "written by datasets' save_to_disk."
        )
    if path.is_file() and suffix == ".txt" and label_column is not None:
        raise ValueError(f"Task file {path} is a .txt file, which has no label column {label_column!r}.")


def _task(
    path: Path, text_column: str, label_column: str | None, validation_fraction: float, seed: int
) -> dict[str, Dataset]:
    """The task's train and validation splits, with a `text` and (labels as strings) a `label` column."""
    if path.suffix.lower() == ".txt" and path.is_file():
        text_column = "text"  # the documents of a .txt file; it has no columns
    splits = {
        split: _columns(path, split, dataset, text_column, label_column) for split, dataset in _read(path).items()
    }
    _check_size(path, splits)
    return splits if "validation" in splits else _hold_out(splits["train"], validation_fraction, seed)


def _read(path: Path) -> dict[str, Dataset]:
    """The source's `train` (and own `validation`) split, all columns."""
    if path.is_dir():
        return _read_folder(path)
    builder = BUILDERS[path.suffix.lower()]
    if builder is None:
        blocks = [block.strip("\n") for block in BLANK_LINES.split(path.read_text())]
        return {"train": Dataset.from_dict({"text": [block for block in blocks if block.strip()]})}
    try:
        return {"train": load_dataset(builder, data_files=str(path), split="train")}
    except DatasetGenerationError as error:
        raise ValueError(f"Task file {path} could not be read as {builder}: {error.__cause__ or error}") from None


def _read_folder(path: Path) -> dict[str, Dataset]:
    try:
        source = load_from_disk(str(path))
    except FileNotFoundError:
        raise ValueError(
            f"Task folder {path} was not written by datasets' save_to_disk (a Dataset or a DatasetDict)."
        ) from None
    if isinstance(source, Dataset):
        return {"train": source}
    if "train" not in source:
        raise ValueError(f"Task folder {path} has no train split (its splits: {', '.join(source)}).")
    return {split: source[split] for split in ("train", "validation") if split in source}


def _columns(path: Path, split: str, dataset: Dataset, text_column: str, label_column: str | None) -> Dataset:
    """`dataset`'s text column as `text` (every text a non-empty string) and its labels as strings in `label`."""
    for row, text in enumerate(_column(path, split, dataset, text_column)):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"Task {path}: row {row} of the {split} split has an empty text ({text!r}).")
    kept = dataset.select_columns([text_column])
    if text_column != "text":
        kept = kept.rename_column(text_column, "text")
    if label_column is None:
        return kept
    return kept.add_column("label", _labels(path, split, _column(path, split, dataset, label_column)))


def _column(path: Path, split: str, dataset: Dataset, column: str) -> list[Any]:
    if column not in dataset.column_names:
        raise ValueError(
            f"Task {path} has no column {column!r} in its {split} split; its columns are "
            f"{', '.join(dataset.column_names)}."
        )
    return dataset[column]


def _labels(path: Path, split: str, labels: list[Any]) -> list[str]:
    """Each label as a string; a label must be a string or an int."""
    for row, label in enumerate(labels):
        if isinstance(label, bool) or not isinstance(label, str | int):
            raise ValueError(f"Task {path}: row {row} of the {split} split has label {label!r}: use strings or ints.")
    return [str(label) for label in labels]


def _check_size(path: Path, splits: dict[str, Dataset]) -> None:
    """A task needs at least 2 documents: one to train on and one to validate with."""
    if "validation" in splits:
        empty = [split for split, dataset in splits.items() if dataset.num_rows == 0]
        if empty:
            raise ValueError(f"Task {path} has no documents in its {' and '.join(empty)} split.")
    elif splits["train"].num_rows < 2:
        raise ValueError(
            f"Task {path} has {splits['train'].num_rows} document(s); a task needs at least 2 (one to train on, one "
            "to validate with)."
        )


def _hold_out(dataset: Dataset, validation_fraction: float, seed: int) -> dict[str, Dataset]:
    """A seeded document-level split: `validation_fraction` of the rows (at least one, never all) to validation."""
    n_validation = min(dataset.num_rows - 1, max(1, round(validation_fraction * dataset.num_rows)))
    order = list(range(dataset.num_rows))
    random.Random(seed).shuffle(order)
    return {
        "train": dataset.select(sorted(order[n_validation:])),
        "validation": dataset.select(sorted(order[:n_validation])),
    }


def _with_label_ids(path: Path, task: dict[str, Dataset], label_names: list[str]) -> DatasetDict:
    """The task with an int `label` column: each label's index in `label_names`."""
    ids = {name: index for index, name in enumerate(label_names)}
    unknown = sorted(set(task["validation"]["label"]) - set(ids))
    if unknown:
        raise ValueError(
            f"Task {path}: validation labels {unknown} are not among the training labels of any task "
            f"({', '.join(label_names)})."
        )
    return DatasetDict(
        {
            split: dataset.remove_columns("label").add_column("label", [ids[label] for label in dataset["label"]])
            for split, dataset in task.items()
        }
    )


def _with_class_label(dataset: Dataset) -> Dataset:
    """`dataset` with its string `label` column as a ClassLabel of the sorted labels (each row's id into them)."""
    names = sorted(set(dataset["label"]))
    ids = {name: index for index, name in enumerate(names)}
    labels = [ids[label] for label in dataset["label"]]
    return dataset.remove_columns("label").add_column("label", labels, feature=ClassLabel(names=names))

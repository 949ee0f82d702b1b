"""The one atomic-write helper: a reader sees the old file or folder or the new one, never a mix or a leftover."""

import pytest

from hf_hope.conversion.atomic_write import atomic_file, write_folder, write_text_atomically


class Interrupted(Exception):
    pass


def test_a_file_appears_whole_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "state.json"
    write_text_atomically(path, "old")
    write_text_atomically(path, "new")
    assert path.read_text() == "new"
    assert [entry.name for entry in tmp_path.iterdir()] == ["state.json"]


def test_an_interrupted_file_write_keeps_the_old_content(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"old")
    with pytest.raises(Interrupted), atomic_file(path) as temporary:
        temporary.write_bytes(b"half")
        raise Interrupted
    assert path.read_bytes() == b"old"
    assert [entry.name for entry in tmp_path.iterdir()] == ["weights.bin"]


def test_a_writer_that_writes_nothing_leaves_the_old_file(tmp_path):
    path = tmp_path / "card.md"
    path.write_text("old")
    with pytest.raises(FileNotFoundError), atomic_file(path):
        pass  # nothing written: the rename finds no file and the old one stays
    assert path.read_text() == "old"


def test_a_folder_is_replaced_whole_only_when_asked(tmp_path):
    folder = tmp_path / "model"

    def write(version: str):
        return lambda staging: (staging / "config.json").write_text(version)

    write_folder(folder, write("1"))
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        write_folder(folder, write("2"))
    write_folder(folder, write("2"), overwrite=True)
    assert (folder / "config.json").read_text() == "2"
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["model"]


def test_an_interrupted_folder_write_keeps_the_old_folder(tmp_path):
    folder = tmp_path / "model"
    write_folder(folder, lambda staging: (staging / "config.json").write_text("old"))

    def interrupted(staging):
        (staging / "config.json").write_text("half")
        raise Interrupted

    with pytest.raises(Interrupted):
        write_folder(folder, interrupted, overwrite=True)
    assert (folder / "config.json").read_text() == "old"
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["model"]


def test_a_file_in_place_of_the_folder_is_refused(tmp_path):
    (tmp_path / "model").write_text("not a folder")
    with pytest.raises(FileExistsError, match="is not a folder"):
        write_folder(tmp_path / "model", lambda staging: None)

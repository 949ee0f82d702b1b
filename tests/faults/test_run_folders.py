"""Run folders and data caches: a live owner's lock stops a second process before anything is read or written, a dead
owner's lock is taken over, and task names that look like paths stay inside the run folder.
"""

import json
import os
import socket
import subprocess
import sys

import pytest

from hf_hope.cli import main
from hf_hope.continual import ContinualSettings, run_continual, run_experiment
from hf_hope.conversion.folder_lock import LOCK_NAME, FolderInUseError, folder_lock
from hf_hope.data.prepare import DataPreparationSettings, domains_dir

from .fault_helpers import tiny_llama


def dead_pid() -> int:
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    return finished.pid


def continual_settings() -> ContinualSettings:
    return ContinualSettings(strategy="full", steps_per_task=1, batch_size=2, block_size=16, use_cpu=True)


def run_one(tasks, run_dir):
    run_continual(tiny_llama, tasks, continual_settings(), run_dir, tokenizer=list)


def run_several(tasks, run_dir):
    strategies = {"full": continual_settings()}
    run_experiment(tiny_llama, tasks, strategies, run_dir, tokenizer=list, base_model="tiny", data_description="")


@pytest.mark.parametrize("run", [run_one, run_several], ids=["run_continual", "run_experiment"])
def test_a_run_folder_in_use_by_a_live_process_is_refused_before_the_tasks_are_read(tmp_path, run):
    lock = tmp_path / LOCK_NAME
    lock.write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname()}))
    tasks = {"a": None, "b": None}  # not datasets: reading them would fail, so the lock must be checked first
    with pytest.raises(FolderInUseError, match=rf"{tmp_path} is in use by process {os.getppid()}.*lock file"):
        run(tasks, tmp_path)
    assert json.loads(lock.read_text())["pid"] == os.getppid()  # the other process's lock stays
    assert sorted(path.name for path in tmp_path.iterdir()) == [LOCK_NAME]


@pytest.mark.parametrize("run", [run_one, run_several], ids=["run_continual", "run_experiment"])
def test_a_run_launched_as_several_processes_is_refused_before_anything_is_written(tmp_path, monkeypatch, run):
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun and accelerate launch set it in each process
    with pytest.raises(ValueError, match="one process, and this one was launched as one of 2.*LevelClockCallback"):
        run({"a": None, "b": None}, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_lock_left_by_a_dead_process_is_taken_over_and_released(tmp_path, capsys):
    pid = dead_pid()
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": socket.gethostname()}))
    with folder_lock(tmp_path):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
        with pytest.raises(FolderInUseError, match=f"in use by process {os.getpid()}"), folder_lock(tmp_path):
            pass
    assert f"the process that held it ({{'pid': {pid}" in capsys.readouterr().err
    assert not (tmp_path / LOCK_NAME).exists()


def test_prepare_data_on_a_cache_another_process_is_building_exits_2(tmp_path, capsys):
    settings = DataPreparationSettings(benchmark="domains", excerpts=True, cache_dir=str(tmp_path))
    folder = domains_dir(settings)
    folder.parent.mkdir(parents=True)
    lock = folder.parent / f".{folder.name}.lock"
    lock.write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname()}))
    with pytest.raises(SystemExit) as raised:
        main(["prepare-data", "--benchmark", "domains", "--excerpts", "--cache_dir", str(tmp_path)])
    error = capsys.readouterr().err
    assert raised.value.code == 2 and error.count("\n") == 1, error
    assert error.startswith("hf-hope prepare-data: error: ") and f"in use by process {os.getppid()}" in error
    assert not folder.exists()


def test_task_names_that_look_like_paths_never_write_outside_the_run_folder(tmp_path):
    from hf_hope.data import load_domains

    domains = load_domains(excerpts=True, cache_dir=str(tmp_path / "data"))
    code, news = domains["code"], domains["news"]
    hostile = {"../escaped": code, str(tmp_path / "absolute"): news}
    settings = ContinualSettings(
        strategy="full", steps_per_task=1, batch_size=2, block_size=16, max_eval_blocks=2, use_cpu=True
    )
    results = run_continual(
        tiny_llama, hostile, settings, tmp_path / "run" / "inner", tokenizer=lambda text: [3] * len(text)
    )
    assert results["tasks"] == list(hostile)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["data", "run"]
    assert [path.name for path in (tmp_path / "run").iterdir()] == ["inner"]

"""The run folder of a continual fine-tuning run: progress saved atomically after each task, results at the end.

run_dir/progress.json   settings, task names, the rows of R finished so far, initial scores, timings
run_dir/task_<i>/       the model (or LoRA adapter) after training task i, for resuming
run_dir/results.json    everything in progress.json plus the full matrix and its summary
run_dir/matrix.csv      R as a table: one row per trained task, one column per evaluated task
"""

import csv
import io
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..conversion.atomic_write import recover_swapped_folder, write_folder, write_text_atomically

FORMAT_VERSION = 1
PROGRESS_NAME = "progress.json"
RESULTS_NAME = "results.json"
MATRIX_NAME = "matrix.csv"


def refuse_several_processes() -> None:
    """A continual run is one process: launched as several (torchrun, accelerate launch) each would train and
    write the same run folder, so it is refused before anything is read or written."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1:
        raise ValueError(
            f"A continual run is one process, and this one was launched as one of {world_size} (WORLD_SIZE, set by "
            "torchrun or accelerate launch). Run `hf-hope continual` (or run_continual) in one process; to train a "
            "retrofitted model on several GPUs, use Trainer with LevelClockCallback (README: several GPUs)."
        )


def task_dir(run_dir: Path, index: int) -> Path:
    return run_dir / f"task_{index}"


def write_json(path: Path, values: dict[str, Any]) -> None:
    write_text_atomically(path, json.dumps(values, indent=2) + "\n")


def start_or_resume(
    run_dir: Path,
    settings: dict[str, Any],
    task_names: list[str],
    defaults: Mapping[str, Any] | None = None,
    ignored: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The saved progress of `run_dir` (a fresh one if there is none); refuses a folder of another run."""
    run_dir.mkdir(parents=True, exist_ok=True)
    progress = saved_progress(run_dir, settings, task_names, defaults, ignored)
    if progress is None:
        return {"format": FORMAT_VERSION, "settings": settings, "tasks": task_names, "rows": [], "timings": []}
    return progress


def saved_progress(
    run_dir: Path,
    settings: dict[str, Any],
    task_names: list[str],
    defaults: Mapping[str, Any] | None = None,
    ignored: tuple[str, ...] = (),
) -> dict[str, Any] | None:
    """The progress saved in `run_dir` (None if none); a ValueError if it is a run of other settings or tasks.

    A setting the saved run does not record counts as its value in `defaults`, so that a run saved before a
    setting was added resumes under that setting's default (which keeps the behaviour of before). Settings whose
    names start with one of `ignored` (another strategy's, which this run does not read) are not compared, so that
    a changed default of, say, the CMS level type leaves full fine-tuning's saved runs resumable. Cheap (no
    model, no data), so an experiment checks every run's folder before it trains any.
    """
    path = run_dir / PROGRESS_NAME
    if not path.is_file():
        return None
    progress = json.loads(path.read_text())
    saved = {**(defaults or {}), **progress["settings"]}
    differing = sorted(
        key
        for key in set(settings) | set(saved)
        if settings.get(key, "<missing>") != saved.get(key, "<missing>") and not key.startswith(ignored)
    )
    if differing:
        changes = ", ".join(f"{key}: {saved.get(key)!r} -> {settings.get(key)!r}" for key in differing)
        raise ValueError(
            f"{run_dir} holds a run with other settings ({changes}). Use a new run_dir, or the saved settings to "
            "resume it."
        )
    if progress["tasks"] != task_names:
        raise ValueError(f"{run_dir} holds a run over tasks {progress['tasks']}, not {task_names}. Use a new run_dir.")
    return progress


def tidy_run_folder(run_dir: Path) -> None:
    """Undo what a killed run left behind: a task folder caught mid-swap comes back, staging folders go.

    Called with the run folder's lock held, so no other process is writing into it.
    """
    for previous in run_dir.glob(".task_*.previous-*"):
        recover_swapped_folder(run_dir / previous.name[1:].split(".previous-")[0])
    for staging in run_dir.glob(".task_*.partial-*"):
        shutil.rmtree(staging, ignore_errors=True)


def save_task(run_dir: Path, index: int, save: Any) -> None:
    """Call `save(folder)` into a temporary folder and rename it to `task_<index>` (replacing a stale one)."""
    write_folder(task_dir(run_dir, index), save, overwrite=True)


def matrix_csv(matrix: list[list[float]], task_names: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["after_task", *task_names])
    for name, row in zip(task_names, matrix, strict=True):
        writer.writerow([name, *(repr(float(value)) for value in row)])
    return buffer.getvalue()

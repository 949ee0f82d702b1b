"""`hf-hope continual` killed (as under `kill -9`) at any point, then rerun, gives the uninterrupted results bitwise."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ..helpers import QUICK_TINY
from .fault_helpers import REPOSITORY

# `hf-hope continual` on the tiny model, dying (as under kill -9) at the named point of its first run.
CONTINUAL_CHILD = """
import os, sys
from hf_hope.cli import main
crash, argv = sys.argv[1], sys.argv[2:]
def dying(original, at):
    calls = [0]
    def wrapper(*arguments, **keywords):
        calls[0] += 1
        if calls[0] == at:
            os._exit(9)
        return original(*arguments, **keywords)
    return wrapper
if crash == "mid-task":  # the second task's second step
    import transformers
    transformers.Trainer.training_step = dying(transformers.Trainer.training_step, 4)
elif crash == "mid-evaluation":  # the evaluation after the second task
    from hf_hope.continual import blocks
    blocks.LanguageModellingStream.evaluate = dying(blocks.LanguageModellingStream.evaluate, 3)
elif crash == "saving a task":  # the second task's model, written but not yet renamed into place
    from hf_hope.conversion import atomic_write
    atomic_write.move_into_place = dying(atomic_write.move_into_place, 2)
elif crash == "writing results":
    from hf_hope.continual import experiment
    experiment.write_json = dying(experiment.write_json, 1)
main(argv)
if crash != "none":
    raise SystemExit("the run finished without reaching the crash point " + crash)
"""


def continual(crash: str, argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", CONTINUAL_CHILD, crash, *argv],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=600,
    )


def run_results(folder: Path) -> dict:
    results = json.loads((folder / "results.json").read_text())
    return {name: (run["initial"], run["matrix"]) for name, run in results["runs"].items()}


@pytest.fixture(scope="module")
def uninterrupted(tiny_dir, tmp_path_factory):
    """The results of an uninterrupted run, and the flags that made it (less the output folder)."""
    cache = tmp_path_factory.mktemp("data")
    flags = ["continual", "--model", str(tiny_dir), "--data_cache_dir", str(cache), *QUICK_TINY, "--strategies", "full"]
    out = tmp_path_factory.mktemp("uninterrupted")
    finished = continual("none", [*flags, "--output_dir", str(out)])
    assert finished.returncode == 0, finished.stderr[-3000:]
    return run_results(out), flags


@pytest.mark.parametrize("crash", ["mid-task", "mid-evaluation", "saving a task", "writing results"])
def test_hf_hope_continual_killed_then_rerun_gives_the_uninterrupted_results_bitwise(tmp_path, uninterrupted, crash):
    reference, flags = uninterrupted
    argv = [*flags, "--output_dir", str(tmp_path / "run")]
    killed_run = continual(crash, argv)
    assert killed_run.returncode == 9, killed_run.stderr[-3000:]
    assert not (tmp_path / "run" / "results.json").exists()
    rerun = continual("none", argv)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert run_results(tmp_path / "run") == reference
    leftovers = [path.name for path in (tmp_path / "run").rglob(".*")]
    assert leftovers == [], leftovers  # no lock, staging or previous folder left behind

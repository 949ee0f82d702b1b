"""`LevelClockCallback` under real DDP: two gloo processes on CPU, launched with torchrun (`tests/clock/ddp_worker.py`).

The ranks must end bitwise identical, match one process trained on the same global batches, and update the
period-4 level only at steps 4 and 8.
"""

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist

from .ddp_worker import GLOBAL_BATCH, MAX_STEPS, initial_weights, run_training

REPO_ROOT = Path(__file__).resolve().parents[2]
WORLD_SIZE = 2
SLOW_PERIOD = 4  # tiny_config's second CMS level
TIMEOUT_S = 300

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="needs torch.distributed with the gloo backend",
)


def launch_ranks(output_dir: Path) -> list[dict[str, Any]]:
    """Run `tests.clock.ddp_worker` on `WORLD_SIZE` CPU processes and load what each rank saved."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={WORLD_SIZE}",
        "-m",
        "tests.clock.ddp_worker",
        str(output_dir),
    ]
    python_path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": python_path}
    log_path = output_dir / "torchrun.log"
    with (
        log_path.open("w") as log,
        subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=log) as torchrun,
    ):
        try:
            torchrun.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            # SIGTERM lets torchrun stop its workers, which run in sessions of their own; SIGKILL would orphan them.
            torchrun.terminate()
            try:
                torchrun.wait(timeout=60)  # torchrun gives its workers 30 s before it kills them
            except subprocess.TimeoutExpired:
                torchrun.kill()
            pytest.fail(f"torchrun did not finish within {TIMEOUT_S} s:\n{log_path.read_text()[-4000:]}")
    if torchrun.returncode != 0:
        pytest.fail(f"torchrun failed with exit status {torchrun.returncode}:\n{log_path.read_text()[-4000:]}")
    return [torch.load(output_dir / f"rank{rank}.pt") for rank in range(WORLD_SIZE)]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """Each rank's final weights, the dataset indices it read and the levels that changed at each step."""
    return launch_ranks(tmp_path_factory.mktemp("ddp"))


@pytest.fixture(scope="module")
def single_process(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The same training in this process, without DDP, on batches of `GLOBAL_BATCH`."""
    return run_training(tmp_path_factory.mktemp("single"), world_size=1)


def test_each_global_batch_is_split_across_the_ranks(ranks, single_process):
    local_batch = GLOBAL_BATCH // WORLD_SIZE
    for step in range(MAX_STEPS):
        ddp_batch = [index for rank in ranks for index in rank["read"][step * local_batch : (step + 1) * local_batch]]
        assert ddp_batch == single_process["read"][step * GLOBAL_BATCH : (step + 1) * GLOBAL_BATCH], step


def test_ranks_end_with_bitwise_identical_weights(ranks):
    first, *others = ranks
    for other in others:
        assert first["weights"].keys() == other["weights"].keys()
        for name, weight in first["weights"].items():
            assert torch.equal(weight, other["weights"][name]), name


def test_ddp_matches_one_process_on_the_same_global_batches(ranks, single_process):
    # Not bitwise: each rank's loss covers half the batch and the all-reduce adds the two halves' gradients,
    # a different order of float64 sums than one process's; the gap measured is about 1e-16. The tolerance must
    # stay tight: summing the slow level's gradients instead of averaging them moves the weights by only ~2e-6.
    torch.testing.assert_close(ranks[0]["weights"], single_process["weights"], rtol=1e-12, atol=1e-12)


def test_slow_level_updates_only_at_its_period(ranks):
    expected = [{1: True, SLOW_PERIOD: step % SLOW_PERIOD == 0} for step in range(1, MAX_STEPS + 1)]
    for rank in ranks:
        assert rank["changed"] == expected
    start, final = initial_weights(), ranks[0]["weights"]
    slow = [name for name in start if ".cms.levels.1." in name]
    assert slow
    for name in slow:
        assert not torch.equal(final[name], start[name]), name

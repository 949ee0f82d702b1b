"""`LevelClockCallback` under real DDP: two gloo processes on CPU, launched with torchrun (`tests/clock/ddp_worker.py`).

The ranks must end bitwise identical, match one process trained on the same global batches, and update the
period-4 level only at steps 4 and 8.
"""

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist

from .ddp_worker import GLOBAL_BATCH, MAX_STEPS, initial_weights, run_training
from .torchrun import run_torchrun

WORLD_SIZE = 2
SLOW_PERIOD = 4  # tiny_config's second CMS level

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="needs torch.distributed with the gloo backend",
)


def launch_ranks(output_dir: Path) -> list[dict[str, Any]]:
    """Run `tests.clock.ddp_worker` on `WORLD_SIZE` CPU processes and load what each rank saved."""
    run_torchrun("tests.clock.ddp_worker", output_dir, WORLD_SIZE)
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

"""The level clock under real FSDP2: two gloo processes on CPU with `fully_shard`, launched with torchrun.

`tests/clock/fsdp_worker.py` trains a retrofitted tiny Llama (uninterrupted, and interrupted mid-period then
resumed from files) and a tiny HOPE model with `ClockedOptimizer`; here the same runs go through one process
without sharding. The sharded runs must match them in float64, update the slow level only at its period, and
resume exactly. accelerate and `Trainer` enable FSDP only on accelerators, so their FSDP2 path is not run here.
"""

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist

from . import fsdp_worker
from .torchrun import run_torchrun

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="needs torch.distributed with the gloo backend",
)
# Each rank's loss covers half the batch and the reduce-scatter averages the halves: another order of float64
# sums than one process's, so not bitwise. A shard accumulated into the wrong place, or a gradient handed back on
# the wrong step, moves the weights by more than 1e-5.
TOLERANCE = {"rtol": 1e-12, "atol": 1e-12}


@pytest.fixture(scope="module")
def sharded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    output_dir = tmp_path_factory.mktemp("fsdp")
    run_torchrun("tests.clock.fsdp_worker", output_dir, world_size=2)
    return torch.load(output_dir / "result.pt")


@pytest.fixture(scope="module")
def single_process() -> dict[str, Any]:
    return {
        "retrofit": fsdp_worker.uninterrupted(fsdp_worker.retrofitted_llama),
        "hope": fsdp_worker.uninterrupted(fsdp_worker.tiny_hope),
        "units": fsdp_worker.uninterrupted(fsdp_worker.llama_with_unit_copies),
    }


@pytest.mark.parametrize("model", ["retrofit", "hope", "units"])
def test_the_sharded_run_matches_one_process_on_the_same_global_batches(sharded, single_process, model):
    assert sharded[model]["sharded"] and not single_process[model]["sharded"]
    torch.testing.assert_close(sharded[model]["weights"], single_process[model]["weights"], **TOLERANCE)


@pytest.mark.parametrize("model", ["retrofit", "hope", "units"])
def test_the_slow_level_changes_only_at_its_period(sharded, model):
    expected = [
        {1: True, fsdp_worker.SLOW_PERIOD: step % fsdp_worker.SLOW_PERIOD == 0}
        for step in range(1, fsdp_worker.MAX_STEPS + 1)
    ]
    assert sharded[model]["changed"] == expected


def test_the_clock_follows_parameters_sharded_after_it_was_built(sharded):
    late = sharded["sharded_after_the_clock"]
    assert late["sharded"]
    assert late["changed"] == sharded["retrofit"]["changed"]
    torch.testing.assert_close(late["weights"], sharded["retrofit"]["weights"], rtol=0, atol=0)


def test_a_run_interrupted_mid_period_resumes_exactly(sharded):
    assert sharded["resumed"]["clock_step"] == fsdp_worker.MAX_STEPS
    torch.testing.assert_close(sharded["resumed"]["weights"], sharded["retrofit"]["weights"], rtol=0, atol=0)


def test_adamw_checkpointed_with_torch_distributed_state_dicts_resumes_exactly(sharded):
    adamw = sharded["adamw"]
    torch.testing.assert_close(adamw["resumed"], adamw["uninterrupted"], rtol=0, atol=0)


def test_a_clock_state_saved_by_the_sharded_run_resumes_in_one_process(sharded):
    """The state file holds whole tensors: the sharded run's file resumes a single-process run exactly."""
    resumed = fsdp_worker.resume_from(Path(sharded["resume_folder"]))
    torch.testing.assert_close(resumed["weights"], sharded["retrofit"]["weights"], **TOLERANCE)

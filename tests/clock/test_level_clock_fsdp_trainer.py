"""`Trainer` with FSDP2 (`fsdp_config={"version": 2}`) and `LevelClockCallback`, on GPUs.

accelerate enables FSDP only on accelerators (on CPU it runs DDP), so this test needs CUDA; on CPU the clock under
FSDP2 is tested with `fully_shard` itself (`test_level_clock_fsdp.py`), which also compares the sharded weights
with one process's. The sharded run (two ranks where two GPUs are present, else one) must update the slow level
only at its period and resume exactly from its mid-period checkpoint.
"""

from typing import Any

import pytest
import torch

from . import fsdp_trainer_worker
from .ddp_worker import MAX_STEPS
from .fsdp_worker import SLOW_PERIOD
from .torchrun import run_torchrun

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="accelerate runs FSDP only on accelerators")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    output_dir = tmp_path_factory.mktemp("fsdp_trainer")
    world_size = min(2, torch.cuda.device_count())
    for mode in ("fsdp", "resume"):
        run_torchrun("tests.clock.fsdp_trainer_worker", output_dir, world_size, mode, gpus=True)
    return {mode: torch.load(output_dir / f"{mode}.pt") for mode in ("fsdp", "resume")}


def test_the_slow_level_of_the_sharded_model_changes_only_at_its_period(runs):
    assert runs["fsdp"]["sharded"]
    expected = [{1: True, SLOW_PERIOD: step % SLOW_PERIOD == 0} for step in range(1, MAX_STEPS + 1)]
    assert runs["fsdp"]["changed"] == expected


def test_a_run_resumed_from_its_mid_period_checkpoint_matches_the_uninterrupted_one(runs):
    assert fsdp_trainer_worker.SAVE_AT % SLOW_PERIOD != 0
    torch.testing.assert_close(runs["resume"]["weights"], runs["fsdp"]["weights"], rtol=1e-6, atol=1e-7)

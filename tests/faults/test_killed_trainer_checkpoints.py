"""A `Trainer` with `LevelClockCallback` killed (as under `kill -9`) while it writes a checkpoint, then resumed.

The clock's file is written into a checkpoint before the Trainer's own files, so a checkpoint with a
`trainer_state.json` always holds it, and one without is a save the Trainer did not finish (the Trainer refuses to
resume from it). Resuming from the newest checkpoint that has one gives the uninterrupted run's weights bitwise,
wherever the save was killed, also with `save_total_limit=1`, which deletes the previous checkpoint once the new one
is written.
"""

import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from .fault_helpers import REPOSITORY, assert_same_tensors

MAX_STEPS, SAVE_STEPS = 8, 3  # checkpoints at 3, 6 and 8; the period-4 level's buffer is mid-period at 3 and 6

# Trains the tiny HOPE model, saving every SAVE_STEPS steps and keeping one checkpoint; dies (os._exit, which skips
# every `finally` as kill -9 does) at the named point of the second checkpoint, or resumes from the given folder.
TRAINER_CHILD = f"""
import os, sys
import torch
import transformers
from hf_hope import LevelClockCallback
from hf_hope.conversion import atomic_write
from tests.helpers import RepeatedBatch, tiny_model, training_arguments
output_dir, crash, resume = sys.argv[1], sys.argv[2], sys.argv[3]
def dying(original, at, after=False):
    calls = [0]
    def wrapper(*arguments, **keywords):
        calls[0] += 1
        if calls[0] == at and not after:
            os._exit(9)
        result = original(*arguments, **keywords)
        if calls[0] == at:
            os._exit(9)
        return result
    return wrapper
if crash == "writing the clock":
    atomic_write.save_file = dying(atomic_write.save_file, 2)
elif crash == "after the model":
    transformers.Trainer._save_optimizer_and_scheduler = dying(transformers.Trainer._save_optimizer_and_scheduler, 2)
elif crash == "writing the trainer state":
    transformers.TrainerState.save_to_json = dying(transformers.TrainerState.save_to_json, 2)
elif crash == "after the old checkpoint is deleted":
    transformers.trainer.rotate_checkpoints = dying(transformers.trainer.rotate_checkpoints, 2, after=True)
model = tiny_model().train()
data = RepeatedBatch(torch.randint(3, 97, (8, 12), generator=torch.Generator().manual_seed(0)), repeats=20)
args = training_arguments(output_dir, max_steps={MAX_STEPS})
args.save_strategy, args.save_steps, args.save_total_limit = "steps", {SAVE_STEPS}, 1
trainer = transformers.Trainer(model=model, args=args, train_dataset=data, callbacks=[LevelClockCallback()])
trainer.train(resume_from_checkpoint=None if resume == "none" else resume)
if crash != "none":
    raise SystemExit("the run finished without reaching the crash point " + crash)
trainer.save_model(os.path.join(output_dir, "final"))
"""


def train(output_dir: Path, crash: str = "none", resume: str = "none") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", TRAINER_CHILD, str(output_dir), crash, resume],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=300,
    )


def newest_complete_checkpoint(output_dir: Path) -> Path:
    complete = [folder for folder in output_dir.glob("checkpoint-*") if (folder / "trainer_state.json").is_file()]
    return max(complete, key=lambda folder: int(folder.name.split("-")[1]))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("uninterrupted")
    finished = train(output_dir)
    assert finished.returncode == 0, finished.stderr[-3000:]
    return load_file(output_dir / "final" / "model.safetensors")


@pytest.mark.parametrize(
    ("crash", "resumed_at"),
    [
        ("writing the clock", 3),
        ("after the model", 3),
        ("writing the trainer state", 3),
        ("after the old checkpoint is deleted", 6),
    ],
)
def test_a_trainer_killed_while_checkpointing_resumes_to_the_uninterrupted_weights(
    tmp_path, uninterrupted, crash, resumed_at
):
    killed = train(tmp_path, crash)
    assert killed.returncode == 9, killed.stderr[-3000:]
    checkpoint = newest_complete_checkpoint(tmp_path)
    assert checkpoint.name == f"checkpoint-{resumed_at}"
    assert (checkpoint / "level_clock.safetensors").is_file()
    resumed = train(tmp_path, resume=str(checkpoint))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_tensors(load_file(tmp_path / "final" / "model.safetensors"), uninterrupted)


def test_a_checkpoint_the_trainer_did_not_finish_is_refused_when_resumed(tmp_path):
    killed = train(tmp_path, "after the model")
    assert killed.returncode == 9, killed.stderr[-3000:]
    refused = train(tmp_path, resume=str(tmp_path / "checkpoint-6"))
    assert refused.returncode != 0 and "checkpoint-6/trainer_state.json" in refused.stderr

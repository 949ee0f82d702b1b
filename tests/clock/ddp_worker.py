"""One rank of the DDP level-clock test: `torchrun --nproc_per_node=2 -m tests.clock.ddp_worker OUT_DIR`.

Trains a tiny HOPE model with `Trainer` + `LevelClockCallback` on the gloo backend and saves, per rank,
`OUT_DIR/rank{rank}.pt` (see `run_training`). `tests/clock/test_level_clock_ddp.py` also calls `run_training` in
a single process with the same global batch, so both set-ups share one definition of the model, data and arguments.
"""

import os
import sys
from pathlib import Path
from typing import Any

import torch
from torch.distributed.tensor import DTensor
from torch.utils.data import Dataset
from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from hf_hope import HopeForCausalLM, LevelClockCallback
from hf_hope.clock.core import LevelClock

from ..helpers import tiny_config

GLOBAL_BATCH = 4
MAX_STEPS = 8  # two updates of the period-4 level
SEQUENCE_LENGTH = 12
MODEL_SEED = 0


class RecordedSequences(Dataset):
    """`GLOBAL_BATCH * MAX_STEPS` distinct random sequences (one epoch); remembers which indices were read."""

    def __init__(self) -> None:
        generator = torch.Generator().manual_seed(1)
        self.sequences = torch.randint(3, 97, (GLOBAL_BATCH * MAX_STEPS, SEQUENCE_LENGTH), generator=generator)
        self.read: list[int] = []

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        self.read.append(index)
        return {"input_ids": self.sequences[index], "labels": self.sequences[index]}


class ChangedLevels(TrainerCallback):
    """After each optimizer step, records which clock levels (by period) saw any parameter change."""

    def __init__(self) -> None:
        self.changed: list[dict[int | None, bool]] = []
        self._previous: dict[str, torch.Tensor] = {}
        self._period_of: dict[str, int | None] = {}

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        model = kwargs["model"]
        self._period_of = {name: level.period for level in LevelClock(model).levels for name in level.names}
        self._previous = _snapshot(model)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        current = _snapshot(kwargs["model"])
        changed = dict.fromkeys(set(self._period_of.values()), False)
        for name, period in self._period_of.items():
            changed[period] |= not torch.equal(current[name], self._previous[name])
        self.changed.append(changed)
        self._previous = current


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter whole (gathered from the ranks' shards under FSDP2: a collective)."""
    return {
        name: (parameter.full_tensor() if isinstance(parameter, DTensor) else parameter).detach().clone()
        for name, parameter in model.named_parameters()
    }


def initial_weights() -> dict[str, torch.Tensor]:
    """The weights every run starts from."""
    torch.manual_seed(MODEL_SEED)
    return HopeForCausalLM(tiny_config()).double().state_dict()


def sgd_arguments(output_dir: Path, world_size: int, **settings: Any) -> TrainingArguments:
    """`MAX_STEPS` steps of `GLOBAL_BATCH` sequences in order, split over `world_size` processes, with `settings`.

    Plain unclipped SGD: each update is the clock's gradient times the learning rate, so a mis-scaled gradient (a
    sum for a mean) shows in the weights; AdamW and clipping would normalise it away.
    """
    return TrainingArguments(
        output_dir=str(output_dir),
        max_steps=MAX_STEPS,
        per_device_train_batch_size=GLOBAL_BATCH // world_size,
        train_sampling_strategy="sequential",
        optim="sgd",
        max_grad_norm=0.0,
        learning_rate=0.1,
        lr_scheduler_type="constant",
        seed=MODEL_SEED,
        logging_steps=1,
        report_to="none",
        disable_tqdm=True,
        **settings,
    )


def run_training(output_dir: Path, world_size: int) -> dict[str, Any]:
    """Train `MAX_STEPS` steps of `GLOBAL_BATCH` sequences split over `world_size` processes (gloo DDP if above 1).

    Returns this rank's final `weights`, the dataset indices it `read` and, per step, which levels `changed`.

    Sampling is sequential, so global batch k is always samples `4k .. 4k+3`: a single process reads them as one
    batch, and under DDP accelerate's `BatchSamplerShard` deals local batches of 2 round-robin (rank 0 gets
    `4k, 4k+1`, rank 1 gets `4k+2, 4k+3`).
    """
    torch.manual_seed(MODEL_SEED)
    model = HopeForCausalLM(tiny_config()).double()  # float64: DDP and one process then agree to ~1e-15
    data, recorder = RecordedSequences(), ChangedLevels()
    args = sgd_arguments(
        output_dir, world_size, save_strategy="no", use_cpu=True, ddp_backend="gloo" if world_size > 1 else None
    )
    trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[LevelClockCallback(), recorder])
    trainer.train()
    weights = {name: tensor.detach().clone() for name, tensor in trainer.model.state_dict().items()}
    return {"weights": weights, "read": data.read, "changed": recorder.changed}


def main() -> None:
    output_dir = Path(sys.argv[1])
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])  # set by torchrun
    result = run_training(output_dir, world_size)
    torch.save(result, output_dir / f"rank{rank}.pt")


if __name__ == "__main__":
    main()

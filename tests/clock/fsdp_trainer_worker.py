"""One rank of the GPU test of `Trainer` with FSDP2 and `LevelClockCallback`:
`torchrun --nproc_per_node=N -m tests.clock.fsdp_trainer_worker OUT_DIR MODE` (MODE: `fsdp` or `resume`).

accelerate turns FSDP on only for accelerators, so this runs on GPUs only (`test_level_clock_fsdp_trainer.py`). A
retrofitted tiny Llama trains `MAX_STEPS` steps on `GLOBAL_BATCH` sequences per step with plain SGD, saving a
checkpoint at `SAVE_AT` (mid-period of the slow level); `resume` continues from that checkpoint in the same folder.
Rank 0 saves `OUT_DIR/<MODE>.pt`: whole weights, per step which
levels changed, and whether the parameters were sharded.
"""

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor
from transformers import Trainer

from hf_hope import LevelClockCallback

from .ddp_worker import ChangedLevels, RecordedSequences, _snapshot, sgd_arguments
from .fsdp_worker import retrofitted_llama

SAVE_AT = 6


def run(output_dir: Path, mode: str) -> None:
    data, recorder = RecordedSequences(), ChangedLevels()
    torch.manual_seed(0)
    model = retrofitted_llama().float()
    args = sgd_arguments(
        output_dir / "run",
        int(os.environ["WORLD_SIZE"]),  # set by torchrun; the process group starts with the Trainer
        save_strategy="steps",
        save_steps=SAVE_AT,
        fsdp=True,
        fsdp_config={"version": 2, "reshard_after_forward": True},
    )
    trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[LevelClockCallback(), recorder])
    checkpoint = Path(args.output_dir) / f"checkpoint-{SAVE_AT}"
    trainer.train(resume_from_checkpoint=str(checkpoint) if mode == "resume" else None)
    weights = {name: tensor.cpu() for name, tensor in _snapshot(trainer.model).items()}
    sharded = isinstance(next(trainer.model.parameters()), DTensor)
    if dist.get_rank() == 0:
        torch.save({"weights": weights, "changed": recorder.changed, "sharded": sharded}, output_dir / f"{mode}.pt")


if __name__ == "__main__":
    run(Path(sys.argv[1]), sys.argv[2])

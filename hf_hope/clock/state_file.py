"""The level clock's saved state: one safetensors file, written atomically, the one format every driver uses.

`LevelClock.state_dict()` is the in-memory form (counter, skipped steps, level layout, buffers); this module is its
on-disk form. The Trainer callback writes it into every checkpoint folder and the online learner beside its model,
so a resumed run restores exactly what was accumulated, and a file saved for other levels is refused.
"""

import json
import os
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from ..conversion.atomic_write import atomic_file, write_safetensors
from .core import LevelClock

CLOCK_STATE_NAME = "level_clock.safetensors"
_SCALARS = ("step", "skipped_steps", "layout")


def save_clock_state(clock: LevelClock, path: str | os.PathLike) -> None:
    """Write `clock`'s state to `path` (a safetensors file; the old file stays whole until the new one is).

    In a process group every rank must call it (under FSDP2 the buffers are gathered from the ranks' shards);
    rank 0 writes the file, which holds whole tensors and so resumes on any number of ranks.
    """
    state = clock.state_dict()
    if dist.is_initialized() and dist.get_rank() != 0:
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"buffer.{index}": buffer for index, buffer in state["buffers"].items()}
    tensors.update({f"seen.{index}": seen.to(torch.uint8) for index, seen in state["seen"].items()})
    metadata = {key: json.dumps(state[key]) for key in _SCALARS}
    with atomic_file(path) as temporary:
        write_safetensors(tensors, temporary, metadata=metadata)


def load_clock_state(clock: LevelClock, path: str | os.PathLike) -> None:
    """Restore `clock` from a file written by `save_clock_state`; refuses one saved for other levels."""
    path = Path(path)
    try:
        tensors = load_file(path)
        with safe_open(path, framework="pt") as file:
            metadata = {key: json.loads(value) for key, value in (file.metadata() or {}).items()}
    except (SafetensorError, ValueError) as error:
        raise ValueError(
            f"{path} is not a level clock state that can be read ({error}): the file is damaged or truncated. "
            "Resume from another checkpoint."
        ) from error
    if missing := sorted(set(_SCALARS) - set(metadata)):
        raise ValueError(f"{path} is not a level clock state written by save_clock_state (no {missing}).")
    clock.load_state_dict(
        {
            **metadata,
            "buffers": {int(key.split(".")[1]): value for key, value in tensors.items() if key.startswith("buffer.")},
            "seen": {int(key.split(".")[1]): value.bool() for key, value in tensors.items() if key.startswith("seen.")},
        }
    )

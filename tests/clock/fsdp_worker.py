"""One rank of the FSDP2 level-clock test: `torchrun --nproc_per_node=2 -m tests.clock.fsdp_worker OUT_DIR`.

Each rank shards a model with `fully_shard` (every decoder layer, then the root) on the gloo backend and trains it
with `ClockedOptimizer` over plain SGD, on its half of every global batch. Six runs share one process group: a
retrofitted tiny Llama trained `MAX_STEPS` steps, with zero-init levels and with unit copies; the same model sharded
only after its clock and optimizer were built (as accelerate's FSDP2 `prepare` does); AdamW driven by
`LevelClock.tick()`, interrupted, checkpointed with torch's distributed state-dict API and resumed; the same model
stopped at `INTERRUPTED_AT` (mid-period of the slow level), saved (whole weights and the clock's state file) and
resumed into a newly built, newly sharded model; and a tiny HOPE model. Rank 0 saves `OUT_DIR/result.pt`.
`tests/clock/test_level_clock_fsdp.py` runs the same functions in one process without sharding, so both set-ups
share one definition of the models, data and steps.
"""

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict, set_optimizer_state_dict
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor

import hf_hope
from hf_hope import ClockedOptimizer, LevelClock
from hf_hope.clock.state_file import load_clock_state, save_clock_state

from ..helpers import tiny_config, tiny_family_model

GLOBAL_BATCH = 4
MAX_STEPS = 8  # two updates of the period-4 level
INTERRUPTED_AT = 6  # two gradients of the slow level wait in its buffer
SEQUENCE_LENGTH = 12
SLOW_PERIOD = 4
# An odd width: FSDP2 cuts the slow level's up and gate projections into shards of 13 and 12 rows.
ADAPTER = hf_hope.CMSConfig(
    init="zero",
    levels=[{"period": None}, {"period": SLOW_PERIOD, "intermediate_size": 25}, {"period": 1, "intermediate_size": 16}],
)


# The default level type: copies of 13 of the 64 hidden units, whose anchors index the sharded pretrained weights.
UNIT_COPIES = hf_hope.CMSConfig(init="units", units=13, levels=[{"period": None}, {"period": SLOW_PERIOD}, {}])


def retrofitted_llama() -> nn.Module:
    """A tiny Llama in float64 with the CMS adapter; attention trains too (untagged, period 1)."""
    return hf_hope.retrofit(tiny_family_model("llama").double(), ADAPTER, freeze_base=False)


def llama_with_unit_copies() -> nn.Module:
    """The same Llama with unit-copy levels (the default type) and their mixing weights."""
    return hf_hope.retrofit(tiny_family_model("llama").double(), UNIT_COPIES, freeze_base=False)


def tiny_hope() -> nn.Module:
    torch.manual_seed(0)
    return hf_hope.HopeForCausalLM(tiny_config()).double()


def shard(model: nn.Module) -> nn.Module:
    """FSDP2 as its documentation shows it: each decoder layer, then the root (no-op in one process)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        for layer in model.model.layers:
            fully_shard(layer)
        fully_shard(model)
    return model


def global_batches(vocab_size: int) -> torch.Tensor:
    """`MAX_STEPS` global batches of `GLOBAL_BATCH` random sequences."""
    generator = torch.Generator().manual_seed(1)
    return torch.randint(3, vocab_size, (MAX_STEPS, GLOBAL_BATCH, SEQUENCE_LENGTH), generator=generator)


def train(
    model: nn.Module, optimizer: torch.optim.Optimizer, steps: range, clock: LevelClock | None = None
) -> list[dict[int | None, bool]]:
    """Optimizer steps `steps` (counted from 1) on this rank's part of each global batch; per step, which levels
    (by period) changed. `optimizer` is a `ClockedOptimizer`, or a plain one stepped when `clock.tick()` says so
    (the loop for accelerate's FSDP2 checkpoints). Every sequence has the same length, so the mean of the ranks'
    mean losses (what FSDP2's reduce-scatter averages) is the global batch's mean loss."""
    rank, world_size = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    batches = global_batches(model.config.vocab_size)
    clock = clock if clock is not None else optimizer.clock
    period_of = {name: level.period for level in clock.levels for name in level.names}
    changed = []
    for step in steps:
        local = batches[step - 1].chunk(world_size)[rank]
        before = whole_weights(model)
        model(input_ids=local, labels=local).loss.backward()
        if isinstance(optimizer, ClockedOptimizer) or clock.tick() is not None:
            optimizer.step()
        optimizer.zero_grad()
        after = whole_weights(model)
        moved = dict.fromkeys(set(period_of.values()), False)
        for name, period in period_of.items():
            moved[period] |= not torch.equal(after[name], before[name])
        changed.append(moved)
    return changed


def clocked_sgd(model: nn.Module) -> ClockedOptimizer:
    clock = LevelClock(model)
    return ClockedOptimizer(torch.optim.SGD(clock.param_groups(model.parameters(), lr=0.1)), clock)


def whole_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter as a whole tensor (gathered from the ranks' shards under FSDP2)."""
    return {
        name: (parameter.full_tensor() if isinstance(parameter, DTensor) else parameter).detach().clone()
        for name, parameter in model.named_parameters()
    }


def uninterrupted(build: Callable[[], nn.Module]) -> dict[str, Any]:
    model = shard(build())
    optimizer = clocked_sgd(model)
    changed = train(model, optimizer, range(1, MAX_STEPS + 1))
    sharded = isinstance(next(model.parameters()), DTensor)
    return {"weights": whole_weights(model), "changed": changed, "sharded": sharded}


def sharded_after_the_clock() -> dict[str, Any]:
    """As accelerate's FSDP2 `prepare` does: the optimizer and clock are built first, then the model is sharded
    and the optimizer switched to the sharded parameters; the clock must follow them."""
    model = retrofitted_llama()
    optimizer = clocked_sgd(model)
    name_of = {id(parameter): name for name, parameter in model.named_parameters()}
    model = shard(model)
    sharded_parameters = dict(model.named_parameters())
    for group in optimizer.param_groups:
        group["params"] = [sharded_parameters[name_of[id(parameter)]] for parameter in group["params"]]
    changed = train(model, optimizer, range(1, MAX_STEPS + 1))
    return {"weights": whole_weights(model), "changed": changed, "sharded": isinstance(model.lm_head.weight, DTensor)}


def adamw_with_checkpoint(folder: Path) -> dict[str, Any]:
    """AdamW stepped by `LevelClock.tick()`: stopped at `INTERRUPTED_AT`, its optimizer state taken with torch's
    distributed `get_optimizer_state_dict` (what accelerate's FSDP2 checkpoints use) and the clock's state with
    `state_dict()`, both saved, and resumed into a new model; and the same run uninterrupted."""
    runs = {}
    for name, stop in (("uninterrupted", MAX_STEPS), ("interrupted", INTERRUPTED_AT)):
        model = shard(retrofitted_llama())
        clock = LevelClock(model)
        optimizer = torch.optim.AdamW(clock.param_groups(model.parameters(), lr=1e-2))
        train(model, optimizer, range(1, stop + 1), clock)
        runs[name] = whole_weights(model)
    options = StateDictOptions(full_state_dict=True)
    checkpoint = {"optimizer": get_optimizer_state_dict(model, optimizer, options=options), "clock": clock.state_dict()}
    if not dist.is_initialized() or dist.get_rank() == 0:
        torch.save(checkpoint, folder / "adamw_checkpoint.pt")
    if dist.is_initialized():
        dist.barrier()
    del model, optimizer, clock

    model = retrofitted_llama()
    assert not model.load_state_dict(runs["interrupted"], strict=False).unexpected_keys
    model = shard(model)
    clock = LevelClock(model)
    optimizer = torch.optim.AdamW(clock.param_groups(model.parameters(), lr=1e-2))
    saved = torch.load(folder / "adamw_checkpoint.pt")
    set_optimizer_state_dict(model, optimizer, saved["optimizer"], options=options)
    clock.load_state_dict(saved["clock"])
    train(model, optimizer, range(INTERRUPTED_AT + 1, MAX_STEPS + 1), clock)
    return {"uninterrupted": runs["uninterrupted"], "resumed": whole_weights(model)}


def interrupted(folder: Path) -> None:
    """Train to `INTERRUPTED_AT` and save whole weights and the clock's state file into `folder`."""
    model = shard(retrofitted_llama())
    optimizer = clocked_sgd(model)
    train(model, optimizer, range(1, INTERRUPTED_AT + 1))
    weights = whole_weights(model)
    if not dist.is_initialized() or dist.get_rank() == 0:
        save_file(weights, folder / "weights.safetensors")
    save_clock_state(optimizer.clock, folder / "level_clock.safetensors")  # every rank: a collective
    if dist.is_initialized():
        dist.barrier()


def resume_from(folder: Path) -> dict[str, Any]:
    """A newly built (and sharded) model, the weights and clock of `folder`, trained to `MAX_STEPS`."""
    model = retrofitted_llama()
    assert not model.load_state_dict(load_file(folder / "weights.safetensors"), strict=False).unexpected_keys
    model = shard(model)
    optimizer = clocked_sgd(model)
    load_clock_state(optimizer.clock, folder / "level_clock.safetensors")
    train(model, optimizer, range(INTERRUPTED_AT + 1, MAX_STEPS + 1))
    return {"weights": whole_weights(model), "clock_step": optimizer.clock.step}


def run_all(output_dir: Path) -> dict[str, Any]:
    resume_folder = output_dir / "resume"
    resume_folder.mkdir(exist_ok=True)
    interrupted(resume_folder)
    return {
        "retrofit": uninterrupted(retrofitted_llama),
        "resumed": resume_from(resume_folder),
        "resume_folder": str(resume_folder),
        "sharded_after_the_clock": sharded_after_the_clock(),
        "adamw": adamw_with_checkpoint(resume_folder),
        "hope": uninterrupted(tiny_hope),
        "units": uninterrupted(llama_with_unit_copies),
    }


def main() -> None:
    output_dir = Path(sys.argv[1])
    dist.init_process_group("gloo")
    try:
        result = run_all(output_dir)
        if int(os.environ["RANK"]) == 0:
            torch.save(result, output_dir / "result.pt")
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()

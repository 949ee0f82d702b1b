"""`replay`: full fine-tuning with experience replay of earlier tasks' training items.

Every optimizer step after the first task trains on `batch_size` new-task items (the same new-task budget as every
other strategy) plus `replay_count(batch_size, replay_fraction)` items replayed from a buffer, so that replayed
items are about `replay_fraction` of every batch. The buffer is a reservoir sample (Algorithm R, seeded with
`seed`) of at most `replay_buffer_blocks` of the earlier tasks' training items in stream order. It is recomputed
from the data for each training run, so a resumed run replays what an uninterrupted one replays without saving
anything; with the same seed each run's reservoir continues the previous one's, as one kept across the stream.

Each item of the run's dataset is one whole step (a list of features) and Trainer draws one per batch, so its
shuffling moves whole steps only and every step holds exactly its new and replayed items. The functions here are
shared with `cms+replay`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import Dataset
from transformers import default_data_collator

from .base import TrainingData, TrainingUnit
from .full import FullStrategy

if TYPE_CHECKING:
    from ..settings import ContinualSettings
    from .base import TaskStream


class ReplayStrategy(FullStrategy):
    """Full fine-tuning whose every batch after the first task mixes in items replayed from earlier tasks."""

    name = "replay"
    settings_prefixes = ("replay_",)
    title = "Experience replay"

    def training_data(
        self, stream: TaskStream, units: Sequence[TrainingUnit], index: int, settings: ContinualSettings
    ) -> TrainingData:
        return with_replay(super().training_data(stream, units, index, settings), stream, units, index, settings)

    def card_section(self, settings: Mapping[str, Any], trained_on: str) -> str:
        return f"{super().card_section(settings, trained_on)} {replay_card_note(settings)}"


def replay_count(batch_size: int, fraction: float) -> int:
    """How many replayed items join `batch_size` new ones so that they are about `fraction` of the batch."""
    return max(1, round(batch_size * fraction / (1 - fraction)))


def reservoir_sample(length: int, capacity: int, seed: int) -> list[int]:
    """At most `capacity` positions of `range(length)`, each equally likely (Algorithm R, `random.Random(seed)`)."""
    generator = random.Random(seed)
    buffer = list(range(min(length, capacity)))
    for position in range(capacity, length):
        slot = generator.randrange(position + 1)
        if slot < capacity:
            buffer[slot] = position
    return buffer


class ReplayBatches(Dataset):
    """`steps` items, item k the features of step k: `new_positions[k]` of `new`, then `replay_positions[k]` of `old`.

    New-task positions run through seeded permutations of `new`, epoch after epoch; replayed ones are drawn from
    `buffer` (positions of `old`) by the same generator, without replacement within a step when the buffer allows.
    """

    def __init__(
        self, new: Dataset, old: Dataset, buffer: Sequence[int], steps: int, batch_size: int, n_replay: int, seed: int
    ) -> None:
        generator = torch.Generator().manual_seed(seed)
        epochs = -(-steps * batch_size // len(new))
        order = torch.cat([torch.randperm(len(new), generator=generator) for _ in range(epochs)])
        self.new_positions = order[: steps * batch_size].view(steps, batch_size)
        buffer = torch.tensor(buffer, dtype=torch.long)
        if len(buffer) >= n_replay:
            draws = torch.stack([torch.randperm(len(buffer), generator=generator)[:n_replay] for _ in range(steps)])
        else:
            draws = torch.randint(len(buffer), (steps, n_replay), generator=generator)
        self.replay_positions = buffer[draws]
        self.new, self.old = new, old

    def __len__(self) -> int:
        return len(self.new_positions)

    def __getitem__(self, step: int) -> list[Any]:
        new = [self.new[position] for position in self.new_positions[step].tolist()]
        return new + [self.old[position] for position in self.replay_positions[step].tolist()]


def collate_step(collator: Callable, features: Sequence[list[Any]]) -> Any:
    """Collate the one step (a list of features) of a batch of one `ReplayBatches` item."""
    (step,) = features
    return collator(step)


def earlier_tasks(units: Sequence[TrainingUnit], index: int) -> list[int]:
    """The tasks trained before training run `index`, in stream order, each once."""
    return sorted({task for unit in units[:index] for task in unit.task_indices})


def with_replay(
    data: TrainingData, stream: TaskStream, units: Sequence[TrainingUnit], index: int, settings: ContinualSettings
) -> TrainingData:
    """Training run `index`'s `data` (new-task items only) with replay added; `data` itself when no task came before."""
    earlier = earlier_tasks(units, index)
    if not earlier:
        return data
    steps, batch_size = units[index].steps, settings.batch_size
    n_replay = replay_count(batch_size, settings.replay_fraction)
    old = stream.train_dataset(earlier)
    buffer = reservoir_sample(len(old), settings.replay_buffer_blocks, settings.seed)
    batches = ReplayBatches(data.task_dataset, old, buffer, steps, batch_size, n_replay, settings.seed + index)
    collator = partial(collate_step, data.collator or default_data_collator)
    replayed = {key.replace("train_", "replay_", 1): value for key, value in stream.budget(steps, n_replay).items()}
    return TrainingData(batches, collator, 1, {**data.budget, **replayed}, data.task_dataset)


def replay_card_note(settings: Mapping[str, Any]) -> str:
    """The model card's sentence on replay's settings."""
    n_replay = replay_count(settings["batch_size"], settings["replay_fraction"])
    return (
        f"After the first task, every step also replays {n_replay} earlier-task items (replay_fraction "
        f"{settings['replay_fraction']}) from a reservoir buffer of at most {settings['replay_buffer_blocks']} items."
    )

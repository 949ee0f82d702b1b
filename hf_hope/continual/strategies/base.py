"""`Strategy`: everything the runner, the experiment and the model cards need to know about one way of learning.

A strategy turns a fresh base model into the model it trains (`prepare`), rebuilds that model from a saved task
folder so that a run resumes (`load`), and may add Trainer callbacks, its own optimizer, a term of the loss
(`loss_penalty`), its own training batches (`training_data`, e.g. with replayed examples) and a step between tasks.
It also says which training runs a stream needs (`training_units`: one per task, or one over all of them), how its
rows make the T x T matrix R, and what the model card says about its training. The defaults suit a strategy that
trains on each task in turn with Trainer's own AdamW and loss and saves with `save_pretrained`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn
from torch.utils.data import Dataset
from transformers import TrainerCallback

if TYPE_CHECKING:  # for type hints only: settings.py may then import the registry without an import cycle
    from ..blocks import LanguageModellingStream
    from ..classification import ClassificationStream
    from ..settings import ContinualSettings

    TaskStream = LanguageModellingStream | ClassificationStream

ModelFactory = Callable[[], nn.Module]


@dataclass(frozen=True)
class TrainingUnit:
    """One training run of the stream: on the training data of `task_indices`, for `steps` optimizer steps.

    `label` names what it trained in the run's timings and in the model card's results table.
    """

    task_indices: tuple[int, ...]
    steps: int
    label: str


@dataclass(frozen=True)
class TrainingData:
    """What one training run's Trainer draws from: `dataset` in batches of `batch_size` items, put together by
    `collator` (None: transformers' default one).

    `budget` counts what the run trains on for the run's timings (e.g. `train_tokens`, and `replay_tokens` for
    replayed data); `task_dataset` is the run's own tasks' training data alone, without anything replayed.
    """

    dataset: Dataset
    collator: Callable | None
    batch_size: int
    budget: dict[str, int]
    task_dataset: Dataset


class Strategy(ABC):
    """One way of fine-tuning a causal LM on a stream of tasks; subclass it and `register_strategy` the subclass.

    `name` is what `ContinualSettings.strategy` says. `prepare` and `load` must give the same trainable model
    (same parameters trainable), so that a resumed run computes what an uninterrupted one computes.
    """

    name: ClassVar[str]
    title: ClassVar[str | None] = None  # the readable name the plots show; None: `name`
    trains_jointly: ClassVar[bool] = False  # True: one training run on the union of the tasks, its row repeated
    # A setting whose non-default values make another method of this strategy, compared apart (cms: cms_init)
    variant_setting: ClassVar[str | None] = None
    # The strategy-specific settings it reads, by prefix (of `STRATEGY_SETTING_PREFIXES`): only these tie its runs
    settings_prefixes: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def prepare(self, model: nn.Module, settings: ContinualSettings) -> nn.Module:
        """Turn a fresh base causal LM into the model this strategy trains; returns it (possibly a new object)."""

    @abstractmethod
    def load(self, model_factory: ModelFactory, folder: str | Path, settings: ContinualSettings) -> nn.Module:
        """Rebuild the trainable model that `save` wrote into `folder` (`model_factory()` gives the base model)."""

    def save(self, model: nn.Module, folder: str | Path) -> None:
        """Save what the strategy trained into `folder`."""
        save_task_model(model, folder)

    def default_learning_rate(self, settings: ContinualSettings) -> float:
        """AdamW's peak learning rate when the settings give none (full fine-tuning's usual 1e-4)."""
        return 1e-4

    def callbacks(self, settings: ContinualSettings) -> list[TrainerCallback]:
        """The Trainer callbacks one training run needs (new objects each call)."""
        return []

    def optimizer(self, model: nn.Module, settings: ContinualSettings) -> torch.optim.Optimizer | None:
        """The optimizer of one training run; None lets Trainer build its default AdamW from the settings."""
        return None

    def loss_penalty(self, model: nn.Module) -> torch.Tensor | None:
        """A term added to every training step's loss (e.g. a regulariser toward earlier tasks); None: nothing."""
        return None

    def training_data(
        self, stream: TaskStream, units: Sequence[TrainingUnit], index: int, settings: ContinualSettings
    ) -> TrainingData:
        """The data of training run `index` of `units`: here its tasks' training data, `batch_size` per step."""
        dataset = stream.train_dataset(units[index].task_indices)
        budget = stream.budget(units[index].steps, settings.batch_size)
        return TrainingData(dataset, stream.collator, settings.batch_size, budget, dataset)

    def finish_task(self, model: nn.Module, settings: ContinualSettings, data: TrainingData) -> nn.Module:
        """What happens to the model after a training run on `data`, before it is evaluated and saved; returns it."""
        return model

    def training_units(self, task_names: Sequence[str], steps_per_task: int) -> list[TrainingUnit]:
        """The stream's training runs, in order: here one per task, each for `steps_per_task` steps."""
        return [TrainingUnit((index,), steps_per_task, name) for index, name in enumerate(task_names)]

    def result_matrix(self, rows: list[list[float]], num_tasks: int) -> list[list[float]]:
        """R (T x T) from the scores measured after each training run: here one row per task already."""
        return rows

    def trained_on(self, task_names: Sequence[str], unit_index: int) -> str:
        """What the model saved after training run `unit_index` has learnt, for its model card."""
        return " -> ".join(task_names[: unit_index + 1])

    def card_section(self, settings: Mapping[str, Any], trained_on: str) -> str:
        """The model card's paragraph on how the model was trained (`settings` as the run's results hold them)."""
        batch = (
            f"{settings['batch_size']} examples (loss on the answer only)"
            if "classification" in settings
            else f"{settings['batch_size']} blocks of {settings['block_size']} tokens"
        )
        return (
            f"Trained on {trained_on} with the `{self.name}` strategy: {settings['steps_per_task']} optimizer steps "
            f"per task of {batch}, learning rate {settings['learning_rate']}, seed {settings['seed']}."
        )


def save_task_model(model: nn.Module, folder: str | Path) -> None:
    """Save what a strategy trained: the whole model, or the LoRA adapter of a PEFT model."""
    model.save_pretrained(str(folder))

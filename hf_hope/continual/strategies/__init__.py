"""Continual fine-tuning strategies: one `Strategy` subclass per way of learning, looked up by name.

- `full` (`full.py`): every parameter trains.
- `lora` (`lora.py`): PEFT LoRA on the attention projections; the base model is frozen.
- `cms` (`cms.py`): only the new levels of the CMS adapter train, each at its own period.
- `ffn` (`ffn.py`): the same CMS levels as `cms`, every one at period 1 (the ablation of the level clock).
- `replay` (`replay.py`): like `full`, every batch after the first task also replays earlier tasks' items.
- `ewc` (`ewc.py`): like `full`, with an online EWC penalty toward earlier tasks' parameters.
- `cms+replay` (`cms_replay.py`): `cms` trained on `replay`'s batches.
- `joint` (`joint.py`): like `full`, but trained once on the union of all tasks (the multi-task upper bound).

A strategy saves what it trains into a task folder and rebuilds the same trainable model from it, so that a run
resumes where it stopped. `model_factory()` must return the same base model every time it is called.
To add a strategy, subclass `Strategy` (`base.py`) in a module of its own and register it (`registry.py`).
The functions below do one step of `settings.strategy`, for callers that hold settings rather than a strategy.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn
from transformers import TrainerCallback

from .base import ModelFactory, Strategy, TrainingData, TrainingUnit, save_task_model
from .cms import CMSStrategy
from .cms_replay import CMSReplayStrategy
from .ewc import EWCStrategy
from .ffn import FFNStrategy
from .full import FullStrategy
from .joint import JointStrategy
from .lora import LoraStrategy, attention_projections
from .registry import STRATEGY_REGISTRY, get_strategy, register_strategy
from .replay import ReplayStrategy

if TYPE_CHECKING:
    from ..settings import ContinualSettings


def prepare_model(model: nn.Module, settings: ContinualSettings) -> nn.Module:
    """Turn a fresh base causal LM into the model `settings.strategy` trains; returns it (possibly a new object)."""
    return get_strategy(settings.strategy).prepare(model, settings)


def load_task_model(model_factory: ModelFactory, folder: str | Path, settings: ContinualSettings) -> nn.Module:
    """Rebuild the trainable model saved by `save_task_model` in `folder`, with the strategy's trainable set."""
    return get_strategy(settings.strategy).load(model_factory, folder, settings)


def strategy_callbacks(settings: ContinualSettings) -> list[TrainerCallback]:
    """The Trainer callbacks one task's training needs (new objects each call)."""
    return get_strategy(settings.strategy).callbacks(settings)


def build_optimizer(model: nn.Module, settings: ContinualSettings) -> torch.optim.Optimizer | None:
    """The strategy's optimizer (cms with `cms_lr_scales`: one param group per scale), else None for Trainer's."""
    return get_strategy(settings.strategy).optimizer(model, settings)


__all__ = [
    "STRATEGY_REGISTRY",
    "CMSReplayStrategy",
    "CMSStrategy",
    "EWCStrategy",
    "FFNStrategy",
    "FullStrategy",
    "JointStrategy",
    "LoraStrategy",
    "ModelFactory",
    "ReplayStrategy",
    "Strategy",
    "TrainingData",
    "TrainingUnit",
    "attention_projections",
    "build_optimizer",
    "get_strategy",
    "load_task_model",
    "prepare_model",
    "register_strategy",
    "save_task_model",
    "strategy_callbacks",
]

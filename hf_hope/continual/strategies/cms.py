"""`cms`: the CMS adapter (`hf_hope.retrofit`) adds new levels to every FFN, and only those new levels train.

The new levels have width `cms_width` and periods `cms_periods`; the pretrained FFN, attention, embeddings and head
are frozen. Each level updates at its own period, driven by a `LevelClockCallback`. Each task gets a fresh
callback, so the clock counts from each task's first step, and gradients a slow level has accumulated but not yet
applied when a task ends are dropped (choose `steps_per_task` a multiple of the periods to avoid that).
With `cms_lr_scales`, each level trains at its own learning rate (one AdamW param group per scale).
With `cms_consolidate`, after each task the fastest level is folded exactly into the next slower one and restarts
from zero (`hf_hope.consolidate_levels`): each task's lesson is kept in a level that updates rarely, and the fast
level learns the next task from a silent start.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn
from transformers import AutoModelForCausalLM, TrainerCallback

from ...clock.callback import LevelClockCallback
from ...clock.core import LevelClock
from ...conversion import CMSConfig, consolidate_levels, retrofit
from ...modeling import parameter_levels
from .base import ModelFactory, Strategy, TrainingData

if TYPE_CHECKING:
    from ..settings import ContinualSettings


# Measured on SmolLM2-135M, domains stream (README): a copy's change reaches the output scaled by its mixing weight,
# so the mixed types need a higher rate than full fine-tuning; new levels that start silent (zero, lowrank) higher
# still. Unit copies at 1e-3 and copy init at 3e-4 reach 1.03x and 0.99x full fine-tuning's new-domain perplexity.
LEARNING_RATES = {"units": 1e-3, "copy": 3e-4, "lowrank": 1e-3, "zero": 1e-3}


class CMSStrategy(Strategy):
    """The CMS adapter's new levels train, each at its period; the pretrained model stays frozen."""

    name = "cms"
    title = "CMS adapter"
    variant_setting = "cms_init"  # each level type is its own method (its own chosen rate and Pareto frontier)
    settings_prefixes = ("cms_",)

    def prepare(self, model: nn.Module, settings: ContinualSettings) -> nn.Module:
        config = CMSConfig.from_periods(
            self.level_periods(settings),
            settings.cms_lr_scales,
            init=settings.cms_init,
            intermediate_size=settings.cms_width,
            rank=settings.cms_rank,
            units=settings.cms_units,
        )
        return freeze_all_but_cms_levels(retrofit(model, config))

    def default_learning_rate(self, settings: ContinualSettings) -> float:
        """The rate each level type learns a domain at about as well as full fine-tuning at 1e-4 (`LEARNING_RATES`)."""
        return LEARNING_RATES[settings.cms_init]

    def level_periods(self, settings: ContinualSettings) -> list[int]:
        """The update periods of the new levels, slowest first."""
        return list(settings.cms_periods)

    def load(self, model_factory: ModelFactory, folder: str | Path, settings: ContinualSettings) -> nn.Module:
        # A retrofitted model loads with AutoModelForCausalLM once hf_hope is imported.
        return freeze_all_but_cms_levels(AutoModelForCausalLM.from_pretrained(str(folder)))

    def callbacks(self, settings: ContinualSettings) -> list[TrainerCallback]:
        return [LevelClockCallback()]

    def optimizer(self, model: nn.Module, settings: ContinualSettings) -> torch.optim.Optimizer | None:
        """AdamW with one param group per learning-rate scale when `cms_lr_scales` is set, else Trainer's own."""
        if settings.cms_lr_scales is None:
            return None
        trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
        groups = LevelClock(model).param_groups(trainable, lr=settings.learning_rate)
        return torch.optim.AdamW(groups, lr=settings.learning_rate, weight_decay=settings.weight_decay)

    def finish_task(self, model: nn.Module, settings: ContinualSettings, data: TrainingData) -> nn.Module:
        """With `cms_consolidate`, fold the fastest level into the next one; exact, so the scores do not move."""
        if settings.cms_consolidate:
            fastest = len(settings.cms_periods) + 1  # levels count from 1, the pretrained FFN
            consolidate_levels(model, source=fastest, target=fastest - 1)
        return model


def freeze_all_but_cms_levels(model: nn.Module) -> nn.Module:
    """Only parameters of CMS levels that have a period train; everything else is frozen."""
    tags = parameter_levels(model)
    for name, parameter in model.named_parameters():
        tag = tags[name]
        parameter.requires_grad_(tag.level > 0 and tag.period is not None)
    if not any(parameter.requires_grad for parameter in model.parameters()):
        raise ValueError("The CMS strategy found no trainable CMS level in the model (is it retrofitted?).")
    return model

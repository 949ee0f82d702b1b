"""`ffn`: the ablation that isolates the level clock: the `cms` strategy's parameters, every level at period 1.

It retrofits exactly the levels `cms` would (same widths, init, learning-rate scales) and trains exactly those
parameters, but every new level updates every step and no `LevelClockCallback` runs. What `cms` gains over `ffn` is
what the multi-frequency schedule buys; what both gain over `full` comes from where and how much they train.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn
from transformers import TrainerCallback

from ...conversion import CMSConfig, retrofit
from .cms import CMSStrategy, freeze_all_but_cms_levels

if TYPE_CHECKING:
    from ..settings import ContinualSettings


class FFNStrategy(CMSStrategy):
    """The CMS adapter's new levels train every step, without the level clock."""

    name = "ffn"
    title = "CMS levels, all period 1 (no clock)"

    def prepare(self, model: nn.Module, settings: ContinualSettings) -> nn.Module:
        every_step = [1] * len(settings.cms_periods)
        config = CMSConfig.from_periods(
            every_step,
            settings.cms_lr_scales,
            init=settings.cms_init,
            intermediate_size=settings.cms_width,
            rank=settings.cms_rank,
        )
        return freeze_all_but_cms_levels(retrofit(model, config))

    def callbacks(self, settings: ContinualSettings) -> list[TrainerCallback]:
        return []

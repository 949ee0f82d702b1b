"""`ffn`: the ablation that isolates the level clock: the `cms` strategy's parameters, every level at period 1.

It retrofits exactly the levels `cms` would (same widths, init, learning-rate scales) and trains exactly those
parameters, but every new level updates every step and no `LevelClockCallback` runs. What `cms` gains over `ffn` is
what the multi-frequency schedule buys; what both gain over `full` comes from where and how much they train.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from transformers import TrainerCallback

from .cms import CMSStrategy

if TYPE_CHECKING:
    from ..settings import ContinualSettings


class FFNStrategy(CMSStrategy):
    """The CMS adapter's new levels train every step, without the level clock."""

    name = "ffn"
    title = "CMS levels, all period 1 (no clock)"

    def level_periods(self, settings: ContinualSettings) -> list[int]:
        return [1] * len(settings.cms_periods)

    def callbacks(self, settings: ContinualSettings) -> list[TrainerCallback]:
        return []

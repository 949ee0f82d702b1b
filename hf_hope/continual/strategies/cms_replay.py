"""`cms+replay`: the `cms` strategy (retrofit, level clock, optimizer, consolidation) trained with `replay`'s data.

Only the CMS adapter's new levels train, each at its period, and after the first task every step also replays
earlier tasks' items exactly as `replay` does: does replay add to what the multi-frequency levels keep?
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .base import TrainingData, TrainingUnit
from .cms import CMSStrategy
from .replay import replay_card_note, with_replay

if TYPE_CHECKING:
    from ..settings import ContinualSettings
    from .base import TaskStream


class CMSReplayStrategy(CMSStrategy):
    """The CMS adapter's new levels train on batches that mix in items replayed from earlier tasks."""

    name = "cms+replay"
    title = "CMS adapter + replay"
    settings_prefixes = ("cms_", "replay_")

    def training_data(
        self, stream: TaskStream, units: Sequence[TrainingUnit], index: int, settings: ContinualSettings
    ) -> TrainingData:
        return with_replay(super().training_data(stream, units, index, settings), stream, units, index, settings)

    def card_section(self, settings: Mapping[str, Any], trained_on: str) -> str:
        return f"{super().card_section(settings, trained_on)} {replay_card_note(settings)}"

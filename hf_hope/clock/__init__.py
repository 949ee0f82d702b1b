"""The level clock: every level of parameters updates at its own period (docs/design.md, "Level clock semantics").

`LevelClock` is the one core; `LevelClockCallback` drives it inside `Trainer`, `ClockedOptimizer` wraps any torch
optimizer for a plain loop, and `OnlineLearner` updates a model on a stream. The accumulation kernel is optional.
"""

from .callback import LevelClockCallback
from .clocked_optimizer import ClockedOptimizer
from .core import LevelClock, StepReport, levels_from_patterns
from .online_learner import OnlineLearner

__all__ = [
    "ClockedOptimizer",
    "LevelClock",
    "LevelClockCallback",
    "OnlineLearner",
    "StepReport",
    "levels_from_patterns",
]

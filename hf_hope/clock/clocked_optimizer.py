"""`ClockedOptimizer`: any torch optimizer driven by a `LevelClock`, for plain PyTorch and accelerate loops."""

from collections.abc import Callable
from typing import Any

import torch

from .core import LevelClock, StepReport


class ClockedOptimizer(torch.optim.Optimizer):
    """Wraps `optimizer` so that `step()` first ticks `clock`, then steps only the levels that are due.

    It shares the wrapped optimizer's `param_groups` and `state`, so learning-rate schedulers, gradient clipping
    and `accelerate`'s `prepare` see one ordinary optimizer. A step whose gradients are not finite is skipped
    entirely (the clock does not advance and no parameter moves). `state_dict()` holds both the optimizer and
    the clock, so a checkpoint resumes exactly.

    Build the optimizer from `clock.param_groups(...)` to give each level its learning-rate scale.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, clock: LevelClock) -> None:
        # The wrapper owns no parameters of its own; the base class's __init__ would register them twice.
        self.optimizer = optimizer
        self.clock = clock
        self.last_report: StepReport | None = None

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    @param_groups.setter
    def param_groups(self, groups: list[dict[str, Any]]) -> None:
        self.optimizer.param_groups = groups

    @property
    def state(self) -> dict:
        return self.optimizer.state

    @property
    def defaults(self) -> dict[str, Any]:
        return self.optimizer.defaults

    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.last_report = self.clock.tick()
        if self.last_report is not None:
            self.optimizer.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "level_clock": self.clock.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if set(state_dict) != {"optimizer", "level_clock"}:
            raise ValueError(
                "Expected a ClockedOptimizer state dict with 'optimizer' and 'level_clock' entries; to restore a "
                "plain optimizer's state, load it into the wrapped optimizer (`.optimizer.load_state_dict`)."
            )
        self.optimizer.load_state_dict(state_dict["optimizer"])
        self.clock.load_state_dict(state_dict["level_clock"])

    def __repr__(self) -> str:
        return f"ClockedOptimizer({self.optimizer!r}, step={self.clock.step})"

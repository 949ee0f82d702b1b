"""The level clock: each level of parameters updates every `period` optimizer steps, on the mean of its gradients.

Semantics (docs/design.md, "Level clock semantics"): at every optimizer step the clock adds each parameter's final
gradient (accumulated, synchronised, unscaled, clipped) to its level's buffer. A level with period P is due at
steps P, 2P, ... (counted from 1); when due its parameters' `.grad` becomes the buffer's mean over the P steps
and the buffer is cleared, otherwise `.grad` is set to `None` so torch optimizers skip the parameter entirely.
A step with non-finite gradients adds nothing, leaves every `.grad` at `None` and does not advance the clock.
This module is the one core; `LevelClockCallback`, `ClockedOptimizer` and `OnlineLearner` drive it.
"""

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..modeling.levels import UNTAGGED, LevelTag, check_level_spec, parameter_levels, period_name
from .buffer import LevelBuffer
from .sharding import total_norm

REDUCTIONS = ("mean", "sum")


@dataclass
class ClockLevel:
    """One level the clock drives: its tag and its trainable parameters, in model order."""

    tag: LevelTag
    names: list[str] = field(default_factory=list)
    parameters: list[nn.Parameter] = field(default_factory=list)

    @property
    def period(self) -> int | None:
        return self.tag.period

    @property
    def accumulates(self) -> bool:
        """Whether gradients wait in a buffer between updates (periods above one)."""
        return self.period is not None and self.period > 1

    def numel(self) -> int:
        return sum(parameter.numel() for parameter in self.parameters)


@dataclass
class StepReport:
    """What one clock tick did: which levels were updated, and each level's gradient norm at this step."""

    step: int
    updated: dict[int, bool]
    grad_norms: dict[int, float]


def levels_from_patterns(
    named_parameters: Iterable[tuple[str, nn.Parameter]], patterns: Mapping[str, Mapping[str, Any]]
) -> dict[str, LevelTag]:
    """Tag parameters by name: `{regex: {"period": P, "lr_scale": s}}`, level numbers in mapping order from 1.

    Each spec follows the level contract (`hf_hope.modeling.levels`): an omitted period means 1, `None` freezes.

    Each regex must fully match at least one parameter name, and no parameter may match two of them.
    Parameters that match none are level 0 with period 1.
    """
    names = [name for name, _ in named_parameters]
    tags = dict.fromkeys(names, UNTAGGED)
    owner: dict[str, str] = {}
    for level, (pattern, spec) in enumerate(patterns.items(), start=1):
        tag = _checked_tag(pattern, level, spec)
        matched = [name for name in names if re.fullmatch(pattern, name)]
        if not matched:
            raise ValueError(f"Level pattern {pattern!r} matches no trainable parameter; names look like {names[:3]}.")
        for name in matched:
            if name in owner:
                raise ValueError(f"Parameter {name!r} matches two level patterns: {owner[name]!r} and {pattern!r}.")
            owner[name] = pattern
            tags[name] = tag
    return tags


def _checked_tag(pattern: str, level: int, spec: Mapping[str, Any]) -> LevelTag:
    checked = check_level_spec(spec, f"Level pattern {pattern!r}: ")
    return LevelTag(level=level, period=checked["period"], lr_scale=checked["lr_scale"])


class LevelClock:
    """Counts optimizer steps and decides, per level, which gradients reach the optimizer.

    Args:
        model: the model whose trainable parameters the clock drives.
        levels: `None` to read the levels from the model's tags (HOPE's CMS, the CMS adapter), or a mapping of
            parameter-name regexes to `{"period": P, "lr_scale": s}` (see `levels_from_patterns`).
        reduction: `"mean"` (default) or `"sum"` of the P accumulated gradients.
        implementation: `"auto"` (Triton kernels on CUDA when installed, torch otherwise), `"torch"` or `"triton"`.

    Call `tick()` once per optimizer step, after gradients are final and before `optimizer.step()`.
    """

    def __init__(
        self,
        model: nn.Module,
        levels: Mapping[str, Mapping[str, Any]] | None = None,
        reduction: str = "mean",
        implementation: str = "auto",
    ) -> None:
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction={reduction!r} is unknown: allowed values are {REDUCTIONS}.")
        self.reduction = reduction
        trainable = [(name, parameter) for name, parameter in model.named_parameters() if parameter.requires_grad]
        if not trainable:
            raise ValueError("The model has no trainable parameters: there is nothing for the level clock to drive.")
        tags = parameter_levels(model) if levels is None else levels_from_patterns(trainable, levels)
        by_tag: dict[LevelTag, ClockLevel] = {}
        for name, parameter in trainable:
            level = by_tag.setdefault(tags[name], ClockLevel(tags[name]))
            level.names.append(name)
            level.parameters.append(parameter)
        self.levels = sorted(by_tag.values(), key=lambda level: level.tag.level)  # stable: model order within
        self.step = 0
        self.skipped_steps = 0
        self._model, self._implementation = model, implementation
        self._buffers = self._new_buffers()

    def _new_buffers(self) -> dict[int, LevelBuffer]:
        return {
            index: LevelBuffer(level.parameters, self._implementation)
            for index, level in enumerate(self.levels)
            if level.accumulates
        }

    def _follow_replaced_parameters(self) -> None:
        """Drive the model's current parameters if they were replaced since the clock was built.

        `fully_shard` (and accelerate's FSDP2 `prepare`, which shards a model and switches its optimizer to the
        sharded parameters) replaces every parameter object; the clock then takes the new ones, keeping what its
        buffers hold.
        """
        current = self._model.get_parameter
        if all(current(level.names[0]) is level.parameters[0] for level in self.levels):
            return
        state = self.state_dict()
        for level in self.levels:
            level.parameters = [current(name) for name in level.names]
        self._buffers = self._new_buffers()
        self.load_state_dict(state)

    def is_due(self, level: ClockLevel, step: int) -> bool:
        """Whether `level` updates at optimizer step `step` (counted from 1)."""
        return level.period is not None and step % level.period == 0

    def update_counts(self) -> dict[int, int]:
        """How many times each level (by index in `self.levels`) has been updated so far."""
        return {
            index: 0 if level.period is None else self.step // level.period for index, level in enumerate(self.levels)
        }

    def by_period(self, grad_norms: Mapping[int, float]) -> dict[str, tuple[int, float]]:
        """Updates so far and gradient norm per period name (`p16`, `p1`, `frozen`), as logs name levels.

        Levels of one period (say HOPE's fast CMS level and the untagged parameters, both `p1`) update together,
        so they are reported as one: the same update count, and the norm of their gradients taken together.
        """
        counts, squares, updates = {}, {}, self.update_counts()
        for index, level in enumerate(self.levels):
            name = period_name(level.period)
            counts[name] = updates[index]
            squares[name] = squares.get(name, 0.0) + grad_norms.get(index, 0.0) ** 2
        return {name: (counts[name], math.sqrt(squares[name])) for name in counts}

    def tick(self) -> StepReport | None:
        """Apply the clock to the current gradients; returns `None` (and clears them) if any is not finite."""
        self._follow_replaced_parameters()
        grad_norms = {}
        for index, level in enumerate(self.levels):
            grads = [parameter.grad for parameter in level.parameters if parameter.grad is not None]
            grad_norms[index] = total_norm(grads) if grads else 0.0
        if not all(math.isfinite(norm) for norm in grad_norms.values()):
            for level in self.levels:
                for parameter in level.parameters:
                    parameter.grad = None
            self.skipped_steps += 1
            return None
        self.step += 1
        updated = {}
        for index, level in enumerate(self.levels):
            updated[index] = self.is_due(level, self.step)
            if level.period is None:
                for parameter in level.parameters:
                    parameter.grad = None
            elif level.accumulates:
                scale = 1.0 / level.period if self.reduction == "mean" else 1.0
                self._buffers[index].add(due=updated[index], scale=scale)
        return StepReport(self.step, updated, grad_norms)

    def param_groups(self, parameters: Iterable[Any], lr: float) -> list[dict[str, Any]]:
        """Split parameters (or param group dicts) by level learning-rate scale: each group's lr is `lr * scale`."""
        scale_of = {id(parameter): level.tag.lr_scale for level in self.levels for parameter in level.parameters}
        given = list(parameters)
        if given and not isinstance(given[0], Mapping):
            given = [{"params": given}]
        groups = []
        for group in given:
            group = dict(group)
            base_lr = group.get("lr", lr)
            by_scale: dict[float, list[nn.Parameter]] = {}
            for parameter in group["params"]:
                by_scale.setdefault(scale_of.get(id(parameter), 1.0), []).append(parameter)
            groups.extend({**group, "params": params, "lr": base_lr * scale} for scale, params in by_scale.items())
        return groups

    def state_dict(self) -> dict[str, Any]:
        """Counter, skipped steps and the accumulation buffers, with the level layout they belong to.

        Buffers cover whole parameters, also under FSDP2 (then this is a collective: call it on every rank).
        """
        return {
            "step": self.step,
            "skipped_steps": self.skipped_steps,
            "layout": [[list(level.tag), level.names] for level in self.levels],
            "buffers": {index: buffer.whole_buffer() for index, buffer in self._buffers.items()},
            "seen": {index: buffer.seen.clone() for index, buffer in self._buffers.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a saved clock; refuses one saved for other levels or parameters."""
        layout = [[list(level.tag), level.names] for level in self.levels]
        saved_layout = [[list(tag), list(names)] for tag, names in state["layout"]]
        if saved_layout != layout:
            raise ValueError(
                "This level clock state was saved for other levels or parameters "
                f"({len(saved_layout)} levels saved, {len(layout)} here); resume with the same model and levels."
            )
        self.step, self.skipped_steps = int(state["step"]), int(state["skipped_steps"])
        for index, buffer in self._buffers.items():
            buffer.load_whole_buffer(state["buffers"][index])
            buffer.seen.copy_(state["seen"][index])

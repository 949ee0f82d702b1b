"""The level contract: every trainable parameter has a level, an update period and a learning-rate scale.

One set of rules, used by HOPE's `cms_levels`, the CMS adapter's `CMSConfig.levels`, the level clock's name
patterns and `hf-hope continual` (docs/design.md, "The level contract"):

- `period` is the number of optimizer steps between a level's updates: an int >= 1, or `None` for frozen. An
  omitted period means 1 (every step); a frozen level is always asked for explicitly.
- `lr_scale` multiplies the optimizer's learning rate for the level: a finite number > 0 (1.0 when omitted). A
  level that should not learn is frozen (`period=None`), not scaled to zero.
- Levels are numbered by their position in the list that declares them, from 1 (HOPE's `cms_levels` in the order
  they are applied; the adapter's levels slowest first, the pretrained FFN being level 1). Level 0 holds every
  untagged parameter, with period 1.
- Logs and reports name a level by its period (`p16`, `p1`, `frozen`), which means the same for HOPE and for
  retrofitted models whatever the numbering.
"""

import math
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from torch import nn

DEFAULT_PERIOD = 1
DEFAULT_LR_SCALE = 1.0


class LevelTag(NamedTuple):
    """Where a parameter sits in the nested optimisation: its level, update period and learning-rate scale."""

    level: int
    period: int | None
    lr_scale: float


UNTAGGED = LevelTag(level=0, period=DEFAULT_PERIOD, lr_scale=DEFAULT_LR_SCALE)


def check_period(period: Any, where: str = "", *, frozen_allowed: bool = True) -> int | None:
    """`period` if it is an int >= 1 (or `None` where a level may be frozen), else a ValueError naming `where`."""
    if period is None and frozen_allowed:
        return None
    if isinstance(period, bool) or not isinstance(period, int) or period < 1:
        frozen = " or None (frozen)" if frozen_allowed else ""
        raise ValueError(
            f"{where}period={period!r} is invalid: it must be an int >= 1 (optimizer steps between updates){frozen}."
        )
    return period


def check_lr_scale(lr_scale: Any, where: str = "") -> float:
    """`lr_scale` as a float if it is a finite number > 0, else a ValueError naming `where`."""
    if isinstance(lr_scale, bool) or not isinstance(lr_scale, int | float) or not math.isfinite(lr_scale):
        raise ValueError(f"{where}lr_scale={lr_scale!r} is invalid: it must be a finite number > 0.")
    if lr_scale <= 0:
        raise ValueError(
            f"{where}lr_scale={lr_scale!r} is invalid: it must be > 0; freeze a level with period=None instead."
        )
    return float(lr_scale)


def check_level_spec(spec: Any, where: str, allowed_keys: Iterable[str] = ()) -> dict[str, Any]:
    """Validate one level dict; returns it with `period` and `lr_scale` filled in and checked.

    `where` prefixes every message (e.g. `"cms_levels[0]."`); `allowed_keys` are the caller's keys besides
    `period` and `lr_scale`, passed through unchecked for the caller to check.
    """
    allowed = {"period", "lr_scale", *allowed_keys}
    if not isinstance(spec, Mapping):
        raise ValueError(f"{where.rstrip('.: ')}={spec!r} is invalid: each level is a dict such as {{'period': 16}}.")
    unknown = set(spec) - allowed
    if unknown:
        raise ValueError(
            f"{where.rstrip('.: ')} has unknown keys {sorted(unknown)}: allowed keys are {', '.join(sorted(allowed))}."
        )
    return {
        **spec,
        "period": check_period(spec.get("period", DEFAULT_PERIOD), where),
        "lr_scale": check_lr_scale(spec.get("lr_scale", DEFAULT_LR_SCALE), where),
    }


def checked_tag(level: int, period: int | None, lr_scale: float = DEFAULT_LR_SCALE, where: str = "") -> LevelTag:
    """A checked `LevelTag`: `level >= 1` for a declared level (0 is untagged), period and scale as above."""
    if isinstance(level, bool) or not isinstance(level, int) or level < 1:
        raise ValueError(f"{where}level={level!r} is invalid: levels are numbered from 1 (level 0 is untagged).")
    return LevelTag(level=level, period=check_period(period, where), lr_scale=check_lr_scale(lr_scale, where))


def period_name(period: int | None) -> str:
    """How logs and reports name a level: `p<period>`, or `frozen`."""
    return "frozen" if period is None else f"p{period}"


def parameter_levels(model: nn.Module) -> dict[str, LevelTag]:
    """Map every parameter name of `model` to its `LevelTag`.

    A module with a `level_tag` attribute (a `CMSLevel`, an FFN retrofitted by the CMS adapter) tags every
    parameter below it; a nested tag overrides an outer one. Parameters without a tag get `UNTAGGED`.
    """
    tags = dict.fromkeys((name for name, _ in model.named_parameters()), UNTAGGED)
    for module_name, module in model.named_modules():  # parents come before their children
        tag = getattr(module, "level_tag", None)
        if isinstance(tag, LevelTag):
            prefix = f"{module_name}." if module_name else ""
            for param_name, _ in module.named_parameters():
                tags[prefix + param_name] = tag
    return tags

"""Continuum Memory System: a chain (or weighted sum) of MLP levels, each updated at its own frequency.

Every level carries a *period* (optimizer steps between its updates; `None` means frozen) and a learning-rate
scale. Training loops read them with `parameter_levels(model)`; parameters outside any level are level 0 with
period 1. HOPE builds its CMS blocks here and the CMS adapter wraps pretrained FFNs with the same classes, so one
level clock serves both.
"""

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from .normalization import HopeRMSNorm


class LevelTag(NamedTuple):
    """Where a parameter sits in the nested optimisation: its level, update period and learning-rate scale."""

    level: int
    period: int | None
    lr_scale: float


UNTAGGED = LevelTag(level=0, period=1, lr_scale=1.0)


class GatedMLP(nn.Module):
    """The SwiGLU MLP of Llama-family models: `down(silu(gate(x)) * up(x))`."""

    def __init__(self, hidden_size: int, intermediate_size: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.down_proj(nn.functional.silu(self.gate_proj(hidden_states)) * self.up_proj(hidden_states))


class CMSLevel(nn.Module):
    """One CMS level, `mlp(norm(z))`, tagged with its level index, period and learning-rate scale.

    A level with `period=None` is frozen: its parameters do not require gradients.
    """

    def __init__(
        self, mlp: nn.Module, level: int, period: int | None, lr_scale: float = 1.0, norm: nn.Module | None = None
    ) -> None:
        super().__init__()
        if level < 1:
            raise ValueError(f"level={level} is invalid: CMS levels are numbered from 1 (level 0 is untagged).")
        if period is not None and period < 1:
            raise ValueError(f"period={period} is invalid: it must be an int >= 1 or None (frozen).")
        self.norm = norm if norm is not None else nn.Identity()
        self.mlp = mlp
        self.level_tag = LevelTag(level=level, period=period, lr_scale=float(lr_scale))
        if period is None:
            self.requires_grad_(False)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.norm(hidden_states))

    def extra_repr(self) -> str:
        return f"level={self.level_tag.level}, period={self.level_tag.period}, lr_scale={self.level_tag.lr_scale}"


class ContinuumMemory(nn.Module):
    """A CMS block mapping `z` to `z` plus its levels' outputs.

    - `"sequential"`: `z <- z + level_l(z)` for each level in order.
    - `"independent"`: `z + sum_l w_l * level_l(z)` with learnable weights `w` (level 0) that start at `1/K`.
    """

    def __init__(self, levels: Sequence[CMSLevel], variant: str = "sequential") -> None:
        super().__init__()
        if len(levels) == 0:
            raise ValueError("A ContinuumMemory needs at least one level.")
        if variant not in ("sequential", "independent"):
            raise ValueError(f"variant={variant!r} is unknown: allowed values are 'sequential' and 'independent'.")
        self.variant = variant
        self.levels = nn.ModuleList(levels)
        if variant == "independent":
            self.level_weights = nn.Parameter(torch.full((len(levels),), 1.0 / len(levels)))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.variant == "sequential":
            for level in self.levels:
                hidden_states = hidden_states + level(hidden_states)
            return hidden_states
        weights = self.level_weights.to(hidden_states.dtype)
        update = sum(weights[index] * level(hidden_states) for index, level in enumerate(self.levels))
        return hidden_states + update

    @classmethod
    def from_level_specs(
        cls, hidden_size: int, level_specs: Sequence[dict], variant: str, rms_norm_eps: float
    ) -> "ContinuumMemory":
        """Build HOPE's CMS: one normalised gated MLP per `{intermediate_size, period, lr_scale}` spec."""
        levels = [
            CMSLevel(
                GatedMLP(hidden_size, spec["intermediate_size"]),
                level=index + 1,
                period=spec["period"],
                lr_scale=spec.get("lr_scale", 1.0),
                norm=HopeRMSNorm(hidden_size, eps=rms_norm_eps),
            )
            for index, spec in enumerate(level_specs)
        ]
        return cls(levels, variant=variant)


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

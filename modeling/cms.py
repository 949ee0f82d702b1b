"""Continuum Memory System: a chain (or weighted sum) of MLP levels, each updated at its own frequency.

Every level carries a *period* (optimizer steps between its updates; `None` means frozen) and a learning-rate
scale, checked by the one level contract (`levels.py`). Training loops read them with `parameter_levels(model)`;
parameters outside any level are level 0 with period 1. HOPE builds its CMS blocks here and the CMS adapter wraps
pretrained FFNs with the same classes, so one level clock serves both.
"""

from collections.abc import Sequence

import torch
from torch import nn

from .levels import DEFAULT_LR_SCALE, checked_tag
from .normalization import HopeRMSNorm


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
        self,
        mlp: nn.Module,
        level: int,
        period: int | None,
        lr_scale: float = DEFAULT_LR_SCALE,
        norm: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.level_tag = checked_tag(level, period, lr_scale)
        self.norm = norm if norm is not None else nn.Identity()
        self.mlp = mlp
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
                lr_scale=spec.get("lr_scale", DEFAULT_LR_SCALE),
                norm=HopeRMSNorm(hidden_size, eps=rms_norm_eps),
            )
            for index, spec in enumerate(level_specs)
        ]
        return cls(levels, variant=variant)

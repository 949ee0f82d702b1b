"""Low-rank CMS levels: each level is a low-rank change `B_l A_l` of every projection of the pretrained FFN.

With `CMSConfig(init="lowrank")` the pretrained FFN stays the first level and each new level holds, for each of the
FFN's projections (gate, up and down, Phi-3's fused gate_up, GPT-2's c_fc and c_proj), a factor pair `A_l` (rank x
in, random) and `B_l` (out x rank, zero): the projection computes `W x + sum_l B_l A_l x`. Every level has its own
period and learning-rate scale, like the other level types, but costs `rank * (in + out)` parameters per projection
instead of a whole FFN, and since `B_l` starts at zero the model computes exactly what it computed before.

The changes enter through forward hooks registered on the projections for the length of the FFN's forward only, so
the FFN keeps its class's own forward and parameter names, and a copy or pickle of the model holds no hook.
"""

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial

import torch
from torch import nn


class LowRankDelta(nn.Module):
    """`x -> B (A x)`: `in_factor` (A, rank x in) starts like an `nn.Linear`, `out_factor` (B, out x rank) at zero."""

    def __init__(self, in_features: int, out_features: int, rank: int) -> None:
        super().__init__()
        self.in_factor = nn.Linear(in_features, rank, bias=False)
        self.out_factor = nn.Linear(rank, out_features, bias=False)
        nn.init.zeros_(self.out_factor.weight)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.out_factor(self.in_factor(inputs))

    def weight(self) -> torch.Tensor:
        """The change of the projection's weight as `[out, in]`: `B A`."""
        return self.out_factor.weight @ self.in_factor.weight

    @property
    def rank(self) -> int:
        return self.in_factor.out_features


class FFNDeltas(nn.Module):
    """One low-rank level of one FFN: a `LowRankDelta` per projection, keyed by the projection's attribute name."""

    def __init__(self, shapes: dict[str, tuple[int, int]], rank: int) -> None:
        super().__init__()
        self.deltas = nn.ModuleDict(
            {
                name: LowRankDelta(in_features, out_features, rank)
                for name, (in_features, out_features) in shapes.items()
            }
        )

    @property
    def rank(self) -> int:
        return next(iter(self.deltas.values())).rank

    def is_silent(self) -> bool:
        """Whether every change is exactly zero (every `B` is zero)."""
        return not any(delta.out_factor.weight.any() for delta in self.deltas.values())

    def silence(self) -> None:
        with torch.no_grad():
            for delta in self.deltas.values():
                delta.out_factor.weight.zero_()


def projection_shapes(ffn: nn.Module, names: Sequence[str]) -> dict[str, tuple[int, int]]:
    """`{name: (in_features, out_features)}` of the FFN's projections (`nn.Linear`, or GPT-2's `Conv1D`)."""
    shapes = {}
    for name in names:
        projection = getattr(ffn, name)
        if isinstance(projection, nn.Linear):
            shapes[name] = (projection.in_features, projection.out_features)
        else:  # transformers' Conv1D: weight [in, out]
            shapes[name] = tuple(projection.weight.shape)
    return shapes


@contextmanager
def deltas_applied(ffn: nn.Module, levels: Sequence[FFNDeltas]) -> Iterator[None]:
    """Within the block, each projection of `ffn` adds the levels' changes to its output."""
    handles = [
        getattr(ffn, name).register_forward_hook(partial(_add_deltas, [level.deltas[name] for level in levels]))
        for name in levels[0].deltas
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _add_deltas(
    deltas: list[LowRankDelta], module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor
) -> torch.Tensor:
    inputs = args[0]
    return output + sum(delta(inputs) for delta in deltas)


def fold_deltas(plain: nn.Module, levels: Sequence[FFNDeltas]) -> nn.Module:
    """`plain` (a plain copy of the pretrained FFN) with every level's change added to its projections."""
    with torch.no_grad():
        for name in levels[0].deltas:
            projection = getattr(plain, name)
            change = sum(level.deltas[name].weight() for level in levels)
            projection.weight.add_(change if isinstance(projection, nn.Linear) else change.T)
    return plain


def stack_levels(target: FFNDeltas, source: FFNDeltas) -> None:
    """Make `target` compute `target + source` exactly, by stacking their ranks, and silence `source`."""
    for name, delta in target.deltas.items():
        other = source.deltas[name]
        stacked = copy.deepcopy(delta)
        in_weight = torch.cat([delta.in_factor.weight, other.in_factor.weight])
        out_weight = torch.cat([delta.out_factor.weight, other.out_factor.weight], dim=1)
        stacked.in_factor = _linear_like(delta.in_factor, in_weight)
        stacked.out_factor = _linear_like(delta.out_factor, out_weight)
        target.deltas[name] = stacked
    source.silence()


def _linear_like(reference: nn.Linear, weight: torch.Tensor) -> nn.Linear:
    """A bias-free `nn.Linear` holding `weight` (`[out, in]`), on `reference`'s device and dtype and trainability."""
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=False, device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        linear.weight.copy_(weight)
    linear.weight.requires_grad_(reference.weight.requires_grad)
    return linear

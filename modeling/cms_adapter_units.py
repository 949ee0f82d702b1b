"""Unit-copy CMS levels: each level is a trainable copy of a few of the pretrained FFN's hidden units.

With `CMSConfig(init="units")` the pretrained FFN stays the first level and each new level copies `units` of its
hidden units (a count, or a share of the FFN's width), those with the largest weights (`Family.unit_scores`). The
FFN computes `y_0(x) + sum_l w_l (y_l(x) - a_l(x))`: `y_0` the pretrained FFN, `y_l` level l's copy, `a_l` the same
units computed with the pretrained weights (its anchor), `w` softmax mixing weights over all levels that start
uniform, as with `init="copy"`. At init every copy equals its anchor bit for bit, so the model computes exactly
what it computed before; a copy's change then reaches the output scaled by its mixing weight, as a whole copy's
does, for `3 * hidden * units` parameters per level and layer instead of a whole FFN.

The anchor is computed from the pretrained weights at every forward (`torch.func.functional_call` on the level's
own module), so it costs compute, not parameters. The chosen units are a persistent buffer of each level, so a
saved model keeps its choice even when its pretrained FFN trained after it was made.
"""

import torch
from torch import nn
from torch.func import functional_call
from transformers import PretrainedConfig

from .cms_adapter_families import Family


class UnitCopy(nn.Module):
    """One unit-copy level of one FFN: a narrow FFN of the family's class holding copies of the hidden units `units`."""

    def __init__(self, ffn: nn.Module, units: torch.Tensor, family: Family) -> None:
        super().__init__()
        self.ffn = ffn
        self.register_buffer("units", units)
        self.family = family

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.ffn(hidden_states)

    def anchor(self, pretrained: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
        """The same hidden units computed with the weights of `pretrained`: what this level computed at init."""
        return functional_call(self.ffn, self.family.unit_parameters(pretrained, self.units), (hidden_states,))


def unit_count(units: int | float, width: int) -> int:
    """How many hidden units `units` means in an FFN `width` wide: a count (an int), or a share of `width` (a float
    in (0, 1), rounded, at least one). A count larger than the width is refused."""
    if isinstance(units, float):
        return max(1, round(units * width))
    if units > width:
        raise ValueError(
            f"units={units} is more than the FFN's {width} hidden units: give at most {width}, or a share of the "
            f"width as a float in (0, 1) (e.g. units=0.08)."
        )
    return units


def unit_copy_level(ffn: nn.Module, family: Family, model_config: PretrainedConfig, units: int | float) -> UnitCopy:
    """A `UnitCopy` of the `units` highest-scoring hidden units of `ffn` (in their order in `ffn`)."""
    count = unit_count(units, family.width_of(ffn))
    chosen = torch.topk(family.unit_scores(ffn), count).indices.sort().values
    reference = family.output_projection(ffn).weight
    narrow = family.build_ffn(model_config, count).to(reference.device, reference.dtype)
    with torch.no_grad():
        for name, tensor in family.unit_parameters(ffn, chosen).items():
            narrow.get_parameter(name).copy_(tensor)
    narrow.train(ffn.training)
    return UnitCopy(narrow, chosen.to(reference.device), family)


def mixed_unit_levels(
    pretrained: nn.Module,
    output: torch.Tensor,
    hidden_states: torch.Tensor,
    levels: list[UnitCopy],
    weights: torch.Tensor,
) -> torch.Tensor:
    """`output + sum_l w_l (level_l(x) - anchor_l(x))`, `output` being the pretrained FFN's and `weights` the
    mixing weights of all levels (the pretrained FFN's first)."""
    weights = weights.to(output.dtype)
    changes = [level(hidden_states) - level.anchor(pretrained, hidden_states) for level in levels]
    return output + sum(weight * change for weight, change in zip(weights[1:], changes, strict=True))


def fold_unit_levels(
    plain: nn.Module, family: Family, levels: list[UnitCopy], weights: list[float], config: PretrainedConfig
) -> nn.Module:
    """One plain FFN equal to the mixed unit-copy levels, from `plain` (a plain copy of the pretrained FFN), by
    stacking the copies' hidden units.

    `sum_l w_l a_l` is the pretrained FFN's units scaled by how much of the mixing their copies took, so the
    pretrained FFN's output column of unit `j` is scaled by `1 - sum_{l copies j} w_l` and each copy's by `w_l`.
    """
    reference = family.output_projection(plain).weight
    kept = torch.ones(family.width_of(plain), dtype=torch.float64, device=reference.device)
    for weight, level in zip(weights[1:], levels, strict=True):
        kept[level.units] -= weight
    output = family.output_projection(plain).weight
    with torch.no_grad():
        scale = kept.to(output.dtype)
        output.mul_(scale if isinstance(family.output_projection(plain), nn.Linear) else scale[:, None])
    return family.fold([plain, *(level.ffn for level in levels)], [1.0, *weights[1:]], config)

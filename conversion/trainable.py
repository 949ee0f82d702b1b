"""How many parameters train, in total and per level, in PEFT's `print_trainable_parameters` format.

Works on any model: levels come from `parameter_levels` (HOPE's CMS levels, the CMS adapter's levels; everything
untagged is level 0), so a retrofitted model shows what its adapter trains and what stays frozen.
"""

from dataclasses import dataclass

from torch import nn

from ..modeling.levels import LevelTag, parameter_levels, period_name


@dataclass(frozen=True)
class ParameterCount:
    """Trainable and total parameter counts."""

    trainable: int
    total: int

    @property
    def percent(self) -> float:
        return 100 * self.trainable / self.total if self.total else 0.0


@dataclass(frozen=True)
class ParameterReport(ParameterCount):
    """The model's counts, and the same per level (sorted by level number)."""

    levels: dict[LevelTag, ParameterCount]

    def __str__(self) -> str:
        lines = [
            f"trainable params: {self.trainable:,d} || all params: {self.total:,d} || trainable%: {self.percent:.4f}"
        ]
        for tag, count in self.levels.items():
            scale = "" if tag.lr_scale == 1.0 else f", lr_scale {tag.lr_scale:g}"
            lines.append(
                f"  level {tag.level} ({period_name(tag.period)}{scale}): trainable {count.trainable:,d} of "
                f"{count.total:,d} ({count.percent:.4f}%)"
            )
        return "\n".join(lines)


def count_parameters(model: nn.Module) -> ParameterReport:
    """Trainable and total parameters of `model` (shared parameters counted once), in total and per level."""
    tags = parameter_levels(model)
    counts: dict[LevelTag, list[int]] = {}
    for name, parameter in model.named_parameters():
        count = counts.setdefault(tags[name], [0, 0])
        count[0] += parameter.numel() if parameter.requires_grad else 0
        count[1] += parameter.numel()
    levels = {tag: ParameterCount(*counts[tag]) for tag in sorted(counts, key=lambda tag: (tag.level, tag.period or 0))}
    return ParameterReport(
        trainable=sum(count.trainable for count in levels.values()),
        total=sum(count.total for count in levels.values()),
        levels=levels,
    )


def print_trainable_parameters(model: nn.Module) -> None:
    """Print `count_parameters(model)`: PEFT's one-line summary, then one line per level."""
    print(count_parameters(model))

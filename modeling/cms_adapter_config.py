"""`CMSAdapterConfig`: which FFNs the CMS adapter wraps, and the levels it builds from each.

A retrofitted model records it in `config.cms_adapter` and rebuilds its levels from it when loaded, so it lives
with the model. `hf_hope.CMSConfig` is this class plus writing it as `cms_adapter_config.json`.
"""

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from .levels import check_level_spec

INIT_MODES = ("zero", "copy", "lowrank", "units")
MIXED_INITS = ("copy", "units")  # level types mixed with the pretrained FFN by softmax weights (`cms_mixing`)
SIZE_FIELDS = {"intermediate_size": "zero", "rank": "lowrank", "units": "units"}  # each init's level size


def _default_levels() -> list[dict[str, Any]]:
    return [{"period": None}, {"period": 16}, {"period": 1}]


@dataclass
class CMSAdapterConfig:
    """How to retrofit a pretrained model's FFNs into a Continuum Memory System.

    Args:
        levels: one dict per level, slowest first (levels 1, 2, ... in that order): `period` (optimizer steps
            between updates, `None` = frozen, 1 when omitted), optional `lr_scale` (a finite number > 0, default
            1.0) and, for new levels, optional `intermediate_size`, `rank` or `units` (whichever sizes the levels
            of `init`). The first level is the pretrained FFN itself; the default levels freeze it
            (`{"period": None}`).
        init: `"units"` (the default: it forgets as little as `"copy"` in the domain benchmark for a twelfth of
            its parameters) makes each new level a copy of the pretrained FFN's highest-scoring hidden units, mixed
            like `"copy"` (`modeling.cms_adapter_units`); `"zero"` keeps the pretrained FFN as the first level and
            adds narrow new levels whose output
            projection starts at zero; `"copy"` makes every level a copy of the pretrained FFN and mixes them by
            a learnable softmax-weighted sum that starts uniform; `"lowrank"` makes each new level a low-rank
            change `B A` of every projection of the pretrained FFN, with `B` zero (`modeling.cms_adapter_lowrank`).
            Either way the model's logits are unchanged.
        intermediate_size: hidden width of the new levels with `init="zero"`, unless a level sets its own.
        rank: rank of the new levels with `init="lowrank"`, unless a level sets its own.
        units: hidden units each new level copies with `init="units"`, unless a level sets its own: a count (int),
            or a share of the FFN's width (a float in (0, 1); the default 0.08 copies 123 of SmolLM2's 1536 units,
            so two levels add 9.5% to its parameters).
        layers: the decoder layers to retrofit: `None` for all, a non-empty list of layer indices, or a regular
            expression that must fully match a decoder layer's module name (as in PEFT's `target_modules`).
    """

    levels: list[dict[str, Any]] = field(default_factory=_default_levels)
    init: str = "units"
    intermediate_size: int = 128
    rank: int = 8
    units: int | float = 0.08
    layers: list[int] | str | None = None

    def __post_init__(self) -> None:
        if self.init not in INIT_MODES:
            raise ValueError(f"init={self.init!r} is unknown: allowed values are {INIT_MODES}.")
        for name in SIZE_FIELDS:
            setattr(self, name, checked_level_size(name, getattr(self, name)))
        if not isinstance(self.levels, list | tuple) or len(self.levels) < 2:
            raise ValueError(
                f"levels={self.levels!r} is invalid: give a list of at least two level dicts, slowest (the "
                "pretrained FFN) first, e.g. [{'period': None}, {'period': 16}, {'period': 1}]."
            )
        self.levels = [self._normalize_level(index, level) for index, level in enumerate(self.levels)]
        self._check_layers()

    def _normalize_level(self, index: int, level: dict[str, Any]) -> dict[str, Any]:
        where = f"levels[{index}]"
        level = check_level_spec(level, f"{where}.", allowed_keys=tuple(SIZE_FIELDS))
        sizes = {}
        for key, mode in SIZE_FIELDS.items():
            value = level.get(key)
            if value is not None and index == 0:
                raise ValueError(f"{where}.{key} is not allowed: level 1 is the pretrained FFN.")
            if value is not None and self.init != mode:
                raise ValueError(f"{where}.{key} is not allowed: it sizes the new levels of init={mode!r} only.")
            if value is not None:
                value = checked_level_size(f"{where}.{key}", value)
            sizes[key] = getattr(self, key) if index > 0 and self.init == mode and value is None else value
        return {"period": level["period"], "lr_scale": level["lr_scale"], **sizes}

    def _check_layers(self) -> None:
        if self.layers is None:
            return
        if isinstance(self.layers, str):
            try:
                re.compile(self.layers)
            except re.error as error:
                raise ValueError(f"layers={self.layers!r} is not a valid regular expression: {error}.") from None
            return
        if not isinstance(self.layers, list | tuple):
            example = f"[{self.layers!r}]" if type(self.layers) is int else "[0, 2]"
            raise ValueError(
                f"layers={self.layers!r} is invalid: give a list of layer indices (e.g. layers={example}), None for "
                "all layers, or a regular expression matching decoder layer names."
            )
        if not self.layers:
            raise ValueError(
                "layers=[] selects no layer, so nothing would be retrofitted: list the layer indices to retrofit, "
                "or give layers=None for all layers."
            )
        if not all(isinstance(index, int) and not isinstance(index, bool) and index >= 0 for index in self.layers):
            raise ValueError(f"layers={self.layers!r} is invalid: give None, a list of layer indices >= 0, or a regex.")
        self.layers = sorted(set(self.layers))

    def select_layers(self, names: list[str]) -> list[int]:
        """Indices of the decoder layers (given by module name, in model order) this config retrofits."""
        if self.layers is None:
            return list(range(len(names)))
        if isinstance(self.layers, str):
            selected = [index for index, name in enumerate(names) if re.fullmatch(self.layers, name)]
            if not selected:
                raise ValueError(
                    f"layers={self.layers!r} matches no decoder layer; their names look like {names[0]!r}."
                )
            return selected
        too_large = [index for index in self.layers if index >= len(names)]
        if too_large:
            raise ValueError(
                f"layers={self.layers!r}: {too_large} are out of range; the model has {len(names)} layers."
            )
        return list(self.layers)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_periods(
        cls, periods: list[int], lr_scales: list[float] | None = None, **fields: Any
    ) -> "CMSAdapterConfig":
        """The frozen pretrained FFN followed by one new level per period (slowest first), with optional scales."""
        scales = lr_scales or [1.0] * len(periods)
        new_levels = [{"period": period, "lr_scale": scale} for period, scale in zip(periods, scales, strict=True)]
        return cls(levels=[{"period": None}, *new_levels], **fields)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "CMSAdapterConfig":
        unknown = set(values) - {"levels", "init", "layers", *SIZE_FIELDS}
        if unknown:
            raise ValueError(f"Unknown {cls.__name__} fields {sorted(unknown)}.")
        return cls(**values)


def checked_level_size(name: str, value: Any) -> int | float:
    """A level size is an int >= 1. `units` may also be a share of the FFN's width (a float in (0, 1)) or a whole
    float >= 1 (a count, as command-line flags give it), returned as an int."""
    if name.endswith("units") and isinstance(value, float):
        if 0.0 < value < 1.0:
            return value
        if value >= 1.0 and value.is_integer():
            return int(value)
        raise ValueError(
            f"{name}={value!r} is invalid: give a count of hidden units (a whole number >= 1) or a share of the "
            "FFN's width (a float in (0, 1))."
        )
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r} is invalid: it must be an int >= 1.")
    return value

"""A pretrained FFN turned into a Continuum Memory System, and how to find the FFNs and build their levels.

A retrofitted FFN keeps its class's own forward and parameter names (so the pretrained weights load as before):
like `torch.nn.utils.parametrize`, it becomes an instance of a subclass that also holds the new levels
(`cms_levels`, each a tagged `CMSLevel`: a narrow FFN, a copy of the FFN, low-rank changes of its projections, or
copies of some of its hidden units) and, with `init="copy"` or `"units"`, their mixing weights (`cms_mixing`).
Its own parameters are the slowest level, tagged through `level_tag`, so `parameter_levels` and the level clock
treat a retrofitted Llama and a HOPE model alike.
"""

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from .cms import CMSLevel
from .cms_adapter_config import MIXED_INITS, CMSAdapterConfig
from .cms_adapter_families import FAMILIES, Family
from .cms_adapter_lowrank import FFNDeltas, deltas_applied, projection_shapes
from .cms_adapter_units import UnitCopy, mixed_unit_levels, unit_copy_level
from .levels import UNTAGGED, LevelTag, checked_tag


class LevelMixing(nn.Module):
    """Softmax weights over a CMS's levels: they start uniform and always sum to one. Level 0 (every step)."""

    level_tag = UNTAGGED

    def __init__(self, num_levels: int) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(num_levels))

    def weights(self) -> torch.Tensor:
        return torch.softmax(self.logits.float(), dim=0)

    def forward(self, outputs: list[torch.Tensor]) -> torch.Tensor:
        """`sum_l w_l y_l`, written `y_0 + sum_{l>0} w_l (y_l - y_0)` (equal since the weights sum to one).

        The second form is exact while the levels are still copies: the differences are then exactly zero.
        """
        weights = self.weights().to(outputs[0].dtype)
        first = outputs[0]
        return first + sum(weight * (output - first) for weight, output in zip(weights[1:], outputs[1:], strict=True))


class RetrofittedFFN(nn.Module):
    """Mixin for a pretrained FFN turned CMS: `ffn(x) + sum_l level_l(x)` (`"zero"`), their softmax mix (`"copy"`),
    the FFN with every projection changed by the levels' low-rank deltas (`"lowrank"`), or the FFN plus the mixed
    changes of its copied hidden units (`"units"`).

    Never instantiated directly: `retrofit` re-classes the FFN instance to `Retrofitted<FFN class>`.
    """

    level_tag: LevelTag
    cms_levels: nn.ModuleList
    cms_mixing: LevelMixing | None

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        lowrank = self.lowrank_levels()
        if lowrank:
            with deltas_applied(self, lowrank):
                return super().forward(hidden_states)
        pretrained = super().forward(hidden_states)
        units = self.unit_levels()
        if units:
            return mixed_unit_levels(self, pretrained, hidden_states, units, self.cms_mixing.weights())
        outputs = [level(hidden_states) for level in self.cms_levels]
        if self.cms_mixing is None:
            return pretrained + sum(outputs)
        return self.cms_mixing([pretrained, *outputs])

    def lowrank_levels(self) -> list[FFNDeltas]:
        """The new levels' `FFNDeltas` when they are low-rank changes of the FFN's projections, else `[]`."""
        return [level.mlp for level in self.cms_levels if isinstance(level.mlp, FFNDeltas)]

    def unit_levels(self) -> list[UnitCopy]:
        """The new levels' `UnitCopy` modules when they copy hidden units of the FFN, else `[]`."""
        return [level.mlp for level in self.cms_levels if isinstance(level.mlp, UnitCopy)]

    def pretrained_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """The slowest level's parameters: the FFN's own, outside `cms_levels` and `cms_mixing`."""
        for name, parameter in self.named_parameters():
            if not name.startswith(("cms_levels.", "cms_mixing.")):
                yield name, parameter

    def extra_repr(self) -> str:
        return f"level={self.level_tag.level}, period={self.level_tag.period}, lr_scale={self.level_tag.lr_scale}"


def _retrofitted_class(ffn_class: type[nn.Module]) -> type[RetrofittedFFN]:
    retrofitted = type(f"Retrofitted{ffn_class.__name__}", (RetrofittedFFN, ffn_class), {"__module__": __name__})
    globals()[retrofitted.__name__] = retrofitted  # importable by name, so retrofitted models pickle
    return retrofitted


_RETROFITTED_CLASSES = {family.ffn_class: _retrofitted_class(family.ffn_class) for family in FAMILIES.values()}


@dataclass
class FFNSite:
    """Where one FFN lives: its decoder layer's index and module name, and the layer's attribute holding it."""

    index: int
    layer_name: str
    layer: nn.Module
    attribute: str

    @property
    def ffn(self) -> nn.Module:
        return getattr(self.layer, self.attribute)


def ffn_sites(model: nn.Module, family: Family) -> list[FFNSite]:
    """Every decoder layer of `family` in `model`, in order, with the child that is the family's FFN."""
    sites = []
    for layer_name, layer in model.named_modules():
        if not isinstance(layer, family.decoder_layer_class):
            continue
        accepted = (family.ffn_class, _RETROFITTED_CLASSES[family.ffn_class])
        attributes = [name for name, child in layer.named_children() if type(child) in accepted]
        if len(attributes) != 1:
            children = {name: type(child).__name__ for name, child in layer.named_children()}
            raise ValueError(
                f"The CMS adapter does not recognise the FFN of {layer_name!r} (model type "
                f"{family.model_type!r}): expected exactly one child of class {family.ffn_class.__name__}, "
                f"found children {children}."
            )
        sites.append(FFNSite(len(sites), layer_name, layer, attributes[0]))
    if not sites:
        raise ValueError(
            f"Found no {family.decoder_layer_class.__name__} in this {type(model).__name__}: the CMS adapter "
            f"supports the model types {', '.join(sorted(FAMILIES))} built from transformers' own classes."
        )
    return sites


def attach_levels(model: nn.Module, family: Family, config: CMSAdapterConfig) -> CMSAdapterConfig:
    """Build the CMS levels on the selected FFNs; returns `config` (same class) with `layers` resolved to indices."""
    sites = ffn_sites(model, family)
    layers = config.select_layers([site.layer_name for site in sites])
    resolved = type(config).from_dict({**config.to_dict(), "layers": layers})
    pretrained = next((module for module in model.modules() if isinstance(module, PreTrainedModel)), None)
    initialiser = None if pretrained is None else pretrained._init_weights  # new levels start like the family's FFNs
    for index in resolved.layers:
        _retrofit_ffn(sites[index].ffn, resolved, family, model.config, initialiser)
    return resolved


def _retrofit_ffn(
    ffn: nn.Module,
    config: CMSAdapterConfig,
    family: Family,
    model_config: PretrainedConfig,
    initialiser: Callable[[nn.Module], None] | None,
) -> None:
    reference = next(ffn.parameters())
    new_levels = []
    for position, spec in enumerate(config.levels[1:], start=2):
        if config.init == "copy":
            mlp = copy.deepcopy(ffn, memo={id(model_config): model_config})  # share the config, copy weights
        elif config.init == "lowrank":
            shapes = projection_shapes(ffn, family.projection_names)
            mlp = FFNDeltas(shapes, spec["rank"]).to(reference.device, reference.dtype)
        elif config.init == "units":
            mlp = unit_copy_level(ffn, family, model_config, spec["units"])
        else:
            mlp = family.build_ffn(model_config, spec["intermediate_size"]).to(reference.device, reference.dtype)
            if initialiser is not None:
                mlp.apply(initialiser)
            family.silence(mlp)
        new_levels.append(CMSLevel(mlp, level=position, period=spec["period"], lr_scale=spec["lr_scale"]))
    first = config.levels[0]
    ffn.__class__ = _RETROFITTED_CLASSES[family.ffn_class]
    ffn.level_tag = checked_tag(1, first["period"], first["lr_scale"])
    ffn.cms_levels = nn.ModuleList(new_levels)
    ffn.cms_mixing = (
        LevelMixing(len(config.levels)).to(reference.device, reference.dtype) if config.init in MIXED_INITS else None
    )
    ffn.train(ffn.training)  # new modules start in training mode; follow the model's mode
    if first["period"] is None:
        for _, parameter in ffn.pretrained_parameters():
            parameter.requires_grad_(False)

"""The conversion side of a retrofitted FFN: which family a plain model is, and folding or stripping the levels.

Building and running the levels is model-side (`hf_hope.modeling.cms_adapter_ffn`, carried by every retrofitted
checkpoint); what is here only turns models into others.
"""

from torch import nn
from transformers import PretrainedConfig

from ..modeling.cms_adapter_families import FAMILIES, Family
from ..modeling.cms_adapter_ffn import RetrofittedFFN
from ..modeling.cms_adapter_lowrank import fold_deltas
from ..modeling.cms_adapter_units import fold_unit_levels


def family_of(model: nn.Module) -> Family:
    """The supported family of `model` (a `PreTrainedModel`, possibly inside a PEFT wrapper), or a clear error."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type is not None and getattr(config, "cms_adapter", None) is not None:
        raise ValueError(f"This {type(model).__name__} is already retrofitted; call unretrofit(model) first.")
    if model_type not in FAMILIES:
        raise ValueError(
            f"The CMS adapter does not support model type {model_type!r}. Supported model types: "
            f"{', '.join(sorted(FAMILIES))}."
        )
    return FAMILIES[model_type]


def fold_levels(ffn: RetrofittedFFN, family: Family, config: PretrainedConfig) -> nn.Module | None:
    """One plain FFN equal to the CMS `ffn`, or `None` when the pretrained level alone already is."""
    levels = [level.mlp for level in ffn.cms_levels]
    lowrank = ffn.lowrank_levels()
    if lowrank:
        active = [level for level in lowrank if not level.is_silent()]
        return fold_deltas(pretrained_copy(ffn, family, config), active) if active else None
    units = ffn.unit_levels()
    if units:
        weights = ffn.cms_mixing.weights().tolist()
        return fold_unit_levels(pretrained_copy(ffn, family, config), family, units, weights, config)
    if ffn.cms_mixing is None:
        active = [mlp for mlp in levels if not family.is_silent(mlp)]
        return family.fold([ffn, *active], [1.0] * (1 + len(active)), config) if active else None
    return family.fold([ffn, *levels], ffn.cms_mixing.weights().tolist(), config)


def pretrained_copy(ffn: RetrofittedFFN, family: Family, config: PretrainedConfig) -> nn.Module:
    """A plain FFN of the family's class holding `ffn`'s own (pretrained-level) weights, in its training mode."""
    reference = next(ffn.parameters())
    plain = family.build_ffn(config, family.width_of(ffn)).to(reference.device, reference.dtype)
    plain.load_state_dict(
        {
            name: tensor
            for name, tensor in ffn.state_dict().items()
            if not name.startswith(("cms_levels.", "cms_mixing."))
        }
    )
    return plain.train(ffn.training)


def strip_levels(ffn: RetrofittedFFN, family: Family) -> None:
    """Drop the new levels: `ffn` becomes the plain pretrained FFN, trainable again."""
    for _, parameter in ffn.pretrained_parameters():
        parameter.requires_grad_(True)
    del ffn.cms_levels, ffn.cms_mixing, ffn.level_tag
    ffn.__class__ = family.ffn_class

"""Retrofit the FFNs of a pretrained transformer into Continuum Memory Systems (paper, section 7.3), and undo it."""

import copy

from torch import nn

from .auto_classes import CMS_MODEL_TYPE_SUFFIX, cms_classes
from .cms_config import CMSConfig
from .cms_ffn import RetrofittedFFN, attach_levels, family_of, ffn_sites, fold_levels, strip_levels
from .families import FAMILIES, Family


def retrofit(model: nn.Module, config: CMSConfig | None = None) -> nn.Module:
    """Wrap the FFNs of the selected decoder layers of `model` in CMS blocks, in place, and return `model`.

    The model computes exactly what it computed before. The first level (the pretrained FFN) is frozen when its
    period is `None`; new levels train unless their period is `None`. Parameters outside the FFNs keep their
    `requires_grad`, so LoRA applied before retrofitting keeps training. A causal LM of a supported family
    becomes its `CMS<class>` counterpart, which `save_pretrained` and `AutoModelForCausalLM` round-trip once
    `hf_hope` is imported.
    """
    family = family_of(model)
    resolved = attach_levels(model, family, config if config is not None else CMSConfig())
    cms_config_class, cms_model_class = cms_classes(family)
    base_config = model.config
    cms_config = copy.deepcopy(base_config)  # its own copy: other models may share the base config object
    cms_config.__class__ = cms_config_class
    cms_config.cms_adapter = resolved.to_dict()
    for module in model.modules():
        if getattr(module, "config", None) is base_config:
            module.config = cms_config
        if type(module) is family.causal_lm_class:
            module.__class__ = cms_model_class
    return model


def retrofitted_family(model: nn.Module) -> tuple[Family, CMSConfig]:
    """The family and resolved `CMSConfig` of a retrofitted model, or a clear error if it is not one."""
    adapter = getattr(getattr(model, "config", None), "cms_adapter", None)
    if adapter is None:
        raise ValueError(
            f"This {type(model).__name__} is not retrofitted with the CMS adapter (no config.cms_adapter)."
        )
    base_type = model.config.model_type.removesuffix(CMS_MODEL_TYPE_SUFFIX)
    return FAMILIES[base_type], CMSConfig.from_dict(adapter)


def unretrofit(model: nn.Module, merge: bool = True) -> nn.Module:
    """Turn a retrofitted model back into a plain model of its original class, in place, and return it.

    With `merge=True` every level is folded into one FFN that computes what the CMS computed, by stacking the
    levels' hidden units (new levels whose output is still exactly zero are dropped). The result must fit the
    family's config, which has one FFN width for all layers: when the folded widths differ between layers this
    raises a `ValueError` and changes nothing. With `merge=False` the new levels are discarded and the first
    level (the pretrained FFN, as trained) stays.
    """
    family, _ = retrofitted_family(model)
    sites = [site for site in ffn_sites(model, family) if isinstance(site.ffn, RetrofittedFFN)]
    folded = {site.index: fold_levels(site.ffn, family, model.config) for site in sites} if merge else {}
    unchanged_width = family.ffn_width(model.config)
    widths = {unchanged_width if ffn is None else family.width_of(ffn) for ffn in folded.values()}
    if len(sites) < len(ffn_sites(model, family)):
        widths.add(unchanged_width)
    if len(widths) > 1:
        raise ValueError(
            f"Cannot fold the CMS levels into a plain {family.causal_lm_class.__name__}: the folded FFN widths would "
            f"differ between layers ({sorted(widths)}), and {family.config_class.__name__} has one "
            f"{family.width_field!r} for all layers. Keep the model retrofitted (save_pretrained works), or call "
            "unretrofit(model, merge=False) to keep only the pretrained level."
        )
    for site in sites:
        if folded.get(site.index) is not None:
            setattr(site.layer, site.attribute, folded[site.index])
        else:
            strip_levels(site.ffn, family)
    if widths and widths != {unchanged_width}:
        setattr(model.config, family.width_field, widths.pop())
    _, cms_model_class = cms_classes(family)
    for module in model.modules():
        if type(module) is cms_model_class:
            module.__class__ = family.causal_lm_class
    del model.config.cms_adapter
    model.config.__class__ = family.config_class
    return model

"""Retrofit the FFNs of a pretrained transformer into Continuum Memory Systems (paper, section 7.3), and undo it."""

import copy

from torch import nn

from ..modeling.cms_adapter_families import FAMILIES, Family
from ..modeling.cms_adapter_ffn import RetrofittedFFN, attach_levels, ffn_sites
from ..modeling.cms_adapter_lowrank import stack_levels
from ..modeling.modeling_cms_adapter import CMS_MODEL_TYPE_SUFFIX, cms_classes
from .base_parameters import freeze_outside_adapter, record_fingerprints, release_base
from .cms_config import MIXED_INITS, CMSConfig
from .cms_ffn import family_of, fold_levels, strip_levels


def retrofit(model: nn.Module, config: CMSConfig | None = None, freeze_base: bool = True) -> nn.Module:
    """Wrap the FFNs of the selected decoder layers of `model` in CMS blocks, in place, and return `model`.

    The model computes exactly what it computed before. The first level (the pretrained FFN) is frozen when its
    period is `None`; new levels train unless their period is `None`. With `freeze_base` (the default, as with
    PEFT) every other parameter stops training, except those PEFT owns, so LoRA applied before retrofitting keeps
    training; `freeze_base=False` leaves their `requires_grad` as it was. What is still trainable outside the
    adapter is fingerprinted, so that `save_cms_adapter` refuses to drop changes to it. A causal LM of a supported
    family becomes its `CMS<class>` counterpart, which `save_pretrained` and `AutoModelForCausalLM` round-trip
    once `hf_hope` is imported.
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
    if freeze_base:
        freeze_outside_adapter(model)
    record_fingerprints(model)
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


def consolidate_levels(model: nn.Module, source: int, target: int) -> nn.Module:
    """Fold CMS level `source` into level `target` exactly, then restart `source` from zero; returns `model`.

    This is how knowledge flows from a fast level into a slower one at a task boundary: the target level's FFN
    becomes one FFN that stacks the hidden units of both (so the model computes exactly what it computed before),
    and the source level's output projection is zeroed, so it starts learning again from a silent state. The
    target grows by the source's width in every retrofitted layer, and `config.cms_adapter` records its new width
    so that `save_pretrained` and `from_pretrained` round-trip. With `init="lowrank"` the levels' factors are
    stacked the same way: the target's rank grows by the source's, and the source's `B` factors are zeroed.
    Levels are numbered as in `CMSConfig.levels` from 1 (the pretrained FFN); only new levels (2 and up) of an
    `init="zero"` or `init="lowrank"` adapter can be consolidated.
    """
    family, config = retrofitted_family(model)
    new_levels = range(2, len(config.levels) + 1)
    if config.init in MIXED_INITS:
        raise ValueError(
            f"consolidate_levels needs an adapter built with init='zero' or 'lowrank' (this one uses "
            f"init={config.init!r}, whose levels are mixed by softmax weights and cannot be stacked)."
        )
    if source not in new_levels or target not in new_levels or source == target:
        raise ValueError(
            f"Cannot consolidate level {source} into level {target}: both must be distinct new CMS levels, numbered "
            f"{new_levels.start} to {new_levels.stop - 1} here (level 1 is the pretrained FFN)."
        )
    sites = [site for site in ffn_sites(model, family) if isinstance(site.ffn, RetrofittedFFN)]
    adapter = copy.deepcopy(model.config.cms_adapter)
    if config.init == "lowrank":
        for site in sites:
            stack_levels(site.ffn.cms_levels[target - 2].mlp, site.ffn.cms_levels[source - 2].mlp)
        adapter["levels"][target - 1]["rank"] = sites[0].ffn.cms_levels[target - 2].mlp.rank
        model.config.cms_adapter = adapter
        return model
    for site in sites:
        fast, slow = site.ffn.cms_levels[source - 2], site.ffn.cms_levels[target - 2]
        trainable = [parameter.requires_grad for parameter in slow.mlp.parameters()]
        folded = family.fold([slow.mlp, fast.mlp], [1.0, 1.0], model.config)
        folded.requires_grad_(all(trainable))
        slow.mlp = folded
        family.silence(fast.mlp)
    adapter["levels"][target - 1]["intermediate_size"] = family.width_of(sites[0].ffn.cms_levels[target - 2].mlp)
    model.config.cms_adapter = adapter
    return model


def unretrofit(model: nn.Module, merge: bool = True) -> nn.Module:
    """Turn a retrofitted model back into a plain model of its original class, in place, and return it.

    With `merge=True` every level is folded into one FFN that computes what the CMS computed, by stacking the
    levels' hidden units (new levels whose output is still exactly zero are dropped; unit copies are stacked next
    to the pretrained units they copied, whose output is scaled down by the copies' mixing weights), or, for
    low-rank levels, by adding their changes to the projections' weights (the width stays). The result must fit the
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
    release_base(model)  # what retrofit froze trains again
    del model.config.cms_adapter
    model.config.__class__ = family.config_class
    return model

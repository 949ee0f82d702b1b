"""`CMS<Family>Config` and `CMS<Family>ForCausalLM`: the retrofitted counterparts of each family's causal LM.

A retrofitted model's config is a `CMS<Family>Config` (model type `<family>_cms`) that records the adapter in
`cms_adapter`. `import hf_hope` registers these classes with `AutoConfig` and `AutoModelForCausalLM`, so a
retrofitted model saved with `save_pretrained` loads back, levels included, with `AutoModelForCausalLM`.
"""

from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

from .cms_config import CMSConfig
from .cms_ffn import attach_levels
from .families import FAMILIES, Family

CMS_MODEL_TYPE_SUFFIX = "_cms"


def _cms_config_class(family: Family) -> type[PretrainedConfig]:
    @strict
    class CMSFamilyConfig(family.config_class):
        model_type = family.model_type + CMS_MODEL_TYPE_SUFFIX
        cms_adapter: dict[str, Any] | None = None

    return _name(CMSFamilyConfig, f"CMS{family.config_class.__name__}")


def _cms_model_class(family: Family, config_class: type[PretrainedConfig]) -> type[PreTrainedModel]:
    class CMSFamilyForCausalLM(family.causal_lm_class):
        def __init__(self, config: PretrainedConfig) -> None:
            super().__init__(config)
            if config.cms_adapter is None:
                raise ValueError(
                    f"{type(self).__name__} needs config.cms_adapter; build one with hf_hope.retrofit(model, config)."
                )
            attach_levels(self, family, CMSConfig.from_dict(config.cms_adapter))

    CMSFamilyForCausalLM.config_class = config_class
    return _name(CMSFamilyForCausalLM, f"CMS{family.causal_lm_class.__name__}")


def _name(cls: type, name: str) -> type:
    """Give a generated class a real, importable name, so its instances pickle and its repr reads well."""
    cls.__name__ = cls.__qualname__ = name
    cls.__module__ = __name__
    globals()[name] = cls
    return cls


def _build_cms_classes(family: Family) -> tuple[type[PretrainedConfig], type[PreTrainedModel]]:
    config_class = _cms_config_class(family)
    return config_class, _cms_model_class(family, config_class)


_CMS_CLASSES = {family.model_type: _build_cms_classes(family) for family in FAMILIES.values()}


def cms_classes(family: Family) -> tuple[type[PretrainedConfig], type[PreTrainedModel]]:
    """The CMS config and causal LM classes of `family`."""
    return _CMS_CLASSES[family.model_type]


def register_auto_classes() -> None:
    """Register every family's CMS config and causal LM with `AutoConfig` and `AutoModelForCausalLM`."""
    for config_class, model_class in _CMS_CLASSES.values():
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        AutoModelForCausalLM.register(config_class, model_class, exist_ok=True)

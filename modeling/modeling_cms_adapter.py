"""`CMS<Family>Config` and `CMS<Family>ForCausalLM`: the retrofitted counterparts of each family's causal LM.

A retrofitted model's config is a `CMS<Family>Config` (model type `<family>_cms`) that records the adapter in
`cms_adapter`; the model rebuilds its levels from it. `import hf_hope` registers these classes with `AutoConfig`
and `AutoModelForCausalLM`. `save_pretrained` also copies this file and the ones it imports next to the weights
and writes `auto_map`, so `trust_remote_code=True` loads the folder where hf_hope is not installed.
"""

import os
from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

from .checkpoint_errors import weights_named_on_error
from .cms_adapter_config import CMSAdapterConfig
from .cms_adapter_families import FAMILIES, Family
from .cms_adapter_ffn import attach_levels
from .folder_swap import recover_swapped_folder, staged_save_pretrained

CMS_MODEL_TYPE_SUFFIX = "_cms"


def _auto_map(family: Family) -> dict[str, str]:
    """Where `trust_remote_code=True` finds the classes: `<module file>.<class>`, this file being copied."""
    module = __name__.rsplit(".", 1)[-1]
    return {
        "AutoConfig": f"{module}.CMS{family.config_class.__name__}",
        "AutoModelForCausalLM": f"{module}.CMS{family.causal_lm_class.__name__}",
    }


def _cms_config_class(family: Family) -> type[PretrainedConfig]:
    @strict
    class CMSFamilyConfig(family.config_class):
        model_type = family.model_type + CMS_MODEL_TYPE_SUFFIX
        _auto_class = "AutoConfig"  # saving the config copies its code (transformers' custom_object_save)
        cms_adapter: dict[str, Any] | None = None

        def __post_init__(self, **kwargs: Any) -> None:
            kwargs.pop("auto_map", None)  # derived from the class, never stored: unretrofit leaves none behind
            super().__post_init__(**kwargs)

        @property
        def auto_map(self) -> dict[str, str]:
            return _auto_map(family)

        def to_dict(self) -> dict[str, Any]:
            return {**super().to_dict(), "auto_map": self.auto_map}

    return _name(CMSFamilyConfig, f"CMS{family.config_class.__name__}")


def _cms_model_class(family: Family, config_class: type[PretrainedConfig]) -> type[PreTrainedModel]:
    class CMSFamilyForCausalLM(family.causal_lm_class):
        _auto_class = "AutoModelForCausalLM"  # saving the model copies its code (transformers' custom_object_save)

        def __init__(self, config: PretrainedConfig) -> None:
            super().__init__(config)
            if config.cms_adapter is None:
                raise ValueError(
                    f"{type(self).__name__} needs config.cms_adapter; build one with hf_hope.retrofit(model, config)."
                )
            attach_levels(self, family, CMSAdapterConfig.from_dict(config.cms_adapter))

        @classmethod
        def from_pretrained(cls, pretrained_model_name_or_path: Any, *args: Any, **kwargs: Any) -> PreTrainedModel:
            """The family's `from_pretrained`; a damaged weights file is an error that names the folder."""
            if isinstance(pretrained_model_name_or_path, (str, os.PathLike)):
                recover_swapped_folder(pretrained_model_name_or_path)  # a save killed between its two renames
            with weights_named_on_error(pretrained_model_name_or_path):
                return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

        def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> Any:
            """The family's `save_pretrained`, written in stages: a save killed part-way leaves the previous one."""
            return staged_save_pretrained(super().save_pretrained, save_directory, *args, **kwargs)

    CMSFamilyForCausalLM.config_class = config_class
    return _name(CMSFamilyForCausalLM, f"CMS{family.causal_lm_class.__name__}")


def _name(cls: type, name: str) -> type:
    """Give a generated class a real, importable name, so its instances pickle and `auto_map` can name it."""
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

"""hf_hope.conversion: the CMS adapter (retrofit pretrained FFNs into multi-frequency memories) and conversions."""

from .adapter_io import CMS_WEIGHTS_NAME, cms_adapter_state_dict, load_cms_adapter, save_cms_adapter
from .auto_classes import register_auto_classes
from .cms_config import CMS_CONFIG_NAME, CMSConfig
from .cms_ffn import LevelMixing, RetrofittedFFN
from .families import FAMILIES
from .gguf import convert_gguf
from .retrofit import consolidate_levels, retrofit, unretrofit

SUPPORTED_MODEL_TYPES = tuple(sorted(FAMILIES))

__all__ = [
    "CMS_CONFIG_NAME",
    "CMS_WEIGHTS_NAME",
    "SUPPORTED_MODEL_TYPES",
    "CMSConfig",
    "LevelMixing",
    "RetrofittedFFN",
    "cms_adapter_state_dict",
    "consolidate_levels",
    "convert_gguf",
    "load_cms_adapter",
    "register_auto_classes",
    "retrofit",
    "save_cms_adapter",
    "unretrofit",
]

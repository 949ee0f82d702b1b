"""hf_hope.conversion: the CMS adapter (retrofit pretrained FFNs into multi-frequency memories) and conversions.

The adapter's model side (its levels, families and `CMS<Family>` classes) lives in `hf_hope.modeling`, so that
retrofitted checkpoints carry it; it is re-exported here.
"""

from ..modeling.cms_adapter_families import FAMILIES
from ..modeling.cms_adapter_ffn import LevelMixing, RetrofittedFFN
from ..modeling.modeling_cms_adapter import register_auto_classes
from .adapter_files import CMS_WEIGHTS_NAME
from .adapter_io import cms_adapter_state_dict, load_cms_adapter, save_cms_adapter
from .cms_config import CMS_CONFIG_NAME, CMSConfig
from .gguf import convert_gguf
from .retrofit import consolidate_levels, retrofit, unretrofit
from .trainable import ParameterCount, ParameterReport, count_parameters, print_trainable_parameters

SUPPORTED_MODEL_TYPES = tuple(sorted(FAMILIES))

__all__ = [
    "CMS_CONFIG_NAME",
    "CMS_WEIGHTS_NAME",
    "SUPPORTED_MODEL_TYPES",
    "CMSConfig",
    "LevelMixing",
    "ParameterCount",
    "ParameterReport",
    "RetrofittedFFN",
    "cms_adapter_state_dict",
    "consolidate_levels",
    "convert_gguf",
    "count_parameters",
    "load_cms_adapter",
    "print_trainable_parameters",
    "register_auto_classes",
    "retrofit",
    "save_cms_adapter",
    "unretrofit",
]

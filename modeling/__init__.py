"""The HOPE model and the CMS adapter's model side: flat, torch- and transformers-only files.

A saved checkpoint carries the files its model imports (`auto_map`): HOPE's from `modeling_hope.py`, a retrofitted
model's from `modeling_cms_adapter.py`.
"""

from .cache_hope import HopeCache
from .cms import CMSLevel, ContinuumMemory, GatedMLP
from .configuration_hope import HopeConfig
from .levels import UNTAGGED, LevelTag, parameter_levels
from .memory_state import MemoryState
from .modeling_hope import HopeForCausalLM, HopeModel, HopePreTrainedModel
from .titans import SelfModifyingTitans

__all__ = [
    "CMSLevel",
    "ContinuumMemory",
    "GatedMLP",
    "HopeCache",
    "HopeConfig",
    "HopeForCausalLM",
    "HopeModel",
    "HopePreTrainedModel",
    "LevelTag",
    "MemoryState",
    "SelfModifyingTitans",
    "UNTAGGED",
    "parameter_levels",
]

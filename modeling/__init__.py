"""The HOPE model. These flat, torch-only files are also copied into every saved checkpoint (`auto_map`)."""

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

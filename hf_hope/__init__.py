"""hf_hope: Nested Learning for Hugging Face `transformers`.

Importing this package registers HOPE with `AutoConfig`, `AutoModel` and `AutoModelForCausalLM`, and marks the
classes for `auto_map` so that saved checkpoints also load with `trust_remote_code=True` where hf_hope is absent.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .modeling import (
    CMSLevel,
    ContinuumMemory,
    GatedMLP,
    HopeCache,
    HopeConfig,
    HopeForCausalLM,
    HopeModel,
    HopePreTrainedModel,
    LevelTag,
    parameter_levels,
)

__version__ = "0.1.0"

AutoConfig.register(HopeConfig.model_type, HopeConfig, exist_ok=True)
AutoModel.register(HopeConfig, HopeModel, exist_ok=True)
AutoModelForCausalLM.register(HopeConfig, HopeForCausalLM, exist_ok=True)
HopeConfig.register_for_auto_class()
HopeModel.register_for_auto_class("AutoModel")
HopeForCausalLM.register_for_auto_class("AutoModelForCausalLM")

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
    "parameter_levels",
]

"""hf_hope: Nested Learning for Hugging Face `transformers`.

Importing this package registers HOPE with `AutoConfig`, `AutoModel` and `AutoModelForCausalLM`, and marks the
classes for `auto_map` so that saved checkpoints also load with `trust_remote_code=True` where hf_hope is absent.
It also registers the retrofitted (`<family>_cms`) counterparts of the CMS adapter's supported families.
"""

from importlib.metadata import version

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .clock import ClockedOptimizer, LevelClock, LevelClockCallback, OnlineLearner
from .conversion import (
    SUPPORTED_MODEL_TYPES,
    CMSConfig,
    consolidate_levels,
    convert_gguf,
    count_parameters,
    load_cms_adapter,
    print_trainable_parameters,
    register_auto_classes,
    retrofit,
    save_cms_adapter,
    unretrofit,
)
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
from .optim import M3, DeepMomentum, DeltaMomentum, newton_schulz

__version__ = version("hf-hope")

AutoConfig.register(HopeConfig.model_type, HopeConfig, exist_ok=True)
AutoModel.register(HopeConfig, HopeModel, exist_ok=True)
AutoModelForCausalLM.register(HopeConfig, HopeForCausalLM, exist_ok=True)
HopeConfig.register_for_auto_class()
HopeModel.register_for_auto_class("AutoModel")
HopeForCausalLM.register_for_auto_class("AutoModelForCausalLM")
register_auto_classes()

__all__ = [
    "SUPPORTED_MODEL_TYPES",
    "CMSConfig",
    "CMSLevel",
    "ClockedOptimizer",
    "ContinuumMemory",
    "DeepMomentum",
    "DeltaMomentum",
    "GatedMLP",
    "HopeCache",
    "HopeConfig",
    "HopeForCausalLM",
    "HopeModel",
    "HopePreTrainedModel",
    "LevelClock",
    "LevelClockCallback",
    "LevelTag",
    "M3",
    "OnlineLearner",
    "consolidate_levels",
    "convert_gguf",
    "count_parameters",
    "load_cms_adapter",
    "newton_schulz",
    "parameter_levels",
    "print_trainable_parameters",
    "retrofit",
    "save_cms_adapter",
    "unretrofit",
]

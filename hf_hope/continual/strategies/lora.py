"""`lora`: PEFT LoRA (rank `lora_rank`) on the attention projections; the base model is frozen.

Only the adapter is saved; reloading puts it back over a fresh base model from `model_factory()`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from torch import nn
from transformers.pytorch_utils import Conv1D

from .base import ModelFactory, Strategy

if TYPE_CHECKING:
    from ..settings import ContinualSettings

_ATTENTION_MARKERS = ("attn", "attention")


class LoraStrategy(Strategy):
    """LoRA adapters on `lora_target_modules`, by default every linear projection inside the attention blocks."""

    name = "lora"
    settings_prefixes = ("lora_",)
    title = "LoRA"

    def default_learning_rate(self, settings: ContinualSettings) -> float:
        """1e-3: at 1e-4 rank-8 LoRA barely moves the base model in 32-64 steps (the README's domains tables)."""
        return 1e-3

    def prepare(self, model: nn.Module, settings: ContinualSettings) -> nn.Module:
        from peft import LoraConfig, get_peft_model

        targets = settings.lora_target_modules or attention_projections(model)
        config = LoraConfig(
            r=settings.lora_rank, lora_alpha=settings.lora_alpha, lora_dropout=0.0, target_modules=targets
        )
        return get_peft_model(model, config)

    def load(self, model_factory: ModelFactory, folder: str | Path, settings: ContinualSettings) -> nn.Module:
        from peft import PeftModel

        return PeftModel.from_pretrained(model_factory(), str(folder), is_trainable=True)


def attention_projections(model: nn.Module) -> list[str]:
    """Full names of the linear projections inside attention blocks (LoRA's default targets)."""
    names = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear | Conv1D)
        and any(marker in part.lower() for part in name.split(".")[:-1] for marker in _ATTENTION_MARKERS)
    ]
    if not names:
        raise ValueError(
            f"Found no linear projection inside an attention block of this {type(model).__name__}; set "
            "ContinualSettings.lora_target_modules to the module names LoRA should wrap."
        )
    return names

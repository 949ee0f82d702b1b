"""`full`: every parameter of the base model trains, on each task in turn."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from torch import nn
from transformers import AutoModelForCausalLM

from .base import ModelFactory, Strategy

if TYPE_CHECKING:
    from ..settings import ContinualSettings


class FullStrategy(Strategy):
    """Full fine-tuning: the whole model is trainable and saved."""

    name = "full"
    title = "Full fine-tuning"

    def prepare(self, model: nn.Module, settings: ContinualSettings) -> nn.Module:
        return model.requires_grad_(True)

    def load(self, model_factory: ModelFactory, folder: str | Path, settings: ContinualSettings) -> nn.Module:
        return AutoModelForCausalLM.from_pretrained(str(folder)).requires_grad_(True)

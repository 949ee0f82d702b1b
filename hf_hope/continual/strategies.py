"""How a base causal LM is prepared, saved and reloaded for each continual fine-tuning strategy.

- `full`: every parameter trains.
- `lora`: PEFT LoRA (rank `lora_rank`) on the attention projections; the base model is frozen.
- `cms`: the CMS adapter (`hf_hope.retrofit`) adds new levels of width `cms_width` and periods `cms_periods` to
  every FFN; only those new levels train (the pretrained FFN, attention, embeddings and head are frozen), each at
  its own period, driven by a `LevelClockCallback`. Each task gets a fresh callback, so the clock counts from
  each task's first step, and gradients a slow level has accumulated but not yet applied when a task ends are
  dropped (choose `steps_per_task` a multiple of the periods to avoid that).
  With `cms_consolidate`, after each task the fastest level is folded exactly into the next slower one and
  restarts from zero (`hf_hope.consolidate_levels`): each task's lesson is kept in a level that updates rarely,
  and the fast level learns the next task from a silent start.
- `joint`: like `full`, but trained once on the union of all tasks (the multi-task upper bound).

A strategy saves what it trains into a task folder and rebuilds the same trainable model from it, so that a run
resumes where it stopped. `model_factory()` must return the same base model every time it is called.
"""

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForCausalLM, TrainerCallback
from transformers.pytorch_utils import Conv1D

from ..clock.callback import LevelClockCallback
from ..clock.core import LevelClock
from ..conversion import CMSConfig, consolidate_levels, retrofit
from ..modeling.cms import parameter_levels
from .settings import ContinualSettings, check_strategy

ModelFactory = Callable[[], nn.Module]
_ATTENTION_MARKERS = ("attn", "attention")


def prepare_model(model: nn.Module, settings: ContinualSettings) -> nn.Module:
    """Turn a fresh base causal LM into the model `settings.strategy` trains; returns it (possibly a new object)."""
    strategy = check_strategy(settings.strategy)
    if strategy in ("full", "joint"):
        model.requires_grad_(True)
        return model
    if strategy == "lora":
        from peft import LoraConfig, get_peft_model

        targets = settings.lora_target_modules or attention_projections(model)
        config = LoraConfig(
            r=settings.lora_rank, lora_alpha=settings.lora_alpha, lora_dropout=0.0, target_modules=targets
        )
        return get_peft_model(model, config)
    scales = settings.cms_lr_scales or [1.0] * len(settings.cms_periods)
    new_levels = zip(settings.cms_periods, scales, strict=True)
    levels = [{"period": None}] + [{"period": period, "lr_scale": scale} for period, scale in new_levels]
    config = CMSConfig(levels=levels, init=settings.cms_init, intermediate_size=settings.cms_width)
    return freeze_all_but_cms_levels(retrofit(model, config))


def strategy_callbacks(settings: ContinualSettings) -> list[TrainerCallback]:
    """The Trainer callbacks one task's training needs (new objects each call)."""
    return [LevelClockCallback()] if check_strategy(settings.strategy) == "cms" else []


def build_optimizer(model: nn.Module, settings: ContinualSettings) -> torch.optim.Optimizer | None:
    """AdamW with one param group per CMS learning-rate scale (strategy cms with `cms_lr_scales`), else None.

    `None` lets Trainer build its default AdamW from the same settings.
    """
    if check_strategy(settings.strategy) != "cms" or settings.cms_lr_scales is None:
        return None
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    groups = LevelClock(model).param_groups(trainable, lr=settings.learning_rate)
    return torch.optim.AdamW(groups, lr=settings.learning_rate, weight_decay=settings.weight_decay)


def finish_task(model: nn.Module, settings: ContinualSettings) -> nn.Module:
    """What happens to the model between tasks: with `cms_consolidate`, the fastest level folds into the next one.

    The folding is exact, so the model evaluated after the task computes what the trained one computed.
    """
    if check_strategy(settings.strategy) == "cms" and settings.cms_consolidate:
        fastest = len(settings.cms_periods) + 1  # levels count from 1, the pretrained FFN
        consolidate_levels(model, source=fastest, target=fastest - 1)
    return model


def save_task_model(model: nn.Module, folder: str | Path) -> None:
    """Save what the strategy trained: the whole model (full, joint, cms) or the LoRA adapter (PEFT models)."""
    model.save_pretrained(str(folder))


def load_task_model(model_factory: ModelFactory, folder: str | Path, settings: ContinualSettings) -> nn.Module:
    """Rebuild the trainable model saved by `save_task_model` in `folder`, with the strategy's trainable set."""
    strategy = check_strategy(settings.strategy)
    if strategy == "lora":
        from peft import PeftModel

        return PeftModel.from_pretrained(model_factory(), str(folder), is_trainable=True)
    model = AutoModelForCausalLM.from_pretrained(str(folder))  # a retrofitted model loads once hf_hope is imported
    if strategy == "cms":
        return freeze_all_but_cms_levels(model)
    return model.requires_grad_(True)


def freeze_all_but_cms_levels(model: nn.Module) -> nn.Module:
    """Only parameters of CMS levels that have a period train; everything else is frozen."""
    tags = parameter_levels(model)
    for name, parameter in model.named_parameters():
        tag = tags[name]
        parameter.requires_grad_(tag.level > 0 and tag.period is not None)
    if not any(parameter.requires_grad for parameter in model.parameters()):
        raise ValueError("The CMS strategy found no trainable CMS level in the model (is it retrofitted?).")
    return model


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

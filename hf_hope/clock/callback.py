"""`LevelClockCallback`: the level clock inside `transformers.Trainer`.

The clock ticks in `on_pre_optimizer_step`, when the Trainer has accumulated, synchronised, unscaled and clipped
the gradients, so gradient accumulation, clipping, mixed precision and the LR scheduler work as usual. Its state
is written into every checkpoint folder (`level_clock.safetensors`), before the Trainer's own files, and read back
when training resumes.
"""

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from ..modeling.levels import UNTAGGED, parameter_levels
from .core import LevelClock
from .state_file import CLOCK_STATE_NAME, load_clock_state, save_clock_state


class LevelClockCallback(TrainerCallback):
    """Update each level of parameters at its own period inside `Trainer`.

    Args:
        levels: `None` to read levels from the model's tags, or `{name regex: {"period": P, "lr_scale": s}}`.
        reduction: `"mean"` (default) or `"sum"` of a level's gradients over its period.

    Levels with an `lr_scale` other than 1 need an optimizer whose param groups separate them: pass
    `optimizers=(torch.optim.AdamW(LevelClock(model).param_groups(model.parameters(), lr=...)), None)`.
    Each period's update count and gradient norm are added to the Trainer's logs as `level_clock/p<period>_updates`
    and `level_clock/p<period>_grad_norm` (`frozen_...` for frozen levels), the same names for HOPE and retrofits.
    """

    def __init__(self, levels: Mapping[str, Mapping[str, Any]] | None = None, reduction: str = "mean") -> None:
        self.levels, self.reduction = levels, reduction
        self.clock: LevelClock | None = None
        self._grad_norms: dict[int, float] = {}
        self._saved_at: int | None = None  # the step whose checkpoint holds the clock

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        _refuse_unsupported_setups(args)
        self.clock = LevelClock(kwargs["model"], self.levels, self.reduction)
        if self.levels is None:
            _warn_if_no_tagged_level_trains(kwargs["model"])
        _check_learning_rate_groups(self.clock, kwargs.get("optimizer"))
        if state.global_step > 0:
            self._restore(args, state)

    def on_pre_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        report = self.clock.tick()
        if report is not None:
            self._grad_norms = report.grad_norms

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if control.should_save:
            self._save(args, state)

    def on_epoch_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if control.should_save:
            self._save(args, state)

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if self._saved_at != state.global_step:  # a save decided after the step ended (save_strategy="best")
            self._save(args, state)

    def _save(self, args: TrainingArguments, state: TrainerState) -> None:
        """Write the clock into the checkpoint folder the Trainer is about to write.

        Written before the Trainer's own files: its `trainer_state.json` comes last, then it deletes checkpoints
        beyond `save_total_limit`, so a checkpoint with a `trainer_state.json` always holds the clock, and a process
        killed mid-save leaves the previous checkpoint whole. Every rank takes part (FSDP2 gathers the buffers'
        shards); the main process writes.
        """
        save_clock_state(self.clock, Path(args.output_dir) / f"checkpoint-{state.global_step}" / CLOCK_STATE_NAME)
        self._saved_at = state.global_step

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        if logs is None or "loss" not in logs or self.clock is None:
            return
        entries = {}
        for name, (updates, grad_norm) in self.clock.by_period(self._grad_norms).items():
            entries[f"level_clock/{name}_updates"] = updates
            entries[f"level_clock/{name}_grad_norm"] = grad_norm
        entries["level_clock/skipped_steps"] = self.clock.skipped_steps
        logs.update(entries)
        if state.log_history:
            state.log_history[-1].update(entries)

    def _restore(self, args: TrainingArguments, state: TrainerState) -> None:
        candidates = [Path(args.output_dir) / f"checkpoint-{state.global_step}"]
        if isinstance(args.resume_from_checkpoint, str):
            candidates.insert(0, Path(args.resume_from_checkpoint))
        path = next((folder / CLOCK_STATE_NAME for folder in candidates if (folder / CLOCK_STATE_NAME).is_file()), None)
        if path is None:
            raise FileNotFoundError(
                f"Resuming at step {state.global_step}, but no {CLOCK_STATE_NAME} was found in "
                f"{', '.join(str(folder) for folder in candidates)}. Resume from a checkpoint saved with "
                "LevelClockCallback (set TrainingArguments.resume_from_checkpoint to its folder if it is elsewhere)."
            )
        load_clock_state(self.clock, path)


def _refuse_unsupported_setups(args: TrainingArguments) -> None:
    """The clock needs each parameter's own, final gradient: refuse set-ups that hide or leave it scaled."""
    if args.deepspeed or os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        raise ValueError(
            "LevelClockCallback cannot run under DeepSpeed: ZeRO reduces gradients into flat partitions that its "
            "engine steps itself, so the clock cannot hold back one level's gradients for its period. Use DDP, or "
            'FSDP2 (fsdp=True, fsdp_config={"version": 2}), which keep one gradient per parameter.'
        )
    if args.fsdp and int(args.fsdp_config.get("version", 2)) == 1:
        raise ValueError(
            "LevelClockCallback cannot run under FSDP1: its flat parameters merge many parameters into one, so the "
            'clock cannot update levels separately. Use FSDP2 (fsdp_config={"version": 2}) or DDP.'
        )
    if args.fp16 and args.max_grad_norm <= 0:
        raise ValueError(
            "LevelClockCallback with fp16 needs max_grad_norm > 0: Trainer unscales fp16 gradients before the "
            "optimizer step only when it clips them, and the clock must accumulate unscaled gradients. Set "
            "max_grad_norm (e.g. 1.0), or use bf16."
        )


def _warn_if_no_tagged_level_trains(model: torch.nn.Module) -> None:
    """A model with levels meant to train but none trainable (e.g. PEFT froze them) would train without its clock."""
    tags = parameter_levels(model)
    meant_to_train = [name for name, tag in tags.items() if tag != UNTAGGED and tag.period is not None]
    trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    if meant_to_train and not trainable.intersection(meant_to_train):
        warnings.warn(
            f"LevelClockCallback: no CMS level is trainable ({len(meant_to_train)} parameters of levels with a "
            "period have requires_grad=False), so the clock has nothing to schedule and only the untagged "
            "parameters train. If PEFT froze them (get_peft_model, or SFTTrainer's peft_config= on a retrofitted "
            "model), apply LoRA first and retrofit second: get_peft_model, hf_hope.retrofit, then the trainer "
            "without peft_config; or the trainer with peft_config on the original model, then "
            "hf_hope.retrofit(trainer.model) before train().",
            UserWarning,
            stacklevel=2,
        )


def _check_learning_rate_groups(clock: LevelClock, optimizer: torch.optim.Optimizer | None) -> None:
    """Each param group must hold one learning-rate scale, or the level scales could not apply."""
    if optimizer is None or all(level.tag.lr_scale == 1.0 for level in clock.levels):
        return
    scale_of = {id(p): level.tag.lr_scale for level in clock.levels for p in level.parameters}
    for index, group in enumerate(optimizer.param_groups):
        scales = {scale_of.get(id(parameter), 1.0) for parameter in group["params"]}
        if len(scales) > 1:
            raise ValueError(
                f"Optimizer param group {index} mixes levels with learning-rate scales {sorted(scales)}, so the "
                "scales cannot apply. Build the optimizer from the clock's groups and pass it to Trainer: "
                "optimizers=(torch.optim.AdamW(LevelClock(model).param_groups(model.parameters(), lr=...)), None)."
            )

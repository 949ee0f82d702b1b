"""`LevelClockCallback` in `Trainer`: exact schedules with gradient accumulation, logs, bitwise resume, refusals."""

import types

import pytest
import torch
from transformers import Trainer, TrainerCallback

from hf_hope import HopeForCausalLM
from hf_hope.clock.callback import CLOCK_STATE_NAME, LevelClockCallback, _refuse_unsupported_setups
from hf_hope.clock.core import LevelClock

from ..helpers import RepeatedBatch, tiny_config, training_arguments

SLOW_PERIOD = 4  # tiny_config's second CMS level


class WeightRecorder(TrainerCallback):
    """Keeps a copy of every parameter after each optimizer step."""

    def __init__(self) -> None:
        self.history: list[dict[str, torch.Tensor]] = []

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.history.append({name: p.detach().clone() for name, p in model.named_parameters()})


class StopAt(TrainerCallback):
    """Interrupts training after a given optimizer step, as a crash would (the schedule still plans for more)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        control.should_training_stop = state.global_step >= self.step


def make_trainer(output_dir, max_steps: int, accumulation: int = 1, callbacks=(), save_steps: int | None = None):
    torch.manual_seed(0)
    model = HopeForCausalLM(tiny_config())
    data = RepeatedBatch(torch.randint(3, 97, (8, 12), generator=torch.Generator().manual_seed(0)), repeats=20)
    args = training_arguments(output_dir, max_steps=max_steps)
    args.gradient_accumulation_steps, args.per_device_train_batch_size = accumulation, 2
    if save_steps is not None:
        args.save_strategy, args.save_steps = "steps", save_steps
    return Trainer(model=model, args=args, train_dataset=data, callbacks=[LevelClockCallback(), *callbacks])


def test_levels_update_exactly_at_their_periods_with_gradient_accumulation(tmp_path):
    recorder = WeightRecorder()
    trainer = make_trainer(tmp_path, max_steps=9, accumulation=2, callbacks=[recorder])
    trainer.train()
    slow = "model.layers.0.cms.levels.1.mlp.up_proj.weight"
    fast = "model.layers.0.cms.levels.0.mlp.up_proj.weight"
    initial = dict(trainer.model.named_parameters())  # only used for shapes
    assert slow in initial and fast in initial
    previous = recorder.history[0]
    for step, weights in enumerate(recorder.history[1:], start=2):
        assert (not torch.equal(weights[slow], previous[slow])) == (step % SLOW_PERIOD == 0), step
        assert not torch.equal(weights[fast], previous[fast]), step
        previous = weights
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert logged[-1][f"level_clock/p{SLOW_PERIOD}_updates"] == 9 // SLOW_PERIOD
    assert logged[-1]["level_clock/p1_updates"] == 9
    assert logged[-1][f"level_clock/p{SLOW_PERIOD}_grad_norm"] > 0


def test_resumed_training_reaches_the_uninterrupted_weights_bitwise(tmp_path):
    uninterrupted = make_trainer(tmp_path / "straight", max_steps=10)
    uninterrupted.train()

    first = make_trainer(tmp_path / "resumed", max_steps=10, save_steps=5, callbacks=[StopAt(5)])
    first.train()  # interrupted at step 5, which is not a multiple of the slow period
    assert (tmp_path / "resumed" / "checkpoint-5" / CLOCK_STATE_NAME).is_file()
    resumed = make_trainer(tmp_path / "resumed", max_steps=10)
    resumed.train(resume_from_checkpoint=str(tmp_path / "resumed" / "checkpoint-5"))
    for name, parameter in uninterrupted.model.named_parameters():
        assert torch.equal(parameter, resumed.model.get_parameter(name)), name


def test_resuming_without_a_saved_clock_is_refused(tmp_path):
    first = make_trainer(tmp_path, max_steps=2, save_steps=2)
    first.train()
    (tmp_path / "checkpoint-2" / CLOCK_STATE_NAME).unlink()
    again = make_trainer(tmp_path, max_steps=4)
    with pytest.raises(FileNotFoundError, match="no level_clock.safetensors was found"):
        again.train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))


def test_mixed_learning_rate_scales_need_level_param_groups(tmp_path):
    callback = LevelClockCallback(levels={r".*cms\.levels\.1\..*": {"period": 2, "lr_scale": 0.1}})
    torch.manual_seed(0)
    model = HopeForCausalLM(tiny_config())
    data = RepeatedBatch(torch.randint(3, 97, (4, 12)), repeats=4)
    trainer = Trainer(model=model, args=training_arguments(tmp_path, 2), train_dataset=data, callbacks=[callback])
    with pytest.raises(ValueError, match="mixes levels with learning-rate scales"):
        trainer.train()
    groups = LevelClock(model, callback.levels).param_groups(model.parameters(), lr=1e-2)
    optimizer = torch.optim.AdamW(groups)
    trainer = Trainer(
        model=model,
        args=training_arguments(tmp_path, 2),
        train_dataset=data,
        callbacks=[LevelClockCallback(levels=callback.levels)],
        optimizers=(optimizer, None),
    )
    trainer.train()
    assert sorted({group["initial_lr"] for group in optimizer.param_groups}) == [1e-3, 1e-2]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"deepspeed": "ds_config.json"}, "cannot run under DeepSpeed.*Use DDP, or FSDP2"),
        ({"fsdp": True, "fsdp_config": {"version": 1}}, "cannot run under FSDP1.*flat parameters.*Use FSDP2"),
        ({"fp16": True, "max_grad_norm": 0.0}, "with fp16 needs max_grad_norm > 0"),
    ],
)
def test_set_ups_that_hide_or_scale_gradients_are_refused(settings, message):
    defaults = {"deepspeed": None, "fsdp": False, "fsdp_config": {}, "fp16": False, "max_grad_norm": 1.0}
    args = types.SimpleNamespace(**{**defaults, **settings})
    with pytest.raises(ValueError, match=message):
        _refuse_unsupported_setups(args)


def test_fsdp2_is_not_refused():
    args = types.SimpleNamespace(deepspeed=None, fsdp=True, fsdp_config={"version": 2}, fp16=False, max_grad_norm=1.0)
    _refuse_unsupported_setups(args)


@pytest.mark.parametrize(
    ("init", "weight"), [("lowrank", "deltas.up_proj.out_factor.weight"), ("units", "ffn.up_proj.weight")]
)
def test_lowrank_and_unit_cms_levels_of_a_retrofitted_model_update_exactly_at_their_periods(tmp_path, init, weight):
    import hf_hope

    from ..helpers import tiny_family_model

    torch.manual_seed(0)
    config = hf_hope.CMSConfig.from_periods([3, 1], init=init, rank=2, units=4)
    model = hf_hope.retrofit(tiny_family_model("llama"), config)
    data = RepeatedBatch(torch.randint(3, 97, (8, 12), generator=torch.Generator().manual_seed(0)), repeats=20)
    recorder = WeightRecorder()
    args = training_arguments(tmp_path, max_steps=7)
    trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[LevelClockCallback(), recorder])
    trainer.train()
    slow = f"model.layers.0.mlp.cms_levels.0.mlp.{weight}"
    fast = f"model.layers.0.mlp.cms_levels.1.mlp.{weight}"
    frozen = "model.layers.0.mlp.up_proj.weight"
    previous = recorder.history[0]
    for step, weights in enumerate(recorder.history[1:], start=2):
        assert (not torch.equal(weights[slow], previous[slow])) == (step % 3 == 0), step
        assert not torch.equal(weights[fast], previous[fast]), step
        assert torch.equal(weights[frozen], previous[frozen]), step
        previous = weights

"""The level clock's core and `ClockedOptimizer`: exact update schedules, mean-of-period updates, skips, resume."""

import copy

import pytest
import torch
from torch import nn

from hf_hope import CMSLevel, ContinuumMemory, GatedMLP
from hf_hope.clock.clocked_optimizer import ClockedOptimizer
from hf_hope.clock.core import LevelClock

PERIOD = 3


def clocked_model() -> nn.Module:
    """An untagged input projection (period 1), a CMS with levels of period 1 and PERIOD, and a frozen level."""
    torch.manual_seed(0)
    levels = [
        CMSLevel(GatedMLP(4, 6), level=1, period=1),
        CMSLevel(GatedMLP(4, 6), level=2, period=PERIOD, lr_scale=0.5),
        CMSLevel(GatedMLP(4, 6), level=3, period=None),
    ]
    return nn.Sequential(nn.Linear(4, 4), ContinuumMemory(levels)).double()


def batches(count: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [torch.randn(8, 4, generator=generator, dtype=torch.float64) for _ in range(count)]


def backward(model: nn.Module, batch: torch.Tensor) -> None:
    (model(batch) ** 2).mean().backward()


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: parameter.detach().clone() for name, parameter in module.named_parameters()}


def changed(before: dict[str, torch.Tensor], module: nn.Module) -> bool:
    return any(not torch.equal(before[name], parameter) for name, parameter in module.named_parameters())


def make_optimizer(model: nn.Module, clock: LevelClock, lr: float = 0.1) -> ClockedOptimizer:
    return ClockedOptimizer(torch.optim.AdamW(clock.param_groups(model.parameters(), lr=lr), lr=lr), clock)


def train(model: nn.Module, optimizer: ClockedOptimizer, data: list[torch.Tensor], accumulation: int = 1) -> None:
    for start in range(0, len(data), accumulation):
        for batch in data[start : start + accumulation]:
            backward(model, batch)
        optimizer.step()
        optimizer.zero_grad()


def test_levels_come_from_the_model_tags():
    clock = LevelClock(clocked_model())
    assert [(level.tag.level, level.period, level.tag.lr_scale) for level in clock.levels] == [
        (0, 1, 1.0),
        (1, 1, 1.0),
        (2, PERIOD, 0.5),
    ]
    assert clock.levels[0].names == ["0.weight", "0.bias"]


@pytest.mark.parametrize("accumulation", [1, 2])
def test_a_level_changes_exactly_at_multiples_of_its_period(accumulation):
    model = clocked_model()
    clock = LevelClock(model)
    optimizer = make_optimizer(model, clock)
    fast, slow, frozen = model[1].levels
    data = batches(10 * accumulation)
    for step in range(1, 11):
        slow_before, fast_before, frozen_before = snapshot(slow), snapshot(fast), snapshot(frozen)
        train(model, optimizer, data[(step - 1) * accumulation : step * accumulation], accumulation)
        assert clock.step == step
        assert changed(slow_before, slow) == (step % PERIOD == 0), step
        assert changed(fast_before, fast)
        assert not changed(frozen_before, frozen)
    assert clock.update_counts() == {0: 10, 1: 10, 2: 10 // PERIOD}


@pytest.mark.parametrize("optimizer_class", [torch.optim.SGD, torch.optim.AdamW])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_a_due_update_is_one_optimizer_step_on_the_reduced_gradients(reduction, optimizer_class):
    model = clocked_model()
    clock = LevelClock(model, reduction=reduction)
    optimizer = ClockedOptimizer(optimizer_class(clock.param_groups(model.parameters(), lr=0.1), lr=0.1), clock)
    slow = model[1].levels[1]
    start = snapshot(slow)
    seen = []
    for batch in batches(PERIOD):
        backward(model, batch)
        seen.append({name: parameter.grad.clone() for name, parameter in slow.named_parameters()})
        optimizer.step()
        optimizer.zero_grad()

    reference = copy.deepcopy(slow)
    reference.load_state_dict(start)
    for name, parameter in reference.named_parameters():
        total = sum(grads[name] for grads in seen)
        parameter.grad = total / PERIOD if reduction == "mean" else total
    optimizer_class(reference.parameters(), lr=0.1 * 0.5).step()  # lr_scale 0.5 of the level
    for name, parameter in slow.named_parameters():
        torch.testing.assert_close(parameter, reference.get_parameter(name), rtol=1e-12, atol=1e-12)


def test_adamw_state_of_a_waiting_level_does_not_move():
    model = clocked_model()
    clock = LevelClock(model)
    optimizer = make_optimizer(model, clock)
    slow_weight = model[1].levels[1].mlp.up_proj.weight
    data = batches(2 * PERIOD)
    for step, batch in enumerate(data, start=1):
        before = copy.deepcopy(optimizer.state.get(slow_weight, {}))
        backward(model, batch)
        optimizer.step()
        optimizer.zero_grad()
        after = optimizer.state.get(slow_weight, {})
        if step % PERIOD:
            assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert optimizer.state[slow_weight]["step"] == 2


def test_a_non_finite_step_is_skipped_without_advancing_the_clock():
    model = clocked_model()
    clock = LevelClock(model)
    optimizer = make_optimizer(model, clock)
    data = batches(4)
    train(model, optimizer, data[:1])
    weights, state = snapshot(model), copy.deepcopy(clock.state_dict())
    backward(model, data[1])
    model[0].weight.grad[0, 0] = float("inf")
    optimizer.step()
    assert optimizer.last_report is None
    assert clock.step == 1 and clock.skipped_steps == 1
    assert not changed(weights, model)
    assert all(torch.equal(state["buffers"][i], clock.state_dict()["buffers"][i]) for i in state["buffers"])
    assert all(parameter.grad is None for parameter in model.parameters())
    optimizer.zero_grad()
    train(model, optimizer, data[2:])
    assert clock.step == 3


def test_interrupted_and_resumed_training_reaches_the_same_weights_bitwise():
    data = batches(10)
    uninterrupted = clocked_model()
    optimizer = make_optimizer(uninterrupted, LevelClock(uninterrupted))
    train(uninterrupted, optimizer, data)

    first = clocked_model()
    optimizer = make_optimizer(first, LevelClock(first))
    train(first, optimizer, data[:4])  # 4 is not a multiple of the period: the buffer holds one gradient
    checkpoint = copy.deepcopy({"model": first.state_dict(), "optimizer": optimizer.state_dict()})

    resumed = clocked_model()
    resumed.load_state_dict(checkpoint["model"])
    optimizer = make_optimizer(resumed, LevelClock(resumed))
    optimizer.load_state_dict(checkpoint["optimizer"])
    assert optimizer.clock.step == 4
    train(resumed, optimizer, data[4:])
    for name, parameter in uninterrupted.named_parameters():
        assert torch.equal(parameter, resumed.get_parameter(name)), name


def test_explicit_patterns_define_levels_and_none_never_changes():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4)).double()
    clock = LevelClock(model, levels={r"0\..*": {"period": 2}, r"1\.bias": {"period": None}})
    optimizer = ClockedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), clock)
    bias_before = model[1].bias.detach().clone()
    first_before = model[0].weight.detach().clone()
    train(model, optimizer, batches(1))
    assert torch.equal(model[0].weight, first_before)
    train(model, optimizer, batches(3))
    assert torch.equal(model[1].bias, bias_before)
    assert not torch.equal(model[0].weight, first_before)
    assert [level.names for level in clock.levels] == [["1.weight"], ["0.weight", "0.bias"], ["1.bias"]]


def test_param_groups_carry_each_level_learning_rate_scale():
    model = clocked_model()
    clock = LevelClock(model)
    groups = clock.param_groups([{"params": list(model.parameters()), "weight_decay": 0.1}], lr=1e-3)
    assert sorted((group["lr"], len(group["params"])) for group in groups) == [(5e-4, 3), (1e-3, 8)]
    assert all(group["weight_decay"] == 0.1 for group in groups)


def test_a_learning_rate_scheduler_drives_the_clocked_optimizer():
    model = clocked_model()
    clock = LevelClock(model)
    optimizer = make_optimizer(model, clock, lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5**step)
    train(model, optimizer, batches(1))
    scheduler.step()
    assert sorted(group["lr"] for group in optimizer.param_groups) == [0.25, 0.5]


@pytest.mark.parametrize(
    ("levels", "message"),
    [
        ({r"0\..*": {"period": 0}}, r"Level pattern '0\\\\\.\.\*': period=0 is invalid"),
        ({r"0\..*": {"period": 1.5}}, "period=1.5 is invalid"),
        ({r"2\..*": {"period": 2}}, r"matches no trainable parameter; names look like \['0.weight'"),
        ({r"0\..*": {"period": 2}, r".*weight": {"period": 4}}, r"'0.weight' matches two level patterns"),
        ({r"0\..*": {"every": 2}}, r"unknown keys \['every'\]"),
        ({r"0\..*": {"lr_scale": -1}}, "lr_scale=-1 is invalid"),
    ],
)
def test_bad_level_specifications_name_the_culprit(levels, message):
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    with pytest.raises(ValueError, match=message):
        LevelClock(model, levels=levels)


def test_other_bad_inputs():
    with pytest.raises(ValueError, match="reduction='median' is unknown"):
        LevelClock(clocked_model(), reduction="median")
    with pytest.raises(ValueError, match="no trainable parameters"):
        LevelClock(clocked_model().requires_grad_(False))
    other = LevelClock(nn.Linear(4, 4))
    with pytest.raises(ValueError, match="saved for other levels or parameters"):
        LevelClock(clocked_model()).load_state_dict(other.state_dict())
    optimizer = make_optimizer(clocked_model(), LevelClock(clocked_model()))
    with pytest.raises(ValueError, match="'optimizer' and 'level_clock'"):
        optimizer.load_state_dict(optimizer.optimizer.state_dict())


def test_clocked_optimizer_in_an_accelerate_loop():
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    model = clocked_model().float()
    clock = LevelClock(model)
    optimizer = ClockedOptimizer(torch.optim.AdamW(clock.param_groups(model.parameters(), lr=0.1)), clock)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    slow = model[1].levels[1].mlp.up_proj.weight
    history = []
    for batch in batches(2 * PERIOD):
        accelerator.backward((model(batch.float()) ** 2).mean())
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        history.append(slow.detach().clone())
    assert clock.step == 2 * PERIOD
    changes = [not torch.equal(a, b) for a, b in zip(history, history[1:], strict=False)]
    assert changes == [step % PERIOD == 0 for step in range(2, 2 * PERIOD + 1)]


def test_a_clock_registered_for_checkpointing_resumes_through_accelerate_save_state(tmp_path):
    """The loop the README gives for accelerate's FSDP2 checkpoints: a plain optimizer stepped when the clock says
    so, the clock saved and restored by `save_state` / `load_state` as a registered object."""
    from accelerate import Accelerator

    def run(steps: range, load_from=None, save_to=None) -> nn.Module:
        accelerator = Accelerator(cpu=True)
        model = clocked_model()
        clock = LevelClock(model)
        optimizer = torch.optim.AdamW(clock.param_groups(model.parameters(), lr=0.1))
        model, optimizer = accelerator.prepare(model, optimizer)
        accelerator.register_for_checkpointing(clock)
        if load_from is not None:
            accelerator.load_state(load_from)
            assert clock.step == steps.start
        for batch in [batches(10)[index] for index in steps]:
            accelerator.backward((model(batch) ** 2).mean())
            if clock.tick() is not None:
                optimizer.step()
            optimizer.zero_grad()
        if save_to is not None:
            accelerator.save_state(save_to)
        return model

    uninterrupted = run(range(10))
    run(range(4), save_to=tmp_path / "state")  # mid-period: the buffer holds one gradient
    resumed = run(range(4, 10), load_from=tmp_path / "state")
    for name, parameter in uninterrupted.named_parameters():
        assert torch.equal(parameter, resumed.get_parameter(name)), name


def test_an_fp16_overflow_step_skipped_by_the_grad_scaler_leaves_the_clock_alone():
    model = clocked_model().float()
    clock = LevelClock(model)
    optimizer = ClockedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), clock)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    data = batches(3)
    for batch, overflow in zip(data, [False, True, False], strict=True):
        loss = (model(batch.float()) ** 2).mean() * (float("inf") if overflow else 1.0)
        before = snapshot(model)
        scaler.scale(loss).backward()
        scaler.step(optimizer)  # unscales, finds the overflow, and then does not call optimizer.step()
        scaler.update()
        optimizer.zero_grad()
        assert changed(before, model) != overflow
    assert clock.step == 2 and scaler.get_scale() == 2.0**9

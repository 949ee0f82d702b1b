"""The level clock's Triton kernel against the torch reference (on CPU under TRITON_INTERPRET=1, or on a GPU)."""

import os

import pytest
import torch
from torch import nn

from hf_hope.clock import kernel as clock_kernels
from hf_hope.clock.buffer import LevelBuffer
from hf_hope.clock.clocked_optimizer import ClockedOptimizer
from hf_hope.clock.core import LevelClock

pytestmark = pytest.mark.skipif(not clock_kernels.triton_available(), reason="needs the triton extra")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
SIZES = [(1,), (1023,), (33, 31), (1025,), (3, 1000)]  # around and across the 1024-element block


def parameters(dtype: torch.dtype) -> list[nn.Parameter]:
    return [nn.Parameter(torch.randn(size, device=DEVICE).to(dtype)) for size in SIZES]


def set_grads(params: list[nn.Parameter], present: list[bool], seed: int) -> None:
    generator = torch.Generator(device=DEVICE).manual_seed(seed)
    for parameter, has_grad in zip(params, present, strict=True):
        grad = torch.randn(parameter.shape, generator=generator, device=DEVICE).to(parameter.dtype)
        parameter.grad = grad if has_grad else None


def assert_same_rounding(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    """Bitwise equal, except that Triton's interpreter rounds float32 to bfloat16 toward zero (GPUs round to
    nearest even, as torch does): there, within one bfloat16 step."""
    if INTERPRETED and ours.dtype == torch.bfloat16:
        torch.testing.assert_close(ours, theirs, rtol=2**-7, atol=0)
    else:
        assert torch.equal(ours, theirs)


@pytest.mark.usefixtures("nan_poisoned_allocations")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_kernel_matches_the_torch_reference_over_a_period(dtype):
    kernel_params, torch_params = parameters(dtype), parameters(dtype)
    kernel = LevelBuffer(kernel_params, implementation="triton")
    reference = LevelBuffer(torch_params, implementation="torch")
    assert kernel.uses_kernel and not reference.uses_kernel
    # The third tensor gets no gradient on the due step, the second none at all: the kernel must still write the
    # third's update into a fresh (NaN-poisoned) gradient and leave the second without one.
    presence = [[True, False, True, True, True], [True, False, True, False, True], [True, False, False, True, True]]
    for step, present in enumerate(presence, start=1):
        due = step == len(presence)
        for params in (kernel_params, torch_params):
            set_grads(params, present, seed=step)
        kernel.add(due=due, scale=1 / 3)
        reference.add(due=due, scale=1 / 3)
        assert torch.equal(kernel.buffer, reference.buffer), step
        for ours, theirs in zip(kernel_params, torch_params, strict=True):
            assert (ours.grad is None) == (theirs.grad is None), step
            if ours.grad is not None:
                assert ours.grad.dtype == dtype and not ours.grad.isnan().any()
                assert_same_rounding(ours.grad, theirs.grad)
    assert not kernel.buffer.any()
    assert [p.grad is None for p in kernel_params] == [False, True, False, False, False]


def test_clock_with_kernels_trains_exactly_like_the_torch_clock():
    def train(implementation: str) -> nn.Module:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(40, 50), nn.Tanh(), nn.Linear(50, 3)).to(DEVICE)
        clock = LevelClock(model, levels={r"0\..*": {"period": 3}}, implementation=implementation)
        optimizer = ClockedOptimizer(torch.optim.AdamW(model.parameters(), lr=1e-2), clock)
        generator = torch.Generator(device=DEVICE).manual_seed(1)
        for _ in range(7):
            model(torch.randn(16, 40, generator=generator, device=DEVICE)).square().mean().backward()
            optimizer.step()
            optimizer.zero_grad()
        return model

    kernel, reference = train("triton"), train("torch")
    for (name, ours), theirs in zip(kernel.named_parameters(), reference.parameters(), strict=True):
        assert torch.equal(ours, theirs), name


def test_kernel_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match="share one dtype among float32, bfloat16 and float16"):
        LevelBuffer([nn.Parameter(torch.randn(4, dtype=torch.float64))], implementation="triton")
    with pytest.raises(ValueError, match="implementation='cuda' is unknown"):
        LevelBuffer([nn.Parameter(torch.randn(4))], implementation="cuda")


def test_auto_falls_back_to_torch_with_one_warning_when_the_kernel_fails(monkeypatch):
    from hf_hope.clock import buffer as buffer_module

    def broken_launch(*args, **kwargs):
        raise RuntimeError("PTX for this architecture could not be compiled")

    monkeypatch.setattr(buffer_module, "_kernel_failure", None)
    monkeypatch.setattr(buffer_module, "_prefers_kernel", lambda buffer: True)  # "auto" takes the kernel here too
    monkeypatch.setattr(clock_kernels, "accumulate", broken_launch)
    params, twins = parameters(torch.float32), parameters(torch.float32)
    for twin, parameter in zip(twins, params, strict=True):
        twin.data.copy_(parameter.data)
    falling_back, reference = LevelBuffer(params, "auto"), LevelBuffer(twins, "torch")
    assert falling_back.uses_kernel
    with pytest.warns(RuntimeWarning, match="PTX for this architecture.*uses the torch path") as caught:
        for step in range(1, 5):
            for group, buffer in ((params, falling_back), (twins, reference)):
                set_grads(group, [True, False, True, True, True], seed=step)
                buffer.add(due=step % 2 == 0, scale=0.5)
            for ours, theirs in zip(params, twins, strict=True):
                assert (ours.grad is None) == (theirs.grad is None)
                if ours.grad is not None:
                    assert torch.equal(ours.grad, theirs.grad)
    assert len(caught) == 1 and not falling_back.uses_kernel
    assert not LevelBuffer(parameters(torch.float32), "auto").uses_kernel  # the process remembers the failure
    with pytest.raises(RuntimeError, match="PTX"):  # "triton" still raises
        buffer = LevelBuffer(parameters(torch.float32), "triton")
        set_grads(buffer.parameters, [True] * len(SIZES), seed=0)
        buffer.add(due=True, scale=1.0)

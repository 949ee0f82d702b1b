"""Training at a high learning rate with an injected inf keeps finite weights and counts every skipped step."""

import pytest
import torch

import hf_hope

from ..helpers import tiny_config


@pytest.mark.slow
@pytest.mark.parametrize("data", ["repeated", "random"])
@pytest.mark.parametrize("memory", ["default", "widest"])
def test_hope_trained_hard_keeps_finite_weights_and_counts_every_skipped_step(data, memory):
    """300 steps at lr 1e-2: weights stay finite; each step with a non-finite gradient (one is injected) is skipped
    and counted."""
    from hf_hope.clock.clocked_optimizer import ClockedOptimizer
    from hf_hope.clock.core import LevelClock

    overrides = {} if memory == "default" else {"memory_expansion": 8, "chunk_size": 16}
    torch.manual_seed(0)
    model = hf_hope.HopeForCausalLM(tiny_config(**overrides)).float().train()
    clock = LevelClock(model)
    optimizer = ClockedOptimizer(torch.optim.AdamW(clock.param_groups(model.parameters(), lr=1e-2)), clock)
    generator = torch.Generator().manual_seed(0)
    fixed = torch.randint(2, 97, (2, 32), generator=generator)
    non_finite = 0
    for step in range(300):
        batch = fixed if data == "repeated" else torch.randint(2, 97, (2, 32), generator=generator)
        model(input_ids=batch, labels=batch).loss.backward()
        gradients = [parameter.grad for parameter in model.parameters() if parameter.grad is not None]
        if step == 150:
            gradients[0].view(-1)[0] = float("inf")  # an injected fault: this step must be skipped
        non_finite += not all(torch.isfinite(gradient).all() for gradient in gradients)
        optimizer.step()
        optimizer.zero_grad()
    assert all(torch.isfinite(parameter).all() for parameter in model.parameters())
    assert clock.skipped_steps == non_finite >= 1
    assert clock.step == 300 - non_finite

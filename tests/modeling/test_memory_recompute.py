"""`memory_recompute_chunks`: the memory's activation checkpointing changes what backward keeps, not the results."""

import copy

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

import hf_hope
from hf_hope.modeling.memory_state import MemoryState

from ..helpers import relative_error, tiny_model


def mixer_pass(mixer, hidden, mask, state, recompute_chunks):
    """Output, final state and the gradients of the input, of the incoming state and of every parameter."""
    mixer = copy.deepcopy(mixer)
    mixer.recompute_chunks = recompute_chunks
    leaf = hidden.clone().requires_grad_()
    state = None if state is None else state.map_tensors(lambda tensor: tensor.clone().requires_grad_())
    out, new_state = mixer(leaf, mask, state, implementation="chunk")
    generator = torch.Generator().manual_seed(3)
    loss = (out * torch.randn(out.shape, generator=generator, dtype=out.dtype)).sum()
    loss = loss + sum((weight * weight).sum() for weight in new_state.weights.values())
    incoming = [] if state is None else [*state.weights.values(), *state.momentum.values(), state.conv]
    grads = torch.autograd.grad(loss, [leaf, *incoming, *mixer.parameters()], allow_unused=True)
    return out, new_state, grads


def carried_state(mixer, batch: int, length: int) -> MemoryState:
    """The state a previous call of `length` tokens left: mid-chunk when `length` is not a multiple of the chunk."""
    with torch.no_grad():
        _, state = mixer(torch.randn(batch, length, 32, dtype=torch.float64), implementation="chunk")
    return state


@pytest.mark.parametrize("recompute_chunks", [1, 2, 5])
@pytest.mark.parametrize("self_modifying", [True, False])
@pytest.mark.parametrize(("length", "previous", "masked"), [(23, 0, False), (23, 6, False), (18, 3, True)], ids=str)
def test_recomputation_gives_the_same_outputs_states_and_gradients(
    recompute_chunks, self_modifying, length, previous, masked
):
    mixer = tiny_model(chunk_size=4, self_modifying=self_modifying).model.layers[0].mixer
    hidden = torch.randn(2, length, 32, dtype=torch.float64)
    state = carried_state(mixer, 2, previous) if previous else None
    mask = None
    if masked:
        mask = torch.ones(2, length)
        mask[1, :5] = 0
    out, new_state, grads = mixer_pass(mixer, hidden, mask, state, recompute_chunks)
    expected, expected_state, expected_grads = mixer_pass(mixer, hidden, mask, state, None)
    assert relative_error(out, expected) <= 1e-12
    assert new_state.position == expected_state.position == previous + length
    for name in expected_state.weights:
        assert relative_error(new_state.weights[name], expected_state.weights[name]) <= 1e-12, name
        assert relative_error(new_state.chunk_start[name], expected_state.chunk_start[name]) <= 1e-12, name
    assert set(new_state.momentum) == set(expected_state.momentum)
    for name in expected_state.momentum:
        assert relative_error(new_state.momentum[name], expected_state.momentum[name]) <= 1e-12, name
    assert relative_error(new_state.conv, expected_state.conv) <= 1e-12
    assert len(grads) == len(expected_grads)
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        assert (grad is None) == (expected_grad is None)
        if expected_grad is not None:
            assert relative_error(grad, expected_grad) <= 1e-12


def retained_bytes(model, input_ids) -> int:
    """Bytes allocated by one forward and still held after it: what autograd keeps for backward, and the loss."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        loss = model(input_ids, labels=input_ids).loss
    del loss
    return sum(event.self_cpu_memory_usage for event in profiler.events())


def test_recomputation_keeps_far_fewer_activations():
    """64 chunks in groups of 8: the memory's per-chunk states and intermediates leave the autograd graph."""
    model = tiny_model(dtype=torch.float32, chunk_size=4).train()
    input_ids = torch.randint(2, 97, (2, 256))
    kept = retained_bytes(model, input_ids)
    recomputing = tiny_model(dtype=torch.float32, chunk_size=4, memory_recompute_chunks=8).train()
    recomputing.load_state_dict(model.state_dict())
    assert retained_bytes(recomputing, input_ids) < kept / 3


def test_a_model_with_recomputation_trains_like_one_without():
    model = tiny_model(chunk_size=4).train()
    recomputing = tiny_model(chunk_size=4, memory_recompute_chunks=3).train()
    recomputing.load_state_dict(model.state_dict())
    input_ids = torch.randint(2, 97, (2, 30))
    losses = []
    for candidate in (model, recomputing):
        loss = candidate(input_ids, labels=input_ids).loss
        loss.backward()
        losses.append(loss)
    assert relative_error(losses[1], losses[0]) <= 1e-12
    for (name, parameter), other in zip(model.named_parameters(), recomputing.parameters(), strict=True):
        assert relative_error(other.grad, parameter.grad) <= 1e-12, name


@pytest.mark.parametrize("use_reentrant", [True, False])
def test_recomputation_nests_inside_layer_gradient_checkpointing(use_reentrant):
    model = tiny_model(chunk_size=4).train()
    recomputing = tiny_model(chunk_size=4, memory_recompute_chunks=2).train()
    recomputing.load_state_dict(model.state_dict())
    recomputing.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": use_reentrant})
    input_ids = torch.randint(2, 97, (2, 17))
    for candidate in (model, recomputing):
        candidate(input_ids, labels=input_ids).loss.backward()
    for (name, parameter), other in zip(model.named_parameters(), recomputing.parameters(), strict=True):
        assert relative_error(other.grad, parameter.grad) <= 1e-12, name


@pytest.mark.parametrize("value", [0, -1])
def test_invalid_recompute_chunks_is_a_clear_error(value):
    with pytest.raises(ValueError, match="memory_recompute_chunks=.* is invalid: it must be an int >= 1"):
        hf_hope.HopeConfig(memory_recompute_chunks=value)


def test_from_pretrained_turns_recomputation_on(tmp_path):
    tiny_model(chunk_size=4).save_pretrained(tmp_path)
    loaded = hf_hope.HopeForCausalLM.from_pretrained(tmp_path, memory_recompute_chunks=2)
    assert loaded.config.memory_recompute_chunks == 2
    assert {layer.mixer.recompute_chunks for layer in loaded.model.layers} == {2}

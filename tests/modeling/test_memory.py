"""The mixer's memories: chunk-parallel == token-by-token reference (DESIGN.md invariants 1 and 2)."""

import inspect

import pytest
import torch

import hf_hope
from hf_hope.modeling.memory_recurrent import inner_gradients, token_rates
from hf_hope.modeling.memory_state import MemoryMixer, MemoryState, starts_chunk
from hf_hope.modeling.titans import ALPHA_BIAS_INIT, SelfModifyingTitans

from ..helpers import relative_error, tiny_config, tiny_model


def make_mixer(**overrides) -> SelfModifyingTitans:
    return tiny_model(**overrides).model.layers[0].mixer


def assert_states_close(actual: MemoryState, expected: MemoryState, tolerance: float = 1e-6) -> None:
    assert actual.position == expected.position
    for name in expected.weights:
        assert relative_error(actual.weights[name], expected.weights[name]) <= tolerance, name
        assert relative_error(actual.chunk_start[name], expected.chunk_start[name]) <= tolerance, name
    for name in expected.momentum:
        assert relative_error(actual.momentum[name], expected.momentum[name]) <= tolerance, name
    assert relative_error(actual.conv, expected.conv) <= tolerance


@pytest.mark.parametrize("chunk_size", [1, 3, 16])
@pytest.mark.parametrize("length", [1, 7, 50])
@pytest.mark.parametrize("self_modifying", [True, False])
def test_chunk_parallel_equals_token_by_token(chunk_size, length, self_modifying):
    mixer = make_mixer(chunk_size=chunk_size, self_modifying=self_modifying)
    hidden = torch.randn(2, length, 32, dtype=torch.float64)
    chunk_out, chunk_state = mixer(hidden, implementation="chunk")
    reference_out, reference_state = mixer(hidden, implementation="recurrent")
    assert relative_error(chunk_out, reference_out) <= 1e-6
    assert_states_close(chunk_state, reference_state)


@pytest.mark.parametrize("self_generated_values", [True, False])
def test_equivalence_with_padding_and_plain_targets(self_generated_values):
    mixer = make_mixer(chunk_size=3, self_generated_values=self_generated_values)
    hidden = torch.randn(3, 11, 32, dtype=torch.float64)
    mask = torch.ones(3, 11, dtype=torch.long)
    mask[1, :4] = 0
    mask[2, 5] = 0
    chunk_out, chunk_state = mixer(hidden, mask, implementation="chunk")
    reference_out, reference_state = mixer(hidden, mask, implementation="recurrent")
    assert relative_error(chunk_out, reference_out) <= 1e-6
    assert_states_close(chunk_state, reference_state)


def test_gradients_match_the_reference():
    mixer = make_mixer(chunk_size=3)
    hidden = torch.randn(2, 10, 32, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(2, 10, 32, dtype=torch.float64)

    def gradients(implementation: str) -> list[torch.Tensor]:
        mixer.zero_grad()
        hidden.grad = None
        out, _ = mixer(hidden, implementation=implementation)
        (out * weights).sum().backward()
        return [hidden.grad.clone()] + [parameter.grad.clone() for parameter in mixer.parameters()]

    for chunk, reference in zip(gradients("chunk"), gradients("recurrent"), strict=True):
        assert relative_error(chunk, reference) <= 1e-6


@pytest.mark.parametrize("implementation", ["chunk", "recurrent"])
@pytest.mark.parametrize("split", [1, 5, 6, 13])
def test_two_calls_with_carried_state_equal_one_call(implementation, split):
    mixer = make_mixer(chunk_size=3)
    hidden = torch.randn(2, 20, 32, dtype=torch.float64)
    whole, whole_state = mixer(hidden, implementation=implementation)
    first, state = mixer(hidden[:, :split], implementation=implementation)
    second, state = mixer(hidden[:, split:], state=state, implementation=implementation)
    assert relative_error(torch.cat([first, second], dim=1), whole) <= 1e-10
    assert_states_close(state, whole_state, tolerance=1e-10)


def test_padding_never_writes_to_memory():
    mixer = make_mixer(chunk_size=3)
    hidden = torch.randn(2, 7, 32, dtype=torch.float64)
    _, state = mixer(hidden, torch.zeros(2, 7, dtype=torch.long))
    initial = mixer.initial_state(2)
    for name, weights in initial.weights.items():
        torch.testing.assert_close(state.weights[name], weights, rtol=0, atol=0)
        torch.testing.assert_close(state.momentum[name], torch.zeros_like(weights), rtol=0, atol=0)


def test_left_padding_by_whole_chunks_leaves_outputs_unchanged():
    mixer = make_mixer(chunk_size=3)
    hidden = torch.randn(1, 8, 32, dtype=torch.float64)
    padded = torch.cat([torch.randn(1, 6, 32, dtype=torch.float64), hidden], dim=1)
    mask = torch.cat([torch.zeros(1, 6), torch.ones(1, 8)], dim=1)
    plain_out, _ = mixer(hidden)
    padded_out, _ = mixer(padded, mask)
    assert relative_error(padded_out[:, 6:], plain_out) <= 1e-12


def test_inner_gradients_equal_autograd_plus_dgd_terms():
    mixer = make_mixer()
    state = mixer.initial_state(2)
    chunk_start = {name: value.detach().clone().requires_grad_(True) for name, value in state.weights.items()}
    keys = torch.nn.functional.normalize(torch.randn(2, 2, 16, dtype=torch.float64), dim=-1)
    values = torch.nn.functional.normalize(torch.randn(2, 2, 16, dtype=torch.float64), dim=-1)
    w1, w2, generator = chunk_start["w1"], chunk_start["w2"], chunk_start["generator"]

    def memory(z, first, second):
        return (
            z
            + (torch.nn.functional.silu(z[..., None, :] @ second.transpose(-1, -2)) @ first.transpose(-1, -2))[
                ..., 0, :
            ]
        )

    target = memory(values, w1, w2).detach()
    main_loss = (memory(keys, w1, w2) - target).pow(2).sum()
    generator_target = (generator @ values[..., None]).detach()
    generator_loss = ((generator @ keys[..., None]) - generator_target).pow(2).sum()
    grad_w1, grad_w2 = torch.autograd.grad(main_loss, [w1, w2])
    (grad_generator,) = torch.autograd.grad(generator_loss, [generator])

    activation = torch.nn.functional.silu((w2 @ keys[..., None])[..., 0])
    expected = {
        "w1": grad_w1 + (w1 @ activation[..., None]) * activation[..., None, :],
        "w2": grad_w2 + (w2 @ keys[..., None]) * keys[..., None, :],
        "generator": grad_generator + (generator @ keys[..., None]) * keys[..., None, :],
    }
    actual = inner_gradients({k: v.detach() for k, v in chunk_start.items()}, keys, values, True)
    for name, value in expected.items():
        torch.testing.assert_close(actual[name], value, rtol=1e-10, atol=1e-12)


def test_repeated_token_stays_finite():
    model = tiny_model(dtype=torch.float32, chunk_size=64)
    with torch.no_grad():
        logits = model(torch.full((1, 2048), 7)).logits
    assert torch.isfinite(logits).all()


def test_the_oracle_transcribes_the_rates_of_the_mixer():
    """The token-by-token reference computes eta, alpha and beta itself; they equal `rates` token by token."""
    mixer = make_mixer()
    generated = torch.randn(2, 2, 5, 2 * mixer.head_dim + 2, dtype=torch.float64)
    eta, log_alpha, log_beta, write = mixer.rates(generated, None)
    assert write is None
    for t in range(generated.shape[2]):
        expected = (eta[..., t], log_alpha[..., t].exp(), log_beta[..., t].exp().expand_as(eta[..., t]))
        for actual, wanted in zip(token_rates(mixer, generated[:, :, t]), expected, strict=True):
            torch.testing.assert_close(actual, wanted, rtol=1e-12, atol=0)


def test_chunk_starts_every_chunk_size_tokens():
    assert [position for position in range(10) if starts_chunk(position, 3)] == [0, 3, 6, 9]
    assert all(starts_chunk(position, 1) for position in range(5))


# The keyword arguments of `from_kwargs` and the HopeConfig fields they stand for.
MIXER_KEYWORDS = {
    "hidden_size": 32,
    "num_heads": 2,
    "chunk_size": 3,
    "conv_size": 3,
    "memory_expansion": 3,
    "memory_lr_max": 0.05,
    "self_generated_values": False,
    "memory_recompute_chunks": 2,
    "rms_norm_eps": 1e-5,
}


def test_mixer_from_keywords_equals_the_mixer_from_its_config():
    from_config = make_mixer(**MIXER_KEYWORDS)
    from_keywords = SelfModifyingTitans.from_kwargs(**MIXER_KEYWORDS).to(torch.float64)
    assert isinstance(from_keywords, MemoryMixer) and isinstance(from_config, MemoryMixer)
    from_keywords.load_state_dict(from_config.state_dict(), strict=True)
    for name in ("num_heads", "head_dim", "chunk_size", "conv_size", "recompute_chunks", "memory_lr_max"):
        assert getattr(from_keywords, name) == getattr(from_config, name), name
    assert from_keywords.o_norm.variance_epsilon == from_config.o_norm.variance_epsilon
    hidden = torch.randn(2, 11, 32, dtype=torch.float64)
    mask = torch.ones(2, 11)
    mask[1, :4] = 0
    for implementation in ("chunk", "recurrent"):
        out, state = from_config(hidden, mask, implementation=implementation)
        keyword_out, keyword_state = from_keywords(hidden, mask, implementation=implementation)
        assert torch.equal(keyword_out, out), implementation
        for name, weights in state.weights.items():
            assert torch.equal(keyword_state.weights[name], weights), (implementation, name)


def test_mixer_keywords_have_the_config_defaults():
    signature = inspect.signature(SelfModifyingTitans.from_kwargs)
    defaults = hf_hope.HopeConfig()
    for name, parameter in signature.parameters.items():
        assert parameter.kind is inspect.Parameter.KEYWORD_ONLY, name
        if name not in ("head_dim", "memory_lr_max"):  # derived by HopeConfig from the other fields when None
            assert parameter.default == getattr(defaults, name), name
    mixer = SelfModifyingTitans.from_kwargs(hidden_size=64, num_heads=4, chunk_size=8)
    config = tiny_config(hidden_size=64, num_heads=4, chunk_size=8)
    assert (mixer.head_dim, mixer.memory_lr_max) == (config.head_dim, config.memory_lr_max) == (16, 0.25 / 8)
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        SelfModifyingTitans.from_kwargs(hidden_size=30, num_heads=4)


def test_mixer_from_keywords_is_initialised_like_hope():
    mixer = SelfModifyingTitans.from_kwargs(hidden_size=32, num_heads=2)
    assert all(torch.isfinite(parameter).all() for parameter in mixer.parameters())
    assert torch.equal(mixer.alpha_bias, torch.full((2,), ALPHA_BIAS_INIT))
    for zeros in (mixer.eta_bias, mixer.momentum_logit, mixer.generator_rates):
        assert not zeros.any()
    assert mixer.q_proj.weight.std().item() == pytest.approx(0.02, rel=0.2)
    out, _ = mixer(torch.randn(1, 9, 32))
    assert out.shape == (1, 9, 32) and torch.isfinite(out).all()

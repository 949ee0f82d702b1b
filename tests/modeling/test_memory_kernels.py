"""The HOPE memory's Triton kernels against the torch chunk path and the token-by-token reference.

On CPU they run under TRITON_INTERPRET=1 at small sizes; on a GPU the same tests run there, and so do the
full-size ones (heads of 64 and 128, chunks of 64), which are marked `slow` and skipped on CPU, where the
interpreter takes minutes each. Every comparison is a relative error (Frobenius norm) against a float64
reference computed from the same inputs; thresholds per dtype of the kernel's inputs: float32 1e-5 (IEEE
products, float32 accumulation), bfloat16 3e-2 (bfloat16 operands, about 8 bits of mantissa, float32
accumulation). Mixer-level gradients, through the whole memory, are held to 10x the float32 threshold.
"""

import copy

import pytest
import torch

from hf_hope.modeling.memory_carry_kernels import carry_state
from hf_hope.modeling.memory_chunk import chunk_forward
from hf_hope.modeling.memory_chunk_kernels import chunk_read
from hf_hope.modeling.memory_decode import decode_forward, decode_update
from hf_hope.modeling.memory_dual_form import BetaTerms, EndCoefficients, SegmentCoefficients, final_state, read_updated
from hf_hope.modeling.memory_recurrent import recurrent_forward
from hf_hope.modeling.memory_state import MemoryState
from hf_hope.modeling.memory_triton_common import triton_available
from hf_hope.modeling.titans import memory_forward_for

from ..helpers import relative_error, tiny_model

pytestmark = [
    pytest.mark.skipif(not triton_available(), reason="needs the triton extra"),
    pytest.mark.usefixtures("nan_poisoned_allocations"),
]

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 3e-2}
gpu_only = pytest.mark.skipif(DEVICE != "cuda", reason="full sizes run on a GPU (minutes each in the interpreter)")


@pytest.fixture(autouse=True)
def _ieee_float32():
    """The kernels follow torch's TF32 switch; these tests compare IEEE float32 products."""
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = previous


def read_inputs(batch, heads, chunks, length, din, dout, with_momentum, dtype):
    """Random inputs of one chunk read; token tensors are `[batch, time, heads, dim]` seen without a copy."""

    def tokens(width: int) -> torch.Tensor:
        flat = torch.randn(batch, chunks * length, heads, width, device=DEVICE) / width**0.5
        return flat.to(dtype).transpose(1, 2).unflatten(2, (chunks, length))

    states = torch.randn(2, batch, heads, chunks, dout, din, device=DEVICE) / din**0.5
    rates = (
        0.1 * torch.rand(batch, heads, chunks, length, device=DEVICE),
        -0.2 * torch.rand(batch, heads, chunks, length, device=DEVICE),
        -0.5 * torch.rand(1, heads, chunks, length, device=DEVICE),
    )
    return {
        "read_inputs": tokens(din),
        "write_inputs": tokens(din),
        "write_errors": tokens(dout),
        "start": states[0].to(dtype),
        "momentum": states[1].to(dtype) if with_momentum else None,
        "rates": rates,
    }


def run_read(read, inputs: dict, dtype: torch.dtype):
    """Output and gradients of every input (token tensors, states and rates) of one read in `dtype`."""
    leaves = {
        name: value.detach().to(dtype).requires_grad_()
        for name, value in inputs.items()
        if name != "rates" and value is not None
    }
    rates = [
        rate.detach().to(dtype if dtype == torch.float64 else torch.float32).requires_grad_()
        for rate in inputs["rates"]
    ]
    coefficients = SegmentCoefficients(rates[0], rates[1], BetaTerms(rates[2]), None)
    out = read(
        leaves["start"],
        leaves.get("momentum"),
        coefficients,
        leaves["write_inputs"],
        leaves["write_errors"],
        leaves["read_inputs"],
    )
    generator = torch.Generator(device=DEVICE).manual_seed(1)
    out.backward(torch.randn(out.shape, generator=generator, device=DEVICE).to(out.dtype))
    grads = {name: leaf.grad for name, leaf in leaves.items()}
    grads.update({name: rate.grad for name, rate in zip(("eta", "log_alpha", "log_beta"), rates, strict=True)})
    return out, grads


def check_read(dtype, with_momentum, length, din, dout):
    inputs = read_inputs(1, 2, 2, length, din, dout, with_momentum, dtype)
    out, grads = run_read(chunk_read, inputs, dtype)
    expected, expected_grads = run_read(read_updated, inputs, torch.float64)
    assert out.dtype == dtype
    assert relative_error(out, expected) <= TOLERANCE[dtype]
    assert set(grads) == set(expected_grads)
    for name, grad in grads.items():
        assert relative_error(grad, expected_grads[name]) <= TOLERANCE[dtype], name


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("with_momentum", [True, False])
@pytest.mark.parametrize(("length", "din", "dout"), [(1, 8, 24), (16, 24, 8), (13, 72, 80)], ids=str)
def test_chunk_read_matches_the_torch_read(dtype, with_momentum, length, din, dout):
    check_read(dtype, with_momentum, length, din, dout)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("length", "din", "dout"), [(64, 64, 128), (64, 256, 128), (16, 128, 256)], ids=str)
@pytest.mark.slow
@gpu_only
def test_chunk_read_at_full_head_widths(dtype, length, din, dout):
    check_read(dtype, True, length, din, dout)


def run_carry(carry, inputs: dict, dtype: torch.dtype):
    """New weights and momentum of one chunk-end carry, and the gradients of every input (rates included)."""
    batch, heads, chunks, length, din = inputs["read_inputs"].shape
    leaves = {
        "write_inputs": inputs["write_inputs"][:, :, 0],
        "write_errors": inputs["write_errors"][:, :, 0],
        "start": inputs["start"][:, :, 0],
    }
    if inputs["momentum"] is not None:
        leaves["momentum"] = inputs["momentum"][:, :, 0]
    leaves = {name: value.detach().to(dtype).requires_grad_() for name, value in leaves.items()}
    rate_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    rates = [rate[:, :, 0].detach().to(rate_dtype).requires_grad_() for rate in inputs["rates"]]
    coefficients = EndCoefficients(rates[0], rates[1], BetaTerms(rates[2]), None)
    weights, momentum = carry(
        leaves["start"], leaves.get("momentum"), coefficients, leaves["write_inputs"], leaves["write_errors"]
    )
    generator = torch.Generator(device=DEVICE).manual_seed(3)
    grads_out = [torch.randn(weights.shape, generator=generator, device=DEVICE).to(weights.dtype) for _ in range(2)]
    torch.autograd.backward([weights, momentum], grads_out)
    grads = {name: leaf.grad for name, leaf in leaves.items()}
    grads.update({name: rate.grad for name, rate in zip(("eta", "log_alpha", "log_beta"), rates, strict=True)})
    return (weights, momentum), grads


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("with_momentum", [True, False])
@pytest.mark.parametrize(("length", "din", "dout"), [(1, 8, 24), (13, 33, 17), (64, 72, 80)], ids=str)
def test_carry_state_matches_the_torch_carry(dtype, with_momentum, length, din, dout):
    inputs = read_inputs(2, 3, 1, length, din, dout, with_momentum, dtype)
    states, grads = run_carry(carry_state, inputs, dtype)
    expected_states, expected_grads = run_carry(final_state, inputs, torch.float64)
    for state, expected in zip(states, expected_states, strict=True):
        assert state.dtype == dtype
        assert relative_error(state, expected) <= TOLERANCE[dtype]
    assert set(grads) == set(expected_grads)
    for name, grad in grads.items():
        assert relative_error(grad, expected_grads[name]) <= TOLERANCE[dtype], name


def mixer_and_inputs(chunk_size: int, head_dim: int, length: int, self_modifying: bool = True, heads: int = 2):
    model = tiny_model(
        dtype=torch.float64,
        hidden_size=heads * head_dim,
        num_heads=heads,
        chunk_size=chunk_size,
        self_modifying=self_modifying,
    )
    mixer = model.model.layers[0].mixer.to(DEVICE)
    hidden = torch.randn(2, length, heads * head_dim, dtype=torch.float64, device=DEVICE)
    return mixer, hidden


def mixer_run(mixer, hidden, mask, implementation, dtype):
    """Output, final state and the gradients of the input and of every parameter of one call of a copy in `dtype`."""
    mixer = copy.deepcopy(mixer).to(dtype)
    leaf = hidden.to(dtype, copy=True).requires_grad_()
    out, state = mixer(leaf, mask, implementation=implementation)
    generator = torch.Generator(device=DEVICE).manual_seed(2)
    out.backward(torch.randn(out.shape, generator=generator, dtype=torch.float64, device=DEVICE).to(dtype))
    grads = {"hidden": leaf.grad, **{name: p.grad.clone() for name, p in mixer.named_parameters()}}
    return out, state, grads


def assert_memories_close(state: MemoryState, reference_state: MemoryState, tolerance: float) -> None:
    """Weights, chunk-start weights and momentum of every memory within `tolerance` of the reference's."""
    for name in reference_state.weights:
        assert relative_error(state.weights[name], reference_state.weights[name]) <= tolerance, name
        assert relative_error(state.chunk_start[name], reference_state.chunk_start[name]) <= tolerance, name
    for name in reference_state.momentum:
        assert relative_error(state.momentum[name], reference_state.momentum[name]) <= tolerance, name


# (chunk size, head width, odd length, left padding)
MIXER_CASES = [(1, 8, 7, True), (16, 8, 5, True), (16, 8, 21, False), (3, 16, 11, False)]
FULL_MIXER_CASES = [(16, 64, 67), (64, 64, 131), (64, 128, 67), (1, 128, 9)]


def check_mixer_against_references(chunk_size, head_dim, length, masked, self_modifying=True):
    mixer, hidden = mixer_and_inputs(chunk_size, head_dim, length, self_modifying)
    mask = None
    if masked:
        mask = torch.ones(2, length, device=DEVICE)
        mask[1, : length // 3] = 0  # left padding
    out, state, grads = mixer_run(mixer, hidden, mask, "triton", torch.float32)
    expected, expected_state, expected_grads = mixer_run(mixer, hidden, mask, "chunk", torch.float64)
    reference, reference_state, _ = mixer_run(mixer, hidden, mask, "recurrent", torch.float64)
    tolerance = TOLERANCE[torch.float32]
    assert relative_error(expected, reference) <= 1e-9  # the torch chunk path is the oracle's equal
    assert relative_error(out, reference) <= tolerance
    assert_memories_close(state, reference_state, tolerance)
    assert set(grads) == set(expected_grads)
    for name, grad in grads.items():
        if expected_grads[name].norm() > 0:
            assert relative_error(grad, expected_grads[name]) <= 10 * tolerance, name
        else:
            assert grad.abs().max() <= 1e-12, name


@pytest.mark.parametrize(("chunk_size", "head_dim", "length", "masked"), MIXER_CASES, ids=str)
def test_mixer_with_kernels_matches_chunk_path_and_reference(chunk_size, head_dim, length, masked):
    check_mixer_against_references(chunk_size, head_dim, length, masked)


def test_mixer_with_kernels_and_static_generators():
    check_mixer_against_references(4, 8, 9, masked=True, self_modifying=False)


def test_mixer_with_kernels_and_recomputation():
    """Recomputed groups of two chunks (the last one partial) give the kernels' results without recomputation."""
    mixer, hidden = mixer_and_inputs(4, 8, 19)
    expected, expected_state, expected_grads = mixer_run(mixer, hidden, None, "triton", torch.float32)
    mixer.recompute_chunks = 2
    out, state, grads = mixer_run(mixer, hidden, None, "triton", torch.float32)
    assert relative_error(out, expected) <= 1e-6
    for name in expected_state.weights:
        assert relative_error(state.weights[name], expected_state.weights[name]) <= 1e-6, name
    for name, grad in grads.items():
        assert relative_error(grad, expected_grads[name]) <= 1e-6, name


@pytest.mark.slow
@gpu_only
@pytest.mark.parametrize(("chunk_size", "head_dim", "length"), FULL_MIXER_CASES, ids=str)
def test_mixer_with_kernels_at_full_head_widths(chunk_size, head_dim, length):
    check_mixer_against_references(chunk_size, head_dim, length, masked=False)


def test_two_calls_with_kernels_equal_one_call():
    mixer, hidden = mixer_and_inputs(4, 8, 11)
    mixer = mixer.float()
    hidden = hidden.float()
    whole, whole_state = mixer(hidden, implementation="triton")
    first, state = mixer(hidden[:, :6], implementation="triton")
    second, state = mixer(hidden[:, 6:], state=state, implementation="triton")
    assert relative_error(torch.cat([first, second], dim=1), whole) <= 1e-6
    for name in whole_state.weights:
        assert relative_error(state.weights[name], whole_state.weights[name]) <= 1e-6, name


@pytest.mark.parametrize("self_modifying", [True, False])
@pytest.mark.parametrize(("chunk_size", "head_dim"), [(1, 8), (4, 8), (3, 16)])
def test_decoding_step_matches_the_token_by_token_reference(chunk_size, head_dim, self_modifying):
    length = 9
    mixer, hidden = mixer_and_inputs(chunk_size, head_dim, length, self_modifying)
    mask = torch.ones(2, length, device=DEVICE)
    mask[1, :3] = 0
    mask[0, 5] = 0
    with torch.no_grad():
        reference, reference_state = mixer(hidden, mask, implementation="recurrent")
        mixer, hidden = mixer.float(), hidden.float()
        # The prompt through the chunk kernels, then token by token through the decoding step.
        prompt, state = mixer(hidden[:, :4], mask[:, :4], implementation="triton")
        outputs = [prompt]
        for t in range(4, length):
            assert memory_forward_for("triton", hidden[:, t : t + 1].transpose(1, 2)) is decode_forward
            out, state = mixer(hidden[:, t : t + 1], mask[:, t : t + 1], state=state, implementation="triton")
            outputs.append(out)
    tolerance = TOLERANCE[torch.float32]
    assert relative_error(torch.cat(outputs, dim=1), reference) <= tolerance
    assert state.position == reference_state.position
    assert_memories_close(state, reference_state, tolerance)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_decode_update_in_each_dtype(dtype):
    batch, heads, rows, cols = 3, 2, 37, 24
    weights = torch.randn(batch, heads, rows, cols, device=DEVICE).to(dtype)
    momentum = torch.randn(batch, heads, rows, cols, device=DEVICE).to(dtype)
    errors, inputs = torch.randn(batch, heads, rows, device=DEVICE), torch.randn(batch, heads, cols, device=DEVICE)
    eta, alpha, beta = torch.rand(3, batch, heads, device=DEVICE)
    active = torch.tensor([1.0, 0.0, 1.0], device=DEVICE)
    new_weights, new_momentum = decode_update(weights, momentum, errors, inputs, (eta, alpha, beta), active)
    w, s = weights.double(), momentum.double()
    expected_momentum = (
        beta[..., None, None].double() * s - (eta[..., None, None] * errors[..., None] * inputs[..., None, :]).double()
    )
    expected_weights = alpha[..., None, None].double() * w + expected_momentum
    written = active[:, None, None, None] > 0
    expected_momentum = torch.where(written, expected_momentum, s)
    expected_weights = torch.where(written, expected_weights, w)
    assert new_weights.dtype == dtype and new_momentum.dtype == dtype
    assert relative_error(new_weights, expected_weights) <= TOLERANCE[dtype]
    assert relative_error(new_momentum, expected_momentum) <= TOLERANCE[dtype]
    assert torch.equal(new_weights[1], weights[1]) and torch.equal(new_momentum[1], momentum[1])


def test_auto_takes_the_torch_path_on_cpu_and_in_float64():
    cpu = torch.zeros(1, 1, 3, 4)
    assert memory_forward_for("auto", cpu) is chunk_forward
    assert memory_forward_for("auto", cpu.double().to(DEVICE)) is chunk_forward
    assert memory_forward_for("chunk", cpu) is chunk_forward
    assert memory_forward_for("recurrent", cpu) is recurrent_forward


def test_triton_where_the_kernels_cannot_run_is_a_clear_error(monkeypatch):
    with pytest.raises(RuntimeError, match="float32 or bfloat16"):
        memory_forward_for("triton", torch.zeros(1, 1, 3, 4, dtype=torch.float64, device=DEVICE))
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(RuntimeError, match="CUDA device"):
        memory_forward_for("triton", torch.zeros(1, 1, 3, 4))
    with pytest.raises(ValueError, match="unknown"):
        memory_forward_for("fast", torch.zeros(1, 1, 3, 4))


def test_kernel_functions_refuse_float64():
    inputs = read_inputs(1, 1, 1, 4, 8, 8, True, torch.float64)
    with pytest.raises(TypeError, match="float32 or bfloat16"):
        run_read(chunk_read, inputs, torch.float64)


def test_generate_with_kernels_equals_the_torch_path():
    model = tiny_model(dtype=torch.float32, chunk_size=4).to(DEVICE)
    prompt = torch.randint(3, 97, (2, 6), device=DEVICE)
    outputs = {}
    for implementation in ("triton", "chunk"):
        for layer in model.model.layers:
            layer.memory_implementation = implementation
        outputs[implementation] = model.generate(prompt, max_new_tokens=6, do_sample=False)
    assert torch.equal(outputs["triton"], outputs["chunk"])


def test_auto_falls_back_to_the_torch_path_with_one_warning_when_the_kernels_fail(monkeypatch):
    from hf_hope.modeling import memory_kernel_probe, titans

    def broken_read(*args, **kwargs):
        raise RuntimeError("no kernel image is available for execution on the device")

    monkeypatch.setattr(memory_kernel_probe, "_verdicts", {})
    monkeypatch.setattr(titans, "_auto_takes_kernels", lambda device: True)  # "auto" takes the kernels here too
    monkeypatch.setattr(titans, "chunk_read", broken_read)
    model = tiny_model(torch.float32, memory_implementation="auto")
    reference = copy.deepcopy(model)
    for layer in reference.model.layers:
        layer.memory_implementation = "chunk"
    ids = torch.randint(0, 97, (2, 11))
    with pytest.warns(RuntimeWarning, match="no kernel image.*uses the torch chunk path") as caught:
        logits = model(ids).logits
        assert torch.equal(model(ids).logits, logits)  # the verdict is kept: no second warning
    assert len(caught) == 1
    assert torch.equal(logits, reference(ids).logits)
    for layer in model.model.layers:
        layer.memory_implementation = "triton"
    with pytest.raises(RuntimeError, match="no kernel image"):
        model(ids)

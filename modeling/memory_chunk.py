"""Chunk-parallel (dual-form) in-context memory update: the default for training and prefill.

Inside one chunk every inner gradient is taken at the chunk-start state `W0`, so each token's update is a rank-one
outer product `e_s x_s^T` and the recurrences

    S_t = beta_t S_{t-1} - eta_t e_s x_s^T        W_t = alpha_t W_{t-1} + S_t

unroll to `W_t = A_t W0 + b_t S0 - sum_{s<=t} D[t, s] eta_s e_s x_s^T` with `A_t = prod alpha`, and
`D = L_alpha @ L_beta` the product of the two lower-triangular decay matrices. Reading `W_t y_t` then becomes
attention-like: `A_t W0 y_t + b_t S0 y_t - ((D * eta) o (Y X^T)) E`.

The work runs in two passes. The first walks the chunks in order, since each chunk's keys, values, rates and
inner gradients depend on the state left by the one before; it only carries the state from chunk end to chunk
end. The second computes every token's read of the main memory for all chunks of equal length at once. The
token-by-token recurrence in `memory_recurrent.py` is the oracle this file is tested against.
"""

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from itertools import groupby

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .memory_state import MemoryState

MAIN_MEMORY = ("w1", "w2")


class BetaTerms:
    """The momentum-decay part of a segment's coefficients; with no padding it is the same for every chunk."""

    def __init__(self, log_beta: torch.Tensor) -> None:
        length = log_beta.shape[-1]
        self.causal = torch.ones(length, length, dtype=torch.bool, device=log_beta.device).tril()
        cumulative = log_beta.cumsum(-1)
        self.decay = _masked_exp(cumulative[..., :, None] - cumulative[..., None, :], self.causal)  # B_t / B_s
        self.cumulative = cumulative.exp()  # B_t: coefficient of S0 in S_t
        self.to_end = (cumulative[..., -1:] - cumulative).exp()  # B_L / B_s


class SegmentCoefficients:
    """Coefficients of every token t of a segment (a chunk, or the part of one): enough to read each `W_t`."""

    def __init__(self, eta: torch.Tensor, log_alpha: torch.Tensor, beta: BetaTerms, write: torch.Tensor | None) -> None:
        cum_alpha = log_alpha.cumsum(-1)
        alpha_decay = _masked_exp(cum_alpha[..., :, None] - cum_alpha[..., None, :], beta.causal)
        if write is not None:
            alpha_decay = alpha_decay * write[..., None, :]
        self.weight_decay = cum_alpha.exp()  # A_t: coefficient of W0 in W_t
        self.momentum_in_weight = alpha_decay @ beta.cumulative[..., :, None]  # b_t: coefficient of S0 in W_t
        self.write_in_weight = (alpha_decay @ beta.decay) * eta[..., None, :]  # D[t, s] * eta_s


class EndCoefficients:
    """Coefficients of the segment's last token only: enough to carry weights and momentum to its end."""

    def __init__(self, eta: torch.Tensor, log_alpha: torch.Tensor, beta: BetaTerms, write: torch.Tensor | None) -> None:
        cum_alpha = log_alpha.cumsum(-1)
        alpha_to_end = (cum_alpha[..., -1:] - cum_alpha).exp()  # A_L / A_r
        if write is not None:
            alpha_to_end = alpha_to_end * write
        self.weight_decay = cum_alpha[..., -1, None, None].exp()  # A_L
        self.momentum_in_weight = (alpha_to_end * beta.cumulative).sum(-1)[..., None, None]  # b_L
        self.write_in_weight = (alpha_to_end[..., None, :] @ beta.decay)[..., 0, :] * eta  # D[L, s] * eta_s
        self.momentum_decay = beta.cumulative[..., -1, None, None]  # B_L: coefficient of S0 in the final momentum
        self.write_in_momentum = beta.to_end * eta  # coefficient of write s in the final momentum


def _masked_exp(log_ratio: torch.Tensor, causal: torch.Tensor) -> torch.Tensor:
    return log_ratio.masked_fill(~causal, float("-inf")).exp()


def read_updated(
    start: torch.Tensor,
    momentum: torch.Tensor | None,
    coefficients: SegmentCoefficients,
    write_inputs: torch.Tensor,
    write_errors: torch.Tensor,
    read_inputs: torch.Tensor,
) -> torch.Tensor:
    """`W_t y_t` for every token t of the segment, where `W_t` includes the writes of tokens `<= t`."""
    out = coefficients.weight_decay[..., None] * (read_inputs @ start.transpose(-1, -2))
    if momentum is not None:
        out = out + coefficients.momentum_in_weight * (read_inputs @ momentum.transpose(-1, -2))
    scores = coefficients.write_in_weight * (read_inputs @ write_inputs.transpose(-1, -2))
    return out - scores @ write_errors


def final_state(
    start: torch.Tensor,
    momentum: torch.Tensor | None,
    coefficients: EndCoefficients,
    write_inputs: torch.Tensor,
    write_errors: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights and momentum after the last token of the segment."""
    weights = coefficients.weight_decay * start
    weights = weights - (write_errors * coefficients.write_in_weight[..., None]).transpose(-1, -2) @ write_inputs
    new_momentum = -(write_errors * coefficients.write_in_momentum[..., None]).transpose(-1, -2) @ write_inputs
    if momentum is not None:
        weights = weights + coefficients.momentum_in_weight * momentum
        new_momentum = new_momentum + coefficients.momentum_decay * momentum
    return weights, new_momentum


def silu_derivative(x: torch.Tensor) -> torch.Tensor:
    sigmoid = torch.sigmoid(x)
    return sigmoid * (1 + x * (1 - sigmoid))


def main_memory_errors(
    w1: torch.Tensor, w2: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, self_generated_values: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Errors `e = dL/dy + W x` of both layers of `M(z) = z + W1 silu(W2 z)` at state (w1, w2).

    `L = ||M(k) - target||^2` with target `M(v)` (self-generated) or `v`. Returns `(a, e1, e2)`: W1's write is
    `e1 a^T` with `a = silu(W2 k)`, and W2's write is `e2 k^T`.
    """
    length = keys.shape[-2]
    inputs = torch.cat([keys, values], dim=-2) if self_generated_values else keys
    hidden = inputs @ w2.transpose(-1, -2)
    activation = F.silu(hidden)
    memory_out = activation @ w1.transpose(-1, -2)
    if self_generated_values:
        targets = values + memory_out[..., length:, :]
        hidden, activation, memory_out = (
            hidden[..., :length, :],
            activation[..., :length, :],
            memory_out[..., :length, :],
        )
    else:
        targets = values
    residual = 2 * (keys + memory_out - targets)
    errors_w1 = residual + memory_out
    errors_w2 = (residual @ w1) * silu_derivative(hidden) + hidden
    return activation, errors_w1, errors_w2


@dataclass
class SegmentWrites:
    """What the second pass needs of one segment to read the main memory at each of its tokens."""

    begin: int
    end: int
    keys: torch.Tensor
    rates: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]  # eta, log alpha, log beta, write
    activation: torch.Tensor
    errors_w1: torch.Tensor
    errors_w2: torch.Tensor
    start: dict[str, torch.Tensor]  # main-memory weights at the segment's start
    momentum: dict[str, torch.Tensor] | None  # and its momentum (None: zero)


ReadFunction = Callable[..., torch.Tensor]  # the signature of `read_updated`
CarryFunction = Callable[..., tuple[torch.Tensor, torch.Tensor]]  # the signature of `final_state`


def chunk_forward(
    mixer,
    queries_in: torch.Tensor,
    generator_in: torch.Tensor,
    mask: torch.Tensor | None,
    state: MemoryState,
    read: ReadFunction = read_updated,
    carry: CarryFunction = final_state,
) -> tuple[torch.Tensor, MemoryState]:
    """Run the mixer's memories over `[batch, heads, T, head_dim]` inputs chunk by chunk.

    `queries_in` are the static query projections, `generator_in` the generator memories' inputs; `mask` is
    `[batch, T]` (1 for real tokens, 0 for padding, which never writes). Returns the main memory's outputs
    `[batch, heads, T, head_dim]` and the state after the last token. Everything that does not depend on the
    chunk-start state (queries; with static generators also keys, values and rates) is computed once up front.
    `read` computes the second pass's reads and `carry` the first pass's chunk-end states: `read_updated` and
    `final_state` in torch, or the Triton kernels `chunk_read` and `carry_state`.

    With `mixer.recompute_chunks = n` and autograd on, both passes run in groups of `n` chunks under activation
    checkpointing: backward keeps one state per group instead of one per chunk, and recomputes a group's chunks
    when it reaches them. The arithmetic is the same, only the reads are batched per group.
    """
    head_dim = mixer.head_dim
    mask = None if mask is None else mask[:, None, :].to(queries_in.dtype)
    query_tail = kv_tail = None
    if state.conv is not None:
        query_tail, kv_tail = state.conv[..., :head_dim], state.conv[..., head_dim:]
    queries, query_tail = mixer.queries(queries_in, mask, query_tail)
    static = None
    if not mixer.self_modifying:
        generated = generator_in @ state.chunk_start["generator"].transpose(-1, -2)
        keys, values, kv_tail = mixer.keys_values(generated, mask, kv_tail)
        static = (keys, values, mixer.rates(generated, mask))
    # Between groups `conv` carries the key and value channels' window only; the queries' is final already.
    carried = MemoryState(
        weights=dict(state.weights),
        chunk_start=dict(state.chunk_start),
        momentum=None if state.momentum is None else dict(state.momentum),
        conv=kv_tail,
        position=state.position,
    )
    bounds = segment_bounds(state.position, queries_in.shape[2], mixer.chunk_size)
    group_size = mixer.recompute_chunks or len(bounds)
    reads = []
    for first in range(0, len(bounds), group_size):
        group = bounds[first : first + group_size]
        run = partial(_run_segments, mixer, group, queries, generator_in, mask, static, read=read, carry=carry)
        if mixer.recompute_chunks is not None and torch.is_grad_enabled():
            group_reads, carried = checkpoint(run, carried, use_reentrant=False, preserve_rng_state=False)
        else:
            group_reads, carried = run(carried)
        reads.append(group_reads)
    return torch.cat(reads, dim=2), replace(carried, conv=torch.cat([query_tail, carried.conv], dim=-1))


def segment_bounds(position: int, total: int, chunk_size: int) -> list[tuple[int, int]]:
    """`(begin, end)` of each segment of `total` tokens that start at `position`: chunk ends cut segments."""
    bounds, begin = [], 0
    while begin < total:
        end = begin + min(chunk_size - (position + begin) % chunk_size, total - begin)
        bounds.append((begin, end))
        begin = end
    return bounds


def _run_segments(
    mixer,
    bounds: list[tuple[int, int]],
    queries: torch.Tensor,
    generator_in: torch.Tensor,
    mask: torch.Tensor | None,
    static: tuple | None,
    carried: MemoryState,
    read: ReadFunction,
    carry: CarryFunction,
) -> tuple[torch.Tensor, MemoryState]:
    """Both passes over consecutive segments: the main memory's outputs there, and the state after them."""
    weights, chunk_start, kv_tail = dict(carried.weights), dict(carried.chunk_start), carried.conv
    momentum = None if carried.momentum is None else dict(carried.momentum)
    position = carried.position
    beta_terms: dict[int, BetaTerms] = {}  # without padding, the momentum-decay terms depend only on the length
    segments = []
    for begin, end in bounds:
        segment_mask = None if mask is None else mask[..., begin:end]
        if static is None:
            generated = generator_in[:, :, begin:end] @ chunk_start["generator"].transpose(-1, -2)
            keys, values, kv_tail = mixer.keys_values(generated, segment_mask, kv_tail)
            rates = mixer.rates(generated, segment_mask)
        else:
            all_keys, all_values, all_rates = static
            keys, values = all_keys[:, :, begin:end], all_values[:, :, begin:end]
            rates = tuple(None if rate is None else rate[..., begin:end] for rate in all_rates)
        eta, log_alpha, log_beta, write = rates
        if segment_mask is not None:
            beta = BetaTerms(log_beta)
        elif end - begin in beta_terms:
            beta = beta_terms[end - begin]
        else:
            beta = beta_terms[end - begin] = BetaTerms(log_beta)
        activation, errors_w1, errors_w2 = main_memory_errors(
            chunk_start["w1"], chunk_start["w2"], keys, values, mixer.self_generated_values
        )
        main_start = {name: weights[name] for name in MAIN_MEMORY}
        main_momentum = None if momentum is None else {name: momentum[name] for name in MAIN_MEMORY}
        segments.append(
            SegmentWrites(begin, end, keys, rates, activation, errors_w1, errors_w2, main_start, main_momentum)
        )
        writes = {"w1": (activation, errors_w1), "w2": (keys, errors_w2)}
        if mixer.self_modifying:
            # Linear generators G with target G v: e = 2 (G k - G v) + G k = G (3 k - 2 v).
            writes["generator"] = (keys, (3 * keys - 2 * values) @ chunk_start["generator"].transpose(-1, -2))
        end_coefficients = EndCoefficients(eta, log_alpha, beta, write)
        old_momentum, momentum = momentum or {}, {}
        for name, (inputs, errors) in writes.items():
            weights[name], momentum[name] = carry(
                weights[name], old_momentum.get(name), end_coefficients, inputs, errors
            )
        position += end - begin
        if position % mixer.chunk_size == 0:
            chunk_start = dict(weights)

    reads = [
        _read_segments(list(group), queries, read)
        for _, group in groupby(segments, key=lambda segment: segment.end - segment.begin)
    ]
    after = MemoryState(weights=weights, chunk_start=chunk_start, momentum=momentum, conv=kv_tail, position=position)
    return torch.cat(reads, dim=2), after


def _read_segments(segments: list[SegmentWrites], queries: torch.Tensor, read: ReadFunction) -> torch.Tensor:
    """Main-memory outputs `q + M(q; W_t)` of consecutive segments of equal length, computed as one batch.

    The segments are stacked on a new dimension after the heads; returns `[batch, heads, tokens, head_dim]`.
    """
    count, length = len(segments), segments[0].end - segments[0].begin

    def stack(tensors: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(tensors, dim=2)

    eta, log_alpha, log_beta, write = (
        None if segments[0].rates[index] is None else stack([segment.rates[index] for segment in segments])
        for index in range(4)
    )
    coefficients = SegmentCoefficients(eta, log_alpha, BetaTerms(log_beta), write)
    segment_queries = queries[:, :, segments[0].begin : segments[-1].end].unflatten(2, (count, length))
    starts = {name: stack([segment.start[name] for segment in segments]) for name in MAIN_MEMORY}
    momenta = dict.fromkeys(MAIN_MEMORY)
    if any(segment.momentum is not None for segment in segments):
        momenta = {
            name: stack(
                [
                    torch.zeros_like(segment.start[name]) if segment.momentum is None else segment.momentum[name]
                    for segment in segments
                ]
            )
            for name in MAIN_MEMORY
        }
    keys = stack([segment.keys for segment in segments])
    hidden = read(
        starts["w2"], momenta["w2"], coefficients, keys, stack([s.errors_w2 for s in segments]), segment_queries
    )
    activation = stack([segment.activation for segment in segments])
    main_read = read(
        starts["w1"], momenta["w1"], coefficients, activation, stack([s.errors_w1 for s in segments]), F.silu(hidden)
    )
    return (segment_queries + main_read).flatten(2, 3)

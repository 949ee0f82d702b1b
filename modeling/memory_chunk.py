"""Chunk-parallel in-context memory update: the default for training and prefill (the algebra is in
`memory_dual_form.py`).

The work runs in two passes. The first walks the segments (chunks, or the parts of them a call's ends cut) in
order, since each chunk's keys, values, rates and inner gradients depend on the state left by the one before; it
only carries the state from segment end to segment end. The second computes every token's read of the main memory
for all segments of equal length at once. The token-by-token recurrence in `memory_recurrent.py` is the oracle
this file is tested against.
"""

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from itertools import groupby

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .memory_dual_form import (
    MAIN_MEMORY,
    BetaTerms,
    EndCoefficients,
    SegmentCoefficients,
    final_state,
    generator_errors,
    main_memory_errors,
    read_updated,
)
from .memory_state import MemoryMixer, MemoryState, Rates, starts_chunk


@dataclass
class SegmentWrites:
    """What the second pass needs of one segment to read the main memory at each of its tokens."""

    begin: int
    end: int
    keys: torch.Tensor
    rates: Rates
    activation: torch.Tensor
    errors_w1: torch.Tensor
    errors_w2: torch.Tensor
    start: dict[str, torch.Tensor]  # main-memory weights at the segment's start
    momentum: dict[str, torch.Tensor] | None  # and its momentum (None: zero)


ReadFunction = Callable[
    [torch.Tensor, torch.Tensor | None, SegmentCoefficients, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor
]  # the signature of `read_updated`
CarryFunction = Callable[
    [torch.Tensor, torch.Tensor | None, EndCoefficients, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]
]  # the signature of `final_state`


def chunk_forward(
    mixer: MemoryMixer,
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
    mask = None if mask is None else mask[:, None, :].to(queries_in.dtype)
    query_tail, kv_tail = state.conv_tails(mixer.head_dim)
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
    mixer: MemoryMixer,
    bounds: list[tuple[int, int]],
    queries: torch.Tensor,
    generator_in: torch.Tensor,
    mask: torch.Tensor | None,
    static: tuple[torch.Tensor, torch.Tensor, Rates] | None,
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
            writes["generator"] = (keys, generator_errors(chunk_start["generator"], keys, values))
        end_coefficients = EndCoefficients(eta, log_alpha, beta, write)
        old_momentum, momentum = momentum or {}, {}
        for name, (inputs, errors) in writes.items():
            weights[name], momentum[name] = carry(
                weights[name], old_momentum.get(name), end_coefficients, inputs, errors
            )
        position += end - begin
        if starts_chunk(position, mixer.chunk_size):
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

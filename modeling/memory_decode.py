"""Decoding one token with the fused Triton step: the same contract as `chunk_forward` for a length of one.

Everything that costs `O(d)` or one matrix-vector product at the chunk-start state (conv window, normalisation,
rates, the error vectors of every memory) is computed in torch; the memory updates, which touch every weight, run
in the kernels (`memory_kernels.decode_step` for the main memory and its read, `decode_update` for the
generators). The states are never updated in place: the chunk-start weights may share storage with the weights.
"""

import torch

from .memory_chunk import main_memory_errors
from .memory_kernels import decode_step, decode_update
from .memory_state import MemoryState


def decode_forward(
    mixer, queries_in: torch.Tensor, generator_in: torch.Tensor, mask: torch.Tensor | None, state: MemoryState
) -> tuple[torch.Tensor, MemoryState]:
    """Run the mixer's memories over one token (`[batch, heads, 1, head_dim]` inputs); no autograd."""
    if queries_in.shape[2] != 1:
        raise ValueError(f"decode_forward takes one token, got {queries_in.shape[2]}; use chunk_forward.")
    head_dim, chunk_size = mixer.head_dim, mixer.chunk_size
    weights, chunk_start = dict(state.weights), dict(state.chunk_start)
    if state.position % chunk_size == 0:
        chunk_start = dict(weights)
    momentum = state.momentum
    mask = None if mask is None else mask[:, None, :].to(queries_in.dtype)
    query_tail = kv_tail = None
    if state.conv is not None:
        query_tail, kv_tail = state.conv[..., :head_dim], state.conv[..., head_dim:]
    queries, query_tail = mixer.queries(queries_in, mask, query_tail)
    generated = generator_in @ chunk_start["generator"].transpose(-1, -2)
    keys, values, kv_tail = mixer.keys_values(generated, mask, kv_tail)
    eta, log_alpha, log_beta, _ = mixer.rates(generated, mask)
    rates = (eta[..., 0], log_alpha[..., 0].exp(), log_beta[..., 0].exp())
    active = torch.ones(queries.shape[0], device=queries.device) if mask is None else mask[:, 0, 0]
    activation, errors_w1, errors_w2 = main_memory_errors(
        chunk_start["w1"], chunk_start["w2"], keys, values, mixer.self_generated_values
    )
    vectors = {
        "queries": queries[:, :, 0],
        "keys": keys[:, :, 0],
        "errors_w1": errors_w1[:, :, 0],
        "activation": activation[:, :, 0],
        "errors_w2": errors_w2[:, :, 0],
    }
    main_momentum = None if momentum is None else {name: momentum[name] for name in ("w1", "w2")}
    read, new_weights, new_momentum = decode_step(weights, main_momentum, vectors, rates, active)
    weights.update(new_weights)
    if mixer.self_modifying:
        # Linear generators G with target G v: e = 2 (G k - G v) + G k = G (3 k - 2 v).
        errors = ((3 * keys - 2 * values) @ chunk_start["generator"].transpose(-1, -2))[:, :, 0]
        old = None if momentum is None else momentum["generator"]
        weights["generator"], new_momentum["generator"] = decode_update(
            weights["generator"], old, errors, keys[:, :, 0], rates, active
        )
    position = state.position + 1
    if position % chunk_size == 0:
        chunk_start = dict(weights)
    conv = torch.cat([query_tail, kv_tail], dim=-1)
    new_state = MemoryState(
        weights=weights, chunk_start=chunk_start, momentum=new_momentum, conv=conv, position=position
    )
    return read[:, :, None], new_state

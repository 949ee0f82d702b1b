"""Chunk-parallel (dual-form) in-context memory update: the default for training and prefill.

Inside one chunk every inner gradient is taken at the chunk-start state `W0`, so each token's update is a rank-one
outer product `e_s x_s^T` and the recurrences

    S_t = beta_t S_{t-1} - eta_t e_s x_s^T        W_t = alpha_t W_{t-1} + S_t

unroll to `W_t = A_t W0 + b_t S0 - sum_{s<=t} D[t, s] eta_s e_s x_s^T` with `A_t = prod alpha`, and
`D = L_alpha @ L_beta` the product of the two lower-triangular decay matrices. Reading `W_t y_t` then becomes
attention-like: `A_t W0 y_t + b_t S0 y_t - ((D * eta) o (Y X^T)) E`. Chunks run one after another; the
token-by-token recurrence in `memory_recurrent.py` is the oracle this file is tested against.
"""

import torch
import torch.nn.functional as F

from .memory_state import MemoryState


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
    """Decay coefficients of one segment (a chunk, or the part of one) for every batch row and head."""

    def __init__(self, eta: torch.Tensor, log_alpha: torch.Tensor, beta: BetaTerms, write: torch.Tensor | None) -> None:
        cum_alpha = log_alpha.cumsum(-1)
        alpha_decay = _masked_exp(cum_alpha[..., :, None] - cum_alpha[..., None, :], beta.causal)
        if write is not None:
            alpha_decay = alpha_decay * write[..., None, :]
        self.weight_decay = cum_alpha.exp()  # A_t: coefficient of W0 in W_t
        self.momentum_in_weight = alpha_decay @ beta.cumulative[..., :, None]  # b_t: coefficient of S0 in W_t
        self.write_in_weight = (alpha_decay @ beta.decay) * eta[..., None, :]  # D[t, s] * eta_s
        self.momentum_decay = beta.cumulative[..., -1]  # coefficient of S0 in the final momentum
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
    coefficients: SegmentCoefficients,
    write_inputs: torch.Tensor,
    write_errors: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights and momentum after the last token of the segment."""
    last_row = coefficients.write_in_weight[..., -1, :]
    weights = coefficients.weight_decay[..., -1, None, None] * start
    weights = weights - (write_errors * last_row[..., None]).transpose(-1, -2) @ write_inputs
    new_momentum = -(write_errors * coefficients.write_in_momentum[..., None]).transpose(-1, -2) @ write_inputs
    if momentum is not None:
        weights = weights + coefficients.momentum_in_weight[..., -1, :, None] * momentum
        new_momentum = new_momentum + coefficients.momentum_decay[..., None, None] * momentum
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


def chunk_forward(
    mixer, queries_in: torch.Tensor, generator_in: torch.Tensor, mask: torch.Tensor | None, state: MemoryState
) -> tuple[torch.Tensor, MemoryState]:
    """Run the mixer's memories over `[batch, heads, T, head_dim]` inputs chunk by chunk.

    `queries_in` are the static query projections, `generator_in` the generator memories' inputs; `mask` is
    `[batch, T]` (1 for real tokens, 0 for padding, which never writes). Returns the main memory's outputs
    `[batch, heads, T, head_dim]` and the state after the last token. Everything that does not depend on the
    chunk-start state (queries; with static generators also keys, values and rates) is computed once up front.
    """
    total, head_dim, chunk_size = queries_in.shape[2], mixer.head_dim, mixer.chunk_size
    weights, chunk_start = dict(state.weights), dict(state.chunk_start)
    momentum = None if state.momentum is None else dict(state.momentum)
    position = state.position
    mask = None if mask is None else mask[:, None, :].to(queries_in.dtype)
    query_tail = kv_tail = None
    if state.conv is not None:
        query_tail, kv_tail = state.conv[..., :head_dim], state.conv[..., head_dim:]
    all_queries, query_tail = mixer.convolve(queries_in, "query", mask, query_tail)
    all_queries = F.normalize(all_queries, dim=-1)
    if not mixer.self_modifying:
        static = generator_in @ chunk_start["generator"].transpose(-1, -2)
        all_keys, all_values, kv_tail = mixer.keys_values(static, mask, kv_tail)
        all_rates = mixer.rates(static, mask)
    beta_terms = {}
    outputs = []
    begin = 0
    while begin < total:
        end = begin + min(chunk_size - position % chunk_size, total - begin)
        segment_mask = None if mask is None else mask[..., begin:end]
        if mixer.self_modifying:
            generated = generator_in[:, :, begin:end] @ chunk_start["generator"].transpose(-1, -2)
            keys, values, kv_tail = mixer.keys_values(generated, segment_mask, kv_tail)
            eta, log_alpha, log_beta, write = mixer.rates(generated, segment_mask)
        else:
            keys, values = all_keys[:, :, begin:end], all_values[:, :, begin:end]
            eta, log_alpha, log_beta, write = (None if rate is None else rate[..., begin:end] for rate in all_rates)
        if segment_mask is None:
            if end - begin not in beta_terms:
                beta_terms[end - begin] = BetaTerms(log_beta)
            beta = beta_terms[end - begin]
        else:
            beta = BetaTerms(log_beta)
        coefficients = SegmentCoefficients(eta, log_alpha, beta, write)
        queries = all_queries[:, :, begin:end]
        old_momentum = momentum or {}
        momentum = {}

        activation, errors_w1, errors_w2 = main_memory_errors(
            chunk_start["w1"], chunk_start["w2"], keys, values, mixer.self_generated_values
        )
        hidden = read_updated(weights["w2"], old_momentum.get("w2"), coefficients, keys, errors_w2, queries)
        read = read_updated(weights["w1"], old_momentum.get("w1"), coefficients, activation, errors_w1, F.silu(hidden))
        outputs.append(queries + read)
        writes = {"w1": (activation, errors_w1), "w2": (keys, errors_w2)}

        if mixer.self_modifying:
            # Linear generators G with target G v: e = 2 (G k - G v) + G k = G (3 k - 2 v).
            writes["generator"] = (keys, (3 * keys - 2 * values) @ chunk_start["generator"].transpose(-1, -2))

        for name, (inputs, errors) in writes.items():
            weights[name], momentum[name] = final_state(
                weights[name], old_momentum.get(name), coefficients, inputs, errors
            )
        position += end - begin
        if position % chunk_size == 0:
            chunk_start = dict(weights)
        begin = end

    conv = torch.cat([query_tail, kv_tail], dim=-1)
    new_state = MemoryState(weights=weights, chunk_start=chunk_start, momentum=momentum, conv=conv, position=position)
    return torch.cat(outputs, dim=2), new_state

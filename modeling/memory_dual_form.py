"""The dual-form algebra of the in-context memory update, shared by the chunk path and the decoding step.

Inside one chunk every inner gradient is taken at the chunk-start state `W0`, so each token's update is a rank-one
outer product `e_s x_s^T` and the recurrences

    S_t = beta_t S_{t-1} - eta_t e_s x_s^T        W_t = alpha_t W_{t-1} + S_t

unroll to `W_t = A_t W0 + b_t S0 - sum_{s<=t} D[t, s] eta_s e_s x_s^T` with `A_t = prod alpha`, and
`D = L_alpha @ L_beta` the product of the two lower-triangular decay matrices. Reading `W_t y_t` then becomes
attention-like: `A_t W0 y_t + b_t S0 y_t - ((D * eta) o (Y X^T)) E`. This file holds those coefficients, the read
and the end-of-segment carry they give, and the error vectors `e` of every memory at the chunk-start state.
"""

import torch
import torch.nn.functional as F

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
    """`d silu(x) / dx`, for the main memory's backward through its hidden layer."""
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


def generator_errors(generator: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Errors `e` of the linear generators `G` `[batch, heads, rows, d]` at keys and values `[..., length, d]`.

    The target is `G v`, so `e = dL/dy + G k = 2 (G k - G v) + G k = G (3 k - 2 v)`; their write is `e k^T`.
    """
    return (3 * keys - 2 * values) @ generator.transpose(-1, -2)

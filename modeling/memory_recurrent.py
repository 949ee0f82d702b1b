"""Token-by-token reference of the mixer's memories: the oracle for the chunk-parallel path, the cache and kernels.

It transcribes the chunk-wise semantics literally, one token at a time, with full matrices: at every chunk
boundary the chunk-start weights are refreshed; token t's generators read the chunk-start state, its inner
gradients are taken there, then `S = beta S - eta g` and `W = alpha W + S` update each memory, and the main memory
is read with the updated weights. With `chunk_size=1` it is the fully sequential recurrence. It reads only the
mixer's configuration and raw parameters (`MemoryMixer`'s attributes, not its feature methods) and transcribes the
conv, the normalisation and the rates itself, so it does not share the code it checks.
"""

import torch
import torch.nn.functional as F

from .memory_state import MemoryMixer, MemoryState, starts_chunk


def _outer(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    return left[..., :, None] * right[..., None, :]


def _matvec(matrix: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
    return (matrix @ vector[..., None])[..., 0]


def inner_gradients(
    chunk_start: dict[str, torch.Tensor], keys: torch.Tensor, values: torch.Tensor, self_generated_values: bool
) -> dict[str, torch.Tensor]:
    """Gradient plus DGD term of every memory at the chunk-start state, for one token (`[batch, heads, dim]`).

    Main memory `M(z) = z + W1 silu(W2 z)` with target `M(v)` (or `v`); generators `G` are linear with target
    `G v`. Each linear layer's DGD term is `(W x) x^T` with `x` that layer's own input.
    """
    w1, w2, generator = chunk_start["w1"], chunk_start["w2"], chunk_start["generator"]
    hidden = _matvec(w2, keys)
    activation = F.silu(hidden)
    memory_out = _matvec(w1, activation)
    targets = values + _matvec(w1, F.silu(_matvec(w2, values))) if self_generated_values else values
    residual = 2 * (keys + memory_out - targets)
    sigmoid = torch.sigmoid(hidden)
    hidden_grad = _matvec(w1.transpose(-1, -2), residual) * sigmoid * (1 + hidden * (1 - sigmoid))
    generator_keys = _matvec(generator, keys)
    generator_residual = 2 * (generator_keys - _matvec(generator, values))
    return {
        "w1": _outer(residual, activation) + _outer(memory_out, activation),
        "w2": _outer(hidden_grad, keys) + _outer(hidden, keys),
        "generator": _outer(generator_residual, keys) + _outer(generator_keys, keys),
    }


def token_rates(mixer: MemoryMixer, generated: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`eta_t`, `alpha_t` and `beta` `[batch, heads]` of one token from its generators' outputs `[batch, heads, rows]`.

    `eta_t = memory_lr_max * sigmoid(G_eta x_t + eta_bias)`, `alpha_t = sigmoid(G_alpha x_t + alpha_bias)` (rows
    `2 * head_dim` and `2 * head_dim + 1`) and the per-head constant `beta = sigmoid(momentum_logit)`.
    """
    head_dim = mixer.head_dim
    eta = mixer.memory_lr_max * torch.sigmoid(generated[..., 2 * head_dim] + mixer.eta_bias)
    alpha = torch.sigmoid(generated[..., 2 * head_dim + 1] + mixer.alpha_bias)
    beta = torch.sigmoid(mixer.momentum_logit.to(generated.dtype)).expand_as(eta)
    return eta, alpha, beta


def recurrent_forward(
    mixer: MemoryMixer,
    queries_in: torch.Tensor,
    generator_in: torch.Tensor,
    mask: torch.Tensor | None,
    state: MemoryState,
) -> tuple[torch.Tensor, MemoryState]:
    """Same contract as `chunk_forward`, computed one token at a time."""
    batch, heads, total, head_dim = queries_in.shape
    chunk_size, kernel = mixer.chunk_size, mixer.conv_size
    weights = dict(state.weights)
    chunk_start = dict(state.chunk_start)
    momentum = dict(state.momentum) if state.momentum is not None else {}
    updated = ("generator", "w1", "w2") if mixer.self_modifying else ("w1", "w2")
    for name in updated:
        momentum.setdefault(name, torch.zeros_like(weights[name]))
    window = queries_in.new_zeros(batch, heads, kernel, 3 * head_dim)
    if state.conv is not None and kernel > 1:
        window[:, :, 1:] = state.conv
    conv_weight = mixer.conv_weight.to(queries_in.dtype)  # [heads, 3 * head_dim, kernel]
    position = state.position
    outputs = []
    for t in range(total):
        if starts_chunk(position, chunk_size):
            chunk_start = dict(weights)
        active = torch.ones(batch, 1, 1, dtype=queries_in.dtype, device=queries_in.device)
        if mask is not None:
            active = mask[:, t, None, None].to(queries_in.dtype)
        generated = _matvec(chunk_start["generator"], generator_in[:, :, t])
        features = torch.cat([queries_in[:, :, t], generated[..., : 2 * head_dim]], dim=-1) * active[..., 0:1]
        window = torch.cat([window[:, :, 1:], features[:, :, None]], dim=2)
        convolved = F.silu((window * conv_weight.transpose(-1, -2)[None]).sum(dim=2))
        queries, keys, values = convolved.split(head_dim, dim=-1)
        queries, keys, values = (F.normalize(tensor, dim=-1) for tensor in (queries, keys, values))
        # Padded tokens' rates are computed too, but `written` below keeps their state unchanged.
        eta, alpha, beta = (rate[..., None, None] for rate in token_rates(mixer, generated))

        gradients = inner_gradients(chunk_start, keys, values, mixer.self_generated_values)
        written = active[..., None] > 0
        for name in updated:
            new_momentum = beta * momentum[name] - eta * gradients[name]
            new_weights = alpha * weights[name] + new_momentum
            momentum[name] = torch.where(written, new_momentum, momentum[name])
            weights[name] = torch.where(written, new_weights, weights[name])
        outputs.append(queries + _matvec(weights["w1"], F.silu(_matvec(weights["w2"], queries))))
        position += 1

    if starts_chunk(position, chunk_size):
        chunk_start = dict(weights)
    conv_tail = window[:, :, 1:]
    new_state = MemoryState(
        weights=weights, chunk_start=chunk_start, momentum=momentum, conv=conv_tail, position=position
    )
    return torch.stack(outputs, dim=2), new_state

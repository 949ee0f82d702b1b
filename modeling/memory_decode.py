"""Decoding one token with the fused Triton step: the same contract as `chunk_forward` for a length of one.

Everything that costs `O(d)` or one matrix-vector product at the chunk-start state (conv window, normalisation,
rates, the error vectors of every memory) is computed in torch; the memory updates, which touch every weight, run
in the kernels below (`decode_step` for the main memory and its read, `decode_update` for the generators). The
states are never updated in place: the chunk-start weights may share storage with the weights.

Each kernel runs one program per (batch, head): it applies `S = beta S - eta e x^T`, `W = alpha W + S` to W2 and
W1 and reads `q + W1 silu(W2 q)` with the new weights in the same pass; each weight and momentum is read once and
written once (`2 (2 d m + (2d + 2) d)` floats each way per head and token, generators included), which is the
whole cost of a step; the error vectors `e` are matrix-vector products at the chunk-start state computed
beforehand in torch.
"""

import torch

from .memory_dual_form import MAIN_MEMORY, generator_errors, main_memory_errors
from .memory_state import MemoryMixer, MemoryState, starts_chunk
from .memory_triton_common import block_size, require_kernels, tl, triton


def decode_forward(
    mixer: MemoryMixer,
    queries_in: torch.Tensor,
    generator_in: torch.Tensor,
    mask: torch.Tensor | None,
    state: MemoryState,
) -> tuple[torch.Tensor, MemoryState]:
    """Run the mixer's memories over one token (`[batch, heads, 1, head_dim]` inputs); no autograd."""
    if queries_in.shape[2] != 1:
        raise ValueError(f"decode_forward takes one token, got {queries_in.shape[2]}; use chunk_forward.")
    chunk_size = mixer.chunk_size
    weights, chunk_start = dict(state.weights), dict(state.chunk_start)
    if starts_chunk(state.position, chunk_size):
        chunk_start = dict(weights)
    momentum = state.momentum
    mask = None if mask is None else mask[:, None, :].to(queries_in.dtype)
    query_tail, kv_tail = state.conv_tails(mixer.head_dim)
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
    main_momentum = None if momentum is None else {name: momentum[name] for name in MAIN_MEMORY}
    read, new_weights, new_momentum = decode_step(weights, main_momentum, vectors, rates, active)
    weights.update(new_weights)
    if mixer.self_modifying:
        errors = generator_errors(chunk_start["generator"], keys, values)[:, :, 0]
        old = None if momentum is None else momentum["generator"]
        weights["generator"], new_momentum["generator"] = decode_update(
            weights["generator"], old, errors, keys[:, :, 0], rates, active
        )
    position = state.position + 1
    if starts_chunk(position, chunk_size):
        chunk_start = dict(weights)
    conv = torch.cat([query_tail, kv_tail], dim=-1)
    new_state = MemoryState(
        weights=weights, chunk_start=chunk_start, momentum=new_momentum, conv=conv, position=position
    )
    return read[:, :, None], new_state


if triton is not None:

    @triton.jit
    def _decode_update_kernel(
        weights, momentum, new_weights, new_momentum,
        errors, inputs, eta, alpha, beta, active,
        heads, rows_count, cols_count,
        HAS_MOMENTUM: tl.constexpr, BR: tl.constexpr, BC: tl.constexpr,
    ):  # fmt: skip
        """One (batch, head) of a memory without a read: `S = beta S - eta e x^T`, `W = alpha W + S`."""
        pid_bh = tl.program_id(0)
        batch = pid_bh // heads
        cols = tl.arange(0, BC)
        col_ok = cols < cols_count
        x = tl.load(inputs + pid_bh * cols_count + cols, mask=col_ok, other=0.0).to(tl.float32)
        rate, keep, decay = tl.load(eta + pid_bh), tl.load(alpha + pid_bh), tl.load(beta + pid_bh)
        writes = tl.load(active + batch) != 0
        for r0 in range(0, rows_count, BR):
            rows = r0 + tl.arange(0, BR)
            row_ok = rows < rows_count
            e = tl.load(errors + pid_bh * rows_count + rows, mask=row_ok, other=0.0).to(tl.float32)
            mask = row_ok[:, None] & col_ok[None, :]
            offsets = pid_bh * rows_count * cols_count + rows[:, None] * cols_count + cols[None, :]
            w_old = tl.load(weights + offsets, mask=mask, other=0.0).to(tl.float32)
            s_old = tl.zeros((BR, BC), dtype=tl.float32)
            if HAS_MOMENTUM:
                s_old = tl.load(momentum + offsets, mask=mask, other=0.0).to(tl.float32)
            s_new = decay * s_old - rate * e[:, None] * x[None, :]
            w_new = keep * w_old + s_new
            s_new = tl.where(writes, s_new, s_old)
            w_new = tl.where(writes, w_new, w_old)
            tl.store(new_momentum + offsets, s_new.to(new_momentum.dtype.element_ty), mask=mask)
            tl.store(new_weights + offsets, w_new.to(new_weights.dtype.element_ty), mask=mask)

    @triton.jit
    def _decode_main_kernel(
        w1, s1, w2, s2, new_w1, new_s1, new_w2, new_s2,
        errors_w1, activation, errors_w2, keys, queries, eta, alpha, beta, active, out,
        heads, dim, hidden,
        HAS_MOMENTUM: tl.constexpr, BD: tl.constexpr, BM: tl.constexpr,
    ):  # fmt: skip
        """One (batch, head) of the main memory: update W2 `[hidden, dim]` and W1 `[dim, hidden]` block by block
        of hidden units and read `q + W1 silu(W2 q)` with the new weights in the same pass."""
        pid_bh = tl.program_id(0)
        batch = pid_bh // heads
        dims = tl.arange(0, BD)
        dim_ok = dims < dim
        q = tl.load(queries + pid_bh * dim + dims, mask=dim_ok, other=0.0).to(tl.float32)
        k = tl.load(keys + pid_bh * dim + dims, mask=dim_ok, other=0.0).to(tl.float32)
        e1 = tl.load(errors_w1 + pid_bh * dim + dims, mask=dim_ok, other=0.0).to(tl.float32)
        rate, keep, decay = tl.load(eta + pid_bh), tl.load(alpha + pid_bh), tl.load(beta + pid_bh)
        writes = tl.load(active + batch) != 0
        read = tl.zeros((BD,), dtype=tl.float32)
        base = pid_bh * dim * hidden
        for m0 in range(0, hidden, BM):
            units = m0 + tl.arange(0, BM)
            unit_ok = units < hidden
            mask_w2 = unit_ok[:, None] & dim_ok[None, :]
            offsets_w2 = base + units[:, None] * dim + dims[None, :]  # W2 [hidden, dim]
            e2 = tl.load(errors_w2 + pid_bh * hidden + units, mask=unit_ok, other=0.0).to(tl.float32)
            w_old = tl.load(w2 + offsets_w2, mask=mask_w2, other=0.0).to(tl.float32)
            s_old = tl.zeros((BM, BD), dtype=tl.float32)
            if HAS_MOMENTUM:
                s_old = tl.load(s2 + offsets_w2, mask=mask_w2, other=0.0).to(tl.float32)
            s_new = tl.where(writes, decay * s_old - rate * e2[:, None] * k[None, :], s_old)
            w_new = tl.where(writes, keep * w_old + s_new, w_old)
            tl.store(new_s2 + offsets_w2, s_new.to(new_s2.dtype.element_ty), mask=mask_w2)
            tl.store(new_w2 + offsets_w2, w_new.to(new_w2.dtype.element_ty), mask=mask_w2)
            pre = tl.sum(w_new * q[None, :], axis=1)  # [BM]
            act = pre * tl.sigmoid(pre)
            mask_w1 = dim_ok[:, None] & unit_ok[None, :]
            offsets_w1 = base + dims[:, None] * hidden + units[None, :]  # W1 [dim, hidden]
            a = tl.load(activation + pid_bh * hidden + units, mask=unit_ok, other=0.0).to(tl.float32)
            w_old = tl.load(w1 + offsets_w1, mask=mask_w1, other=0.0).to(tl.float32)
            s_old = tl.zeros((BD, BM), dtype=tl.float32)
            if HAS_MOMENTUM:
                s_old = tl.load(s1 + offsets_w1, mask=mask_w1, other=0.0).to(tl.float32)
            s_new = tl.where(writes, decay * s_old - rate * e1[:, None] * a[None, :], s_old)
            w_new = tl.where(writes, keep * w_old + s_new, w_old)
            tl.store(new_s1 + offsets_w1, s_new.to(new_s1.dtype.element_ty), mask=mask_w1)
            tl.store(new_w1 + offsets_w1, w_new.to(new_w1.dtype.element_ty), mask=mask_w1)
            read += tl.sum(w_new * tl.where(unit_ok, act, 0.0)[None, :], axis=1)
        tl.store(out + pid_bh * dim + dims, (q + read).to(out.dtype.element_ty), mask=dim_ok)


def decode_update(
    weights: torch.Tensor,
    momentum: torch.Tensor | None,
    errors: torch.Tensor,
    inputs: torch.Tensor,
    rates: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    active: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token's `S = beta S - eta e x^T`, `W = alpha W + S` of a `[batch, heads, rows, cols]` memory.

    `errors` `[batch, heads, rows]`, `inputs` `[batch, heads, cols]`, rates `(eta, alpha, beta)` `[batch, heads]`,
    `active` `[batch]` (0: padding, the state is kept). Returns new (weights, momentum); the inputs are untouched.
    """
    require_kernels(weights, momentum)
    batch, heads, rows, cols = weights.shape
    weights = weights.contiguous()
    momentum = None if momentum is None else momentum.broadcast_to(weights.shape).contiguous()
    new_weights, new_momentum = torch.empty_like(weights), torch.empty_like(weights)
    eta, alpha, beta = (rate.to(torch.float32).broadcast_to(batch, heads).contiguous() for rate in rates)
    _decode_update_kernel[(batch * heads,)](
        weights, momentum if momentum is not None else weights, new_weights, new_momentum,
        errors.contiguous(), inputs.contiguous(), eta, alpha, beta, active.to(torch.float32).contiguous(),
        heads, rows, cols,
        HAS_MOMENTUM=momentum is not None, BR=max(1, 4096 // block_size(cols)), BC=block_size(cols),
    )  # fmt: skip
    return new_weights, new_momentum


def decode_step(
    weights: dict[str, torch.Tensor],
    momentum: dict[str, torch.Tensor] | None,
    vectors: dict[str, torch.Tensor],
    rates: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    active: torch.Tensor,
) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The main memory's fused decoding step for one token: update W2, W1 and read `q + W1 silu(W2 q)`.

    `weights`/`momentum` hold `"w1"` `[batch, heads, dim, hidden]` and `"w2"` `[batch, heads, hidden, dim]`;
    `vectors` holds `"queries"`, `"keys"`, `"errors_w1"` (`[batch, heads, dim]`), `"activation"` and
    `"errors_w2"` (`[batch, heads, hidden]`). Returns the read `[batch, heads, dim]`, new weights and momentum.
    """
    w1, w2 = weights["w1"].contiguous(), weights["w2"].contiguous()
    require_kernels(w1, w2)
    batch, heads, dim, hidden = w1.shape
    s1 = s2 = None
    if momentum is not None:
        s1, s2 = (momentum[name].broadcast_to(weights[name].shape).contiguous() for name in ("w1", "w2"))
    new = {name: torch.empty_like(tensor) for name, tensor in (("w1", w1), ("w2", w2))}
    new_momentum = {name: torch.empty_like(tensor) for name, tensor in new.items()}
    out = torch.empty(batch, heads, dim, device=w1.device, dtype=vectors["queries"].dtype)
    eta, alpha, beta = (rate.to(torch.float32).broadcast_to(batch, heads).contiguous() for rate in rates)
    has_momentum = momentum is not None
    _decode_main_kernel[(batch * heads,)](
        w1, s1 if has_momentum else w1, w2, s2 if has_momentum else w2,
        new["w1"], new_momentum["w1"], new["w2"], new_momentum["w2"],
        *(vectors[name].contiguous() for name in ("errors_w1", "activation", "errors_w2", "keys", "queries")),
        eta, alpha, beta, active.to(torch.float32).contiguous(), out,
        heads, dim, hidden,
        HAS_MOMENTUM=has_momentum, BD=block_size(dim), BM=max(16, min(64, 8192 // block_size(dim))),
    )  # fmt: skip
    return out, new, new_momentum

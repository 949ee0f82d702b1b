"""Triton kernels of the chunk-parallel read of the main memory, with their backward (training and prefill).

`chunk_read` has the contract of `memory_dual_form.read_updated`. For every chunk of L tokens and every
(batch, head), with chunk-start weights `W0` `[out, in]` and momentum `S0`, write inputs `X` `[L, in]`, errors `E`
`[L, out]`, read inputs `Y` `[L, in]` and the coefficients `a_t`, `b_t`, `D[t, s] eta_s` of `SegmentCoefficients`:

    out = a o (Y W0^T) + b o (Y S0^T) - ((D eta) o (Y X^T)) E

One program computes one block of `out` columns of one chunk; all chunks of a call run in parallel (their `W0`
and `S0` come from the sequential first pass of `memory_chunk.py`). Per chunk the forward costs
`2 L in (2 out + L) + 2 L^2 out` flops (momentum term included) and moves `L (2 in + 2 out)` activations,
`2 out in` state and `L^2` coefficients: at L = 64, in = 128, out = 256 (the W2 read of heads of 128 with
expansion 2) about 11.5 MFLOP for 0.48 MB in float32, 24 flops per byte, well under the ridge point of an H100's
tensor cores (about 150 for TF32, 300 for bfloat16): the read is bandwidth-bound, and the per-chunk states are
over half of its bytes. The backward (three kernels: scores, input gradients, output-side gradients) costs about
twice the forward's flops plus two `L x L` float32 scratch matrices per chunk. It returns the gradients of `Y`,
`X`, `E`, `W0`, `S0` and of the three coefficient tensors; how the coefficients follow from the rates (`eta`,
`log alpha`, `log beta`) is an `O(L^2)`-per-chunk torch computation that autograd differentiates.

Token tensors are 5-D `[batch, heads, chunks, L, dim]` strided views (see `memory_triton_common.py`). Chunks of
a call share one length; `memory_chunk` calls once per run of equal-length chunks, so any sequence length works.
"""

import torch

from .memory_dual_form import SegmentCoefficients
from .memory_triton_common import (
    block_size,
    dot_precision,
    interpreter_upcast,
    require_kernels,
    strides_of,
    tl,
    triton,
    warps_for,
)

if triton is not None:
    from .memory_triton_common import dot_operand, load_tokens  # Triton functions, defined with Triton only

    @triton.jit
    def _read_forward_kernel(
        y, sy_b, sy_h, sy_c, sy_l, sy_d,
        x, sx_b, sx_h, sx_c, sx_l, sx_d,
        e, se_b, se_h, se_c, se_l, se_d,
        start, momentum, weight_decay, momentum_in_weight, write_in_weight,
        out,
        heads, chunks, length, din, dout,
        HAS_MOMENTUM: tl.constexpr, BL: tl.constexpr, BIN: tl.constexpr, BOUT: tl.constexpr,
        PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    ):  # fmt: skip
        chunk, pid_bh, pid_out = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        batch, head = pid_bh // heads, pid_bh % heads
        group = pid_bh * chunks + chunk  # index into the contiguous per-chunk buffers
        dot_dtype = y.dtype.element_ty
        rows = tl.arange(0, BL)
        cols = tl.arange(0, BL)
        outs = pid_out * BOUT + tl.arange(0, BOUT)
        y_base = y + batch * sy_b + head * sy_h + chunk * sy_c
        x_base = x + batch * sx_b + head * sx_h + chunk * sx_c
        state_base = group * dout * din
        scores = tl.zeros((BL, BL), dtype=tl.float32)
        linear = tl.zeros((BL, BOUT), dtype=tl.float32)
        carried = tl.zeros((BL, BOUT), dtype=tl.float32)
        for k0 in range(0, din, BIN):
            ins = k0 + tl.arange(0, BIN)
            y_tile = dot_operand(load_tokens(y_base, rows, ins, sy_l, sy_d, length, din), dot_dtype, UPCAST)
            x_tile = dot_operand(load_tokens(x_base, rows, ins, sx_l, sx_d, length, din), dot_dtype, UPCAST)
            state_mask = (outs[:, None] < dout) & (ins[None, :] < din)
            state_offsets = state_base + outs[:, None] * din + ins[None, :]
            w_tile = dot_operand(tl.load(start + state_offsets, mask=state_mask, other=0.0), dot_dtype, UPCAST)
            scores += tl.dot(y_tile, tl.trans(x_tile), input_precision=PRECISION)
            linear += tl.dot(y_tile, tl.trans(w_tile), input_precision=PRECISION)
            if HAS_MOMENTUM:
                s_tile = dot_operand(tl.load(momentum + state_offsets, mask=state_mask, other=0.0), dot_dtype, UPCAST)
                carried += tl.dot(y_tile, tl.trans(s_tile), input_precision=PRECISION)
        row_ok = rows < length
        decay = tl.load(weight_decay + group * length + rows, mask=row_ok, other=0.0).to(tl.float32)
        coefficient_mask = row_ok[:, None] & (cols[None, :] < length)
        coefficient_offsets = group * length * length + rows[:, None] * length + cols[None, :]
        writes = tl.load(write_in_weight + coefficient_offsets, mask=coefficient_mask, other=0.0).to(tl.float32)
        e_base = e + batch * se_b + head * se_h + chunk * se_c
        e_tile = dot_operand(load_tokens(e_base, rows, outs, se_l, se_d, length, dout), dot_dtype, UPCAST)
        result = decay[:, None] * linear
        result -= tl.dot(dot_operand((writes * scores), dot_dtype, UPCAST), e_tile, input_precision=PRECISION)
        if HAS_MOMENTUM:
            carry = tl.load(momentum_in_weight + group * length + rows, mask=row_ok, other=0.0).to(tl.float32)
            result += carry[:, None] * carried
        out_offsets = (group * length + rows[:, None]) * dout + outs[None, :]
        tl.store(out + out_offsets, result.to(out.dtype.element_ty), mask=row_ok[:, None] & (outs[None, :] < dout))

    @triton.jit
    def _read_backward_scores_kernel(
        y, sy_b, sy_h, sy_c, sy_l, sy_d,
        x, sx_b, sx_h, sx_c, sx_l, sx_d,
        e, se_b, se_h, se_c, se_l, se_d,
        g, sg_b, sg_h, sg_c, sg_l, sg_d,
        write_in_weight, grad_write_in_weight, score_grads, weighted_scores,
        heads, chunks, length, din, dout,
        BL: tl.constexpr, BIN: tl.constexpr, BOUT: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    ):  # fmt: skip
        """Per chunk: `dD = -(G E^T) o (Y X^T)`, and the scratch `dScores = -(G E^T) o D`, `P = D o (Y X^T)`."""
        chunk, pid_bh = tl.program_id(0), tl.program_id(1)
        batch, head = pid_bh // heads, pid_bh % heads
        group = pid_bh * chunks + chunk
        dot_dtype = y.dtype.element_ty
        rows = tl.arange(0, BL)
        cols = tl.arange(0, BL)
        y_base = y + batch * sy_b + head * sy_h + chunk * sy_c
        x_base = x + batch * sx_b + head * sx_h + chunk * sx_c
        e_base = e + batch * se_b + head * se_h + chunk * se_c
        g_base = g + batch * sg_b + head * sg_h + chunk * sg_c
        scores = tl.zeros((BL, BL), dtype=tl.float32)
        for k0 in range(0, din, BIN):
            ins = k0 + tl.arange(0, BIN)
            y_tile = dot_operand(load_tokens(y_base, rows, ins, sy_l, sy_d, length, din), dot_dtype, UPCAST)
            x_tile = dot_operand(load_tokens(x_base, rows, ins, sx_l, sx_d, length, din), dot_dtype, UPCAST)
            scores += tl.dot(y_tile, tl.trans(x_tile), input_precision=PRECISION)
        error_products = tl.zeros((BL, BL), dtype=tl.float32)
        for o0 in range(0, dout, BOUT):
            outs = o0 + tl.arange(0, BOUT)
            g_tile = dot_operand(load_tokens(g_base, rows, outs, sg_l, sg_d, length, dout), dot_dtype, UPCAST)
            e_tile = dot_operand(load_tokens(e_base, rows, outs, se_l, se_d, length, dout), dot_dtype, UPCAST)
            error_products += tl.dot(g_tile, tl.trans(e_tile), input_precision=PRECISION)
        mask = (rows[:, None] < length) & (cols[None, :] < length)
        offsets = group * length * length + rows[:, None] * length + cols[None, :]
        writes = tl.load(write_in_weight + offsets, mask=mask, other=0.0).to(tl.float32)
        tl.store(grad_write_in_weight + offsets, -error_products * scores, mask=mask)
        tl.store(score_grads + offsets, -error_products * writes, mask=mask)
        tl.store(weighted_scores + offsets, writes * scores, mask=mask)

    @triton.jit
    def _read_backward_inputs_kernel(
        y, sy_b, sy_h, sy_c, sy_l, sy_d,
        x, sx_b, sx_h, sx_c, sx_l, sx_d,
        g, sg_b, sg_h, sg_c, sg_l, sg_d,
        start, momentum, weight_decay, momentum_in_weight, score_grads,
        grad_y, grad_x, partial_decay, partial_carry,
        heads, chunks, length, din, dout,
        HAS_MOMENTUM: tl.constexpr, BL: tl.constexpr, BIN: tl.constexpr, BOUT: tl.constexpr,
        PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    ):  # fmt: skip
        """One block of input columns: `dY = a o (G W0) + b o (G S0) + dScores X`, `dX = dScores^T Y`, and this
        block's share of `da_t = sum_i Y (G W0)` and `db_t = sum_i Y (G S0)`."""
        chunk, pid_bh, pid_in = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        batch, head = pid_bh // heads, pid_bh % heads
        group = pid_bh * chunks + chunk
        groups = tl.num_programs(1) * chunks
        dot_dtype = y.dtype.element_ty
        rows = tl.arange(0, BL)
        cols = tl.arange(0, BL)
        ins = pid_in * BIN + tl.arange(0, BIN)
        g_base = g + batch * sg_b + head * sg_h + chunk * sg_c
        state_base = group * dout * din
        linear = tl.zeros((BL, BIN), dtype=tl.float32)
        carried = tl.zeros((BL, BIN), dtype=tl.float32)
        for o0 in range(0, dout, BOUT):
            outs = o0 + tl.arange(0, BOUT)
            g_tile = dot_operand(load_tokens(g_base, rows, outs, sg_l, sg_d, length, dout), dot_dtype, UPCAST)
            state_mask = (outs[:, None] < dout) & (ins[None, :] < din)
            state_offsets = state_base + outs[:, None] * din + ins[None, :]
            w_tile = dot_operand(tl.load(start + state_offsets, mask=state_mask, other=0.0), dot_dtype, UPCAST)
            linear += tl.dot(g_tile, w_tile, input_precision=PRECISION)
            if HAS_MOMENTUM:
                s_tile = dot_operand(tl.load(momentum + state_offsets, mask=state_mask, other=0.0), dot_dtype, UPCAST)
                carried += tl.dot(g_tile, s_tile, input_precision=PRECISION)
        row_ok = rows < length
        mask = row_ok[:, None] & (cols[None, :] < length)
        score_offsets = group * length * length + rows[:, None] * length + cols[None, :]
        grads = dot_operand(tl.load(score_grads + score_offsets, mask=mask, other=0.0), dot_dtype, UPCAST)
        y_tile = load_tokens(y + batch * sy_b + head * sy_h + chunk * sy_c, rows, ins, sy_l, sy_d, length, din)
        x_tile = load_tokens(x + batch * sx_b + head * sx_h + chunk * sx_c, rows, ins, sx_l, sx_d, length, din)
        decay = tl.load(weight_decay + group * length + rows, mask=row_ok, other=0.0).to(tl.float32)
        result_y = decay[:, None] * linear + tl.dot(
            grads, dot_operand(x_tile, dot_dtype, UPCAST), input_precision=PRECISION
        )
        result_x = tl.dot(tl.trans(grads), dot_operand(y_tile, dot_dtype, UPCAST), input_precision=PRECISION)
        y_float = y_tile.to(tl.float32)
        partial_offsets = (pid_in * groups + group) * length + rows
        tl.store(partial_decay + partial_offsets, tl.sum(y_float * linear, axis=1), mask=row_ok)
        if HAS_MOMENTUM:
            carry = tl.load(momentum_in_weight + group * length + rows, mask=row_ok, other=0.0).to(tl.float32)
            result_y += carry[:, None] * carried
            tl.store(partial_carry + partial_offsets, tl.sum(y_float * carried, axis=1), mask=row_ok)
        out_mask = row_ok[:, None] & (ins[None, :] < din)
        out_offsets = (group * length + rows[:, None]) * din + ins[None, :]
        tl.store(grad_y + out_offsets, result_y.to(grad_y.dtype.element_ty), mask=out_mask)
        tl.store(grad_x + out_offsets, result_x.to(grad_x.dtype.element_ty), mask=out_mask)

    @triton.jit
    def _read_backward_outputs_kernel(
        y, sy_b, sy_h, sy_c, sy_l, sy_d,
        g, sg_b, sg_h, sg_c, sg_l, sg_d,
        weight_decay, momentum_in_weight, weighted_scores,
        grad_e, grad_start, grad_momentum,
        heads, chunks, length, din, dout,
        HAS_MOMENTUM: tl.constexpr, BL: tl.constexpr, BIN: tl.constexpr, BOUT: tl.constexpr,
        PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    ):  # fmt: skip
        """One block of output rows: `dE = -P^T G`, `dW0 = (a o G)^T Y`, `dS0 = (b o G)^T Y`."""
        chunk, pid_bh, pid_out = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        batch, head = pid_bh // heads, pid_bh % heads
        group = pid_bh * chunks + chunk
        dot_dtype = y.dtype.element_ty
        rows = tl.arange(0, BL)
        cols = tl.arange(0, BL)
        outs = pid_out * BOUT + tl.arange(0, BOUT)
        row_ok = rows < length
        g_tile = load_tokens(g + batch * sg_b + head * sg_h + chunk * sg_c, rows, outs, sg_l, sg_d, length, dout)
        g_tile = g_tile.to(tl.float32)
        mask = row_ok[:, None] & (cols[None, :] < length)
        score_offsets = group * length * length + rows[:, None] * length + cols[None, :]
        weighted = dot_operand(tl.load(weighted_scores + score_offsets, mask=mask, other=0.0), dot_dtype, UPCAST)
        result_e = -tl.dot(tl.trans(weighted), dot_operand(g_tile, dot_dtype, UPCAST), input_precision=PRECISION)
        out_mask = row_ok[:, None] & (outs[None, :] < dout)
        e_offsets = (group * length + rows[:, None]) * dout + outs[None, :]
        tl.store(grad_e + e_offsets, result_e.to(grad_e.dtype.element_ty), mask=out_mask)
        decay = tl.load(weight_decay + group * length + rows, mask=row_ok, other=0.0).to(tl.float32)
        decayed = dot_operand(tl.trans(decay[:, None] * g_tile), dot_dtype, UPCAST)
        if HAS_MOMENTUM:
            carry = tl.load(momentum_in_weight + group * length + rows, mask=row_ok, other=0.0).to(tl.float32)
            carried = dot_operand(tl.trans(carry[:, None] * g_tile), dot_dtype, UPCAST)
        y_base = y + batch * sy_b + head * sy_h + chunk * sy_c
        state_base = group * dout * din
        for k0 in range(0, din, BIN):
            ins = k0 + tl.arange(0, BIN)
            y_tile = dot_operand(load_tokens(y_base, rows, ins, sy_l, sy_d, length, din), dot_dtype, UPCAST)
            state_mask = (outs[:, None] < dout) & (ins[None, :] < din)
            state_offsets = state_base + outs[:, None] * din + ins[None, :]
            grad_w = tl.dot(decayed, y_tile, input_precision=PRECISION)
            tl.store(grad_start + state_offsets, grad_w.to(grad_start.dtype.element_ty), mask=state_mask)
            if HAS_MOMENTUM:
                grad_s = tl.dot(carried, y_tile, input_precision=PRECISION)
                tl.store(grad_momentum + state_offsets, grad_s.to(grad_momentum.dtype.element_ty), mask=state_mask)


class _ChunkRead(torch.autograd.Function):
    """`chunk_read` with its backward in Triton; coefficients and states arrive contiguous and full-sized."""

    @staticmethod
    def forward(ctx, read_inputs, write_inputs, write_errors, start, momentum, decay, carry, writes):
        batch, heads, chunks, length, din = read_inputs.shape
        dout = write_errors.shape[-1]
        out = torch.empty(batch, heads, chunks, length, dout, device=read_inputs.device, dtype=read_inputs.dtype)
        blocks = block_size(length), min(block_size(din), 64), min(block_size(dout), 64)
        grid = (chunks, batch * heads, triton.cdiv(dout, blocks[2]))
        has_momentum = momentum is not None
        _read_forward_kernel[grid](
            read_inputs, *strides_of(read_inputs),
            write_inputs, *strides_of(write_inputs),
            write_errors, *strides_of(write_errors),
            start, momentum if has_momentum else start, decay, carry, writes,
            out,
            heads, chunks, length, din, dout,
            HAS_MOMENTUM=has_momentum, BL=blocks[0], BIN=blocks[1], BOUT=blocks[2],
            PRECISION=dot_precision(read_inputs.dtype), UPCAST=interpreter_upcast(read_inputs.dtype),
            num_warps=warps_for(*blocks),
        )  # fmt: skip
        ctx.save_for_backward(read_inputs, write_inputs, write_errors, start, momentum, decay, carry, writes)
        ctx.blocks = blocks
        return out

    @staticmethod
    def backward(ctx, grad_out):
        read_inputs, write_inputs, write_errors, start, momentum, decay, carry, writes = ctx.saved_tensors
        batch, heads, chunks, length, din = read_inputs.shape
        dout = write_errors.shape[-1]
        blocks = ctx.blocks
        has_momentum = momentum is not None
        precision, upcast = dot_precision(read_inputs.dtype), interpreter_upcast(read_inputs.dtype)
        device = read_inputs.device
        grad_writes = torch.empty(writes.shape, device=device, dtype=torch.float32)
        score_grads = torch.empty(writes.shape, device=device, dtype=torch.float32)
        weighted_scores = torch.empty(writes.shape, device=device, dtype=torch.float32)
        _read_backward_scores_kernel[(chunks, batch * heads)](
            read_inputs, *strides_of(read_inputs),
            write_inputs, *strides_of(write_inputs),
            write_errors, *strides_of(write_errors),
            grad_out, *strides_of(grad_out),
            writes, grad_writes, score_grads, weighted_scores,
            heads, chunks, length, din, dout,
            BL=blocks[0], BIN=blocks[1], BOUT=blocks[2], PRECISION=precision, UPCAST=upcast,
            num_warps=warps_for(*blocks),
        )  # fmt: skip
        input_blocks = triton.cdiv(din, blocks[1])
        grad_y = torch.empty(read_inputs.shape, device=device, dtype=read_inputs.dtype)
        grad_x = torch.empty(write_inputs.shape, device=device, dtype=write_inputs.dtype)
        partial_decay = torch.empty(input_blocks, *decay.shape, device=device, dtype=torch.float32)
        partial_carry = torch.empty(input_blocks, *carry.shape, device=device, dtype=torch.float32)
        _read_backward_inputs_kernel[(chunks, batch * heads, input_blocks)](
            read_inputs, *strides_of(read_inputs),
            write_inputs, *strides_of(write_inputs),
            grad_out, *strides_of(grad_out),
            start, momentum if has_momentum else start, decay, carry, score_grads,
            grad_y, grad_x, partial_decay, partial_carry,
            heads, chunks, length, din, dout,
            HAS_MOMENTUM=has_momentum, BL=blocks[0], BIN=blocks[1], BOUT=blocks[2], PRECISION=precision, UPCAST=upcast,
            num_warps=warps_for(*blocks),
        )  # fmt: skip
        grad_e = torch.empty(write_errors.shape, device=device, dtype=write_errors.dtype)
        grad_start = torch.empty(start.shape, device=device, dtype=start.dtype)
        grad_momentum = torch.empty(start.shape, device=device, dtype=start.dtype) if has_momentum else None
        _read_backward_outputs_kernel[(chunks, batch * heads, triton.cdiv(dout, blocks[2]))](
            read_inputs, *strides_of(read_inputs),
            grad_out, *strides_of(grad_out),
            decay, carry, weighted_scores,
            grad_e, grad_start, grad_momentum if has_momentum else grad_start,
            heads, chunks, length, din, dout,
            HAS_MOMENTUM=has_momentum, BL=blocks[0], BIN=blocks[1], BOUT=blocks[2], PRECISION=precision, UPCAST=upcast,
            num_warps=warps_for(*blocks),
        )  # fmt: skip
        grad_decay = partial_decay.sum(0).to(decay.dtype)
        grad_carry = partial_carry.sum(0).to(carry.dtype) if has_momentum else None
        return grad_y, grad_x, grad_e, grad_start, grad_momentum, grad_decay, grad_carry, grad_writes.to(writes.dtype)


def chunk_read(
    start: torch.Tensor,
    momentum: torch.Tensor | None,
    coefficients: SegmentCoefficients,
    write_inputs: torch.Tensor,
    write_errors: torch.Tensor,
    read_inputs: torch.Tensor,
) -> torch.Tensor:
    """Kernel version of `memory_dual_form.read_updated` over `[batch, heads, chunks, L, dim]` token tensors.

    `start` and `momentum` are `[batch, heads, chunks, out, in]`, `coefficients` a `SegmentCoefficients`.
    Returns `W_t y_t` `[batch, heads, chunks, L, out]` in the dtype of `read_inputs`; differentiable in every
    tensor argument (and through the coefficients, in the rates).
    """
    require_kernels(read_inputs, write_inputs, write_errors, start, momentum)
    batch, heads, chunks, length, _ = read_inputs.shape
    rows = (batch, heads, chunks, length)
    decay = coefficients.weight_decay.broadcast_to(rows).contiguous()
    carry = coefficients.momentum_in_weight[..., 0].broadcast_to(rows).contiguous()
    writes = coefficients.write_in_weight.broadcast_to(*rows, length).contiguous()
    state_shape = (batch, heads, chunks, *start.shape[-2:])
    start = start.broadcast_to(state_shape).contiguous()
    momentum = None if momentum is None else momentum.broadcast_to(state_shape).contiguous()
    return _ChunkRead.apply(read_inputs, write_inputs, write_errors, start, momentum, decay, carry, writes)

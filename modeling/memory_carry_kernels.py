"""Triton kernels of the chunk-end state carry, with their backward (training and prefill).

`carry_state` has the contract of `memory_dual_form.final_state`, for the main memory's two layers and the
generator memories alike: `W' = A W0 + b S0 - (c o E)^T X` and `S' = B S0 - (m o E)^T X` in one pass, one program
per `[out, in]` tile, each state read and written once (`4 L in out` flops against `4 in out` floats:
memory-bound). The first pass of `memory_chunk.py` still walks the chunks in order in torch, since every chunk's
keys, values, rates and errors depend on the state the previous chunk left; this kernel replaces the eight torch
operations of each carry with one launch. Its backward (three kernels: state, errors, inputs) returns the
gradients of `X`, `E`, `W0`, `S0` and of the coefficients. Token tensors are 4-D `[batch, heads, L, dim]`
strided views (see `memory_triton_common.py`).
"""

import torch

from .memory_dual_form import EndCoefficients
from .memory_triton_common import (
    TRITON_DTYPES,
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
    def _carry_forward_kernel(
        x, sx_b, sx_h, sx_l, sx_d,
        e, se_b, se_h, se_l, se_d,
        start, momentum, end_coefficients, write_in_weight, write_in_momentum,
        new_weights, new_momentum,
        heads, length, din, dout,
        HAS_MOMENTUM: tl.constexpr, BL: tl.constexpr, BIN: tl.constexpr, BOUT: tl.constexpr,
        PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    ):  # fmt: skip
        """One `[out, in]` tile of `W' = A W0 + b S0 - (c o E)^T X` and `S' = B S0 - (m o E)^T X`."""
        pid_bh, pid_out, pid_in = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        batch, head = pid_bh // heads, pid_bh % heads
        dot_dtype = x.dtype.element_ty
        outs = pid_out * BOUT + tl.arange(0, BOUT)
        ins = pid_in * BIN + tl.arange(0, BIN)
        x_base = x + batch * sx_b + head * sx_h
        e_base = e + batch * se_b + head * se_h
        written_w = tl.zeros((BOUT, BIN), dtype=tl.float32)
        written_s = tl.zeros((BOUT, BIN), dtype=tl.float32)
        for l0 in range(0, length, BL):
            rows = l0 + tl.arange(0, BL)
            row_ok = rows < length
            x_tile = dot_operand(load_tokens(x_base, rows, ins, sx_l, sx_d, length, din), dot_dtype, UPCAST)
            e_tile = load_tokens(e_base, rows, outs, se_l, se_d, length, dout).to(tl.float32)
            c = tl.load(write_in_weight + pid_bh * length + rows, mask=row_ok, other=0.0).to(tl.float32)
            m = tl.load(write_in_momentum + pid_bh * length + rows, mask=row_ok, other=0.0).to(tl.float32)
            scaled_w = dot_operand(tl.trans(e_tile * c[:, None]), dot_dtype, UPCAST)
            scaled_s = dot_operand(tl.trans(e_tile * m[:, None]), dot_dtype, UPCAST)
            written_w += tl.dot(scaled_w, x_tile, input_precision=PRECISION)
            written_s += tl.dot(scaled_s, x_tile, input_precision=PRECISION)
        mask = (outs[:, None] < dout) & (ins[None, :] < din)
        offsets = pid_bh * dout * din + outs[:, None] * din + ins[None, :]
        weight_decay = tl.load(end_coefficients + pid_bh * 3).to(tl.float32)
        weights = weight_decay * tl.load(start + offsets, mask=mask, other=0.0).to(tl.float32) - written_w
        carried = -written_s
        if HAS_MOMENTUM:
            s_old = tl.load(momentum + offsets, mask=mask, other=0.0).to(tl.float32)
            weights += tl.load(end_coefficients + pid_bh * 3 + 1).to(tl.float32) * s_old
            carried += tl.load(end_coefficients + pid_bh * 3 + 2).to(tl.float32) * s_old
        tl.store(new_weights + offsets, weights.to(new_weights.dtype.element_ty), mask=mask)
        tl.store(new_momentum + offsets, carried.to(new_momentum.dtype.element_ty), mask=mask)

    @triton.jit
    def _carry_backward_state_kernel(
        grad_weights, grad_momentum, start, momentum, end_coefficients,
        grad_start, grad_old_momentum, partial_coefficients,
        din, dout,
        HAS_MOMENTUM: tl.constexpr, BIN: tl.constexpr, BOUT: tl.constexpr,
    ):  # fmt: skip
        """One tile of `dW0 = A dW'`, `dS0 = b dW' + B dS'` and its share of `dA`, `db`, `dB`."""
        pid_bh, pid_out, pid_in = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        tile = pid_out * tl.num_programs(2) + pid_in
        groups = tl.num_programs(0)
        outs = pid_out * BOUT + tl.arange(0, BOUT)
        ins = pid_in * BIN + tl.arange(0, BIN)
        mask = (outs[:, None] < dout) & (ins[None, :] < din)
        offsets = pid_bh * dout * din + outs[:, None] * din + ins[None, :]
        d_weights = tl.load(grad_weights + offsets, mask=mask, other=0.0).to(tl.float32)
        weight_decay = tl.load(end_coefficients + pid_bh * 3).to(tl.float32)
        tl.store(grad_start + offsets, (weight_decay * d_weights).to(grad_start.dtype.element_ty), mask=mask)
        w_old = tl.load(start + offsets, mask=mask, other=0.0).to(tl.float32)
        partial_base = partial_coefficients + (tile * groups + pid_bh) * 3
        tl.store(partial_base, tl.sum(tl.sum(d_weights * w_old, axis=1), axis=0))
        if HAS_MOMENTUM:
            d_momentum = tl.load(grad_momentum + offsets, mask=mask, other=0.0).to(tl.float32)
            s_old = tl.load(momentum + offsets, mask=mask, other=0.0).to(tl.float32)
            carry = tl.load(end_coefficients + pid_bh * 3 + 1).to(tl.float32)
            decay = tl.load(end_coefficients + pid_bh * 3 + 2).to(tl.float32)
            d_old = carry * d_weights + decay * d_momentum
            tl.store(grad_old_momentum + offsets, d_old.to(grad_old_momentum.dtype.element_ty), mask=mask)
            tl.store(partial_base + 1, tl.sum(tl.sum(d_weights * s_old, axis=1), axis=0))
            tl.store(partial_base + 2, tl.sum(tl.sum(d_momentum * s_old, axis=1), axis=0))

    @triton.jit
    def _carry_backward_errors_kernel(
        x, sx_b, sx_h, sx_l, sx_d,
        e, se_b, se_h, se_l, se_d,
        grad_weights, grad_momentum, write_in_weight, write_in_momentum,
        grad_e, partial_writes,
        heads, length, din, dout,
        BL: tl.constexpr, BIN: tl.constexpr, BOUT: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    ):  # fmt: skip
        """Token rows x output tile: `dE = -(c o X dW'^T + m o X dS'^T)`, and this tile's share of
        `dc = -rowsum(E o X dW'^T)`, `dm = -rowsum(E o X dS'^T)`."""
        pid_bh, pid_rows, pid_out = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        batch, head = pid_bh // heads, pid_bh % heads
        groups = tl.num_programs(0)
        dot_dtype = x.dtype.element_ty
        rows = pid_rows * BL + tl.arange(0, BL)
        row_ok = rows < length
        outs = pid_out * BOUT + tl.arange(0, BOUT)
        x_base = x + batch * sx_b + head * sx_h
        through_w = tl.zeros((BL, BOUT), dtype=tl.float32)
        through_s = tl.zeros((BL, BOUT), dtype=tl.float32)
        for k0 in range(0, din, BIN):
            ins = k0 + tl.arange(0, BIN)
            x_tile = dot_operand(load_tokens(x_base, rows, ins, sx_l, sx_d, length, din), dot_dtype, UPCAST)
            mask = (outs[:, None] < dout) & (ins[None, :] < din)
            offsets = pid_bh * dout * din + outs[:, None] * din + ins[None, :]
            d_weights = dot_operand(tl.load(grad_weights + offsets, mask=mask, other=0.0), dot_dtype, UPCAST)
            d_momentum = dot_operand(tl.load(grad_momentum + offsets, mask=mask, other=0.0), dot_dtype, UPCAST)
            through_w += tl.dot(x_tile, tl.trans(d_weights), input_precision=PRECISION)
            through_s += tl.dot(x_tile, tl.trans(d_momentum), input_precision=PRECISION)
        c = tl.load(write_in_weight + pid_bh * length + rows, mask=row_ok, other=0.0).to(tl.float32)
        m = tl.load(write_in_momentum + pid_bh * length + rows, mask=row_ok, other=0.0).to(tl.float32)
        e_tile = load_tokens(e + batch * se_b + head * se_h, rows, outs, se_l, se_d, length, dout).to(tl.float32)
        result = -(c[:, None] * through_w + m[:, None] * through_s)
        out_mask = row_ok[:, None] & (outs[None, :] < dout)
        e_offsets = (pid_bh * length + rows[:, None]) * dout + outs[None, :]
        tl.store(grad_e + e_offsets, result.to(grad_e.dtype.element_ty), mask=out_mask)
        partial_base = partial_writes + ((pid_out * groups + pid_bh) * length + rows) * 2
        tl.store(partial_base, -tl.sum(e_tile * through_w, axis=1), mask=row_ok)
        tl.store(partial_base + 1, -tl.sum(e_tile * through_s, axis=1), mask=row_ok)

    @triton.jit
    def _carry_backward_inputs_kernel(
        e, se_b, se_h, se_l, se_d,
        grad_weights, grad_momentum, write_in_weight, write_in_momentum,
        grad_x,
        heads, length, din, dout,
        X_DTYPE: tl.constexpr, BL: tl.constexpr, BIN: tl.constexpr, BOUT: tl.constexpr,
        PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    ):  # fmt: skip
        """Token rows x input tile: `dX = -(c o E dW' + m o E dS')`."""
        pid_bh, pid_rows, pid_in = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        batch, head = pid_bh // heads, pid_bh % heads
        rows = pid_rows * BL + tl.arange(0, BL)
        row_ok = rows < length
        ins = pid_in * BIN + tl.arange(0, BIN)
        e_base = e + batch * se_b + head * se_h
        through_w = tl.zeros((BL, BIN), dtype=tl.float32)
        through_s = tl.zeros((BL, BIN), dtype=tl.float32)
        for o0 in range(0, dout, BOUT):
            outs = o0 + tl.arange(0, BOUT)
            e_tile = dot_operand(load_tokens(e_base, rows, outs, se_l, se_d, length, dout), X_DTYPE, UPCAST)
            mask = (outs[:, None] < dout) & (ins[None, :] < din)
            offsets = pid_bh * dout * din + outs[:, None] * din + ins[None, :]
            d_weights = dot_operand(tl.load(grad_weights + offsets, mask=mask, other=0.0), X_DTYPE, UPCAST)
            d_momentum = dot_operand(tl.load(grad_momentum + offsets, mask=mask, other=0.0), X_DTYPE, UPCAST)
            through_w += tl.dot(e_tile, d_weights, input_precision=PRECISION)
            through_s += tl.dot(e_tile, d_momentum, input_precision=PRECISION)
        c = tl.load(write_in_weight + pid_bh * length + rows, mask=row_ok, other=0.0).to(tl.float32)
        m = tl.load(write_in_momentum + pid_bh * length + rows, mask=row_ok, other=0.0).to(tl.float32)
        result = -(c[:, None] * through_w + m[:, None] * through_s)
        out_mask = row_ok[:, None] & (ins[None, :] < din)
        x_offsets = (pid_bh * length + rows[:, None]) * din + ins[None, :]
        tl.store(grad_x + x_offsets, result.to(grad_x.dtype.element_ty), mask=out_mask)


class _CarryState(torch.autograd.Function):
    """`carry_state` with its backward in Triton; states and coefficients arrive contiguous and full-sized."""

    @staticmethod
    def forward(ctx, write_inputs, write_errors, start, momentum, end_scalars, write_in_weight, write_in_momentum):
        batch, heads, length, din = write_inputs.shape
        dout = write_errors.shape[-1]
        new_weights, new_momentum = torch.empty_like(start), torch.empty_like(start)
        blocks = min(block_size(length), 64), min(block_size(din), 64), min(block_size(dout), 64)
        has_momentum = momentum is not None
        grid = (batch * heads, triton.cdiv(dout, blocks[2]), triton.cdiv(din, blocks[1]))
        _carry_forward_kernel[grid](
            write_inputs, *strides_of(write_inputs),
            write_errors, *strides_of(write_errors),
            start, momentum if has_momentum else start, end_scalars, write_in_weight, write_in_momentum,
            new_weights, new_momentum,
            heads, length, din, dout,
            HAS_MOMENTUM=has_momentum, BL=blocks[0], BIN=blocks[1], BOUT=blocks[2],
            PRECISION=dot_precision(write_inputs.dtype), UPCAST=interpreter_upcast(write_inputs.dtype),
            num_warps=warps_for(*blocks),
        )  # fmt: skip
        ctx.save_for_backward(
            write_inputs, write_errors, start, momentum, end_scalars, write_in_weight, write_in_momentum
        )
        ctx.blocks = blocks
        return new_weights, new_momentum

    @staticmethod
    def backward(ctx, grad_weights, grad_momentum):
        write_inputs, write_errors, start, momentum, end_scalars, write_in_weight, write_in_momentum = ctx.saved_tensors
        batch, heads, length, din = write_inputs.shape
        dout = write_errors.shape[-1]
        blocks, has_momentum, device = ctx.blocks, momentum is not None, start.device
        precision, upcast = dot_precision(write_inputs.dtype), interpreter_upcast(write_inputs.dtype)
        grad_weights, grad_momentum = grad_weights.contiguous(), grad_momentum.contiguous()
        tiles = (triton.cdiv(dout, blocks[2]), triton.cdiv(din, blocks[1]))
        grad_start = torch.empty_like(start)
        grad_old = torch.empty_like(start) if has_momentum else None
        partial_scalars = torch.zeros(tiles[0] * tiles[1], batch * heads, 3, device=device, dtype=torch.float32)
        _carry_backward_state_kernel[(batch * heads, *tiles)](
            grad_weights, grad_momentum, start, momentum if has_momentum else start, end_scalars,
            grad_start, grad_old if has_momentum else grad_start, partial_scalars,
            din, dout,
            HAS_MOMENTUM=has_momentum, BIN=blocks[1], BOUT=blocks[2],
        )  # fmt: skip
        row_blocks = triton.cdiv(length, blocks[0])
        grad_e = torch.empty(write_errors.shape, device=device, dtype=write_errors.dtype)
        partial_writes = torch.empty(tiles[0], batch * heads, length, 2, device=device, dtype=torch.float32)
        _carry_backward_errors_kernel[(batch * heads, row_blocks, tiles[0])](
            write_inputs, *strides_of(write_inputs),
            write_errors, *strides_of(write_errors),
            grad_weights, grad_momentum, write_in_weight, write_in_momentum,
            grad_e, partial_writes,
            heads, length, din, dout,
            BL=blocks[0], BIN=blocks[1], BOUT=blocks[2], PRECISION=precision, UPCAST=upcast,
        )  # fmt: skip
        grad_x = torch.empty(write_inputs.shape, device=device, dtype=write_inputs.dtype)
        _carry_backward_inputs_kernel[(batch * heads, row_blocks, tiles[1])](
            write_errors, *strides_of(write_errors),
            grad_weights, grad_momentum, write_in_weight, write_in_momentum,
            grad_x,
            heads, length, din, dout,
            X_DTYPE=TRITON_DTYPES[write_inputs.dtype], BL=blocks[0], BIN=blocks[1], BOUT=blocks[2],
            PRECISION=precision, UPCAST=upcast,
        )  # fmt: skip
        grad_scalars = partial_scalars.sum(0).view(end_scalars.shape).to(end_scalars.dtype)
        grad_writes = partial_writes.sum(0).view(batch, heads, length, 2).to(write_in_weight.dtype)
        return (
            grad_x,
            grad_e,
            grad_start,
            grad_old,
            grad_scalars,
            grad_writes[..., 0],
            grad_writes[..., 1],
        )


def carry_state(
    start: torch.Tensor,
    momentum: torch.Tensor | None,
    coefficients: EndCoefficients,
    write_inputs: torch.Tensor,
    write_errors: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Kernel version of `memory_dual_form.final_state`: weights and momentum `[batch, heads, out, in]` after a segment.

    `write_inputs` `[batch, heads, L, in]` and `write_errors` `[batch, heads, L, out]` may have any strides;
    `coefficients` is an `EndCoefficients`. Differentiable in every tensor argument and through the coefficients.
    """
    require_kernels(write_inputs, write_errors, start, momentum)
    batch, heads, length, _ = write_inputs.shape
    state_shape = (batch, heads, *start.shape[-2:])
    start = start.broadcast_to(state_shape).contiguous()
    momentum = None if momentum is None else momentum.broadcast_to(state_shape).contiguous()
    scalars = (coefficients.weight_decay, coefficients.momentum_in_weight, coefficients.momentum_decay)
    end_scalars = torch.stack([scalar.reshape(scalar.shape[:2]).broadcast_to(batch, heads) for scalar in scalars], -1)
    rows = (batch, heads, length)
    write_in_weight = coefficients.write_in_weight.broadcast_to(rows).contiguous()
    write_in_momentum = coefficients.write_in_momentum.broadcast_to(rows).contiguous()
    return _CarryState.apply(
        write_inputs, write_errors, start, momentum, end_scalars.contiguous(), write_in_weight, write_in_momentum
    )

"""Triton kernels of the HOPE memory for training and prefill: the chunk-parallel read and the chunk-end state
carry, with their backward (the fused decoding step lives in `memory_decode.py`).

**Chunk read** (`chunk_read`, same contract as `memory_chunk.read_updated`). For every chunk of L tokens and
every (batch, head), with chunk-start weights `W0` `[out, in]` and momentum `S0`, write inputs `X` `[L, in]`,
errors `E` `[L, out]`, read inputs `Y` `[L, in]` and the coefficients `a_t`, `b_t`, `D[t, s] eta_s` of
`SegmentCoefficients`:

    out = a o (Y W0^T) + b o (Y S0^T) - ((D eta) o (Y X^T)) E

One program computes one block of `out` columns of one chunk; all chunks of a call run in parallel (their `W0`
and `S0` come from the sequential first pass, below). Per chunk the forward costs `2 L in (2 out + L) + 2 L^2 out`
flops (momentum term included) and moves `L (2 in + 2 out)` activations, `2 out in` state and `L^2` coefficients:
at L = 64, in = 128, out = 256 (the W2 read of heads of 128 with expansion 2) about 11.5 MFLOP for 0.48 MB in
float32, 24 flops per byte, well under the ridge point of an H100's tensor cores (about 150 for TF32, 300 for
bfloat16): the read is bandwidth-bound, and the per-chunk states are over half of its bytes. The backward
(three kernels: scores, input gradients, output-side gradients) costs about twice the forward's flops plus
two `L x L` float32 scratch matrices per chunk. It returns the gradients of `Y`, `X`, `E`, `W0`, `S0` and of
the three coefficient tensors; how the coefficients follow from the rates (`eta`, `log alpha`, `log beta`) is
an `O(L^2)`-per-chunk torch computation that autograd differentiates.

**Chunk-end state carry** (`carry_state`, same contract as `memory_chunk.final_state`), for the main memory's
two layers and the generator memories alike: `W' = A W0 + b S0 - (c o E)^T X` and `S' = B S0 - (m o E)^T X` in
one pass, one program per `[out, in]` tile, each state read and written once (`4 L in out` flops against
`4 in out` floats: memory-bound). The first pass still walks the chunks in order in torch, since every chunk's
keys, values, rates and errors depend on the state the previous chunk left; this kernel replaces the eight torch
operations of each carry with one launch. Its backward (three kernels: state, errors, inputs) returns the
gradients of `X`, `E`, `W0`, `S0` and of the coefficients.

**Layout.** Token tensors (`Y`, `X`, `E`, their gradients) are 5-D `[batch, heads, chunks, L, dim]` views with
any strides: a `[batch, time, heads, dim]` tensor seen as `[batch, heads, time, dim]` and unflattened into chunks
is read in place, without a transpose or a copy. Per-chunk states and coefficients are contiguous
`[batch, heads, chunks, ...]` buffers (they are stacked per chunk anyway). Chunks of a call share one length;
`memory_chunk` calls once per run of equal-length chunks, so any sequence length works.

Dtypes: float32 and bfloat16 inputs; products accumulate in float32. Float32 products use TF32 when torch
allows it for matmuls (`torch.backends.cuda.matmul.allow_tf32`), IEEE otherwise, so the kernels round like torch.
The torch path is the reference and the CPU default; on CPU these kernels run under `TRITON_INTERPRET=1`.
"""

import os

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # the torch path needs none of this
    triton = None

KERNEL_DTYPES = (torch.float32, torch.bfloat16)
_TRITON_DTYPES = {}
if triton is not None:
    _TRITON_DTYPES = {torch.float32: tl.float32, torch.bfloat16: tl.bfloat16}


def triton_available() -> bool:
    """Whether Triton is installed (the `triton` extra)."""
    return triton is not None


def kernels_usable(device: torch.device) -> bool:
    """Whether the kernels can run on `device`: Triton installed, and CUDA or Triton's CPU interpreter."""
    interpreted = os.environ.get("TRITON_INTERPRET") == "1"
    return triton_available() and (device.type == "cuda" or (interpreted and device.type == "cpu"))


def block_size(size: int) -> int:
    return max(16, triton.next_power_of_2(size))


def _precision(dtype: torch.dtype) -> str:
    allow_tf32 = torch.backends.cuda.matmul.allow_tf32
    return "tf32" if dtype == torch.float32 and allow_tf32 else "ieee"


def _warps(*blocks: int) -> int:
    """Eight warps for the larger tiles, whose float32 accumulators would not fit four warps' registers."""
    return 8 if blocks[0] * max(blocks[1:]) >= 4096 else 4


def _upcast(dtype: torch.dtype) -> bool:
    return dtype == torch.bfloat16 and os.environ.get("TRITON_INTERPRET") == "1"


def _strides(tensor: torch.Tensor) -> tuple[int, ...]:
    return tuple(tensor.stride())


if triton is not None:

    @triton.jit
    def _load_tokens(base, rows, cols, stride_l, stride_d, length, width):
        """A `[rows, cols]` tile of a token tensor, zero outside `length x width`."""
        mask = (rows[:, None] < length) & (cols[None, :] < width)
        return tl.load(base + rows[:, None] * stride_l + cols[None, :] * stride_d, mask=mask, other=0.0)

    @triton.jit
    def _operand(tile, dtype, UPCAST: tl.constexpr):
        """A `tl.dot` operand rounded to `dtype`; with UPCAST held in float32 (exact for bfloat16 products), for
        Triton's interpreter, whose bfloat16 `tl.dot` is wrong."""
        tile = tile.to(dtype)
        if UPCAST:
            tile = tile.to(tl.float32)
        return tile

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
            y_tile = _operand(_load_tokens(y_base, rows, ins, sy_l, sy_d, length, din), dot_dtype, UPCAST)
            x_tile = _operand(_load_tokens(x_base, rows, ins, sx_l, sx_d, length, din), dot_dtype, UPCAST)
            state_mask = (outs[:, None] < dout) & (ins[None, :] < din)
            state_offsets = state_base + outs[:, None] * din + ins[None, :]
            w_tile = _operand(tl.load(start + state_offsets, mask=state_mask, other=0.0), dot_dtype, UPCAST)
            scores += tl.dot(y_tile, tl.trans(x_tile), input_precision=PRECISION)
            linear += tl.dot(y_tile, tl.trans(w_tile), input_precision=PRECISION)
            if HAS_MOMENTUM:
                s_tile = _operand(tl.load(momentum + state_offsets, mask=state_mask, other=0.0), dot_dtype, UPCAST)
                carried += tl.dot(y_tile, tl.trans(s_tile), input_precision=PRECISION)
        row_ok = rows < length
        decay = tl.load(weight_decay + group * length + rows, mask=row_ok, other=0.0).to(tl.float32)
        coefficient_mask = row_ok[:, None] & (cols[None, :] < length)
        coefficient_offsets = group * length * length + rows[:, None] * length + cols[None, :]
        writes = tl.load(write_in_weight + coefficient_offsets, mask=coefficient_mask, other=0.0).to(tl.float32)
        e_base = e + batch * se_b + head * se_h + chunk * se_c
        e_tile = _operand(_load_tokens(e_base, rows, outs, se_l, se_d, length, dout), dot_dtype, UPCAST)
        result = decay[:, None] * linear
        result -= tl.dot(_operand((writes * scores), dot_dtype, UPCAST), e_tile, input_precision=PRECISION)
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
            y_tile = _operand(_load_tokens(y_base, rows, ins, sy_l, sy_d, length, din), dot_dtype, UPCAST)
            x_tile = _operand(_load_tokens(x_base, rows, ins, sx_l, sx_d, length, din), dot_dtype, UPCAST)
            scores += tl.dot(y_tile, tl.trans(x_tile), input_precision=PRECISION)
        error_products = tl.zeros((BL, BL), dtype=tl.float32)
        for o0 in range(0, dout, BOUT):
            outs = o0 + tl.arange(0, BOUT)
            g_tile = _operand(_load_tokens(g_base, rows, outs, sg_l, sg_d, length, dout), dot_dtype, UPCAST)
            e_tile = _operand(_load_tokens(e_base, rows, outs, se_l, se_d, length, dout), dot_dtype, UPCAST)
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
            g_tile = _operand(_load_tokens(g_base, rows, outs, sg_l, sg_d, length, dout), dot_dtype, UPCAST)
            state_mask = (outs[:, None] < dout) & (ins[None, :] < din)
            state_offsets = state_base + outs[:, None] * din + ins[None, :]
            w_tile = _operand(tl.load(start + state_offsets, mask=state_mask, other=0.0), dot_dtype, UPCAST)
            linear += tl.dot(g_tile, w_tile, input_precision=PRECISION)
            if HAS_MOMENTUM:
                s_tile = _operand(tl.load(momentum + state_offsets, mask=state_mask, other=0.0), dot_dtype, UPCAST)
                carried += tl.dot(g_tile, s_tile, input_precision=PRECISION)
        row_ok = rows < length
        mask = row_ok[:, None] & (cols[None, :] < length)
        score_offsets = group * length * length + rows[:, None] * length + cols[None, :]
        grads = _operand(tl.load(score_grads + score_offsets, mask=mask, other=0.0), dot_dtype, UPCAST)
        y_tile = _load_tokens(y + batch * sy_b + head * sy_h + chunk * sy_c, rows, ins, sy_l, sy_d, length, din)
        x_tile = _load_tokens(x + batch * sx_b + head * sx_h + chunk * sx_c, rows, ins, sx_l, sx_d, length, din)
        decay = tl.load(weight_decay + group * length + rows, mask=row_ok, other=0.0).to(tl.float32)
        result_y = decay[:, None] * linear + tl.dot(
            grads, _operand(x_tile, dot_dtype, UPCAST), input_precision=PRECISION
        )
        result_x = tl.dot(tl.trans(grads), _operand(y_tile, dot_dtype, UPCAST), input_precision=PRECISION)
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
        g_tile = _load_tokens(g + batch * sg_b + head * sg_h + chunk * sg_c, rows, outs, sg_l, sg_d, length, dout)
        g_tile = g_tile.to(tl.float32)
        mask = row_ok[:, None] & (cols[None, :] < length)
        score_offsets = group * length * length + rows[:, None] * length + cols[None, :]
        weighted = _operand(tl.load(weighted_scores + score_offsets, mask=mask, other=0.0), dot_dtype, UPCAST)
        result_e = -tl.dot(tl.trans(weighted), _operand(g_tile, dot_dtype, UPCAST), input_precision=PRECISION)
        out_mask = row_ok[:, None] & (outs[None, :] < dout)
        e_offsets = (group * length + rows[:, None]) * dout + outs[None, :]
        tl.store(grad_e + e_offsets, result_e.to(grad_e.dtype.element_ty), mask=out_mask)
        decay = tl.load(weight_decay + group * length + rows, mask=row_ok, other=0.0).to(tl.float32)
        decayed = _operand(tl.trans(decay[:, None] * g_tile), dot_dtype, UPCAST)
        if HAS_MOMENTUM:
            carry = tl.load(momentum_in_weight + group * length + rows, mask=row_ok, other=0.0).to(tl.float32)
            carried = _operand(tl.trans(carry[:, None] * g_tile), dot_dtype, UPCAST)
        y_base = y + batch * sy_b + head * sy_h + chunk * sy_c
        state_base = group * dout * din
        for k0 in range(0, din, BIN):
            ins = k0 + tl.arange(0, BIN)
            y_tile = _operand(_load_tokens(y_base, rows, ins, sy_l, sy_d, length, din), dot_dtype, UPCAST)
            state_mask = (outs[:, None] < dout) & (ins[None, :] < din)
            state_offsets = state_base + outs[:, None] * din + ins[None, :]
            grad_w = tl.dot(decayed, y_tile, input_precision=PRECISION)
            tl.store(grad_start + state_offsets, grad_w.to(grad_start.dtype.element_ty), mask=state_mask)
            if HAS_MOMENTUM:
                grad_s = tl.dot(carried, y_tile, input_precision=PRECISION)
                tl.store(grad_momentum + state_offsets, grad_s.to(grad_momentum.dtype.element_ty), mask=state_mask)

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
            x_tile = _operand(_load_tokens(x_base, rows, ins, sx_l, sx_d, length, din), dot_dtype, UPCAST)
            e_tile = _load_tokens(e_base, rows, outs, se_l, se_d, length, dout).to(tl.float32)
            c = tl.load(write_in_weight + pid_bh * length + rows, mask=row_ok, other=0.0).to(tl.float32)
            m = tl.load(write_in_momentum + pid_bh * length + rows, mask=row_ok, other=0.0).to(tl.float32)
            scaled_w = _operand(tl.trans(e_tile * c[:, None]), dot_dtype, UPCAST)
            scaled_s = _operand(tl.trans(e_tile * m[:, None]), dot_dtype, UPCAST)
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
            x_tile = _operand(_load_tokens(x_base, rows, ins, sx_l, sx_d, length, din), dot_dtype, UPCAST)
            mask = (outs[:, None] < dout) & (ins[None, :] < din)
            offsets = pid_bh * dout * din + outs[:, None] * din + ins[None, :]
            d_weights = _operand(tl.load(grad_weights + offsets, mask=mask, other=0.0), dot_dtype, UPCAST)
            d_momentum = _operand(tl.load(grad_momentum + offsets, mask=mask, other=0.0), dot_dtype, UPCAST)
            through_w += tl.dot(x_tile, tl.trans(d_weights), input_precision=PRECISION)
            through_s += tl.dot(x_tile, tl.trans(d_momentum), input_precision=PRECISION)
        c = tl.load(write_in_weight + pid_bh * length + rows, mask=row_ok, other=0.0).to(tl.float32)
        m = tl.load(write_in_momentum + pid_bh * length + rows, mask=row_ok, other=0.0).to(tl.float32)
        e_tile = _load_tokens(e + batch * se_b + head * se_h, rows, outs, se_l, se_d, length, dout).to(tl.float32)
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
            e_tile = _operand(_load_tokens(e_base, rows, outs, se_l, se_d, length, dout), X_DTYPE, UPCAST)
            mask = (outs[:, None] < dout) & (ins[None, :] < din)
            offsets = pid_bh * dout * din + outs[:, None] * din + ins[None, :]
            d_weights = _operand(tl.load(grad_weights + offsets, mask=mask, other=0.0), X_DTYPE, UPCAST)
            d_momentum = _operand(tl.load(grad_momentum + offsets, mask=mask, other=0.0), X_DTYPE, UPCAST)
            through_w += tl.dot(e_tile, d_weights, input_precision=PRECISION)
            through_s += tl.dot(e_tile, d_momentum, input_precision=PRECISION)
        c = tl.load(write_in_weight + pid_bh * length + rows, mask=row_ok, other=0.0).to(tl.float32)
        m = tl.load(write_in_momentum + pid_bh * length + rows, mask=row_ok, other=0.0).to(tl.float32)
        result = -(c[:, None] * through_w + m[:, None] * through_s)
        out_mask = row_ok[:, None] & (ins[None, :] < din)
        x_offsets = (pid_bh * length + rows[:, None]) * din + ins[None, :]
        tl.store(grad_x + x_offsets, result.to(grad_x.dtype.element_ty), mask=out_mask)


def require_kernels(*tensors: torch.Tensor) -> None:
    if triton is None:
        raise RuntimeError("The HOPE memory kernels need Triton: pip install 'hf-hope[triton]'.")
    device = tensors[0].device
    if not kernels_usable(device):
        raise RuntimeError(
            f"The HOPE memory kernels run on CUDA (or on CPU with TRITON_INTERPRET=1); got tensors on {device}. "
            "Use memory_implementation='chunk' there."
        )
    for tensor in tensors:
        if tensor is not None and tensor.dtype not in KERNEL_DTYPES:
            raise TypeError(
                f"The HOPE memory kernels take float32 or bfloat16 tensors, got {tensor.dtype}; "
                "use memory_implementation='chunk' for other dtypes."
            )


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
            read_inputs, *_strides(read_inputs),
            write_inputs, *_strides(write_inputs),
            write_errors, *_strides(write_errors),
            start, momentum if has_momentum else start, decay, carry, writes,
            out,
            heads, chunks, length, din, dout,
            HAS_MOMENTUM=has_momentum, BL=blocks[0], BIN=blocks[1], BOUT=blocks[2],
            PRECISION=_precision(read_inputs.dtype), UPCAST=_upcast(read_inputs.dtype), num_warps=_warps(*blocks),
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
        precision, upcast = _precision(read_inputs.dtype), _upcast(read_inputs.dtype)
        device = read_inputs.device
        grad_writes = torch.empty(writes.shape, device=device, dtype=torch.float32)
        score_grads = torch.empty(writes.shape, device=device, dtype=torch.float32)
        weighted_scores = torch.empty(writes.shape, device=device, dtype=torch.float32)
        _read_backward_scores_kernel[(chunks, batch * heads)](
            read_inputs, *_strides(read_inputs),
            write_inputs, *_strides(write_inputs),
            write_errors, *_strides(write_errors),
            grad_out, *_strides(grad_out),
            writes, grad_writes, score_grads, weighted_scores,
            heads, chunks, length, din, dout,
            BL=blocks[0], BIN=blocks[1], BOUT=blocks[2], PRECISION=precision, UPCAST=upcast, num_warps=_warps(*blocks),
        )  # fmt: skip
        input_blocks = triton.cdiv(din, blocks[1])
        grad_y = torch.empty(read_inputs.shape, device=device, dtype=read_inputs.dtype)
        grad_x = torch.empty(write_inputs.shape, device=device, dtype=write_inputs.dtype)
        partial_decay = torch.empty(input_blocks, *decay.shape, device=device, dtype=torch.float32)
        partial_carry = torch.empty(input_blocks, *carry.shape, device=device, dtype=torch.float32)
        _read_backward_inputs_kernel[(chunks, batch * heads, input_blocks)](
            read_inputs, *_strides(read_inputs),
            write_inputs, *_strides(write_inputs),
            grad_out, *_strides(grad_out),
            start, momentum if has_momentum else start, decay, carry, score_grads,
            grad_y, grad_x, partial_decay, partial_carry,
            heads, chunks, length, din, dout,
            HAS_MOMENTUM=has_momentum, BL=blocks[0], BIN=blocks[1], BOUT=blocks[2], PRECISION=precision, UPCAST=upcast,
            num_warps=_warps(*blocks),
        )  # fmt: skip
        grad_e = torch.empty(write_errors.shape, device=device, dtype=write_errors.dtype)
        grad_start = torch.empty(start.shape, device=device, dtype=start.dtype)
        grad_momentum = torch.empty(start.shape, device=device, dtype=start.dtype) if has_momentum else None
        _read_backward_outputs_kernel[(chunks, batch * heads, triton.cdiv(dout, blocks[2]))](
            read_inputs, *_strides(read_inputs),
            grad_out, *_strides(grad_out),
            decay, carry, weighted_scores,
            grad_e, grad_start, grad_momentum if has_momentum else grad_start,
            heads, chunks, length, din, dout,
            HAS_MOMENTUM=has_momentum, BL=blocks[0], BIN=blocks[1], BOUT=blocks[2], PRECISION=precision, UPCAST=upcast,
            num_warps=_warps(*blocks),
        )  # fmt: skip
        grad_decay = partial_decay.sum(0).to(decay.dtype)
        grad_carry = partial_carry.sum(0).to(carry.dtype) if has_momentum else None
        return grad_y, grad_x, grad_e, grad_start, grad_momentum, grad_decay, grad_carry, grad_writes.to(writes.dtype)


def chunk_read(
    start: torch.Tensor,
    momentum: torch.Tensor | None,
    coefficients,
    write_inputs: torch.Tensor,
    write_errors: torch.Tensor,
    read_inputs: torch.Tensor,
) -> torch.Tensor:
    """Kernel version of `memory_chunk.read_updated` over `[batch, heads, chunks, L, dim]` token tensors.

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
            write_inputs, *_strides(write_inputs),
            write_errors, *_strides(write_errors),
            start, momentum if has_momentum else start, end_scalars, write_in_weight, write_in_momentum,
            new_weights, new_momentum,
            heads, length, din, dout,
            HAS_MOMENTUM=has_momentum, BL=blocks[0], BIN=blocks[1], BOUT=blocks[2],
            PRECISION=_precision(write_inputs.dtype), UPCAST=_upcast(write_inputs.dtype), num_warps=_warps(*blocks),
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
        precision, upcast = _precision(write_inputs.dtype), _upcast(write_inputs.dtype)
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
            write_inputs, *_strides(write_inputs),
            write_errors, *_strides(write_errors),
            grad_weights, grad_momentum, write_in_weight, write_in_momentum,
            grad_e, partial_writes,
            heads, length, din, dout,
            BL=blocks[0], BIN=blocks[1], BOUT=blocks[2], PRECISION=precision, UPCAST=upcast,
        )  # fmt: skip
        grad_x = torch.empty(write_inputs.shape, device=device, dtype=write_inputs.dtype)
        _carry_backward_inputs_kernel[(batch * heads, row_blocks, tiles[1])](
            write_errors, *_strides(write_errors),
            grad_weights, grad_momentum, write_in_weight, write_in_momentum,
            grad_x,
            heads, length, din, dout,
            X_DTYPE=_TRITON_DTYPES[write_inputs.dtype], BL=blocks[0], BIN=blocks[1], BOUT=blocks[2],
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
    coefficients,
    write_inputs: torch.Tensor,
    write_errors: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Kernel version of `memory_chunk.final_state`: weights and momentum `[batch, heads, out, in]` after a segment.

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

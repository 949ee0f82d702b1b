"""What the HOPE memory's Triton kernels share: the optional Triton import, the checks of where they can run, the
launch parameters and the tile helpers (`memory_chunk_kernels.py`, `memory_carry_kernels.py`, `memory_decode.py`).

**Layout.** Token tensors (`Y`, `X`, `E`, their gradients) are 4-D `[batch, heads, L, dim]` or 5-D
`[batch, heads, chunks, L, dim]` views with any strides: a `[batch, time, heads, dim]` tensor seen as
`[batch, heads, time, dim]` and unflattened into chunks is read in place, without a transpose or a copy. Per-chunk
states and coefficients are contiguous `[batch, heads, chunks, ...]` buffers (they are stacked per chunk anyway).

Dtypes: float32 and bfloat16 inputs; products accumulate in float32. Float32 products use TF32 when torch
allows it for matmuls (`torch.backends.cuda.matmul.allow_tf32`), IEEE otherwise, so the kernels round like torch.
The torch path is the reference and the CPU default; on CPU these kernels run under `TRITON_INTERPRET=1`.
Without Triton installed, `triton` and `tl` are None and every kernel entry point raises a clear error.
"""

import os

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # the torch path needs none of this
    triton = tl = None

KERNEL_DTYPES = (torch.float32, torch.bfloat16)
TRITON_DTYPES = {}
if triton is not None:
    TRITON_DTYPES = {torch.float32: tl.float32, torch.bfloat16: tl.bfloat16}


def triton_available() -> bool:
    """Whether Triton is installed (the `triton` extra)."""
    return triton is not None


def kernels_usable(device: torch.device) -> bool:
    """Whether the kernels can run on `device`: Triton installed, and CUDA or Triton's CPU interpreter."""
    interpreted = os.environ.get("TRITON_INTERPRET") == "1"
    return triton_available() and (device.type == "cuda" or (interpreted and device.type == "cpu"))


def require_kernels(*tensors: torch.Tensor | None) -> None:
    """Raise a clear error unless the kernels can take these tensors (device and dtype); None entries are skipped."""
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


def block_size(size: int) -> int:
    """The tile width covering `size`: a power of two, at least 16 (the smallest `tl.dot` operand)."""
    return max(16, triton.next_power_of_2(size))


def dot_precision(dtype: torch.dtype) -> str:
    """`tl.dot`'s `input_precision` matching torch's matmuls for operands of `dtype`."""
    allow_tf32 = torch.backends.cuda.matmul.allow_tf32
    return "tf32" if dtype == torch.float32 and allow_tf32 else "ieee"


def warps_for(*blocks: int) -> int:
    """Eight warps for the larger tiles, whose float32 accumulators would not fit four warps' registers."""
    return 8 if blocks[0] * max(blocks[1:]) >= 4096 else 4


def interpreter_upcast(dtype: torch.dtype) -> bool:
    """Whether `dot_operand` must hold bfloat16 operands in float32 (Triton's interpreter)."""
    return dtype == torch.bfloat16 and os.environ.get("TRITON_INTERPRET") == "1"


def strides_of(tensor: torch.Tensor) -> tuple[int, ...]:
    """The strides of a token tensor, passed to the kernels one argument each."""
    return tuple(tensor.stride())


if triton is not None:

    @triton.jit
    def load_tokens(base, rows, cols, stride_l, stride_d, length, width):
        """A `[rows, cols]` tile of a token tensor, zero outside `length x width`."""
        mask = (rows[:, None] < length) & (cols[None, :] < width)
        return tl.load(base + rows[:, None] * stride_l + cols[None, :] * stride_d, mask=mask, other=0.0)

    @triton.jit
    def dot_operand(tile, dtype, UPCAST: tl.constexpr):
        """A `tl.dot` operand rounded to `dtype`; with UPCAST held in float32 (exact for bfloat16 products), for
        Triton's interpreter, whose bfloat16 `tl.dot` is wrong."""
        tile = tile.to(dtype)
        if UPCAST:
            tile = tile.to(tl.float32)
        return tile

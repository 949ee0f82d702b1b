"""Triton kernels for the level clock's hot path: one launch adds all of a level's gradients into its buffer.

`accumulate` walks a level's gradient tensors through a table of (tensor, block) pairs built once per level, so
one launch covers tensors of any sizes. On a due step the same launch also writes `scale * buffer` back into the
gradients and clears the buffer, so a due level costs one pass over its gradients and its buffer, not three.
The torch implementation in `level_clock.py` is the reference; these kernels are used on CUDA when Triton is
installed (the `triton` extra), and run on CPU under `TRITON_INTERPRET=1` for the tests.
"""

from dataclasses import dataclass

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # the torch path needs none of this
    triton = None

BLOCK_SIZE = 1024


def triton_available() -> bool:
    return triton is not None


@dataclass
class BlockTable:
    """For each block of a level's flat buffer: which tensor it belongs to and where it starts inside it."""

    tensor_index: torch.Tensor  # int32 [num_blocks]
    block_start: torch.Tensor  # int64 [num_blocks], element offset inside the tensor
    numels: torch.Tensor  # int64 [num_tensors]
    offsets: torch.Tensor  # int64 [num_tensors], element offset of each tensor in the flat buffer

    @classmethod
    def for_sizes(cls, numels: list[int], device: torch.device) -> "BlockTable":
        tensor_index, block_start, offsets, offset = [], [], [], 0
        for index, numel in enumerate(numels):
            starts = range(0, numel, BLOCK_SIZE)
            tensor_index += [index] * len(starts)
            block_start += list(starts)
            offsets.append(offset)
            offset += numel
        return cls(
            torch.tensor(tensor_index, dtype=torch.int32, device=device),
            torch.tensor(block_start, dtype=torch.int64, device=device),
            torch.tensor(numels, dtype=torch.int64, device=device),
            torch.tensor(offsets, dtype=torch.int64, device=device),
        )


_TRITON_DTYPES = {}
if triton is not None:
    _TRITON_DTYPES = {torch.float32: tl.float32, torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}

    @triton.jit
    def _accumulate_kernel(
        addresses,  # int64 [num_tensors]: data pointers of the gradients (0: no tensor to write)
        has_incoming,  # int8 [num_tensors]: 1 if the gradient holds this step's values to add
        tensor_index,
        block_start,
        numels,
        offsets,
        buffer,  # float32 flat buffer of the level
        scale,
        DUE: tl.constexpr,
        GRAD_DTYPE: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        block = tl.program_id(0)
        tensor = tl.load(tensor_index + block)
        start = tl.load(block_start + block)
        numel = tl.load(numels + tensor)
        address = tl.load(addresses + tensor)
        incoming = tl.load(has_incoming + tensor)
        positions = start + tl.arange(0, BLOCK)
        mask = positions < numel
        slots = buffer + tl.load(offsets + tensor) + positions
        total = tl.load(slots, mask=mask, other=0.0)
        grad = address.to(tl.pointer_type(GRAD_DTYPE))
        if incoming != 0:
            total += tl.load(grad + positions, mask=mask, other=0.0).to(tl.float32)
        if DUE:
            if address != 0:
                update = (total * scale).to(GRAD_DTYPE, fp_downcast_rounding="rtne")  # as torch rounds
                tl.store(grad + positions, update, mask=mask)
            tl.store(slots, tl.zeros_like(total), mask=mask)
        else:
            tl.store(slots, total, mask=mask)


def accumulate(
    grads: list[torch.Tensor | None],
    incoming: list[bool],
    buffer: torch.Tensor,
    table: BlockTable,
    due: bool,
    scale: float,
) -> None:
    """Add the `incoming` gradients into `buffer`; if `due`, write `scale * buffer` into `grads` and clear it.

    `grads[i]` is `None` for a parameter without a gradient tensor (nothing is read or written for it); on a due
    step every parameter that had a gradient during the period must have a tensor here to receive its update.
    All given gradients share one dtype (float32, bfloat16 or float16); the buffer is float32.
    """
    dtypes = {grad.dtype for grad in grads if grad is not None}
    if len(dtypes) > 1:
        raise ValueError(f"accumulate needs gradients of one dtype per call, got {sorted(map(str, dtypes))}.")
    grad_dtype = dtypes.pop() if dtypes else buffer.dtype
    if grad_dtype not in _TRITON_DTYPES or buffer.dtype != torch.float32:
        raise ValueError(f"The Triton clock kernel handles float32/bfloat16/float16 gradients, got {grad_dtype}.")
    for grad in grads:
        if grad is not None and not grad.is_contiguous():
            raise ValueError("The Triton clock kernel needs contiguous gradients.")
    device = buffer.device
    addresses = torch.tensor([0 if g is None else g.data_ptr() for g in grads], dtype=torch.int64, device=device)
    flags = torch.tensor([int(flag and g is not None) for g, flag in zip(grads, incoming, strict=True)], device=device)
    _accumulate_kernel[(len(table.tensor_index),)](
        addresses,
        flags.to(torch.int8),
        table.tensor_index,
        table.block_start,
        table.numels,
        table.offsets,
        buffer,
        scale,
        DUE=due,
        GRAD_DTYPE=_TRITON_DTYPES[grad_dtype],
        BLOCK=BLOCK_SIZE,
    )

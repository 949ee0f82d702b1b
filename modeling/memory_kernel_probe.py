"""Whether the Triton memory kernels compile and launch here: tried once per process and shape under "auto".

`memory_implementation="auto"` picks the kernels on CUDA. Before their first use for a given device, dtype and
mixer shape, a small problem of that shape runs through them, forward, backward and one decoding step, so that a
kernel that cannot compile or launch (a new GPU architecture, a Triton or driver mismatch) shows there. If it
raises, "auto" uses the torch chunk path for that shape for the rest of the process, after one warning that says
why; `"triton"` never falls back.
"""

import warnings
from typing import TYPE_CHECKING

import torch

from .memory_state import MemoryForward

if TYPE_CHECKING:
    from .titans import SelfModifyingTitans

_verdicts: dict[tuple, bool] = {}


@torch.compiler.disable
def kernels_run(
    mixer: "SelfModifyingTitans", kernels: MemoryForward, decode: MemoryForward, queries_in: torch.Tensor
) -> bool:
    """Whether `kernels` (chunk path) and `decode` ran on a problem of `queries_in`'s device, dtype and heads."""
    key = (queries_in.device, queries_in.dtype, queries_in.shape[1], queries_in.shape[3], mixer.chunk_size)
    if key not in _verdicts:
        _verdicts[key] = _probe(mixer, kernels, decode, queries_in)
    return _verdicts[key]


def _probe(
    mixer: "SelfModifyingTitans", kernels: MemoryForward, decode: MemoryForward, queries_in: torch.Tensor
) -> bool:
    _, heads, _, width = queries_in.shape
    shape = (1, heads, 2 * mixer.chunk_size + 1, width)  # a whole chunk, a carried state and a partial chunk
    try:
        with torch.inference_mode(False), torch.enable_grad():
            inputs = [
                torch.randn(shape, device=queries_in.device, dtype=queries_in.dtype, requires_grad=True)
                for _ in range(2)
            ]
            state = mixer.initial_state(1).map_tensors(lambda tensor: tensor.detach().to(queries_in.dtype))
            read, carried = kernels(mixer, *inputs, None, state)
            torch.autograd.grad(read.sum(), inputs)
            with torch.no_grad():
                step = [tensor.detach()[:, :, :1] for tensor in inputs]
                decode(mixer, *step, None, carried.map_tensors(torch.Tensor.detach))
        if queries_in.is_cuda:
            torch.cuda.synchronize(queries_in.device)
    except Exception as error:  # any failure to compile or launch: the torch path computes the same
        warnings.warn(
            f"The Triton memory kernels failed on {queries_in.device} ({type(error).__name__}: {error}); "
            "memory_implementation='auto' uses the torch chunk path for these shapes in this process. Set "
            "memory_implementation='chunk' to silence this, or 'triton' to raise the error.",
            RuntimeWarning,
            stacklevel=4,
        )
        return False
    return True

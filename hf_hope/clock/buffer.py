"""`LevelBuffer`: the gradients one level has gathered since its last update, in one flat buffer.

Each step adds the level's gradients into the buffer and clears them (`.grad = None`, so the optimizer skips the
level); on a due step it writes `scale * buffer` back as the gradients and clears the buffer. The torch path is
the reference; on CUDA with Triton installed one kernel launch does the whole pass (`clock_kernels`). Under
`"auto"`, a kernel that fails to compile or launch is reported once and the process goes on with the torch path.
Under FSDP2 the buffer holds this rank's shards only (`sharding`).
"""

import warnings

import torch
from torch import nn

from . import kernel as clock_kernels
from .sharding import like_parameter, local_part, this_ranks_part, whole

IMPLEMENTATIONS = ("auto", "torch", "triton")
_kernel_failure: str | None = None  # why the kernel failed in this process under "auto"; it is then not tried again


class LevelBuffer:
    """A level's accumulated gradients: float32 (float64 for float64 parameters), plus which ones were seen."""

    def __init__(self, parameters: list[nn.Parameter], implementation: str = "auto") -> None:
        self.parameters = parameters
        dtype = torch.float32
        for parameter in parameters:
            dtype = torch.promote_types(dtype, parameter.dtype)
        locals_ = [local_part(parameter) for parameter in parameters]
        device = locals_[0].device
        self.buffer = torch.zeros(sum(local.numel() for local in locals_), dtype=dtype, device=device)
        self.seen = torch.zeros(len(parameters), dtype=torch.bool)
        self.views, offset = [], 0
        for local in locals_:
            self.views.append(self.buffer[offset : offset + local.numel()].view_as(local))
            offset += local.numel()
        self.table = None
        self.falls_back = implementation == "auto"
        if _uses_kernel(parameters, self.buffer, implementation):
            self.table = clock_kernels.BlockTable.for_sizes([local.numel() for local in locals_], device)

    @property
    def uses_kernel(self) -> bool:
        return self.table is not None

    def whole_buffer(self) -> torch.Tensor:
        """The buffer over whole parameters, in parameter order (a collective under FSDP2); a copy."""
        pairs = zip(self.parameters, self.views, strict=True)
        return torch.cat([whole(view, parameter).reshape(-1) for parameter, view in pairs])

    def load_whole_buffer(self, saved: torch.Tensor) -> None:
        """Restore from a `whole_buffer()`, saved by any number of ranks; each rank keeps its own shards."""
        expected = sum(parameter.numel() for parameter in self.parameters)
        if saved.numel() != expected:
            raise ValueError(f"A saved level buffer holds {saved.numel()} values, this level {expected}.")
        offset = 0
        for parameter, view in zip(self.parameters, self.views, strict=True):
            full = saved[offset : offset + parameter.numel()].view(parameter.shape)
            view.copy_(this_ranks_part(full, parameter))
            offset += parameter.numel()

    def add(self, due: bool, scale: float) -> None:
        """Add this step's gradients; if `due`, hand back `scale * buffer` as the gradients and clear the buffer."""
        incoming = [parameter.grad is not None for parameter in self.parameters]
        self.seen |= torch.tensor(incoming, dtype=torch.bool)
        if self.uses_kernel and self.falls_back and _kernel_failure is not None:
            self.table = None
        if self.uses_kernel:
            self._add_with_kernel_or_fall_back(incoming, due, scale)
        else:
            self._add_with_torch(due, scale)
        if due:
            self.seen.zero_()

    def _add_with_torch(self, due: bool, scale: float) -> None:
        for parameter, view in zip(self.parameters, self.views, strict=True):
            if parameter.grad is not None:
                view.add_(local_part(parameter.grad))
        for position, (parameter, view) in enumerate(zip(self.parameters, self.views, strict=True)):
            due_here = due and self.seen[position]
            parameter.grad = like_parameter((view * scale).to(parameter.dtype), parameter) if due_here else None
        if due:
            self.buffer.zero_()

    def _add_with_kernel_or_fall_back(self, incoming: list[bool], due: bool, scale: float) -> None:
        """The kernel's pass; under "auto", if it raises, one warning and the torch path from now on."""
        grads = [parameter.grad for parameter in self.parameters]
        try:
            self._add_with_kernel(incoming, due, scale)
        except Exception as error:
            if not self.falls_back:
                raise
            global _kernel_failure
            if _kernel_failure is None:
                _kernel_failure = f"{type(error).__name__}: {error}"
                warnings.warn(
                    f"The level clock's Triton kernel failed ({_kernel_failure}); implementation='auto' uses the "
                    "torch path for the rest of this process. Pass implementation='torch' to silence this, or "
                    "'triton' to raise the error.",
                    RuntimeWarning,
                    stacklevel=3,
                )
            for parameter, grad in zip(self.parameters, grads, strict=True):
                parameter.grad = grad
            self.table = None
            self._add_with_torch(due, scale)

    def _add_with_kernel(self, incoming: list[bool], due: bool, scale: float) -> None:
        grads: list[torch.Tensor | None] = []
        for position, (parameter, view) in enumerate(zip(self.parameters, self.views, strict=True)):
            grad = None if parameter.grad is None else local_part(parameter.grad).contiguous()
            if due and self.seen[position] and grad is None:
                grad = torch.empty_like(view, dtype=parameter.dtype)  # receives the update; every element is written
            grads.append(grad)
        clock_kernels.accumulate(grads, incoming, self.buffer, self.table, due, scale)
        for position, (parameter, grad) in enumerate(zip(self.parameters, grads, strict=True)):
            parameter.grad = like_parameter(grad, parameter) if due and self.seen[position] else None


def _uses_kernel(parameters: list[nn.Parameter], buffer: torch.Tensor, implementation: str) -> bool:
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"implementation={implementation!r} is unknown: allowed values are {IMPLEMENTATIONS}.")
    if implementation == "torch":
        return False
    dtypes = {parameter.dtype for parameter in parameters}
    eligible = (
        clock_kernels.triton_available()
        and buffer.dtype == torch.float32
        and len(dtypes) == 1
        and dtypes <= {torch.float32, torch.bfloat16, torch.float16}
    )
    if implementation == "triton" and not eligible:
        raise ValueError(
            "implementation='triton' needs Triton (pip install 'hf-hope[triton]') and levels whose parameters "
            f"share one dtype among float32, bfloat16 and float16 (got {sorted(map(str, dtypes))})."
        )
    return eligible and (implementation == "triton" or _kernel_failure is None and _prefers_kernel(buffer))


def _prefers_kernel(buffer: torch.Tensor) -> bool:
    """Where "auto" takes the kernel: on CUDA (on CPU it would run in Triton's slow interpreter)."""
    return buffer.is_cuda

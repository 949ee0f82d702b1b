"""The level clock on sharded parameters (FSDP2's `DTensor`s): each rank accumulates the shard it owns.

Under `fully_shard`, a parameter and its gradient are `DTensor`s whose local part is this rank's shard of the
reduce-scattered gradient. The clock's buffers hold those local parts only (a rank's memory grows by its shard,
not by the whole level), gradient norms are taken over the whole parameter (so every rank skips the same
non-finite steps), and saved state holds whole tensors, the same file a single process writes: a checkpoint
resumes on any number of ranks. Plain tensors pass through every function unchanged.
"""

import math

import torch
from torch import nn
from torch.distributed.tensor import DTensor, distribute_tensor


def local_part(tensor: torch.Tensor) -> torch.Tensor:
    """The part of `tensor` this rank holds: its local shard for a `DTensor`, the tensor itself otherwise."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def like_parameter(local: torch.Tensor, parameter: nn.Parameter) -> torch.Tensor:
    """A gradient for `parameter` from this rank's `local` part: a `DTensor` sharded as the parameter is."""
    if not isinstance(parameter, DTensor):
        return local
    return DTensor.from_local(
        local, parameter.device_mesh, parameter.placements, shape=parameter.shape, stride=parameter.stride()
    )


def whole(local: torch.Tensor, parameter: nn.Parameter) -> torch.Tensor:
    """The whole tensor of which `local` is this rank's part (a collective: every rank must call it)."""
    if not isinstance(parameter, DTensor):
        return local
    return like_parameter(local, parameter).full_tensor()


def this_ranks_part(full: torch.Tensor, parameter: nn.Parameter) -> torch.Tensor:
    """This rank's part of the whole tensor `full`, cut as `parameter` is sharded (every rank holds `full`)."""
    if not isinstance(parameter, DTensor):
        return full
    return distribute_tensor(full, parameter.device_mesh, parameter.placements, src_data_rank=None).to_local()


def total_norm(grads: list[torch.Tensor]) -> float:
    """The 2-norm of all `grads` together, over whole parameters (a collective when some are `DTensor`s)."""
    sharded = [grad for grad in grads if isinstance(grad, DTensor)]
    plain = [grad for grad in grads if not isinstance(grad, DTensor)]
    norms = [torch.nn.utils.get_total_norm(plain).item()] if plain else []
    if sharded:
        norms.append(torch.nn.utils.get_total_norm(sharded).full_tensor().item())
    return math.hypot(*norms)

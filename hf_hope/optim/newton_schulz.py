"""Newton–Schulz orthogonalisation: the non-linearity sigma(.) of the paper's Eq. 24 that turns momentum into Muon.

For a matrix X = U S V^T the iteration X <- a X + (b X X^T + c (X X^T)^2) X, started from X / ||X||_F (so every
singular value is at most one), maps each singular value s to a s + b s^3 + c s^5 and leaves U and V alone.
`CUBIC` (1.5, -0.5, 0) is the classical Newton–Schulz iteration: it converges to the polar factor U V^T.
`MUON` (3.4445, -4.7750, 2.0315) are Muon's quintic coefficients (torch.optim.Muon's defaults): in 5 steps they
push every singular value into roughly [0.7, 1.2] instead of converging, which is cheaper and trains as well.
"""

import math
from collections import defaultdict
from collections.abc import Sequence

import torch

MUON = (3.4445, -4.7750, 2.0315)
CUBIC = (1.5, -0.5, 0.0)


def newton_schulz(
    matrix: torch.Tensor, steps: int = 5, coefficients: tuple[float, float, float] = MUON
) -> torch.Tensor:
    """Approximately orthogonalise a 2-D `matrix`, or each matrix of a 3-D stack, with `steps` iterations.

    Runs in the input's dtype; wide orientation (rows <= columns) keeps the Gram matrix the small one, and a stack
    runs as batched matrix products (one call per iteration for all the matrices).
    """
    if matrix.ndim not in (2, 3):
        raise ValueError(f"newton_schulz expects a matrix or a stack of matrices, got shape {tuple(matrix.shape)}.")
    a, b, c = coefficients
    transposed = matrix.size(-2) > matrix.size(-1)
    x = matrix.mT if transposed else matrix
    x = x.unsqueeze(0) if x.ndim == 2 else x
    x = x / x.norm(dim=(-2, -1), keepdim=True).clamp(min=1e-7)
    for _ in range(steps):
        gram = x @ x.mT
        x = torch.baddbmm(x, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    x = x.squeeze(0) if matrix.ndim == 2 else x
    return x.mT if transposed else x


def matrix_view(tensor: torch.Tensor) -> torch.Tensor:
    """A parameter-shaped tensor (ndim >= 2) as the matrix (shape[0], rest)."""
    return tensor.reshape(tensor.shape[0], -1)


def orthogonalize(tensor: torch.Tensor, steps: int, coefficients: tuple[float, float, float]) -> torch.Tensor:
    """`newton_schulz` of a parameter-shaped tensor (ndim >= 2) viewed as the matrix (shape[0], rest)."""
    return newton_schulz(matrix_view(tensor), steps, coefficients).view_as(tensor)


def orthogonalize_all(
    tensors: Sequence[torch.Tensor], steps: int, coefficients: tuple[float, float, float]
) -> list[torch.Tensor]:
    """`orthogonalize` of each tensor, with the tensors of equal matrix shape stacked into one batched run."""
    buckets: dict[tuple, list[int]] = defaultdict(list)
    for index, tensor in enumerate(tensors):
        buckets[(tuple(matrix_view(tensor).shape), tensor.dtype, tensor.device)].append(index)
    results: list[torch.Tensor | None] = [None] * len(tensors)
    for indices in buckets.values():
        stack = torch.stack([matrix_view(tensors[i]) for i in indices])
        for i, matrix in zip(indices, newton_schulz(stack, steps, coefficients).unbind(0), strict=True):
            results[i] = matrix.view_as(tensors[i])
    return results


def muon_scale(shape: torch.Size) -> float:
    """torch.optim.Muon's "original" learning-rate adjustment sqrt(max(1, rows / cols)) for a parameter shape."""
    rows = shape[0]
    return math.sqrt(max(1.0, rows / (math.prod(shape) // rows)))

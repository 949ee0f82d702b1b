"""Newton–Schulz orthogonalisation: the non-linearity sigma(.) of the paper's Eq. 24 that turns momentum into Muon.

For a matrix X = U S V^T the iteration X <- a X + (b X X^T + c (X X^T)^2) X, started from X / ||X||_F (so every
singular value is at most one), maps each singular value s to a s + b s^3 + c s^5 and leaves U and V alone.
`CUBIC` (1.5, -0.5, 0) is the classical Newton–Schulz iteration: it converges to the polar factor U V^T.
`MUON` (3.4445, -4.7750, 2.0315) are Muon's quintic coefficients (torch.optim.Muon's defaults): in 5 steps they
push every singular value into roughly [0.7, 1.2] instead of converging, which is cheaper and trains as well.
"""

import math

import torch

MUON = (3.4445, -4.7750, 2.0315)
CUBIC = (1.5, -0.5, 0.0)


def newton_schulz(
    matrix: torch.Tensor, steps: int = 5, coefficients: tuple[float, float, float] = MUON
) -> torch.Tensor:
    """Approximately orthogonalise a 2-D `matrix` (its polar factor U V^T) with `steps` Newton–Schulz iterations.

    Runs in the input's dtype; wide orientation (rows <= columns) keeps the Gram matrix the small one.
    """
    if matrix.ndim != 2:
        raise ValueError(f"newton_schulz expects a 2-D matrix, got shape {tuple(matrix.shape)}.")
    a, b, c = coefficients
    transposed = matrix.size(0) > matrix.size(1)
    x = matrix.T if transposed else matrix
    x = x / x.norm().clamp(min=1e-7)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if transposed else x


def orthogonalize(tensor: torch.Tensor, steps: int, coefficients: tuple[float, float, float]) -> torch.Tensor:
    """`newton_schulz` of a parameter-shaped tensor (ndim >= 2) viewed as the matrix (shape[0], rest)."""
    return newton_schulz(tensor.reshape(tensor.shape[0], -1), steps, coefficients).view_as(tensor)


def muon_scale(shape: torch.Size) -> float:
    """torch.optim.Muon's "original" learning-rate adjustment sqrt(max(1, rows / cols)) for a parameter shape."""
    rows = shape[0]
    return math.sqrt(max(1.0, rows / (math.prod(shape) // rows)))

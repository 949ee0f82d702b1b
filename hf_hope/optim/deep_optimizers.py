"""Deep optimizers of Nested Learning (Behrouz et al., arXiv 2512.24695, section 4; NeurIPS print section 2.3).

The paper reads momentum as an associative memory that compresses gradients, and derives more expressive
optimizers by changing that memory's objective (`DeltaMomentum`, Eq. 21-22) or its architecture (`DeepMomentum`,
Eq. 23-24). Equation numbers are the NeurIPS print version's. Every optimizer here skips a parameter whose `.grad`
is `None` entirely (no state change, no step count), as the level clock requires.
"""

from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import torch

from .base import (
    AdamWSelector,
    CheckedOptimizer,
    MatrixOptimizerWithAdamW,
    check_common,
    check_ns,
    in_unit,
    is_int,
    is_number,
    require,
)
from .newton_schulz import MUON, matrix_view, muon_scale, orthogonalize_all

PRECONDITIONERS = ("none", "adam")


class DeltaMomentum(CheckedOptimizer):
    """Momentum with gradient-dependent decay: the delta rule on the momentum memory (Eq. 21-22).

    The momentum m minimises the l2 objective ||m g^T - P||^2 of its key g = grad L(W) (Eq. 21 text), and one
    gradient step on it with learning rate eta gives, with W updated by *adding* the momentum (paper's sign):

        m_{i+1} = m_i (alpha I - eta g g^T) - eta P g,        W_{i+1} = W_i + m_{i+1}          (Eq. 22, 21)

    Cost O(size of the parameter), derived. Take g as the parameter's flattened gradient, a column vector of
    n = numel entries, and m as its flattened momentum read as a row (Eq. 22 multiplies it from the left), so that
    I and g g^T are n x n. Then, with the scalar <m, g> = sum_k m_k g_k,

        m (alpha I - eta g g^T) = alpha m - eta (m g) g^T = alpha m - eta <m, g> g^T,

    one dot product and two scaled additions: O(n) time and O(n) memory, the n x n matrix is never built (for a
    32k x 1k embedding it would have 10^15 entries). P is diagonal (identity or Adam's), so P g is
    elementwise, O(n) too. Reading the matrix parameter as a matrix instead (m, g r x c, decay m (alpha I -
    eta g^T g), c x c) would be a different, column-mixing operator costing O(r c min(r, c)); the flattened reading
    is the one whose cost is linear, and the one the test checks against an explicit n x n product.
    Readings of details the paper leaves open:
    - Eq. 22 writes the decay term without eta; the gradient step on the l2 objective puts eta on both terms,
      as here. Along g the momentum decays by alpha - eta ||g||^2 (stable while eta ||g||^2 < 1 + alpha).
    - P: `"none"` is the identity (Eq. 22 as written); `"adam"` is Adam's diagonal preconditioner
      P = diag(1 / (sqrt(v_hat) + eps)), v = beta2 v + (1 - beta2) g^2, v_hat = v / (1 - beta2^t).
    - `weight_decay` is decoupled (AdamW-style): W <- W (1 - lr * weight_decay) before adding m.
    Every parameter (matrices and vectors alike) gets this update: it needs no matrix structure.

    Args: lr (eta), alpha (momentum retention, [0, 1]), preconditioner, beta2, eps, weight_decay.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        alpha: float = 0.9,
        preconditioner: str = "none",
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        defaults = dict(
            lr=lr, alpha=alpha, preconditioner=preconditioner, beta2=beta2, eps=eps, weight_decay=weight_decay
        )
        self.check_group(defaults)
        super().__init__(params, defaults)

    def check_group(self, group: dict[str, Any]) -> None:
        check_common(group)
        require("alpha", group["alpha"], in_unit(group["alpha"]), "a number in [0, 1]")
        pre = group["preconditioner"]
        require("preconditioner", pre, pre in PRECONDITIONERS, f"one of {PRECONDITIONERS}")
        require("beta2", group["beta2"], in_unit(group["beta2"], closed=False), "a number in [0, 1)")

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = self.closure_loss(closure)
        for group in self.param_groups:
            lr, alpha, adam = group["lr"], group["alpha"], group["preconditioner"] == "adam"
            for p in self.due(group):
                g, state = p.grad, self.state[p]
                if not state:
                    state["step"] = 0
                    state["momentum"] = torch.zeros_like(p)
                    if adam:
                        state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                m = state["momentum"]
                if adam:
                    v = state["exp_avg_sq"]
                    v.mul_(group["beta2"]).addcmul_(g, g, value=1 - group["beta2"])
                    denom = (v / (1 - group["beta2"] ** state["step"])).sqrt_().add_(group["eps"])
                    preconditioned = g / denom
                else:
                    preconditioned = g
                dot = torch.sum(m * g)
                m.mul_(alpha).sub_(g * (lr * dot)).sub_(preconditioned, alpha=lr)
                if group["weight_decay"]:
                    p.mul_(1 - lr * group["weight_decay"])
                p.add_(m)
        return loss


class DeepMomentum(MatrixOptimizerWithAdamW):
    """Deep Momentum Gradient Descent (DMGD, Eq. 23), optionally with Newton–Schulz output (Eq. 24).

    Each matrix parameter W (ndim >= 2, viewed as U-shaped (r, c) = (shape[0], rest)) has a linear momentum M_W,
    and all the matrix parameters of one shape in a param group share a small MLP memory (W1 (c x h), W2 (h x c)):
    the momentum memory of a parameter is

        m_theta(U) = M_W + tanh(K W2^T) W1^T,        K = U with each row scaled to unit norm (the keys)

    and theta is updated by one gradient step on its inner objective, the dot-product similarity of the memory's
    output with the gradient (the momentum objective of Eq. 10/18, with the memory in place of the matrix m):

        L2(theta) = sum_W <M_W, U_W> + (1/n) sum_W <tanh(K_W W2^T) W1^T, U_W>,   n = r * (due parameters of the shape)
        theta_{i+1} = alpha theta_i - eta grad_theta L2(theta_i)                                    (Eq. 23)
        W_{i+1} = W_i + lr * sigma(m_{theta_{i+1}}(U_W))                                             (Eq. 23-24)

    so grad_M_W = U_W, grad_W1 = (1/n) sum_W U_W^T T_W, grad_W2 = (1/n) sum_W ((U_W W1) * (1 - T_W^2))^T K_W with
    T_W = tanh(K_W W2^T). With `hidden=0` the memory is M alone: M = alpha M - eta g, i.e. momentum, and with
    `orthogonalize=True` (sigma = Newton–Schulz, scaled by Muon's sqrt(max(1, r / c))) it is Muon without Nesterov.

    Choices the paper leaves open, and why:
    - tanh (bounded): the dot-product objective is linear in the memory's output, so an unbounded activation
      (silu) lets the W1-W2 product grow geometrically on large gradients (it overflowed to NaN on an LM head in
      50 steps); with tanh and alpha < 1 every memory parameter stays bounded for bounded gradients.
    - The MLP's gradient is the mean over its n keys, not the sum, so that its output is a similarity-weighted
      average of gradient rows, on M's scale, whatever the number of rows and of parameters sharing it.
    - W1 = 0 at start (the first step is plain momentum), W2 ~ N(0, 1) from `seed`, retention alpha on all of
      theta as Eq. 23 writes, an outer `lr` because Newton–Schulz discards the scale, decoupled `weight_decay`.
    - The MLP learns from the due parameters only; a parameter the level clock skips keeps its M untouched.
    Parameters with ndim < 2, and those `adamw_params` selects, are updated by AdamW (`adamw_lr`, `adamw_betas`,
    `adamw_eps`), see `MatrixOptimizerWithAdamW`. State: `optimizer.state[p]` holds M and the step count of each
    matrix parameter; the shared MLPs live under the keys `"deep_momentum/<group index>/<r>x<c>"`.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 0.02,
        alpha: float = 0.95,
        memory_lr: float = 1.0,
        hidden: int = 8,
        orthogonalize: bool = True,
        ns_steps: int = 5,
        ns_coefficients: tuple[float, float, float] = MUON,
        weight_decay: float = 0.0,
        seed: int = 0,
        adamw_lr: float = 1e-3,
        adamw_betas: tuple[float, float] = (0.9, 0.999),
        adamw_eps: float = 1e-8,
        adamw_params: AdamWSelector = None,
    ) -> None:
        defaults = dict(
            lr=lr,
            alpha=alpha,
            memory_lr=memory_lr,
            hidden=hidden,
            orthogonalize=orthogonalize,
            ns_steps=ns_steps,
            ns_coefficients=tuple(ns_coefficients),
            weight_decay=weight_decay,
            seed=seed,
            adamw_lr=adamw_lr,
            adamw_betas=tuple(adamw_betas),
            adamw_eps=adamw_eps,
        )
        super().__init__(params, defaults, adamw_params)

    def check_group(self, group: dict[str, Any]) -> None:
        check_common(group)
        check_ns(group)
        self.check_adamw(group)
        require("alpha", group["alpha"], in_unit(group["alpha"]), "a number in [0, 1]")
        eta = group["memory_lr"]
        require("memory_lr", eta, is_number(eta) and eta > 0, "a number > 0")
        require("hidden", group["hidden"], is_int(group["hidden"]) and group["hidden"] >= 0, "an int >= 0")
        require("orthogonalize", group["orthogonalize"], isinstance(group["orthogonalize"], bool), "True or False")
        require("seed", group["seed"], is_int(group["seed"]), "an int")

    def _shared_memory(self, key: str, like: torch.Tensor, group: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The MLP memory (W1, W2) shared by the group's parameters of `like`'s matrix shape, created on first use."""
        cols, hidden = like.shape[1], group["hidden"]
        memory = self.state[key]
        if not memory:
            generator = torch.Generator().manual_seed(group["seed"])
            memory["w1"] = torch.zeros(cols, hidden, dtype=torch.float64)
            memory["w2"] = torch.randn(hidden, cols, generator=generator, dtype=torch.float64)
        for name, value in memory.items():  # after load_state_dict, non-parameter state is not moved for us
            memory[name] = value.to(dtype=like.dtype, device=like.device)
        return memory

    def _mlp_outputs(self, grads: list[torch.Tensor], key: str, group: dict[str, Any]) -> torch.Tensor:
        """Update the shared MLP from the stacked gradients `grads` (all of one shape); its outputs on their keys."""
        u = torch.stack(grads)  # (parameters, r, c)
        memory = self._shared_memory(key, grads[0], group)
        w1, w2 = memory["w1"], memory["w2"]
        keys = u / u.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        features = torch.tanh(keys @ w2.T)
        n = u.shape[0] * u.shape[1]
        grad_w1 = torch.einsum("prc,prh->ch", u, features) / n
        grad_w2 = torch.einsum("prh,prc->hc", (u @ w1) * (1 - features * features), keys) / n
        alpha, eta = group["alpha"], group["memory_lr"]
        w1.mul_(alpha).sub_(grad_w1, alpha=eta)
        w2.mul_(alpha).sub_(grad_w2, alpha=eta)
        return torch.tanh(keys @ w2.T) @ w1.T

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = self.closure_loss(closure)
        for index, group in enumerate(self.param_groups):
            matrices, others = self.split_due(group)
            for p in others:
                self.adamw_step(p, group)
            outputs = []
            for p in matrices:
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["momentum"] = torch.zeros_like(p)
                state["step"] += 1
                state["momentum"].mul_(group["alpha"]).sub_(p.grad, alpha=group["memory_lr"])
                outputs.append(matrix_view(state["momentum"]))
            if group["hidden"]:
                buckets: dict[tuple[int, int], list[int]] = defaultdict(list)
                for position, out in enumerate(outputs):
                    buckets[tuple(out.shape)].append(position)
                for (rows, cols), positions in buckets.items():
                    grads = [matrix_view(matrices[i].grad) for i in positions]
                    mlp = self._mlp_outputs(grads, f"deep_momentum/{index}/{rows}x{cols}", group)
                    for i, extra in zip(positions, mlp.unbind(0), strict=True):
                        outputs[i] = outputs[i] + extra
            if group["orthogonalize"]:
                outputs = orthogonalize_all(outputs, group["ns_steps"], group["ns_coefficients"])
            for p, out in zip(matrices, outputs, strict=True):
                lr = group["lr"] * (muon_scale(p.shape) if group["orthogonalize"] else 1.0)
                if group["weight_decay"]:
                    p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(out.view_as(p), alpha=lr)
        return loss

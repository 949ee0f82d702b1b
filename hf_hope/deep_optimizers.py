"""Deep optimizers of Nested Learning (Behrouz et al., arXiv 2512.24695, section 4; NeurIPS print section 2.3).

The paper reads momentum as an associative memory that compresses gradients, and derives more expressive
optimizers by changing that memory's objective (`DeltaMomentum`, Eq. 21-22) or its architecture (`DeepMomentum`,
Eq. 23-24). Equation numbers are the NeurIPS print version's. Every optimizer here skips a parameter whose `.grad`
is `None` entirely (no state change, no step count), as the level clock requires.
"""

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.nn import functional as F

from .newton_schulz import MUON, muon_scale, orthogonalize

PRECONDITIONERS = ("none", "adam")


def require(name: str, value: Any, ok: bool, allowed: str) -> None:
    """Raise a ValueError naming a hyperparameter, its value and what is allowed, unless `ok`."""
    if not ok:
        raise ValueError(f"{name}={value!r} is invalid: allowed {allowed}.")


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_common(group: dict[str, Any]) -> None:
    """Checks shared by every optimizer here: lr, weight_decay, eps."""
    require("lr", group["lr"], is_number(group["lr"]) and group["lr"] >= 0, "a number >= 0")
    wd = group["weight_decay"]
    require("weight_decay", wd, is_number(wd) and wd >= 0, "a number >= 0")
    if "eps" in group:
        require("eps", group["eps"], is_number(group["eps"]) and group["eps"] > 0, "a number > 0")


def check_ns(group: dict[str, Any]) -> None:
    steps, coefficients = group["ns_steps"], group["ns_coefficients"]
    ok_steps = isinstance(steps, int) and not isinstance(steps, bool) and 1 <= steps < 100
    require("ns_steps", steps, ok_steps, "an int in [1, 100)")
    ok = isinstance(coefficients, tuple | list) and len(coefficients) == 3 and all(map(is_number, coefficients))
    require("ns_coefficients", coefficients, ok, "three numbers (a, b, c)")


def in_unit(value: Any, closed: bool = True) -> bool:
    return is_number(value) and value >= 0 and (value <= 1 if closed else value < 1)


class CheckedOptimizer(torch.optim.Optimizer):
    """An optimizer whose every param group (defaults, Trainer's groups, later additions) is validated."""

    def check_group(self, group: dict[str, Any]) -> None:
        raise NotImplementedError

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        self.check_group(self.param_groups[-1])

    @staticmethod
    def due(group: dict[str, Any]) -> Iterable[torch.Tensor]:
        """The group's parameters that have a gradient; the others (level clock: not due) are left alone."""
        return (p for p in group["params"] if has_grad(p))

    def _closure_loss(self, closure: Callable[[], float] | None) -> float | None:
        if closure is None:
            return None
        with torch.enable_grad():
            return closure()


class DeltaMomentum(CheckedOptimizer):
    """Momentum with gradient-dependent decay: the delta rule on the momentum memory (Eq. 21-22).

    The momentum m minimises the l2 objective ||m g^T - P||^2 of its key g = grad L(W) (Eq. 21 text), and one
    gradient step on it with learning rate eta gives, with W updated by *adding* the momentum (paper's sign):

        m_{i+1} = m_i (alpha I - eta g g^T) - eta P g,        W_{i+1} = W_i + m_{i+1}          (Eq. 22, 21)

    Efficient form: g is the parameter's flattened gradient, so m (alpha I - eta g g^T) = alpha m - eta (m . g) g,
    O(numel) time and memory, g g^T is never built. Readings of details the paper leaves open:
    - Eq. 22 writes the decay term without eta; the gradient step on the l2 objective puts eta on both terms,
      as here. Along g the momentum decays by alpha - eta ||g||^2 (stable while eta ||g||^2 < 1 + alpha).
    - P: `"none"` is the identity (Eq. 22 as written); `"adam"` is Adam's diagonal preconditioner
      P = diag(1 / (sqrt(v_hat) + eps)), v = beta2 v + (1 - beta2) g^2, v_hat = v / (1 - beta2^t).
    - `weight_decay` is decoupled (AdamW-style): W <- W (1 - lr * weight_decay) before adding m.

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
        loss = self._closure_loss(closure)
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


def silu_grad(z: torch.Tensor) -> torch.Tensor:
    """d silu(z) / dz = s (1 + z (1 - s)), s = sigmoid(z)."""
    s = torch.sigmoid(z)
    return s * (1 + z * (1 - s))


class DeepMomentum(CheckedOptimizer):
    """Deep Momentum Gradient Descent (DMGD, Eq. 23), optionally with Newton–Schulz output (Eq. 24).

    Each parameter W (viewed as a matrix U of r rows, 1 row for a vector) has a momentum *memory* m_theta with
    parameters theta = (M, W1, W2), M shaped like W, W1 (c x h), W2 (h x c):

        m_theta(U) = M + silu(K W2^T) W1^T,        K = U with each row scaled to unit norm (the keys)

    updated by one gradient step on its own inner objective, the dot-product similarity of its output with the
    gradient (the momentum objective of Eq. 10/18 with the memory in place of the matrix m):

        L2(theta; U) = <m_theta(U), U>,    theta_{i+1} = alpha theta_i - eta grad_theta L2(theta_i; U_i)   (Eq. 23)
        W_{i+1} = W_i + lr * sigma(m_{theta_{i+1}}(U_i))                                            (Eq. 23-24)

    with grad_M = U, grad_W1 = U^T silu(Z), grad_W2 = ((U W1) * silu'(Z))^T K, Z = K W2^T. With `hidden=0` the
    memory is the linear M alone: m = alpha m - eta g, i.e. momentum, and with `orthogonalize=True`
    (sigma = Newton–Schulz, ndim >= 2 parameters only, scaled by Muon's sqrt(max(1, r / c))) it is Muon
    without Nesterov. Choices the paper leaves open: the inner objective <m(U), U> (the paper's example
    <m(u^T), 1> does not say how the memory reads u), key normalisation, silu, W1 = 0 at start (the first step is
    plain momentum), W2 ~ N(0, 1/c) from `seed`, retention alpha on all of theta as Eq. 23 writes, one memory
    per parameter, an outer `lr` because Newton–Schulz discards the scale, decoupled `weight_decay`.
    State (M, W1, W2, step) lives in `optimizer.state`.
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
        )
        self.check_group(defaults)
        super().__init__(params, defaults)

    def check_group(self, group: dict[str, Any]) -> None:
        check_common(group)
        check_ns(group)
        require("alpha", group["alpha"], in_unit(group["alpha"]), "a number in [0, 1]")
        eta = group["memory_lr"]
        require("memory_lr", eta, is_number(eta) and eta > 0, "a number > 0")
        hidden = group["hidden"]
        require("hidden", hidden, isinstance(hidden, int) and not isinstance(hidden, bool) and hidden >= 0, "int >= 0")
        require("orthogonalize", group["orthogonalize"], isinstance(group["orthogonalize"], bool), "True or False")
        require("seed", group["seed"], isinstance(group["seed"], int) and not isinstance(group["seed"], bool), "int")

    def _init_state(self, p: torch.Tensor, group: dict[str, Any], index: int) -> dict[str, Any]:
        state = self.state[p]
        state["step"] = 0
        state["momentum"] = torch.zeros_like(p)
        hidden, cols = group["hidden"], p.numel() // rows_of(p)
        if hidden:
            generator = torch.Generator().manual_seed(group["seed"] + index)
            w2 = torch.randn(hidden, cols, generator=generator, dtype=torch.float64) / cols**0.5
            state["w1"] = torch.zeros(cols, hidden, dtype=p.dtype, device=p.device)
            state["w2"] = w2.to(dtype=p.dtype, device=p.device)
        return state

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = self._closure_loss(closure)
        index = 0
        for group in self.param_groups:
            alpha, eta = group["alpha"], group["memory_lr"]
            for p in group["params"]:
                index += 1
                if not has_grad(p):
                    continue
                state = self.state[p] or self._init_state(p, group, index)
                state["step"] += 1
                u = p.grad.reshape(rows_of(p), -1)
                if group["hidden"]:
                    w1, w2 = state["w1"], state["w2"]
                    keys = u / u.norm(dim=1, keepdim=True).clamp(min=1e-12)
                    z = keys @ w2.T
                    grad_w1 = u.T @ F.silu(z)
                    grad_w2 = ((u @ w1) * silu_grad(z)).T @ keys
                    w1.mul_(alpha).sub_(grad_w1, alpha=eta)
                    w2.mul_(alpha).sub_(grad_w2, alpha=eta)
                state["momentum"].mul_(alpha).sub_(p.grad, alpha=eta)
                out = state["momentum"]
                if group["hidden"]:
                    out = out + (F.silu(keys @ w2.T) @ w1.T).view_as(p)
                lr = group["lr"]
                if group["orthogonalize"] and p.ndim >= 2:
                    out = orthogonalize(out, group["ns_steps"], group["ns_coefficients"])
                    lr = lr * muon_scale(p.shape)
                if group["weight_decay"]:
                    p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(out, alpha=lr)
        return loss


def has_grad(p: torch.Tensor) -> bool:
    """Whether `p` takes part in this step: `.grad is None` means skipped (the level clock's "not due")."""
    if p.grad is None:
        return False
    if p.grad.is_sparse:
        raise ValueError("Sparse gradients are not supported by the Nested Learning optimizers.")
    return True


def rows_of(p: torch.Tensor) -> int:
    """Rows of the matrix view of a parameter: shape[0] for ndim >= 2, one row for a vector or scalar."""
    return p.shape[0] if p.ndim >= 2 else 1

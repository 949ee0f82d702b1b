"""M3, Multi-scale Momentum Muon: the paper's Algorithm 1 (arXiv 2512.24695), with AdamW for non-matrix parameters."""

from collections.abc import Callable, Iterable
from typing import Any

import torch

from .base import (
    AdamWSelector,
    MatrixOptimizerWithAdamW,
    check_common,
    check_ns,
    in_unit,
    is_int,
    is_number,
    require,
)
from .newton_schulz import MUON, orthogonalize_all

ACCUMULATIONS = ("sum", "ema")


class M3(MatrixOptimizerWithAdamW):
    """Multi-scale Momentum Muon (Algorithm 1): a fast and a slow momentum, both orthogonalised, Adam's denominator.

    For a matrix parameter Theta (ndim >= 2, viewed as (shape[0], rest)), with g_t its gradient, Algorithm 1 is:

        M1_t = M1_{t-1} + beta1 g_t;   V_t = V_{t-1} + beta2 g_t^2;   O1_t = NewtonSchulz_T(M1_t)
        Theta_t = Theta_{t-1} - lr (O1_t + alpha O2) / sqrt(V_t + eps)
        every f steps (after steps f, 2f, ...): M2 = M2 + beta3 * (sum of the last f gradients);
                                                O2 = NewtonSchulz_T(M2), used by the next f steps (O2 = 0 before)

    Readings of details the paper leaves open:
    - `accumulation="sum"` is Algorithm 1 as written: nothing is ever forgotten, so M1 and M2 become the sum of
      all past gradients and V their total energy, and the step shrinks like 1 / sqrt(t). `"ema"` (the default,
      chosen because it forgets old gradients; the benchmark's 50-step runs found the literal sum as good or
      better, so this choice is open) reads each "X + beta y" as Eq. 17-style retention,
      X <- beta X + (1 - beta) y, and divides V by (1 - beta2^t) like Adam.
    - Newton–Schulz output has a fixed scale while sqrt(V) follows the gradient's, so the step grows like
      1 / |g| where gradients are small (e.g. a slow level's averaged gradient): `eps` bounds it, and `lr` has to
      be far below Adam's (1e-4 in the benchmark).
    - The denominator is sqrt(V + eps) as the algorithm's fraction reads (Adam writes sqrt(V) + eps).
    - The step count is per parameter: a parameter the level clock skips (grad None) neither moves nor counts,
      so its slow memory refreshes after f of *its own* updates.
    - `weight_decay` (absent from Algorithm 1) is decoupled: Theta <- Theta (1 - lr * weight_decay).
    - Newton–Schulz runs once per step for all the group's matrices of one shape, as a batched product.
    Parameters with ndim < 2, and those `adamw_params` selects (e.g. embeddings / lm_head), are updated by AdamW
    with `adamw_lr`, `adamw_betas`, `adamw_eps`, see `MatrixOptimizerWithAdamW`.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float, float] = (0.9, 0.999, 0.9),
        alpha: float = 0.5,
        f: int = 10,
        eps: float = 1e-8,
        accumulation: str = "ema",
        ns_steps: int = 5,
        ns_coefficients: tuple[float, float, float] = MUON,
        weight_decay: float = 0.0,
        adamw_lr: float = 1e-3,
        adamw_betas: tuple[float, float] = (0.9, 0.999),
        adamw_eps: float = 1e-8,
        adamw_params: AdamWSelector = None,
    ) -> None:
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            alpha=alpha,
            f=f,
            eps=eps,
            accumulation=accumulation,
            ns_steps=ns_steps,
            ns_coefficients=tuple(ns_coefficients),
            weight_decay=weight_decay,
            adamw_lr=adamw_lr,
            adamw_betas=tuple(adamw_betas),
            adamw_eps=adamw_eps,
        )
        super().__init__(params, defaults, adamw_params)

    def check_group(self, group: dict[str, Any]) -> None:
        check_common(group)
        check_ns(group)
        self.check_adamw(group)
        betas = group["betas"]
        ok = isinstance(betas, tuple | list) and len(betas) == 3 and all(in_unit(b, closed=False) for b in betas)
        require("betas", betas, ok, "three numbers in [0, 1)")
        require("alpha", group["alpha"], is_number(group["alpha"]) and group["alpha"] >= 0, "a number >= 0")
        require("f", group["f"], is_int(group["f"]) and group["f"] >= 1, "an int >= 1")
        acc = group["accumulation"]
        require("accumulation", acc, acc in ACCUMULATIONS, f"one of {ACCUMULATIONS}")

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = self.closure_loss(closure)
        for group in self.param_groups:
            matrices, others = self.split_due(group)
            for p in others:
                self.adamw_step(p, group)
            if matrices:
                self._m3_step(matrices, group)
        return loss

    def _m3_step(self, params: list[torch.Tensor], group: dict[str, Any]) -> None:
        beta1, beta2, beta3 = group["betas"]
        ema = group["accumulation"] == "ema"
        ns = group["ns_steps"], group["ns_coefficients"]
        for p in params:
            g, state = p.grad, self.state[p]
            if not state:
                state["step"] = 0
                for key in ("fast", "slow", "second", "grad_sum", "slow_orth"):
                    state[key] = torch.zeros_like(p)
            state["step"] += 1
            state["grad_sum"].add_(g)
            if ema:
                state["fast"].lerp_(g, 1 - beta1)
                state["second"].mul_(beta2).addcmul_(g, g, value=1 - beta2)
            else:
                state["fast"].add_(g, alpha=beta1)
                state["second"].addcmul_(g, g, value=beta2)
        states = [self.state[p] for p in params]
        fast_orth = orthogonalize_all([state["fast"] for state in states], *ns)
        for p, state, direction in zip(params, states, fast_orth, strict=True):
            second = state["second"] / (1 - beta2 ** state["step"]) if ema else state["second"]
            direction.add_(state["slow_orth"], alpha=group["alpha"])
            if group["weight_decay"]:
                p.mul_(1 - group["lr"] * group["weight_decay"])
            p.addcdiv_(direction, (second + group["eps"]).sqrt_(), value=-group["lr"])
        refresh = [state for state in states if state["step"] % group["f"] == 0]
        for state in refresh:
            if ema:
                state["slow"].mul_(beta3).add_(state["grad_sum"], alpha=1 - beta3)
            else:
                state["slow"].add_(state["grad_sum"], alpha=beta3)
            state["grad_sum"].zero_()
        for state, slow_orth in zip(refresh, orthogonalize_all([s["slow"] for s in refresh], *ns), strict=True):
            state["slow_orth"].copy_(slow_orth)

"""M3, Multi-scale Momentum Muon: the paper's Algorithm 1 (arXiv 2512.24695), with AdamW for non-matrix parameters."""

from collections.abc import Callable, Collection, Iterable
from typing import Any

import torch

from .deep_optimizers import CheckedOptimizer, check_common, check_ns, in_unit, is_number, require
from .newton_schulz import MUON, orthogonalize

ACCUMULATIONS = ("sum", "ema")
AdamWSelector = Collection[str] | Callable[[str | None, torch.Tensor], bool] | None


class M3(CheckedOptimizer):
    """Multi-scale Momentum Muon (Algorithm 1): a fast and a slow momentum, both orthogonalised, Adam's denominator.

    For a matrix parameter Theta (ndim >= 2, viewed as (shape[0], rest)), with g_t its gradient, Algorithm 1 is:

        M1_t = M1_{t-1} + beta1 g_t;   V_t = V_{t-1} + beta2 g_t^2;   O1_t = NewtonSchulz_T(M1_t)
        Theta_t = Theta_{t-1} - lr (O1_t + alpha O2) / sqrt(V_t + eps)
        every f steps (after steps f, 2f, ...): M2 = M2 + beta3 * (sum of the last f gradients);
                                                O2 = NewtonSchulz_T(M2), used by the next f steps (O2 = 0 before)

    Readings of details the paper leaves open:
    - `accumulation="sum"` is Algorithm 1 as written (no forgetting; Newton–Schulz ignores beta1, beta3's scale).
      `"ema"` reads each "X + beta y" as Eq. 17-style retention, X <- beta X + (1 - beta) y, and divides V by
      (1 - beta2^t) like Adam, so that old gradients fade.
    - The denominator is sqrt(V + eps) as the algorithm's fraction reads (Adam writes sqrt(V) + eps).
    - The step count is per parameter: a parameter the level clock skips (grad None) neither moves nor counts,
      so its slow memory refreshes after f of *its own* updates.
    - `weight_decay` (absent from Algorithm 1) is decoupled: Theta <- Theta (1 - lr * weight_decay).
    Parameters with ndim < 2, and those `adamw_params` selects (names, which need named parameters, or a
    predicate `(name or None, param) -> bool`, e.g. for embeddings / lm_head), are updated by AdamW (torch's
    formula) with `adamw_lr`, `adamw_betas`, `adamw_eps`; a scheduler scales `adamw_lr` by the same factor as lr.
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
        ok = adamw_params is None or callable(adamw_params) or _is_names(adamw_params)
        require("adamw_params", adamw_params, ok, "None, a collection of parameter names or a callable")
        self._adamw_selector = adamw_params
        self._adamw_ids: set[int] = set()
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
        self.check_group(defaults)
        super().__init__(params, defaults)

    def check_group(self, group: dict[str, Any]) -> None:
        check_common(group)
        check_ns(group)
        betas, adamw_betas = group["betas"], group["adamw_betas"]
        ok = isinstance(betas, tuple | list) and len(betas) == 3 and all(in_unit(b, closed=False) for b in betas)
        require("betas", betas, ok, "three numbers in [0, 1)")
        ok = isinstance(adamw_betas, tuple | list) and len(adamw_betas) == 2
        require("adamw_betas", adamw_betas, ok and all(in_unit(b, closed=False) for b in adamw_betas), "two in [0, 1)")
        require("alpha", group["alpha"], is_number(group["alpha"]) and group["alpha"] >= 0, "a number >= 0")
        f = group["f"]
        require("f", f, isinstance(f, int) and not isinstance(f, bool) and f >= 1, "an int >= 1")
        acc = group["accumulation"]
        require("accumulation", acc, acc in ACCUMULATIONS, f"one of {ACCUMULATIONS}")
        require("adamw_lr", group["adamw_lr"], is_number(group["adamw_lr"]) and group["adamw_lr"] >= 0, "a number >= 0")
        require("adamw_eps", group["adamw_eps"], is_number(group["adamw_eps"]) and group["adamw_eps"] > 0, "> 0")

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        if "param_names" not in group and self._adamw_selector is not None and _is_names(self._adamw_selector):
            raise ValueError(
                f"adamw_params={self._adamw_selector!r} lists names, but the parameters were given without names; "
                "pass model.named_parameters() or a predicate."
            )
        names = group.get("param_names", [None] * len(group["params"]))
        for name, p in zip(names, group["params"], strict=True):
            if p.ndim < 2 or self._selects(name, p):
                self._adamw_ids.add(id(p))

    def _selects(self, name: str | None, p: torch.Tensor) -> bool:
        selector = self._adamw_selector
        if selector is None:
            return False
        return bool(selector(name, p)) if callable(selector) else name in selector

    def uses_adamw(self, p: torch.Tensor) -> bool:
        """Whether `p` is updated by the AdamW part (ndim < 2 or selected by `adamw_params`)."""
        return id(p) in self._adamw_ids

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = self._closure_loss(closure)
        for group in self.param_groups:
            for p in self.due(group):
                if self.uses_adamw(p):
                    self._adamw_step(p, group)
                else:
                    self._m3_step(p, group)
        return loss

    def _m3_step(self, p: torch.Tensor, group: dict[str, Any]) -> None:
        g, state = p.grad, self.state[p]
        if not state:
            state["step"] = 0
            for key in ("fast", "slow", "second", "grad_sum", "slow_orth"):
                state[key] = torch.zeros_like(p)
        state["step"] += 1
        beta1, beta2, beta3 = group["betas"]
        ema = group["accumulation"] == "ema"
        state["grad_sum"].add_(g)
        if ema:
            state["fast"].lerp_(g, 1 - beta1)
            state["second"].mul_(beta2).addcmul_(g, g, value=1 - beta2)
            second = state["second"] / (1 - beta2 ** state["step"])
        else:
            state["fast"].add_(g, alpha=beta1)
            state["second"].addcmul_(g, g, value=beta2)
            second = state["second"]
        steps, coefficients = group["ns_steps"], group["ns_coefficients"]
        direction = orthogonalize(state["fast"], steps, coefficients).add_(state["slow_orth"], alpha=group["alpha"])
        if group["weight_decay"]:
            p.mul_(1 - group["lr"] * group["weight_decay"])
        p.addcdiv_(direction, (second + group["eps"]).sqrt_(), value=-group["lr"])
        if state["step"] % group["f"] == 0:
            if ema:
                state["slow"].mul_(beta3).add_(state["grad_sum"], alpha=1 - beta3)
            else:
                state["slow"].add_(state["grad_sum"], alpha=beta3)
            state["slow_orth"].copy_(orthogonalize(state["slow"], steps, coefficients))
            state["grad_sum"].zero_()

    def _adamw_step(self, p: torch.Tensor, group: dict[str, Any]) -> None:
        """torch.optim.AdamW's update (single-tensor formula) with the group's AdamW hyperparameters."""
        g, state = p.grad, self.state[p]
        if not state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
        state["step"] += 1
        beta1, beta2 = group["adamw_betas"]
        initial = group.get("initial_lr", group["lr"])
        lr = group["adamw_lr"] * (group["lr"] / initial if initial else 1.0)
        p.mul_(1 - lr * group["weight_decay"])
        state["exp_avg"].lerp_(g, 1 - beta1)
        state["exp_avg_sq"].mul_(beta2).addcmul_(g, g, value=1 - beta2)
        bias1, bias2 = 1 - beta1 ** state["step"], 1 - beta2 ** state["step"]
        denom = (state["exp_avg_sq"].sqrt() / bias2**0.5).add_(group["adamw_eps"])
        p.addcdiv_(state["exp_avg"], denom, value=-lr / bias1)


def _is_names(value: Any) -> bool:
    return isinstance(value, Collection) and not isinstance(value, str) and all(isinstance(n, str) for n in value)

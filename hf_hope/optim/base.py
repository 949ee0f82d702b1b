"""What the Nested Learning optimizers share: hyperparameter checks, level-clock skipping, and the AdamW fallback.

Every optimizer here skips a parameter whose `.grad` is `None` entirely (no state change, no step count), as the
level clock requires. Matrix optimizers (Newton–Schulz based) hand the parameters they cannot treat as matrices
(ndim < 2, and any the user selects, e.g. embeddings and the LM head) to an AdamW update inside the same optimizer,
as Muon users expect.
"""

from collections.abc import Callable, Collection, Iterable
from typing import Any

import torch

AdamWSelector = Collection[str] | Callable[[str | None, torch.Tensor], bool] | None


def require(name: str, value: Any, ok: bool, allowed: str) -> None:
    """Raise a ValueError naming a hyperparameter, its value and what is allowed, unless `ok`."""
    if not ok:
        raise ValueError(f"{name}={value!r} is invalid: allowed {allowed}.")


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def in_unit(value: Any, closed: bool = True) -> bool:
    """Whether `value` is a number in [0, 1] (or [0, 1) when not `closed`)."""
    return is_number(value) and value >= 0 and (value <= 1 if closed else value < 1)


def check_common(group: dict[str, Any]) -> None:
    """Checks shared by every optimizer here: lr, weight_decay, eps."""
    require("lr", group["lr"], is_number(group["lr"]) and group["lr"] >= 0, "a number >= 0")
    wd = group["weight_decay"]
    require("weight_decay", wd, is_number(wd) and wd >= 0, "a number >= 0")
    if "eps" in group:
        require("eps", group["eps"], is_number(group["eps"]) and group["eps"] > 0, "a number > 0")


def check_ns(group: dict[str, Any]) -> None:
    """Checks of the Newton–Schulz settings: ns_steps and ns_coefficients."""
    steps, coefficients = group["ns_steps"], group["ns_coefficients"]
    require("ns_steps", steps, is_int(steps) and 1 <= steps < 100, "an int in [1, 100)")
    ok = isinstance(coefficients, tuple | list) and len(coefficients) == 3 and all(map(is_number, coefficients))
    require("ns_coefficients", coefficients, ok, "three numbers (a, b, c)")


def has_grad(p: torch.Tensor) -> bool:
    """Whether `p` takes part in this step: `.grad is None` means skipped (the level clock's "not due")."""
    if p.grad is None:
        return False
    if p.grad.is_sparse:
        raise ValueError("Sparse gradients are not supported by the Nested Learning optimizers.")
    return True


class CheckedOptimizer(torch.optim.Optimizer):
    """An optimizer whose every param group (defaults, Trainer's groups, later additions) is validated."""

    def check_group(self, group: dict[str, Any]) -> None:
        raise NotImplementedError

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        self.check_group(self.param_groups[-1])

    @staticmethod
    def due(group: dict[str, Any]) -> list[torch.Tensor]:
        """The group's parameters that have a gradient; the others (level clock: not due) are left alone."""
        return [p for p in group["params"] if has_grad(p)]

    @staticmethod
    def closure_loss(closure: Callable[[], float] | None) -> float | None:
        if closure is None:
            return None
        with torch.enable_grad():
            return closure()


class MatrixOptimizerWithAdamW(CheckedOptimizer):
    """A matrix optimizer that updates non-matrix (ndim < 2) and user-selected parameters with AdamW.

    `adamw_params` selects more parameters for AdamW: parameter names (which need `model.named_parameters()`) or a
    predicate `(name or None, param) -> bool`. The AdamW part uses torch.optim.AdamW's formula with the group's
    `adamw_lr`, `adamw_betas`, `adamw_eps` and `weight_decay`; a scheduler that scales `lr` scales `adamw_lr` by the
    same factor (relative to the group's `initial_lr`).
    """

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any], adamw_params: AdamWSelector) -> None:
        ok = adamw_params is None or callable(adamw_params) or _is_names(adamw_params)
        require("adamw_params", adamw_params, ok, "None, a collection of parameter names or a callable")
        self._adamw_selector = adamw_params
        self._adamw_ids: set[int] = set()
        self.check_group(defaults)
        super().__init__(params, defaults)

    @staticmethod
    def check_adamw(group: dict[str, Any]) -> None:
        lr, betas, eps = group["adamw_lr"], group["adamw_betas"], group["adamw_eps"]
        require("adamw_lr", lr, is_number(lr) and lr >= 0, "a number >= 0")
        ok = isinstance(betas, tuple | list) and len(betas) == 2 and all(in_unit(b, closed=False) for b in betas)
        require("adamw_betas", betas, ok, "two numbers in [0, 1)")
        require("adamw_eps", eps, is_number(eps) and eps > 0, "a number > 0")

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

    def split_due(self, group: dict[str, Any]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The group's due parameters as (matrix parameters, AdamW parameters)."""
        due = self.due(group)
        return [p for p in due if not self.uses_adamw(p)], [p for p in due if self.uses_adamw(p)]

    def adamw_step(self, p: torch.Tensor, group: dict[str, Any]) -> None:
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

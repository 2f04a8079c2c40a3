"""Solving flow matching's ODEs with torchdiffeq under a budget of field evaluations: every solve
counts its evaluations, one that needs more than its budget stops with a
:class:`~pushforward.core.SolverError` naming t and the step size (a stiff field, tolerances too
tight), and so do non-finite values of the field. The likelihood's augmented field
(:func:`divergence_rhs`) carries tr ∂v/∂x beside x."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torchdiffeq
from torch import Tensor

from pushforward.core import SolverError

__all__ = ["SOLVERS", "Solver", "divergence_rhs"]

SOLVERS: dict[str, str] = {
    "dopri5": "adaptive Dormand–Prince 5(4), to rtol and atol",
    "rk4": "fixed steps of the classic Runge–Kutta 4 (4 evaluations a step)",
    "midpoint": "fixed steps of the midpoint rule (2 evaluations a step)",
    "euler": "fixed Euler steps (1 evaluation a step)",
}


class _Budget(Exception):
    """The field was evaluated more often than the solve's budget allows."""


@dataclass
class _Counted:
    """The ODE's right-hand side, counting evaluations and refusing non-finite values; it
    remembers recent evaluation times to name t and the step size when a solve fails."""

    rhs: Callable[[Tensor, Any], Any]
    budget: int
    nfe: int = 0
    times: tuple[float, ...] = ()

    def __call__(self, t: Tensor, y: Any) -> Any:
        self.nfe += 1
        self.times = (*self.times[-6:], float(t))
        if self.nfe > self.budget:
            raise _Budget
        out = self.rhs(t, y)
        parts = out if isinstance(out, tuple) else (out,)
        if not all(bool(torch.isfinite(p).all()) for p in parts):
            raise SolverError(
                f"the velocity field is not finite at t = {float(t):.4g} (after {self.nfe} "
                "evaluations): the weights or the state hold NaN or infinite values"
            )
        return out

    def step(self) -> float:
        """Return the recent step size: the span of the last six evaluation times (one
        Dormand–Prince step makes six evaluations)."""
        return max(self.times) - min(self.times) if len(self.times) > 1 else math.nan


@dataclass(frozen=True)
class Solver:
    """How to solve dy/dt = f(t, y): ``method`` (:data:`SOLVERS`), ``steps`` equal steps for a
    fixed-step method, tolerances ``rtol``, ``atol`` for the adaptive one, and the most
    evaluations of f one solve may take (``max_nfe``)."""

    method: str
    steps: int
    rtol: float
    atol: float
    max_nfe: int

    def solve(self, rhs: Callable, y0: Any, times: Tensor, what: str) -> tuple[Any, int]:
        """Return y at every time (T, …) of dy/dt = rhs(t, y) from y0 (a tensor (n, …) or a
        tuple of them) over ``times`` (T,), and the evaluations of rhs it took; ``what`` names
        the solve in errors."""
        counted = _Counted(rhs, self.max_nfe)
        first = y0[0] if isinstance(y0, tuple) else y0
        if first.shape[0] == 0:  # nothing to carry
            stack = lambda y: y.expand(len(times), *y.shape)  # noqa: E731
            return (tuple(map(stack, y0)) if isinstance(y0, tuple) else stack(y0)), 0
        adaptive = self.method == "dopri5"
        options = {} if adaptive else {"step_size": 1.0 / self.steps}
        kwargs = {"rtol": self.rtol, "atol": self.atol} if adaptive else {}
        try:
            out = torchdiffeq.odeint(
                counted, y0, times.to(first), method=self.method, options=options, **kwargs
            )
        except _Budget:
            raise SolverError(
                f"{what}: the ODE solver ({self.method}) used its budget of {self.max_nfe:,} "
                f"evaluations and stopped at t = {counted.times[-1]:.4g} with a step size of "
                f"about {counted.step():.2g}: the field is stiff there or the tolerances "
                f"(rtol {self.rtol:g}, atol {self.atol:g}) too tight; raise max_nfe, loosen the "
                "tolerances, or use a fixed-step solver (--solver rk4 --steps N)"
            ) from None
        except AssertionError as e:  # torchdiffeq's own checks: dt underflow, non-finite state
            raise SolverError(
                f"{what}: the ODE solver ({self.method}) failed near t = "
                f"{counted.times[-1] if counted.times else float(times[0]):.4g} with a step "
                f"size of about {counted.step():.2g}: {e}"
            ) from None
        return out, counted.nfe


def divergence_rhs(velocity: Callable[[Tensor, Tensor], Tensor], probe: Tensor | None) -> Callable:
    """Return the augmented field (t, (u, a)) ↦ (v, tr ∂v/∂u) of ``velocity`` v(t, u) (n, d),
    with the exact trace (d backward passes), or its Hutchinson estimate εᵀ(∂v/∂u)ε for the fixed
    probe ε (n, d)."""

    def rhs(t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        u = state[0]
        with torch.enable_grad():
            u = u.detach().requires_grad_(True)
            v = velocity(t, u)
            if probe is not None:
                (vjp,) = torch.autograd.grad(v, u, probe)
                div = (vjp * probe).sum(1)
            else:
                dim = u.shape[1]
                div = torch.zeros_like(v[:, 0])
                for i in range(dim):
                    (g,) = torch.autograd.grad(v[:, i].sum(), u, retain_graph=i < dim - 1)
                    div = div + g[:, i]
        return v.detach(), div.detach()

    return rhs

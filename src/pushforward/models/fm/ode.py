"""Solving flow matching's ODEs with torchdiffeq under a budget of field evaluations: every solve
counts its evaluations, one that needs more than its budget stops with a
:class:`~pushforward.core.SolverError` naming t and the step size (a stiff field, tolerances too
tight), and so do non-finite values of the field. The likelihood's augmented field
(:func:`divergence_rhs`) carries tr ∂v/∂x beside x.

On an accelerator a fixed-step solve runs :func:`fixed_step_solve` instead of torchdiffeq's
loop, which reads t from the device at every step (``t1 >= t[j]``) and, through the evaluation
counter's checks, every value of the field: the same steps (torchdiffeq's Euler, midpoint and
3/8-rule RK4, its time grid and its linear interpolation), with the times kept on the host and
one finiteness check at the end, so that the host never waits for the device within a solve. On
CUDA a sampling solve's step is captured as one CUDA graph (``torch.compile``'s
``reduce-overhead``) and replayed step after step."""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from pushforward.core import SolverError
from pushforward.train import compile_mode

__all__ = ["SOLVERS", "Solver", "divergence_rhs", "fixed_step_solve"]

log = logging.getLogger(__name__)

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
        if not adaptive and first.device.type != "cpu":
            return self._fixed(rhs, y0, times, what)
        options = {} if adaptive else {"step_size": 1.0 / self.steps}
        kwargs = {"rtol": self.rtol, "atol": self.atol} if adaptive else {}
        try:
            out = _torchdiffeq().odeint(
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

    def _fixed(self, rhs: Callable, y0: Any, times: Tensor, what: str) -> tuple[Any, int]:
        """:func:`fixed_step_solve` under the budget, with one check of the result."""
        host_times = times.tolist()
        nfe = _EVALUATIONS[self.method] * (len(_grid(host_times, 1.0 / self.steps)) - 1)
        if nfe > self.max_nfe:
            raise SolverError(
                f"{what}: the ODE solver ({self.method}, {self.steps} steps) would take "
                f"{nfe:,} evaluations, over its budget of {self.max_nfe:,}; raise max_nfe or "
                "take fewer steps"
            )
        # sampling (a tensor state, no gradient) is captured where the training step would be
        # (CUDA graphs on CUDA); the likelihood's state carries autograd's trace: op by op
        captures = isinstance(y0, Tensor) and not torch.is_grad_enabled()
        mode = compile_mode("auto", y0.device) if captures else None
        out = fixed_step_solve(rhs, y0, host_times, self.method, self.steps, compile_mode=mode)
        parts = out if isinstance(out, tuple) else (out,)
        if not bool(torch.stack([torch.isfinite(p).all() for p in parts]).all()):
            raise SolverError(
                f"{what}: the velocity field or the state became non-finite between t = "
                f"{host_times[0]:.4g} and {host_times[-1]:.4g} ({self.method}, {self.steps} "
                "steps): the weights or the state hold NaN or infinite values"
            )
        return out, nfe


_EVALUATIONS = {"euler": 1, "midpoint": 2, "rk4": 4}
"""Field evaluations per step of each fixed-step method."""


def _torchdiffeq() -> Any:
    """torchdiffeq, imported at the first solve: it imports scipy.integrate and
    scipy.optimize (0.3–0.5 s), which a process that solves no ODE does not need."""
    import torchdiffeq

    return torchdiffeq


def _grid(times: list[float], step: float) -> list[float]:
    """torchdiffeq's grid of a fixed-step solve over ``times``: t₀ + k·step, the last point set
    to the last time."""
    n = math.ceil((times[-1] - times[0]) / step + 1)
    grid = [times[0] + k * step for k in range(n)]
    grid[-1] = times[-1]
    return grid


def _map(fn: Callable[..., Tensor], *ys: Any) -> Any:
    """``fn`` on tensors, or part by part on tuples of them."""
    if isinstance(ys[0], tuple):
        return tuple(fn(*parts) for parts in zip(*ys, strict=True))
    return fn(*ys)


def _step(rhs: Callable, method: str, at: Tensor, y: Any) -> Any:
    """One fixed step of ``method`` from y (a tensor or a tuple of them); ``at`` (6,) holds t₀,
    the step dt, t₀ + dt/3, t₀ + 2dt/3, t₀ + dt/2 and t₁ on y's device (:func:`_time_table`)."""
    t0, dt, third, two_thirds, mid, t1 = at.unbind()
    k1 = rhs(t0, y)
    if method == "euler":
        return _map(lambda a, b: a + dt * b, y, k1)
    if method == "midpoint":
        half = _map(lambda a, b: a + b * (0.5 * dt), y, k1)
        return _map(lambda a, b: a + dt * b, y, rhs(mid, half))
    k2 = rhs(third, _map(lambda a, b: a + dt * b * (1.0 / 3.0), y, k1))
    k3 = rhs(two_thirds, _map(lambda a, b, c: a + dt * (c - b * (1.0 / 3.0)), y, k1, k2))
    k4 = rhs(t1, _map(lambda a, b, c, d: a + dt * (b - c + d), y, k1, k2, k3))
    return _map(lambda a, b, c, d, e: a + (b + 3 * (c + d) + e) * dt * 0.125, y, k1, k2, k3, k4)


def _time_table(grid: list[float], like: Tensor) -> Tensor:
    """Return the times of every step of ``grid`` (S, 6) (see :func:`_step`), computed on the
    host and moved to ``like``'s device in one copy."""
    rows = [(t0, t1 - t0, t0 + (t1 - t0) / 3, t0 + 2 * (t1 - t0) / 3, t0 + (t1 - t0) / 2, t1)
            for t0, t1 in itertools.pairwise(grid)]  # fmt: skip
    return torch.tensor(rows, dtype=like.dtype).to(like.device)


_CAPTURED: dict[str, Callable] = {}
""":func:`_step` through ``torch.compile`` by mode, compiled once for every solve (one graph
per method, field and batch shape)."""


def _captured_step(mode: str) -> Callable:
    if mode not in _CAPTURED:
        _CAPTURED[mode] = torch.compile(_step, mode=mode, dynamic=False)
    return _CAPTURED[mode]


def fixed_step_solve(
    rhs: Callable, y0: Any, times: list[float], method: str, steps: int, *,
    compile_mode: str | None = None,
) -> Any:  # fmt: skip
    """Return y at each of ``times`` (T, …) of dy/dt = rhs(t, y) from y0 (a tensor (n, …) or a
    tuple of them), in fixed steps of 1/``steps`` of ``method`` (euler, midpoint or rk4, the
    3/8 rule), as torchdiffeq takes them; t reaches rhs as a 0-d tensor on y0's device, from a
    table of every step's times made on the host and copied once (no read from the device).

    With ``compile_mode`` (a ``torch.compile`` mode; ``reduce-overhead``: a CUDA graph), each
    step is one compiled graph, replayed step after step: the times are its inputs, not
    constants, so it is compiled once. Should compiling fail, the solve goes on op by op."""
    first = y0[0] if isinstance(y0, tuple) else y0
    grid = _grid(times, 1.0 / steps)
    table = _time_table(grid, first)
    step = _step if compile_mode is None else _captured_step(compile_mode)
    out = [y0]
    j, y = 1, y0
    for i, (t0, t1) in enumerate(itertools.pairwise(grid)):
        if step is not _step:
            if compile_mode == "reduce-overhead":  # the last replay's outputs are ours now
                torch.compiler.cudagraph_mark_step_begin()
            try:
                y1 = _map(torch.clone, step(rhs, method, table[i], y))
            except Exception as e:  # compiling failed: no C++ compiler, an operation it lacks
                if i:
                    raise
                log.warning("torch.compile(mode=%r) of the ODE step failed, solving op by op: %s",
                            compile_mode, " ".join(str(e).split())[:300])  # fmt: skip
                step = _CAPTURED[compile_mode] = _step  # and so every later solve: no retry
                y1 = step(rhs, method, table[i], y)
        else:
            y1 = step(rhs, method, table[i], y)
        while j < len(times) and t1 >= times[j]:  # host numbers: no read from the device
            t = times[j]
            if t == t1:
                out.append(y1)
            else:
                w = (t - t0) / (t1 - t0)
                out.append(_map(lambda a, b, w=w: a + w * (b - a), y, y1))
            j += 1
        y = y1
    if isinstance(y0, tuple):
        return tuple(torch.stack(parts) for parts in zip(*out, strict=True))
    return torch.stack(out)


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

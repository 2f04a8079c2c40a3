"""Flow matching: g#μ as the end of an ODE, with its exact log-likelihood.

A network v_θ(t, x) defines the ODE dx/dt = v_θ(t, x) on t ∈ [0, 1]; its flow map from t = 0 to
t = 1 is the pushforward g, with μ = N(0, I_d) at t = 0 and (after training) the data at t = 1.
Conditional flow matching (Lipman et al., 2023; Tong et al., 2024) trains v_θ by regression, with
no ODE solved during training: draw x₀ ~ μ, a data row x₁ and a time t ∈ [0, 1]
(:data:`TIME_POWER`), set

    x_t = t·x₁ + (1 − (1 − σ)·t)·x₀,     u_t = x₁ − (1 − σ)·x₀,

and minimise E ‖v_θ(t, x_t) − u_t‖². Its minimiser is the marginal field whose flow carries μ to
the data convolved with N(0, σ²) (σ is the conditional path's width at t = 1, Lipman's σ_min, 0
by default, in standardised units). The pairing of x₀ with x₁ is the ``coupling``:

* ``independent``: x₀ drawn independently of x₁ (I-CFM);
* ``ot``: within each minibatch, the x₀ are re-assigned to the x₁ by the exact optimal-transport
  permutation of squared Euclidean cost (POT's network simplex, :func:`ot_pairing`): OT-CFM,
  whose straighter paths need fewer solver steps. The exact problem is solved on blocks of
  :data:`OT_BLOCK` rows of each batch, as its cost grows faster than the square of its size.

The log-likelihood is exact, by the instantaneous change of variables (Chen et al., 2018):

    log p₁(x) = log μ(x₀) − ∫₀¹ tr ∂v/∂x (t, x_t) dt,

integrated backwards from x₁ = x with the ODE. The trace is exact (d backward passes per
evaluation) for d ≤ :data:`EXACT_TRACE_MAX_DIM`; above it ``trace="auto"`` uses Hutchinson's
estimator εᵀ(∂v/∂x)ε with Rademacher ε fixed along each path (FFJORD; Grathwohl et al., 2019):
unbiased for log p, with a standard error, and labelled as an estimate
(:data:`HUTCHINSON_ESTIMATE`).

The ODE is solved by torchdiffeq: ``solver="dopri5"`` is adaptive (``rtol``, ``atol``); ``euler``,
``midpoint`` and ``rk4`` take ``steps`` equal steps. Every solve counts its function evaluations
(:attr:`FlowMatching.last_nfe`), and one that needs more than ``max_nfe`` stops with a
:class:`~pushforward.errors.SolverError` naming t and the step size (a stiff field, tolerances
too tight); so do non-finite values of the field.

Data are standardised per coordinate to unit spread first (the log-Jacobian is counted, so
densities are in the data's units); images are dequantised and sent through RealNVP's logit as
for the normalizing flows (:mod:`pushforward.flow`).

Recommended settings (ring8 and grid25, ``benchmarks/fidelity.py``): :data:`RECOMMENDED`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import ot
import torch
import torchdiffeq
from torch import Tensor, nn

from pushforward.contract import EXACT_LIKELIHOOD, ModelConfig, ModelSpec, setting
from pushforward.datasets import Dataset
from pushforward.errors import ConfigError, DataError, SolverError, TrainingError
from pushforward.flow import Logit, check_pixels_or_rows, dequantized, likelihood_summary
from pushforward.measures import StandardNormal
from pushforward.nets import ACTIVATIONS, MAX_LATENT, MAX_WIDTH, MLP
from pushforward.train import Trainable
from pushforward.validate import check_int, check_rows

__all__ = [
    "COUPLINGS",
    "EXACT_TRACE_MAX_DIM",
    "HUTCHINSON_ESTIMATE",
    "OT_BLOCK",
    "RECOMMENDED",
    "SOLVERS",
    "TRACES",
    "FlowMatching",
    "FlowMatchingConfig",
    "VelocityField",
    "ot_pairing",
]

EXACT_TRACE_MAX_DIM = 16
"""The largest d for which ``trace="auto"`` computes tr ∂v/∂x exactly (d backward passes per
evaluation of the field); above it, Hutchinson's estimate (one pass)."""

HUTCHINSON_ESTIMATE = "unbiased estimate (Hutchinson)"
""":attr:`FlowMatching.likelihood_kind` when the trace is estimated: E[log p̂] = log p."""

COUPLINGS: dict[str, str] = {
    "independent": "x₀ ~ μ drawn independently of the data row x₁ (I-CFM)",
    "ot": "x₀ re-paired with the batch's x₁ by the exact optimal-transport permutation (OT-CFM)",
}

SOLVERS: dict[str, str] = {
    "dopri5": "adaptive Dormand–Prince 5(4), to rtol and atol",
    "rk4": "fixed steps of the classic Runge–Kutta 4 (4 evaluations a step)",
    "midpoint": "fixed steps of the midpoint rule (2 evaluations a step)",
    "euler": "fixed Euler steps (1 evaluation a step)",
}

TRACES: dict[str, str] = {
    "auto": f"exact for d ≤ {EXACT_TRACE_MAX_DIM}, else Hutchinson's estimate",
    "exact": "tr ∂v/∂x from d backward passes per evaluation",
    "hutchinson": "εᵀ(∂v/∂x)ε with Rademacher ε: unbiased, one backward pass",
}

TIME_FREQUENCIES = 8
"""The time embedding: s and sin/cos(π·f·s) for f = 1 … TIME_FREQUENCIES, for s = t and for the
log-time τ (:data:`LOG_TIME_EPS`), concatenated to x."""

TIME_POWER = 3
"""Training draws t = 1 − (1 − u)^TIME_POWER, u ~ U[0, 1]: any density of t with full support has
the same minimiser, the marginal field, and this one spends a third of each batch within 0.04 of
t = 1. On ring8 (seed 0, 100 epochs) it raised the high-quality share from 72% to 85% beside the
log-time feature; a log-uniform 1 − t on [10⁻⁴, 1] for half of each batch gave 77%."""

OT_BLOCK = 64
"""Rows per exact optimal-transport problem in training's ``ot`` coupling: a batch of 256 is
paired as four blocks of 64 (see BENCHMARKS.md, "Flow matching", for the cost per step)."""

LOG_TIME_EPS = 1e-4
"""δ of the log-time feature τ = log((1 − t + δ)/(1 + δ)) / log(δ/(1 + δ)), from 0 at t = 0 to 1
at t = 1, which spreads the last moments (1 − t from 10⁻¹ to 10⁻⁴) over half its range: narrow
modes are formed there, by a field whose contraction rate peaks when 1 − t is about their width.
On ring8 (seed 0, 100 epochs) it lowered KL(p ‖ q) from 0.35 to 0.22 nats and raised the
high-quality share from 79% to 85%."""

EVAL_BATCH = 4096
"""Rows per ODE solve in :meth:`FlowMatching.log_prob` and :meth:`FlowMatching.sample`."""

_LOG_2PI = math.log(2 * math.pi)


# --- the field -----------------------------------------------------------------------------------


class VelocityField(nn.Module):
    """A time-conditioned MLP v(t, x): (B,) or scalar t and x (B, d) → (B, d).

    The input is x beside the time embedding [s, sin(πfs), cos(πfs)] for f = 1 … F, for s = t and
    s = τ(t), the log-time (:data:`LOG_TIME_EPS`); the last layer starts at zero, so the untrained
    field is 0 (the identity flow).
    """

    def __init__(self, dim: int, hidden: Sequence[int], *, activation: str = "silu"):
        super().__init__()
        self.register_buffer(
            "frequencies", math.pi * torch.arange(1, TIME_FREQUENCIES + 1, dtype=torch.float32)
        )
        self.net = MLP(dim + 2 + 4 * TIME_FREQUENCIES, list(hidden), dim, activation=activation)
        last = self.net.linears[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        """Return v(t, x) (B, d) for t (B,) or a scalar and x (B, d)."""
        t = t.to(x.dtype).expand(x.shape[0]) if t.dim() == 0 else t.to(x.dtype)
        eps = LOG_TIME_EPS
        tau = torch.log1p(-t.clamp(max=1) / (1 + eps)) / math.log(eps / (1 + eps))  # (B,)
        feats = [x]
        for s in (t, tau):
            fs = s[:, None] * self.frequencies.to(x.dtype)  # (B, F)
            feats += [s[:, None], fs.sin(), fs.cos()]
        return self.net(torch.cat(feats, dim=1))


# --- the coupling --------------------------------------------------------------------------------


def ot_pairing(x0: Tensor, x1: Tensor, *, block: int | None = None) -> Tensor:
    """Return the permutation π (B,) that minimises Σ_i ‖x0[π_i] − x1_i‖², exactly; with
    ``block``, exactly within each run of ``block`` consecutive rows (the last run shorter).

    The optimal transport plan between two sets of equally weighted points is a permutation
    matrix (a vertex of the Birkhoff polytope); POT's network simplex finds one. Its cost grows
    faster than B² (about 10 ms for B = 256 and 50 ms for B = 512 on one core), so training
    solves blocks of :data:`OT_BLOCK` rows. Shapes: x0, x1 (B, d).
    """
    if x0.shape != x1.shape or x0.dim() != 2:
        raise ConfigError(f"ot_pairing needs two (B, d) batches, got {tuple(x0.shape)} and "
                          f"{tuple(x1.shape)}")  # fmt: skip
    a = x0.detach().double().cpu().numpy()
    b = x1.detach().double().cpu().numpy()
    step = len(a) if block is None else check_int(block, "block", minimum=1)
    perm = np.arange(len(a))
    for i in range(0, len(a), step):
        cost = ot.dist(b[i : i + step], a[i : i + step])  # cost[i, j] = ‖x1_i − x0_j‖²
        w = np.full(len(cost), 1.0 / len(cost))
        plan = ot.emd(w, w, cost, numItermax=1_000_000)
        perm[i : i + step] = i + plan.argmax(axis=1)
    return torch.from_numpy(perm).to(x0.device)


# --- the ODE -------------------------------------------------------------------------------------


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


# --- the model -----------------------------------------------------------------------------------


class FlowMatching(Trainable):
    """g#N(0, I_d) where g is the time-1 flow map of dx/dt = v_θ(t, x), trained by conditional
    flow matching; exact log-density by the instantaneous change of variables.

    Args:
        dim: data dimension d.
        hidden: the widths of the field's MLP.
        activation: its activation (:data:`pushforward.nets.ACTIVATIONS`).
        coupling: ``independent`` or ``ot`` (:data:`COUPLINGS`).
        sigma: the conditional path's width σ ≥ 0, in standardised units.
        solver: the ODE solver (:data:`SOLVERS`): ``dopri5`` (adaptive) or a fixed-step one.
        steps: equal steps for a fixed-step solver (ignored by ``dopri5``).
        rtol, atol: the adaptive solver's tolerances.
        max_nfe: the most evaluations of the field one solve may take.
        trace: ``auto``, ``exact`` or ``hutchinson`` (:data:`TRACES`), for the likelihood of
            :meth:`log_likelihood_rows` and :meth:`evaluate`; :meth:`log_prob` is always exact.
        image_shape: (h, w) of image data; images are dequantised (see :mod:`pushforward.flow`).

    Declared capabilities: an exact density, an encoder (x ↦ x₀, the ODE backwards), generative,
    a motion in time (:meth:`motion`), trained by :func:`pushforward.train.fit`.
    """

    has_exact_density = True
    has_encoder = True
    generative = True
    has_motion = True
    trained = True
    sampling_options = ("solver", "steps", "rtol", "atol", "max_nfe")
    code_label = "x₀ = g⁻¹(x), the ODE backwards"

    def __init__(
        self,
        dim: int,
        *,
        hidden: Sequence[int] = (256, 256, 256),
        activation: str = "silu",
        coupling: str = "independent",
        sigma: float = 0.0,
        solver: str = "dopri5",
        steps: int = 100,
        rtol: float = 1e-5,
        atol: float = 1e-5,
        max_nfe: int = 10_000,
        trace: str = "auto",
        image_shape: Sequence[int] | None = None,
    ):
        super().__init__()
        cfg = FlowMatchingConfig(
            hidden=list(hidden), activation=activation, coupling=coupling, sigma=sigma,
            solver=solver, steps=steps, rtol=rtol, atol=atol, max_nfe=max_nfe, trace=trace,
        )  # fmt: skip
        self.dim = self.latent = check_int(dim, "dim", minimum=1, maximum=MAX_LATENT)
        self.hidden, self.activation = list(cfg.hidden), cfg.activation
        self.coupling, self.sigma, self.trace = cfg.coupling, cfg.sigma, cfg.trace
        self.solver, self.steps, self.rtol, self.atol = cfg.solver, cfg.steps, cfg.rtol, cfg.atol
        self.max_nfe = cfg.max_nfe
        self.image_shape = tuple(int(s) for s in image_shape) if image_shape is not None else None
        if self.image_shape is not None and math.prod(self.image_shape) != self.dim:
            raise ConfigError(f"image_shape {self.image_shape} does not hold dim = {dim} values")
        self.dequantize = self.image_shape is not None
        self.field = VelocityField(self.dim, self.hidden, activation=self.activation)
        self.register_buffer("data_loc", torch.zeros(self.dim))
        self.register_buffer("data_scale", torch.ones(self.dim))
        self.last_nfe = 0

    def get_config(self) -> dict[str, Any]:
        return {
            "dim": self.dim,
            "hidden": list(self.hidden),
            "activation": self.activation,
            "coupling": self.coupling,
            "sigma": self.sigma,
            "solver": self.solver,
            "steps": self.steps,
            "rtol": self.rtol,
            "atol": self.atol,
            "max_nfe": self.max_nfe,
            "trace": self.trace,
            "image_shape": list(self.image_shape) if self.image_shape else None,
        }

    def set_sampling(self, **options: Any) -> None:
        """Change the solver settings (:attr:`sampling_options`), checked as when fitting."""
        names = {f.name for f in dataclasses.fields(FlowMatchingConfig)}
        current = {k: v for k, v in self.get_config().items() if k in names}
        cfg = FlowMatchingConfig(**{**current, **options}) if options else None
        super().set_sampling(**options)
        if cfg is not None:
            for name in options:
                setattr(self, name, getattr(cfg, name))

    @property
    def latent_measure(self) -> StandardNormal:
        return StandardNormal(self.dim)

    # --- data in the field's units -------------------------------------------------------------

    def _check_data(self, x: object, name: str = "x") -> Tensor:
        return check_pixels_or_rows(x, name, dim=self.dim, pixels=self.dequantize, what="model")

    def prepare(self, x: Tensor) -> None:
        """Record the per-coordinate mean and standard deviation (d,) of the training data x
        (n, d), as the field sees them (dequantised images after the logit, their noise from a
        fixed seed); a coordinate that does not vary keeps scale 1."""
        x = self._check_data(x).detach().to(self.data_loc.dtype)
        if self.dequantize:
            noise = torch.Generator(device=x.device).manual_seed(0)
            x = Logit()(dequantized(x, generator=noise))
        scale = x.std(0) if x.shape[0] > 1 else torch.ones_like(self.data_loc)
        scale = torch.where(scale > 1e-8 * scale.max().clamp_min(1e-30), scale, 1.0)
        with torch.no_grad():
            self.data_loc.copy_(x.mean(0))
            self.data_scale.copy_(scale)

    def _to_field(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """Return the field's units u (n, d) of data y (n, d) (dequantised pixels for images)
        and log |det ∂u/∂y| (n,)."""
        ladj = -self.data_scale.log().sum().expand(y.shape[0])
        if self.dequantize:
            logit = Logit()
            w = logit(y)
            ladj = ladj + logit.log_abs_det_jacobian(y, w)
            y = w
        return (y - self.data_loc) / self.data_scale, ladj

    def _from_field(self, u: Tensor) -> Tensor:
        """Return the data (n, d) of field units u (n, d) (images: dequantised y ∈ (0, 1))."""
        y = u * self.data_scale + self.data_loc
        return Logit().inv(y) if self.dequantize else y

    # --- training ------------------------------------------------------------------------------

    def loss(
        self, x: Tensor, *, generator: torch.Generator | None = None, epoch: float | None = None
    ) -> dict[str, Tensor]:
        """Return {'loss': E‖v(t, x_t) − (x₁ − x₀)‖²/d, 'straightness'} on a batch x (B, d) of
        data rows x₁ (the conditional flow-matching regression, per coordinate, in standardised
        units); x₀, t and the path's noise come from ``generator``."""
        device = generator.device if generator is not None else x.device
        y = dequantized(x, generator=generator) if self.dequantize else x
        x1, _ = self._to_field(y.to(self.data_loc.dtype))
        b = x1.shape[0]
        x0 = torch.randn(x1.shape, generator=generator, device=device).to(x1)
        # t = 1 − (1 − u)³, density ∝ (1 − t)^(−2/3): a third of the batch within 0.04 of t = 1,
        # where the field must contract onto the data's narrowest features
        t = 1 - (1 - torch.rand(b, generator=generator, device=device).to(x1)) ** TIME_POWER
        if self.coupling == "ot":
            x0 = x0[ot_pairing(x0, x1, block=OT_BLOCK)]
        keep = 1 - (1 - self.sigma) * t[:, None]  # (B, 1): x₀'s share of x_t
        xt = t[:, None] * x1 + keep * x0
        target = x1 - (1 - self.sigma) * x0
        loss = (self.field(t, xt) - target).square().mean()
        return {"loss": loss, "path_length": target.detach().square().sum(1).mean()}

    def velocity(self, t: Tensor, u: Tensor) -> Tensor:
        """Return v(t, u) (B, d) in the field's units for t (B,) or a scalar and u (B, d)."""
        return self.field(t, u)

    # --- the ODE -------------------------------------------------------------------------------

    def _solve(self, rhs: Callable, y0: Any, times: Tensor, what: str) -> Any:
        """Integrate dy/dt = rhs(t, y) from y0 over ``times`` (T,) with the model's solver;
        return y at every time (T, …) and set :attr:`last_nfe`."""
        counted = _Counted(rhs, self.max_nfe)
        first = y0[0] if isinstance(y0, tuple) else y0
        if first.shape[0] == 0:  # nothing to carry
            self.last_nfe = 0
            stack = lambda y: y.expand(len(times), *y.shape)  # noqa: E731
            return tuple(map(stack, y0)) if isinstance(y0, tuple) else stack(y0)
        options = {} if self.solver == "dopri5" else {"step_size": 1.0 / self.steps}
        kwargs = {"rtol": self.rtol, "atol": self.atol} if self.solver == "dopri5" else {}
        try:
            out = torchdiffeq.odeint(
                counted, y0, times.to(self.data_loc), method=self.solver, options=options, **kwargs
            )
        except _Budget:
            raise SolverError(
                f"{what}: the ODE solver ({self.solver}) used its budget of {self.max_nfe:,} "
                f"evaluations and stopped at t = {counted.times[-1]:.4g} with a step size of "
                f"about {counted.step():.2g}: the field is stiff there or the tolerances "
                f"(rtol {self.rtol:g}, atol {self.atol:g}) too tight; raise max_nfe, loosen the "
                "tolerances, or use a fixed-step solver (--solver rk4 --steps N)"
            ) from None
        except AssertionError as e:  # torchdiffeq's own checks: dt underflow, non-finite state
            raise SolverError(
                f"{what}: the ODE solver ({self.solver}) failed near t = "
                f"{counted.times[-1] if counted.times else float(times[0]):.4g} with a step "
                f"size of about {counted.step():.2g}: {e}"
            ) from None
        finally:
            self.last_nfe = counted.nfe
        return out

    def _flow(self, u: Tensor, t0: float, t1: float, what: str) -> Tensor:
        """Return the field units u (n, d) carried by the ODE from t0 to t1, in the weights'
        precision (never under autocast), by blocks of :data:`EVAL_BATCH` rows."""
        times = torch.tensor([t0, t1])
        nfe, out = 0, []
        with torch.autocast(u.device.type, enabled=False), torch.no_grad():
            for ub in u.to(self.data_loc.dtype).split(EVAL_BATCH):
                out.append(self._solve(self.velocity, ub, times, what)[-1])
                nfe += self.last_nfe
        self.last_nfe = nfe
        return torch.cat(out) if out else u.new_zeros(0, self.dim)

    def decode(self, z: Tensor) -> Tensor:
        """Return g(z) (n, d), the ODE from t = 0 to 1, for z (n, d) (images: the dequantised
        y ∈ (0, 1), before binning)."""
        z = check_rows(z, "z", dim=self.dim)
        return self._from_field(self._flow(z, 0.0, 1.0, "decode"))

    def encode(self, x: Tensor) -> Tensor:
        """Return x₀ = g⁻¹(x) (n, d), the ODE from t = 1 back to 0, for data x (n, d)."""
        u, _ = self._to_field(self._check_data(x).to(self.data_loc.dtype))
        return self._flow(u, 1.0, 0.0, "encode")

    def _noise(self, n: int, generator: torch.Generator | None) -> Tensor:
        """Return n draws z ~ μ (n, d) from ``generator``, on the model's device."""
        return self.latent_measure.sample(n, generator=generator).to(self.data_loc)

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """Return exactly n draws of g#N(0, I) (n, d) (images: 8-bit pixel values k/255);
        :attr:`last_nfe` says how many evaluations of the field it took."""
        x = self.decode(self._noise(n, generator))
        if self.dequantize:
            x = torch.floor(256 * x).clamp(0, 255) / 255
        return x

    def sampling_cost(self) -> dict[str, Any]:
        """Return {'nfe': field evaluations of the last solve} (sample, decode, encode)."""
        return {"nfe": self.last_nfe}

    def motion(self, n: int, times: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Return particles x_t (T, n, d) in the data's units: n draws of μ carried by the ODE,
        at each of the T increasing ``times`` in [0, 1] (t = 0 is μ pushed through the inverse
        standardisation)."""
        times = torch.as_tensor(times, dtype=torch.float32).flatten()
        ok = times.numel() > 0 and bool(((times >= 0) & (times <= 1)).all())
        if not ok or bool((times.diff() <= 0).any()):
            raise ConfigError(
                f"times = {times.tolist()} are not allowed; use increasing times in [0, 1]"
            )
        z = self._noise(n, generator)
        with torch.autocast(z.device.type, enabled=False), torch.no_grad():
            if times.numel() == 1 and float(times[0]) == 0.0:
                path = z[None]
            else:
                grid = times if float(times[0]) == 0.0 else torch.cat([times.new_zeros(1), times])
                path = self._solve(self.velocity, z, grid, "motion")
                path = path if float(times[0]) == 0.0 else path[1:]
        return torch.stack([self._from_field(p) for p in path])

    # --- the density ---------------------------------------------------------------------------

    @property
    def likelihood_kind(self) -> str:
        """:data:`~pushforward.contract.EXACT_LIKELIHOOD`, or :data:`HUTCHINSON_ESTIMATE` when
        the trace is estimated (``trace``, and d > :data:`EXACT_TRACE_MAX_DIM` under auto)."""
        return HUTCHINSON_ESTIMATE if self._hutchinson() else EXACT_LIKELIHOOD

    def _hutchinson(self) -> bool:
        return self.trace == "hutchinson" or (
            self.trace == "auto" and self.dim > EXACT_TRACE_MAX_DIM
        )

    def _divergence_rhs(self, probe: Tensor | None) -> Callable:
        """Return the augmented field (t, (u, a)) ↦ (v, tr ∂v/∂u) with the exact trace, or its
        Hutchinson estimate εᵀ(∂v/∂u)ε for the fixed probe ε (n, d)."""

        def rhs(t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
            u = state[0]
            with torch.enable_grad():
                u = u.detach().requires_grad_(True)
                v = self.velocity(t, u)
                if probe is not None:
                    (vjp,) = torch.autograd.grad(v, u, probe)
                    div = (vjp * probe).sum(1)
                else:
                    div = torch.zeros_like(v[:, 0])
                    for i in range(self.dim):
                        (g,) = torch.autograd.grad(v[:, i].sum(), u, retain_graph=i < self.dim - 1)
                        div = div + g[:, i]
            return v.detach(), div.detach()

        return rhs

    def _log_density(self, y: Tensor, probe: Tensor | None, t: float = 1.0) -> Tensor:
        """Return log p_t(y) (n,) for rows y (n, d) in the data's units (dequantised pixels for
        images), in float64, with the exact trace or Hutchinson's for ``probe``."""
        u, ladj = self._to_field(y.to(self.data_loc.dtype))
        if t == 0.0:
            a0, u0 = torch.zeros_like(u[None, :, 0]), u[None]
        else:
            times = torch.tensor([t, 0.0])
            with torch.autocast(y.device.type, enabled=False):
                u0, a0 = self._solve(
                    self._divergence_rhs(probe), (u, torch.zeros_like(u[:, 0])), times, "log_prob"
                )
        # a(0) = −∫₀ᵗ tr ∂v/∂u ds, so log p_t(u) = log μ(u₀) + a(0)
        base = -0.5 * (u0[-1].double().square().sum(1) + self.dim * _LOG_2PI)
        return base + a0[-1].double() + ladj.double()

    def _rows(self, x: Tensor, probes: Callable[[Tensor], Tensor | None], t: float = 1.0) -> Tensor:
        out, nfe = [], 0
        for xb in x.split(EVAL_BATCH):
            out.append(self._log_density(xb, probes(xb), t))
            nfe += self.last_nfe
        self.last_nfe = nfe
        lp = torch.cat(out) if out else x.new_zeros(0, dtype=torch.float64)
        bad = ~torch.isfinite(lp)
        if bool(bad.any()):
            if not all(bool(torch.isfinite(p).all()) for p in self.parameters()):
                raise TrainingError("the flow-matching field's weights hold NaN or infinite values")
            row = int(bad.nonzero()[0])
            raise DataError(f"log p(x) is not finite at row {row} of x ({x[row].tolist()[:4]}…)")
        return lp

    def log_prob(self, x: Tensor) -> Tensor:
        """Return the exact log-density log p(x) in nats (n,) for x (n, d): the ODE backwards
        with the exact trace, d backward passes per evaluation (dequantised pixels for
        images)."""
        x = self._check_data(x)
        return self._rows(x, lambda xb: None).to(x.dtype)

    def marginal_log_prob(self, x: Tensor, t: float) -> Tensor:
        """Return log p_t(x) (n,) in nats for x (n, d): the exact density, in the data's units,
        of the particles at time t ∈ [0, 1] (p₀ is μ seen through the standardisation, p₁ the
        model's :meth:`log_prob`); the ODE from t back to 0 with the exact trace."""
        ok = isinstance(t, int | float) and not isinstance(t, bool) and 0 <= t <= 1
        if not ok:
            raise ConfigError(f"t = {t!r} is not allowed; use a time in [0, 1]")
        x = check_rows(x, "x", dim=self.dim)
        return self._rows(x, lambda xb: None, float(t)).to(x.dtype)

    def _probe(self, shape: torch.Size, generator: torch.Generator | None) -> Tensor:
        device = generator.device if generator is not None else torch.device("cpu")
        signs = torch.randint(0, 2, shape, generator=generator, device=device)
        return (2 * signs - 1).to(self.data_loc)

    def log_likelihood_rows(
        self, x: Tensor, *, generator: torch.Generator | None = None, iwae_k: int = 1000
    ) -> Tensor:
        """Return log p(x) (n,) in nats, float64, as :attr:`likelihood_kind` says: exact, or
        Hutchinson's unbiased estimate with a Rademacher probe per row from ``generator``
        (``iwae_k`` is not used)."""
        x = self._check_data(x)
        if not self._hutchinson():
            return self._rows(x, lambda xb: None)
        return self._rows(x, lambda xb: self._probe(xb.shape, generator))

    @torch.no_grad()
    def evaluate(
        self, x: Tensor, *, generator: torch.Generator | None = None, iwae_k: int = 1000
    ) -> dict[str, Any]:
        """Return the mean log-likelihood of the rows of x (n, d) with its standard error over
        rows (it includes the probes' noise when the trace is estimated), bits/dim, the kind of
        likelihood and the field evaluations the solves took.

        Keys: ``log_likelihood``, ``log_likelihood_stderr``, ``nll``, ``bits_per_dim``, ``rows``,
        ``exact``, ``likelihood``, ``likelihood_nfe``. Images are dequantised with
        ``generator``, and the log-likelihood is that of the 8-bit data, log p(y) − d log 256
        (as for the flows).
        """
        x = self._check_data(x)
        y = dequantized(x, generator=generator) if self.dequantize else x
        lp = self.log_likelihood_rows(y, generator=generator)
        if self.dequantize:
            lp = lp - self.dim * math.log(256)
        return {
            **likelihood_summary(lp, dim=self.dim, exact=not self._hutchinson()),
            "likelihood": self.likelihood_kind,
            "likelihood_nfe": self.last_nfe,
        }

    def forward(self, x: Tensor) -> Tensor:
        """Return the flow-matching loss on a batch x (B, d) (for DDP wrappers)."""
        return self.loss(x)["loss"]


# --- settings and the command line's view --------------------------------------------------------

# The benchmarked setting (ring8 and grid25, benchmarks/fidelity.py; BENCHMARKS.md, "Flow
# matching"). What was tried on ring8, seed 0 (high-quality share / mode width / KL(p ‖ q) nats):
#   3×256, 100 epochs of 256 at 2e-3, t uniform, no log-time:   77.5% / 1.23 / 0.37
#   the same with t weighted to 1 (TIME_POWER):                  78.6% / 1.20 / 0.35
#   and the log-time feature (LOG_TIME_EPS):                     85.4% / 1.15 / 0.22
#   the OT coupling instead of independent (no log-time):        78.0% / 1.23 / 0.44
#   x₁-prediction, v = (D − (1 − σ)x)/(1 − (1 − σ)t), σ = 10⁻³:  87.8% / 1.02 / 0.54
#   3×256, 200 epochs of 1024 at 4e-3:                           91.6% / 1.07 / 0.096
#   3×128, 400 epochs of 4096 at 8e-3:                           92.0% / 1.06 / 0.091
#   3×128, 800 epochs of 4096 at 8e-3:                           94.3% / 1.02 / 0.035
# and on grid25: 3×128, 400 epochs: 25.5% / 1.30 / 2.29; 3×256, 400 epochs: 49.2% / 1.17 / 1.55;
# 3×256, 800 epochs of 4096 at 8e-3 (this setting): 88.4% / 0.97 / 0.21. Larger batches and
# longer training help most: the regression's targets x₁ − x₀ are noisy.
RECOMMENDED: dict[str, dict[str, Any]] = {
    "model": {"hidden": [256, 256, 256], "coupling": "independent"},
    "train": {"epochs": 800, "batch_size": 4096, "lr": 8e-3, "lr_schedule": "cosine"},
}


@dataclass
class FlowMatchingConfig(ModelConfig):
    """The settings of ``pushforward fit fm``; :meth:`build` makes the model."""

    hidden: list[int] = setting(
        RECOMMENDED["model"]["hidden"], "widths of the field's MLP, e.g. 256,256,256",
        minimum=1, maximum=MAX_WIDTH,
    )  # fmt: skip
    activation: str = setting("silu", "the field's activation", choices=ACTIVATIONS,
                              what="activation")  # fmt: skip
    coupling: str = setting(
        RECOMMENDED["model"]["coupling"], "pairing of x₀ with x₁: independent or ot",
        choices=COUPLINGS, what="coupling",
    )  # fmt: skip
    sigma: float = setting(
        0.0, "σ, the conditional path's width at t = 1 (standardised units)", minimum=0, below=1
    )
    solver: str = setting(
        "dopri5", "ODE solver: dopri5 (adaptive), rk4, midpoint, euler (fixed steps)",
        choices=SOLVERS, what="ODE solver", sampling=True,
    )  # fmt: skip
    steps: int = setting(
        100, "steps of a fixed-step solver", minimum=1, maximum=1_000_000, sampling=True
    )
    rtol: float = setting(1e-5, "the adaptive solver's relative tolerance", above=0, below=1,
                          sampling=True)  # fmt: skip
    atol: float = setting(1e-5, "the adaptive solver's absolute tolerance", above=0, below=1,
                          sampling=True)  # fmt: skip
    max_nfe: int = setting(
        10_000, "the most field evaluations one ODE solve may take", minimum=1,
        maximum=10_000_000, sampling=True,
    )  # fmt: skip
    trace: str = setting("auto", "the likelihood's trace: auto, exact or hutchinson",
                         choices=TRACES, what="trace")  # fmt: skip

    def build(self, ds: Dataset) -> FlowMatching:
        """Return a FlowMatching model for the data set ``ds`` (dequantised for images)."""
        return FlowMatching(ds.dim, image_shape=ds.image_shape, **self.to_dict())


SPEC = ModelSpec(
    FlowMatching,
    FlowMatchingConfig,
    "flow matching: g is an ODE's flow map, trained by regression; exact density by its trace",
    train_defaults=RECOMMENDED["train"],
)

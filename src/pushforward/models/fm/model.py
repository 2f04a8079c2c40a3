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
  permutation of squared Euclidean cost (an exact assignment, :func:`ot_pairing`): OT-CFM,
  whose straighter paths need fewer solver steps. The exact problem is solved on blocks of
  :data:`OT_BLOCK` rows of each batch, as its cost grows faster than the square of its size.

The regression's target may be averaged over the posterior of x₁ given x_t among ``reference``
rows of the batch, the *stable target* (:func:`stable_target`; Xu et al., 2023): the same
minimiser, far less noise where paths from several modes cross. The field also reads Fourier
features sin/cos(2ᵏx) of its input (``frequencies``, :class:`VelocityField`), which let a small
MLP draw the sharp basins of narrow modes. Both are on by default on points and off on images
(:data:`RECOMMENDED`, :data:`RECOMMENDED_IMAGES`). Square images may take a small time-conditioned
U-Net instead of the MLP (``net="unet"``, :class:`UNetField`). With the OT coupling,
:func:`~pushforward.train.fit` pairs the next batches in a second process while the current step
trains (:meth:`FlowMatching.prepare_batch`, :mod:`pushforward.prefetch`).

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torchdiffeq
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from pushforward.core import (
    EXACT_LIKELIHOOD,
    ConfigError,
    DataError,
    ModelConfig,
    ModelSpec,
    ResultKey,
    SolverError,
    TrainingError,
    check_int,
    check_rows,
    setting,
)
from pushforward.data import Dataset
from pushforward.measures import StandardNormal
from pushforward.models.flow import Logit, check_pixels_or_rows, dequantized, likelihood_summary
from pushforward.nets import ACTIVATIONS, MAX_LATENT, MAX_WIDTH, MLP, square_side
from pushforward.train import Trainable

__all__ = [
    "COUPLINGS",
    "EXACT_TRACE_MAX_DIM",
    "FIELD_NETS",
    "HUTCHINSON_ESTIMATE",
    "OT_BLOCK",
    "RECOMMENDED",
    "RECOMMENDED_IMAGES",
    "SOLVERS",
    "TRACES",
    "FlowMatching",
    "FlowMatchingConfig",
    "UNetField",
    "VelocityField",
    "ot_pairing",
    "stable_target",
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

TIME_POWER = 2
"""Training draws t = 1 − (1 − u)^TIME_POWER, u ~ U[0, 1]: any density of t with full support has
the same minimiser, the marginal field, and this one (density ∝ (1 − t)^(−1/2)) spends a fifth of
each batch within 0.04 of t = 1. A power of 3 first raised the high-quality share on ring8 (seed
0, 100 epochs of an early field without Fourier features) from 72% to 85% beside the log-time
feature; with the features and the stable target (2,400 steps of 2,048), 2 lowered KL(p ‖ q)
from 0.040 to 0.033 nats on ring8 and from 0.036 to 0.031 on grid25 over 10 seeds, where 4 raised
it on ring8 (seeds 0 and 2; BENCHMARKS.md, "Flow matching")."""

OT_BLOCK = 32
"""Rows per exact optimal-transport problem in training's ``ot`` coupling: a batch of 256 is
paired as eight blocks of 32. At the points' defaults (seed 0, KL on 5,000 draws) blocks of 32
and 64 gave the same KL (ring8 0.044 and 0.049 ± 0.004 nats, grid25 0.044 and 0.041), both
below the independent coupling's (0.058, 0.056), and 32 costs under half as much to solve (see
BENCHMARKS.md, "Flow matching", for the cost per step)."""

LOG_TIME_EPS = 1e-4
"""δ of the log-time feature τ = log((1 − t + δ)/(1 + δ)) / log(δ/(1 + δ)), from 0 at t = 0 to 1
at t = 1, which spreads the last moments (1 − t from 10⁻¹ to 10⁻⁴) over half its range: narrow
modes are formed there, by a field whose contraction rate peaks when 1 − t is about their width.
On ring8 (seed 0, 100 epochs) it lowered KL(p ‖ q) from 0.35 to 0.22 nats and raised the
high-quality share from 79% to 85%."""

MAX_FREQUENCIES = 16
"""The most Fourier features per coordinate (2¹⁵ is past float32's resolution of sin)."""

MAX_REFERENCE = 4096
"""The largest stable-target reference set: its cost per step is B × R, and each block holds a few
R × R tensors (64 MiB each at 4,096)."""

FIELD_NETS: dict[str, str] = {
    "mlp": "a time-conditioned MLP on x and its Fourier features (VelocityField)",
    "unet": "a small time-conditioned U-Net for square images (UNetField)",
}

UNET_CHANNELS = (32, 64)
"""The U-Net's default channels per level (:class:`UNetField`)."""

EVAL_BATCH = 4096
"""Rows per ODE solve in :meth:`FlowMatching.log_prob` and :meth:`FlowMatching.sample`."""

_LOG_2PI = math.log(2 * math.pi)


# --- the field -----------------------------------------------------------------------------------


class VelocityField(nn.Module):
    """A time-conditioned MLP v(t, x): (B,) or scalar t and x (B, d) → (B, d).

    The input is x, its Fourier features sin(2ᵏx) and cos(2ᵏx) for k = 0 … F − 1 per coordinate
    (``frequencies`` F, in standardised units; none when F = 0), and the time embedding [s,
    sin(πfs), cos(πfs)] for f = 1 … :data:`TIME_FREQUENCIES`, for s = t and s = τ(t), the
    log-time (:data:`LOG_TIME_EPS`). The last layer starts at zero, so the untrained field is 0
    (the identity flow).

    The Fourier features let a small MLP draw the sharp basins that narrow modes need near t = 1
    (Tancik et al., 2020): on grid25 (seed 0, 800 steps of 4,096) they raised the high-quality
    share from 23% to 96% and lowered KL(p ‖ q) from 2.5 to 0.08 nats (BENCHMARKS.md).
    """

    def __init__(
        self, dim: int, hidden: Sequence[int], *, activation: str = "silu", frequencies: int = 0
    ):
        super().__init__()
        self.register_buffer(
            "frequencies", math.pi * torch.arange(1, TIME_FREQUENCIES + 1, dtype=torch.float32)
        )
        # derived from the setting, so not part of the weights a checkpoint holds
        self.register_buffer(
            "x_frequencies", 2.0 ** torch.arange(frequencies, dtype=torch.float32), persistent=False
        )
        width = dim * (1 + 2 * frequencies) + 2 + 4 * TIME_FREQUENCIES
        self.net = MLP(width, list(hidden), dim, activation=activation)
        last = self.net.linears[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        """Return v(t, x) (B, d) for t (B,) or a scalar and x (B, d)."""
        t = t.to(x.dtype).expand(x.shape[0]) if t.dim() == 0 else t.to(x.dtype)
        feats = [x]
        if self.x_frequencies.numel():
            kx = (x[:, :, None] * self.x_frequencies.to(x.dtype)).flatten(1)  # (B, d·F)
            feats += [kx.sin(), kx.cos()]
        feats.append(_time_features(t, self.frequencies))
        return self.net(torch.cat(feats, dim=1))


def _time_features(t: Tensor, frequencies: Tensor) -> Tensor:
    """Return the time embedding (B, 2 + 4F) of t (B,): [s, sin(πfs), cos(πfs)] for s = t and for
    the log-time τ(t) (:data:`LOG_TIME_EPS`), f the F ``frequencies``."""
    eps = LOG_TIME_EPS
    tau = torch.log1p(-t.clamp(max=1) / (1 + eps)) / math.log(eps / (1 + eps))  # (B,)
    feats = []
    for s in (t, tau):
        fs = s[:, None] * frequencies.to(t.dtype)  # (B, F)
        feats += [s[:, None], fs.sin(), fs.cos()]
    return torch.cat(feats, dim=1)


def _groups(channels: int) -> int:
    """GroupNorm's groups for ``channels``: 8, or the largest power of 2 below it that divides."""
    return next(g for g in (8, 4, 2, 1) if channels % g == 0)


class _ResBlock(nn.Module):
    """GroupNorm → SiLU → 3×3 conv, plus the time embedding per channel, twice; a residual path
    (1×1 conv when the channel count changes). (B, c_in, h, w), (B, e) → (B, c_out, h, w)."""

    def __init__(self, c_in: int, c_out: int, embedding: int):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(_groups(c_in), c_in), nn.Conv2d(c_in, c_out, 3, 1, 1)
        self.time = nn.Linear(embedding, c_out)
        self.norm2 = nn.GroupNorm(_groups(c_out), c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(nn.functional.silu(self.norm1(x)))
        h = h + self.time(emb)[:, :, None, None]
        h = self.conv2(nn.functional.silu(self.norm2(h)))
        return h + self.skip(x)


class UNetField(nn.Module):
    """A small time-conditioned U-Net v(t, x) for square grey images of side s: (B,) or scalar t
    and x (B, s·s) → (B, s·s), in the field's units.

    One residual block per level at side s, s/2, … (``channels`` per level, e.g. (32, 64)), a
    stride-2 3×3 convolution between levels, one block at the bottom, and on the way up a
    nearest-neighbour upsampling and one block on the level's skip connection concatenated
    (Ho et al., 2020, without attention). The time embedding of :class:`VelocityField` goes
    through a two-layer MLP and is added per channel in every block. The last convolution starts
    at zero, so the untrained field is 0 (the identity flow).
    """

    def __init__(self, side: int, channels: Sequence[int] = (32, 64)):
        super().__init__()
        channels = [int(c) for c in channels]
        self.side = side
        self.register_buffer(  # derived, so not part of the weights a checkpoint holds
            "frequencies",
            math.pi * torch.arange(1, TIME_FREQUENCIES + 1, dtype=torch.float32),
            persistent=False,
        )
        emb = 4 * channels[0]
        self.embed = nn.Sequential(
            nn.Linear(2 + 4 * TIME_FREQUENCIES, emb), nn.SiLU(), nn.Linear(emb, emb)
        )
        self.inp = nn.Conv2d(1, channels[0], 3, 1, 1)
        self.down = nn.ModuleList()
        self.pool = nn.ModuleList()
        c = channels[0]
        for i, ci in enumerate(channels):
            self.down.append(_ResBlock(c, ci, emb))
            c = ci
            if i < len(channels) - 1:
                self.pool.append(nn.Conv2d(c, c, 3, 2, 1))
        self.middle = _ResBlock(c, c, emb)
        self.up = nn.ModuleList()
        for ci in reversed(channels):
            self.up.append(_ResBlock(c + ci, ci, emb))
            c = ci
        self.out = nn.Sequential(nn.GroupNorm(_groups(c), c), nn.SiLU(), nn.Conv2d(c, 1, 3, 1, 1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        """Return v(t, x) (B, s·s) for t (B,) or a scalar and x (B, s·s)."""
        t = t.to(x.dtype).expand(x.shape[0]) if t.dim() == 0 else t.to(x.dtype)
        emb = self.embed(_time_features(t, self.frequencies))  # (B, e)
        h = self.inp(x.reshape(-1, 1, self.side, self.side))
        skips = []
        for i, block in enumerate(self.down):
            h = block(h, emb)
            skips.append(h)
            if i < len(self.pool):
                h = self.pool[i](h)
        h = self.middle(h, emb)
        for block in self.up:
            skip = skips.pop()
            if h.shape[-1] != skip.shape[-1]:
                h = nn.functional.interpolate(h, size=skip.shape[-2:], mode="nearest")
            h = block(torch.cat([h, skip], dim=1), emb)
        return self.out(h).flatten(1)


# --- the coupling --------------------------------------------------------------------------------


def ot_pairing(x0: Tensor, x1: Tensor, *, block: int | None = None) -> Tensor:
    """Return the permutation π (B,) that minimises Σ_i ‖x0[π_i] − x1_i‖², exactly; with
    ``block``, exactly within each run of ``block`` consecutive rows (the last run shorter).

    The optimal transport plan between two sets of equally many, equally weighted points is a
    permutation matrix (a vertex of the Birkhoff polytope), so the transport problem is the
    linear assignment problem, solved exactly by SciPy's shortest-augmenting-path solver
    (``scipy.optimize.linear_sum_assignment``; Crouse, 2016), which releases the GIL. It returns
    a plan of the same cost as POT's network simplex (``ot.emd``; the same plan unless there are
    ties), 4× faster on blocks of 64 rows (BENCHMARKS.md, "Flow matching"). Its cost grows
    faster than B², so training solves blocks of :data:`OT_BLOCK` rows. Shapes: x0, x1 (B, d).
    """
    if x0.shape != x1.shape or x0.dim() != 2:
        raise ConfigError(f"ot_pairing needs two (B, d) batches, got {tuple(x0.shape)} and "
                          f"{tuple(x1.shape)}")  # fmt: skip
    n = x0.shape[0]
    step = max(n, 1) if block is None else check_int(block, "block", minimum=1)
    a = x0.detach().to("cpu", torch.float64)
    b = x1.detach().to("cpu", torch.float64)
    perm = np.arange(n)
    full = n - n % step
    # cost[k, i, j] = ‖x1_i − x0_j‖² within block k, from the differences (not the Gram matrix:
    # no cancellation), for every full block at once; the last, shorter block on its own
    exact = "donot_use_mm_for_euclid_dist"
    d = x0.shape[1]
    costs = [torch.cdist(b[:full].view(-1, step, d), a[:full].view(-1, step, d),
                         compute_mode=exact).square().numpy()]  # fmt: skip
    if full < n:
        last = torch.cdist(b[None, full:], a[None, full:], compute_mode=exact)
        costs.append(last.square().numpy())
    i = 0
    for cost in (c for group in costs for c in group):
        rows, cols = linear_sum_assignment(cost)
        perm[i + rows] = i + cols
        i += len(cost)
    return torch.from_numpy(perm).to(x0.device)


def stable_target(x1: Tensor, x0: Tensor, t: Tensor, sigma: float, reference: int) -> Tensor:
    """Return the stable target (B, d) of the flow-matching regression (Xu et al., 2023): for
    row i, the conditional target u_t(x_t | x₁) averaged over the posterior of x₁ given x_t among
    the rows of its reference set (the runs of ``reference`` consecutive rows of the batch,
    itself included),

        ũ_i = Σ_j w_ij (x₁ⱼ − (1 − σ)·x_t,i) / s_t,i,   w_ij ∝ N(x_t,i; t_i·x₁ⱼ, s_t,i² I),

    with s_t = 1 − (1 − σ)t and x_t = t·x₁ + s_t·x₀. Its regression has the same minimiser as the
    conditional one, the marginal field, up to the reference set's finite size, with far less
    noise where the paths of several data points cross. Computed as the conditional target plus
    Σ_{j≠i} w_ij (x₁ⱼ − x₁ᵢ)/s_t,i, so that it equals the conditional target exactly where the
    posterior is the row itself (t near 1). The log-weights, up to a term constant in j,
    (t_i/s_i²)·x_t,i·x₁ⱼ − (t_i²/2s_i²)·‖x₁ⱼ‖², are one (R, d + 1) × (d + 1, R) product per
    reference set, in float64 (the expanded square cancels), shifted by their row maximum before
    the exponential in the data's precision. Shapes: x1, x0 (B, d); t (B,). No gradient.
    """
    with torch.no_grad(), torch.autocast(x1.device.type, enabled=False):
        s = 1 - (1 - sigma) * t  # (B,)
        target = x1 - (1 - sigma) * x0  # the conditional target
        # below this width the posterior is the row itself to float precision
        live = s > 1e-6
        width = s.clamp_min(1e-6)  # (B,): s, kept off 0 where the row is not live
        f1, ft, fs = x1.double(), t.double(), width.double()
        xt = ft[:, None] * f1 + fs[:, None] * x0.double()  # (B, d)
        c = ft / fs.square()  # (B,)
        left = torch.cat([xt * c[:, None], (-0.5 * ft * c)[:, None]], dim=1)  # (B, d + 1)
        right = torch.cat([f1, f1.square().sum(1, keepdim=True)], dim=1)  # (B, d + 1)
        for i in range(0, x1.shape[0], reference):
            rows = slice(i, i + reference)
            logits = left[rows] @ right[rows].T  # (R, R)
            logits -= logits.amax(1, keepdim=True)
            w = torch.softmax(logits.to(x1.dtype), dim=1)
            w.diagonal().zero_()  # Σ_{j≠i}: the row's own term adds nothing
            b1 = x1[rows]
            shift = (w @ b1 - w.sum(1, keepdim=True) * b1) / width[rows, None]
            target[rows] += shift * live[rows, None]
    return target


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
        net: the field's network: ``mlp`` (:class:`VelocityField`) or ``unet``
            (:class:`UNetField`, square images only).
        hidden: the widths of the field's MLP, or the U-Net's channels per level (None: by the
            kind of data, :data:`RECOMMENDED` on points, :data:`RECOMMENDED_IMAGES` on images,
            :data:`UNET_CHANNELS` for a U-Net).
        activation: its activation (:data:`pushforward.nets.ACTIVATIONS`).
        coupling: ``independent`` or ``ot`` (:data:`COUPLINGS`).
        sigma: the conditional path's width σ ≥ 0, in standardised units.
        frequencies: F, the Fourier features sin/cos(2ᵏx), k < F, of the field's input
            (:class:`VelocityField`; None: by the kind of data).
        reference: rows of each stable target's reference set (:func:`stable_target`); 0 or 1:
            the conditional target x₁ − (1 − σ)x₀ (None: by the kind of data).
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

    evaluate_keys: ClassVar[dict[str, ResultKey]] = {
        "solver": ResultKey("ODE solver", "", "flow matching: the solver used to sample"),
        "steps": ResultKey("solver steps", ",", "flow matching: steps of a fixed-step solver"),
        "rtol": ResultKey("solver rtol", ".0e", "flow matching: the adaptive solver's rtol"),
        "atol": ResultKey("solver atol", ".0e", "flow matching: the adaptive solver's atol"),
        "max_nfe": ResultKey("solver budget", ",", "flow matching: most field evaluations a solve"),
        "likelihood": ResultKey(
            "likelihood is", "", "exact, or an unbiased estimate (Hutchinson's trace)"
        ),
        "likelihood_nfe": ResultKey(
            "likelihood evaluations",
            ",",
            "flow matching: field evaluations of the likelihood's ODE",
        ),
        "sampling_nfe": ResultKey(
            "sampling evaluations",
            ",",
            "flow matching: field evaluations of the last sampling solve",
        ),
    }
    """The keys of :meth:`evaluate` that only this model gives."""

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
        net: str = "mlp",
        hidden: Sequence[int] | None = None,
        activation: str = "silu",
        coupling: str = "independent",
        sigma: float = 0.0,
        frequencies: int | None = None,
        reference: int | None = None,
        solver: str = "dopri5",
        steps: int = 100,
        rtol: float = 1e-5,
        atol: float = 1e-5,
        max_nfe: int = 10_000,
        trace: str = "auto",
        image_shape: Sequence[int] | None = None,
    ):
        super().__init__()
        kind = "images" if image_shape is not None else "points"
        cfg = FlowMatchingConfig(
            net=net, hidden=None if hidden is None else list(hidden), activation=activation,
            coupling=coupling, sigma=sigma, frequencies=frequencies, reference=reference,
            solver=solver, steps=steps, rtol=rtol, atol=atol, max_nfe=max_nfe, trace=trace,
        ).resolve(kind)  # fmt: skip
        self.dim = self.latent = check_int(dim, "dim", minimum=1, maximum=MAX_LATENT)
        self.net, self.hidden, self.activation = cfg.net, list(cfg.hidden), cfg.activation
        self.coupling, self.sigma, self.trace = cfg.coupling, cfg.sigma, cfg.trace
        self.frequencies, self.reference = cfg.frequencies, cfg.reference
        self.solver, self.steps, self.rtol, self.atol = cfg.solver, cfg.steps, cfg.rtol, cfg.atol
        self.max_nfe = cfg.max_nfe
        self.image_shape = tuple(int(s) for s in image_shape) if image_shape is not None else None
        if self.image_shape is not None and math.prod(self.image_shape) != self.dim:
            raise ConfigError(f"image_shape {self.image_shape} does not hold dim = {dim} values")
        self.dequantize = self.image_shape is not None
        if self.net == "unet":
            self.field: nn.Module = UNetField(square_side(self.image_shape, self.dim), self.hidden)
        else:
            self.field = VelocityField(
                self.dim, self.hidden, activation=self.activation, frequencies=self.frequencies
            )
        self.register_buffer("data_loc", torch.zeros(self.dim))
        self.register_buffer("data_scale", torch.ones(self.dim))
        self.last_nfe = 0

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> FlowMatching:
        """Rebuild from :meth:`get_config`; a run stored before the field's network, Fourier
        features and stable target were settings loads as it was built: an MLP with neither."""
        old = FlowMatchingConfig.stored_defaults()
        return super().from_config({**{k: v for k, v in old.items() if k not in config}, **config})

    def get_config(self) -> dict[str, Any]:
        return {
            "dim": self.dim,
            "net": self.net,
            "hidden": list(self.hidden),
            "activation": self.activation,
            "coupling": self.coupling,
            "sigma": self.sigma,
            "frequencies": self.frequencies,
            "reference": self.reference,
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

    @property
    def prepares_batches(self) -> bool:
        """True with the OT coupling or the stable target: :meth:`prepare_batch` then does the
        weight-free part of a step (the draws, the pairing or the target), and
        :func:`~pushforward.train.fit` runs it for the next batches while the current one trains
        (:mod:`pushforward.prefetch`), on one intra-op thread fewer. The default runs on 2
        cores: 53 s, against 58–60 s in line on 2 threads, and 65 s with the target prepared
        beside a step that kept both threads (BENCHMARKS.md, "Flow matching")."""
        return self.coupling == "ot" or self.reference > 1

    def _draws(self, x: Tensor, generator: torch.Generator | None) -> tuple[Tensor, ...]:
        """Return the weight-free half of a step on the data rows x (B, d): x₁ (B, d) in the
        field's units (dequantised images), x₀ (B, d) paired with them by the coupling, t (B,)
        and the regression's target u (B, d), all drawn from ``generator``."""
        device = generator.device if generator is not None else x.device
        with torch.no_grad():
            y = dequantized(x, generator=generator) if self.dequantize else x
            x1, _ = self._to_field(y.to(self.data_loc.dtype))
            x0 = torch.randn(x1.shape, generator=generator, device=device).to(x1)
            if self.coupling == "ot":
                x0 = x0[ot_pairing(x0, x1, block=OT_BLOCK)]
            # t = 1 − (1 − u)², density ∝ (1 − t)^(−1/2): a fifth of the batch within 0.04 of
            # t = 1, where the field must contract onto the data's narrowest features
            u = torch.rand(x1.shape[0], generator=generator, device=device).to(x1)
            t = 1 - (1 - u) ** TIME_POWER
            if self.reference > 1:
                target = stable_target(x1, x0, t, self.sigma, self.reference)
            else:
                target = x1 - (1 - self.sigma) * x0
        return x1, x0, t, target

    def prepare_batch(self, x: Tensor, *, generator: torch.Generator) -> tuple[Tensor, ...]:
        """Return x₁, x₀, t and the target of a step on the data rows x (B, d) (see
        :meth:`loss`), drawn from ``generator`` (a CPU generator): the OT pairing is computed
        here, so that :func:`~pushforward.train.fit` can overlap it with the previous step. The
        weights are not read."""
        return self._draws(x, generator)

    def loss(
        self,
        x: Tensor,
        *,
        generator: torch.Generator | None = None,
        epoch: float | None = None,
        prepared: tuple[Tensor, ...] | None = None,
    ) -> dict[str, Tensor]:
        """Return {'loss': E‖v(t, x_t) − u‖²/d, 'path_length'} on a batch x (B, d) of data rows
        x₁ (the flow-matching regression, per coordinate, in standardised units; u is the
        conditional target x₁ − (1 − σ)x₀ or the stable target, :func:`stable_target`). x₀ (paired
        by the coupling), t, the target and images' dequantisation come from ``prepared``
        (:meth:`prepare_batch`) when given, else from ``generator``."""
        x1, x0, t, target = prepared if prepared is not None else self._draws(x, generator)
        keep = 1 - (1 - self.sigma) * t[:, None]  # (B, 1): x₀'s share of x_t
        xt = t[:, None] * x1 + keep * x0
        loss = (self.field(t, xt) - target).square().mean()
        # the pairing's path length ‖x₁ − (1 − σ)x₀‖², whichever target is regressed on
        length = (x1 - (1 - self.sigma) * x0).square().sum(1).mean()
        return {"loss": loss, "path_length": length}

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
#   3×128, 800 epochs of 4096 at 8e-3:                           94.3% / 1.02 / 0.035
# and on grid25: 3×256, 800 epochs of 4096 at 8e-3: 88.4% / 0.97 / 0.21. Then, in 2,400 steps of
# 4,096 at 8e-3 (800 epochs; ring8 / grid25), the Fourier features of x (frequencies = 6) and the
# stable target (reference):
#   3×256, 800 steps, no features:                    — / 22.8% / 1.36 / 2.48 (grid25)
#   3×256, 800 steps, frequencies 6:                  94.6% / 0.91 / 0.12   96.0% / 0.95 / 0.077
#   3×128, frequencies 6:                             97.3% / 0.94 / 0.054  98.0% / 0.98 / 0.043
#   3×128, frequencies 6, reference 512:              97.5% / 0.98 / 0.030  98.2% / 0.99 / 0.020
#   3×128, frequencies 6, reference 256 (this):       97.7% / 0.97 / 0.030  98.2% / 0.98 / 0.027
#   3×128, frequencies 6, 3,600 steps, no reference:  98.0% / 0.97 / 0.032  (the same CPU time)
#   3×128, frequencies 6, reference 512, 3,600 steps of 2,048: 97.7% / 0.97 / 0.023  98.4% / 0.99 /
#   0.021. The reference of 256 costs 30% more a step at 4,096 rows.
# Then the same 2,400 steps on batches of 2,048 (480 epochs; this), at 57% of the CPU time, 10
# seeds with t = 1 − (1 − u)³: KL(p ‖ q) 0.040 against 0.037 on ring8 and 0.036 against 0.033 on
# grid25, the high-quality share unchanged; the reference of 512 at 2,048 rows cost 40% more a step
# and did not do better (seed 0). With t = 1 − (1 − u)² (TIME_POWER, this): 0.033 and 0.031.
# Then more, smaller steps in the same time (seed 0, 20,000 samples; high-quality share / width /
# KL on 5,000 draws; CPU seconds on one thread): ring8 97.7% / 0.98 / 0.036 (67 s) with 2,400 of
# 2,048; 98.4% / 0.99 / 0.023 (62 s) with 4,800 of 1,024; 98.6% / 1.01 / 0.019 (61 s) with 7,200
# of 512 (this; grid25 98.7% / 1.00 / 0.021, against 98.2% / 0.99 / 0.025); 99.0% / 0.99 /
# 0.016 (80 s) with 9,600 of 512. A reference of 128 rows saved 3% and raised KL (0.022, 0.027).
# BENCHMARKS.md has the 10-seed tables.
RECOMMENDED: dict[str, dict[str, Any]] = {
    "model": {"hidden": [128, 128, 128], "coupling": "independent", "frequencies": 6,
              "reference": 256},
    "train": {"epochs": 360, "batch_size": 512, "lr": 8e-3, "lr_schedule": "cosine"},
}  # fmt: skip

# Images (benchmarks/flow_mnist.py, BENCHMARKS.md "Flow matching", MNIST): an MLP field on the
# 784 logits; neither Fourier features (12 more inputs per pixel) nor the stable target (whose
# posterior in 784 dimensions is the row itself) would do anything but cost.
RECOMMENDED_IMAGES: dict[str, dict[str, Any]] = {
    "model": {"hidden": [1024, 1024, 1024], "frequencies": 0, "reference": 0},
    "train": {"epochs": 12, "batch_size": 128, "lr": 1e-3, "lr_schedule": "cosine"},
}


@dataclass
class FlowMatchingConfig(ModelConfig):
    """The settings of ``pushforward fit fm``; :meth:`build` makes the model. Left unset, the
    settings that depend on the kind of data take :data:`RECOMMENDED` on points and
    :data:`RECOMMENDED_IMAGES` on images."""

    net: str = setting(
        "mlp", "the field: mlp, or unet (square images)", choices=FIELD_NETS, what="field network"
    )
    hidden: list[int] | None = setting(
        None, "widths of the field's MLP (default 128,128,128 on points, 1024,1024,1024 on "
        "images), or the U-Net's channels per level (default "
        + ",".join(map(str, UNET_CHANNELS)) + ")", minimum=1, maximum=MAX_WIDTH,
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
    frequencies: int | None = setting(
        None, "Fourier features sin/cos(2ᵏx), k < F, of the field's input (default 6 on points, "
        "0 on images)", minimum=0, maximum=MAX_FREQUENCIES,
    )  # fmt: skip
    reference: int | None = setting(
        None, "rows of the stable target's reference set (0 = the conditional target x₁ − x₀; "
        "default 256 on points, 0 on images)", minimum=0, maximum=MAX_REFERENCE,
    )  # fmt: skip
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

    @classmethod
    def stored_defaults(cls) -> dict[str, Any]:
        """A run stored before these settings existed was built with an MLP and neither lever."""
        return {"net": "mlp", "frequencies": 0, "reference": 0}

    def check(self) -> None:
        if self.net == "unet" and self.frequencies:
            raise ConfigError(
                f"frequencies = {self.frequencies} is an input of the MLP field; use frequencies "
                "= 0 with net = unet"
            )
        if self.coupling == "ot" and self.reference is not None and self.reference > 1:
            raise ConfigError(
                f"reference = {self.reference} needs coupling = independent: the stable target "
                "is the posterior of x₁ under independent pairs; use reference = 0 with the OT "
                "coupling"
            )

    def kind_defaults(self, kind: str) -> dict[str, Any]:
        """Return the field's widths, Fourier features and stable target's reference size for
        data of ``kind`` (no stable target with the OT coupling, see :meth:`check`)."""
        rec = RECOMMENDED_IMAGES["model"] if kind == "images" else RECOMMENDED["model"]
        out = {k: rec[k] for k in ("hidden", "frequencies", "reference")}
        if self.net == "unet":
            out = {**out, "hidden": list(UNET_CHANNELS), "frequencies": 0}
        return {**out, "reference": 0} if self.coupling == "ot" else out

    def build(self, ds: Dataset) -> FlowMatching:
        """Return a FlowMatching model for the data set ``ds`` (dequantised for images)."""
        return FlowMatching(ds.dim, image_shape=ds.image_shape, **self.to_dict())


SPEC = ModelSpec(
    FlowMatching,
    FlowMatchingConfig,
    "flow matching: g is an ODE's flow map, trained by regression; exact density by its trace",
    train_defaults=RECOMMENDED["train"],
    kind_train_defaults={"images": RECOMMENDED_IMAGES["train"]},
)

"""Normalizing flows: a learned pushforward g#μ whose density is exact.

A flow is a bijection g: ℝ^d → ℝ^d, differentiable both ways, pushing μ = N(0, I_d) forward. Its
density is the change of variables walked back from the data,

    log p(x) = log μ(g⁻¹(x)) + log |det ∂g⁻¹/∂x|,

and it is trained by maximum likelihood: the loss is −(1/B) Σ_i log p(x_i), in nats. The map
g⁻¹ (data → latent, :meth:`Flow.encode`) is a stack of ``layers`` invertible layers, each
triangular, so that its log-determinant is a sum of d numbers. The layers come from zuko (each
is a ``torch.distributions.Transform``), by name (:data:`TRANSFORMS`):

* ``nsf``: monotone rational-quadratic splines with ``bins`` bins, in coupling layers: half the
  coordinates pass unchanged and set the splines of the other half, the halves alternating from
  layer to layer (Durkan et al., 2019, "Neural Spline Flows"; zuko's NSF with ``passes=2``);
* ``nsf-ar``: the same splines, fully autoregressive: coordinate i's spline depends on
  coordinates < i (a masked network, MADE); sampling then inverts coordinate by coordinate;
* ``realnvp``: affine coupling layers, x_b ↦ exp(a(x_a))·x_b + b(x_a) (Dinh et al., 2017);
* ``maf``: affine autoregressive layers (Papamakarios et al., 2017, "Masked Autoregressive Flow").

Before the layers, two fixed maps whose log-Jacobians are counted, so that the density is in the
data's own units:

* standardisation (``standardize``, on by default for points): x ↦ (x − m)/s with the data's
  per-coordinate mean m and s its standard deviation over :data:`SPREAD` (3), recorded by
  :meth:`Flow.prepare` in buffers; log-Jacobian −Σ_j log s_j. zuko's splines act on [−5, 5] (the
  identity outside): at unit spread the data would fill a third of their bins, at 3 the ±1.6
  standard deviations of ring8 and grid25 reach ±4.2 and every bin can serve (measured, on
  seed 0 of the benchmark: ring8 KL(p ‖ q) 0.039 → 0.026 nats and high quality 95.4% → 97.2%,
  grid25 0.036 → 0.027 and 96.6% → 97.9%). It is off by default for images: their logits are
  already bounded (|w| ≤ 2.94), and standardising makes a rarely lit pixel an outlier of a
  hundred standard deviations (an affine MAF on MNIST diverged to 10¹⁵ bits/dim so); when
  asked for, dequantised pixels are standardised after the logit, to unit spread;
* dequantisation (``dequantize``, on by default for images): pixels x ∈ [0, 1] holding the 8-bit
  values k/255 are spread over their bins, y = (255·x + u)/256 with u ~ U[0, 1)^d, and sent to
  ℝ^d by RealNVP's logit, w = logit(α + (1 − 2α)·y) with α = 0.05. The flow models y; a density
  of y gives the discrete data the probability P(x) = ∫_bin p(y) dy ≥ 256^(−d)·exp E_u log p(y)
  (Jensen), so bits/dim = (−E_u log p(y)/d + log 256)/log 2, the standard convention (Theis et
  al., 2016), an upper bound on the discrete model's bits/dim.

Sampling draws z ~ N(0, I) from the caller's ``torch.Generator`` (zuko's own sampling uses the
global RNG) and returns g(z); for dequantised images the sample is the pixel bin of y,
⌊256·y⌋/255 ∈ [0, 1].

Recommended settings (the ring8/grid25 benchmark, ``benchmarks/fidelity.py``): :data:`RECOMMENDED`.
"""

from __future__ import annotations

import functools
import itertools
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import zuko
from torch import Tensor
from torch.distributions import AffineTransform, Distribution, Transform, constraints

from pushforward.core import (
    ConfigError,
    DataError,
    ModelConfig,
    ModelSpec,
    TrainingError,
    check_rows,
    lookup,
)
from pushforward.data import Dataset
from pushforward.measures import Pushforward, StandardNormal
from pushforward.nets import MAX_LATENT, MAX_WIDTH
from pushforward.train import Trainable

__all__ = [
    "AFFINE_SLOPE",
    "LOGIT_ALPHA",
    "MAX_BINS",
    "MAX_LAYERS",
    "REACH",
    "RECOMMENDED",
    "SPLINE_SLOPE",
    "SPREAD",
    "TRANSFORMS",
    "Flow",
    "FlowConfig",
    "FlowTransform",
    "Logit",
    "check_pixels_or_rows",
    "dequantized",
    "likelihood_summary",
]

LOGIT_ALPHA = 0.05
"""α of the logit pre-processing of dequantised pixels, w = logit(α + (1 − 2α)y) (RealNVP)."""

MAX_LAYERS = 256
"""The most flow layers; more is a typo."""

MAX_BINS = 1024
"""The most spline bins; each costs three outputs of the conditioner per coordinate."""

SPLINE_SLOPE = 1e-5
"""The splines' default smallest slope (zuko's ``slope``, whose own default is 1e-3): each spline's
knot derivatives and bin-size ratios are held within [slope, 1/slope]. Sharp modes need steep
maps between them: on ring8 (3 layers of 32 bins, 60 epochs) 1e-5 lowered KL(p ‖ q) from 0.056
to 0.039 nats and raised the high-quality share from 94.4% to 95.4%; on grid25 from 0.060 to
0.036 nats and from 94.8% to 96.6%."""

SPREAD = 3.0
"""The standard deviation of standardised (non-image) data in the layers' units (see the module
docstring)."""

REACH = 4.5
"""How far from the mean, in the layers' units, standardisation lets the data reach (their 99.9th
percentile of |x − m| per coordinate), inside the splines' [−5, 5]: the scale is the larger of
std/:data:`SPREAD` and that percentile/REACH. On moons (a coordinate's extremes lie 1.85
standard deviations out) std/3 alone sent 3% of the points past ±5, where the layers are the
identity, and the held-out NLL was 2.4 nats instead of about 0.1; on ring8 and grid25 std/3 is the
larger and nothing changes."""

AFFINE_SLOPE = 1e-3
"""The affine layers' default smallest scale (zuko's default): scales stay within [1e-3, 1e3]. At
1e-5 an affine coupling flow on the digits started at a loss of 10¹¹ bits/dim."""

EVAL_BATCH = 4096
"""Rows per forward pass in :meth:`Flow.evaluate` and :meth:`Flow.log_prob`."""

_LOG_2PI = math.log(2 * math.pi)


# --- the layers, by name -------------------------------------------------------------------------


@dataclass(frozen=True)
class FlowTransform:
    """A family of flow layers: ``build(dim, layers, hidden, bins, slope)`` returns a zuko flow."""

    build: Callable[[int, int, list[int], int, float], zuko.flows.Flow]
    description: str  # a few words, for help texts
    slope: float  # the default smallest slope of a layer


def _nsf(dim: int, layers: int, hidden: list[int], bins: int, slope: float) -> zuko.flows.Flow:
    return zuko.flows.NSF(
        dim, transforms=layers, bins=bins, hidden_features=hidden, passes=2, slope=slope
    )


def _nsf_ar(dim: int, layers: int, hidden: list[int], bins: int, slope: float) -> zuko.flows.Flow:
    return zuko.flows.NSF(dim, transforms=layers, bins=bins, hidden_features=hidden, slope=slope)


def _affine(slope: float) -> Callable[..., Transform]:
    return functools.partial(zuko.transforms.MonotonicAffineTransform, slope=slope)


def _realnvp(dim: int, layers: int, hidden: list[int], bins: int, slope: float) -> zuko.flows.Flow:
    return zuko.flows.RealNVP(
        dim, transforms=layers, hidden_features=hidden, univariate=_affine(slope)
    )


def _maf(dim: int, layers: int, hidden: list[int], bins: int, slope: float) -> zuko.flows.Flow:
    return zuko.flows.MAF(dim, transforms=layers, hidden_features=hidden, univariate=_affine(slope))


TRANSFORMS: dict[str, FlowTransform] = {
    "nsf": FlowTransform(_nsf, "spline coupling", SPLINE_SLOPE),
    "nsf-ar": FlowTransform(_nsf_ar, "spline autoregressive", SPLINE_SLOPE),
    "realnvp": FlowTransform(_realnvp, "affine coupling", AFFINE_SLOPE),
    "maf": FlowTransform(_maf, "affine autoregressive", AFFINE_SLOPE),
}


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_settings(
    transform: object, layers: object, hidden: object, bins: object
) -> tuple[str, int, list[int], int]:
    """Return the flow's settings checked, or raise ConfigError naming parameter, value and what
    is allowed."""
    if not isinstance(transform, str):
        raise ConfigError(
            f"transform = {transform!r} is not allowed; use one of: {', '.join(sorted(TRANSFORMS))}"
        )
    lookup(TRANSFORMS, transform, what="flow transform")
    if not _is_int(layers) or not 1 <= layers <= MAX_LAYERS:  # type: ignore[operator]
        raise ConfigError(
            f"layers = {layers!r} is not allowed; use an integer from 1 to {MAX_LAYERS}"
        )
    widths = [hidden] if _is_int(hidden) else hidden
    ok = (
        isinstance(widths, Sequence)
        and not isinstance(widths, str)
        and len(widths) > 0
        and all(_is_int(h) and 1 <= h <= MAX_WIDTH for h in widths)
    )
    if not ok:
        raise ConfigError(
            f"hidden = {hidden!r} is not allowed; use a list of one or more integer widths from "
            f"1 to {MAX_WIDTH:,}"
        )
    if not _is_int(bins) or not 2 <= bins <= MAX_BINS:  # type: ignore[operator]
        raise ConfigError(f"bins = {bins!r} is not allowed; use an integer from 2 to {MAX_BINS}")
    return transform, int(layers), [int(h) for h in widths], int(bins)  # type: ignore[arg-type,union-attr]


# --- fixed maps before the layers ----------------------------------------------------------------


def check_pixels_or_rows(x: object, name: str, *, dim: int, pixels: bool, what: str) -> Tensor:
    """Return x (n, ``dim``) if finite and of that dimension (and in [0, 1] when it holds
    ``pixels`` to dequantise), else raise DataError naming the first bad row; ``what`` names the
    model in messages."""
    x = check_rows(x, name, dim=dim, why=f" (the {what} was built for d = {dim})")
    if pixels:
        bad = (x < 0) | (x > 1)
        if bool(bad.any()):
            row, col = (int(i) for i in bad.nonzero()[0])
            raise DataError(
                f"{name} holds values outside [0, 1], the range of the 8-bit pixels this {what} "
                f"dequantises: first at row {row}, column {col} ({float(x[row, col]):g})"
            )
    return x


def likelihood_summary(lp: Tensor, *, dim: int, exact: bool) -> dict[str, Any]:
    """Return the mean of the log-likelihoods lp (n,) of rows of ``dim`` values, in nats per row,
    with its standard error over rows: keys ``log_likelihood``, ``log_likelihood_stderr``,
    ``nll``, ``bits_per_dim`` (−log_likelihood / (dim·log 2)), ``rows`` and ``exact``."""
    n = lp.numel()
    mean = float(lp.mean())
    stderr = float(lp.std() / math.sqrt(n)) if n > 1 else math.nan
    return {"log_likelihood": mean, "log_likelihood_stderr": stderr, "nll": -mean,
            "bits_per_dim": -mean / (dim * math.log(2)), "rows": n, "exact": exact}  # fmt: skip


def dequantized(x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """Return y = (255·x + u)/256, u ~ U[0, 1) drawn from ``generator``, for pixels x (n, d)
    holding k/255: each 8-bit value spread uniformly over its bin [k/256, (k + 1)/256)."""
    device = generator.device if generator is not None else x.device
    u = torch.rand(x.shape, generator=generator, device=device, dtype=x.dtype)
    return (x * 255 + u.to(x.device)) / 256


class Logit(Transform):
    """y ↦ logit(α + (1 − 2α)·y) from (0, 1)^d onto ℝ^d (rows are events), RealNVP's
    pre-processing of dequantised pixels; α keeps the ends finite."""

    domain = constraints.independent(constraints.unit_interval, 1)
    codomain = constraints.real_vector
    bijective = True
    sign = +1

    def __init__(self, alpha: float = LOGIT_ALPHA):
        super().__init__()
        self.alpha = alpha

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Logit) and other.alpha == self.alpha

    def _squeeze(self, y: Tensor) -> Tensor:
        return self.alpha + (1 - 2 * self.alpha) * y

    def _call(self, y: Tensor) -> Tensor:
        p = self._squeeze(y)
        return torch.log(p) - torch.log1p(-p)

    def _inverse(self, w: Tensor) -> Tensor:
        return (torch.sigmoid(w) - self.alpha) / (1 - 2 * self.alpha)

    def log_abs_det_jacobian(self, y: Tensor, w: Tensor) -> Tensor:
        # dw/dy = (1 − 2α) / (p (1 − p)), one factor per coordinate
        p = self._squeeze(y)
        return (math.log(1 - 2 * self.alpha) - torch.log(p) - torch.log1p(-p)).sum(-1)


# --- the model -----------------------------------------------------------------------------------


class Flow(Trainable):
    """A normalizing flow g#N(0, I_d) on ℝ^d with exact density; g⁻¹ (n, d) → (n, d) by zuko.

    Args:
        dim: data dimension d.
        transform: the layers by name (:data:`TRANSFORMS`): ``nsf``, ``nsf-ar``, ``realnvp``,
            ``maf``. The defaults of this and the next three are :data:`RECOMMENDED`'s.
        layers: how many invertible layers.
        hidden: the widths of each layer's conditioner network.
        bins: spline bins per coordinate (``nsf`` and ``nsf-ar``; ignored by the affine ones).
        slope: the smallest slope of each layer, in (0, 1): spline derivatives and bin-size
            ratios, or affine scales, stay within [slope, 1/slope]; default
            :data:`SPLINE_SLOPE` for splines, :data:`AFFINE_SLOPE` for affine layers.
        image_shape: (h, w) of image data.
        standardize: act on (x − m)/s with the training data's mean m and s its standard
            deviation over :data:`SPREAD` (d,) (unit spread for dequantised images), recorded by
            :meth:`prepare`; the log-Jacobian −Σ log s is counted. Default on for non-image data
            (no ``image_shape``), off for images.
        dequantize: treat the data as 8-bit pixels in [0, 1] (see the module docstring); default
            on for images (``image_shape`` given).

    Declared capabilities: an exact density (:meth:`log_prob`), an encoder (:meth:`encode`,
    exactly g⁻¹), generative (:meth:`sample`), trained by :func:`pushforward.train.fit`.
    """

    has_exact_density = True
    has_encoder = True
    generative = True
    trained = True

    def __init__(
        self,
        dim: int,
        *,
        transform: str = "nsf",
        layers: int = 4,
        hidden: Sequence[int] = (48, 48),
        bins: int = 24,
        slope: float | None = None,
        image_shape: tuple[int, int] | list[int] | None = None,
        standardize: bool | None = None,
        dequantize: bool | None = None,
    ):
        super().__init__()
        if not _is_int(dim) or not 1 <= dim <= MAX_LATENT:
            raise ConfigError(
                f"dim = {dim!r} is not allowed; use an integer from 1 to {MAX_LATENT:,}"
            )
        transform, layers, hidden, bins = _check_settings(transform, layers, hidden, bins)
        slope = TRANSFORMS[transform].slope if slope is None else slope
        ok = isinstance(slope, numbers.Real) and not isinstance(slope, bool) and 0 < slope < 1
        if not ok:
            raise ConfigError(f"slope = {slope!r} is not allowed; use a number in (0, 1)")
        # an upper bound on the weights (each layer's conditioner maps d inputs through the
        # hidden widths to at most d·(3·bins + 1) spline parameters), checked before allocating
        widths = [dim, *hidden, dim * (3 * bins + 1)]
        size = 4 * layers * sum(a * b + b for a, b in itertools.pairwise(widths))
        if size > MAX_FLOW_BYTES:
            raise ConfigError(
                f"a flow of {layers} layers of widths {hidden} on {dim} dimensions would hold up "
                f"to {size / 2**30:.1f} GiB of weights, more than {MAX_FLOW_BYTES / 2**30:.0f} GiB"
            )
        self.dim = self.latent = int(dim)
        self.transform_name, self.layers, self.hidden, self.bins = transform, layers, hidden, bins
        self.slope = float(slope)
        self.image_shape = tuple(int(s) for s in image_shape) if image_shape is not None else None
        if self.image_shape is not None and math.prod(self.image_shape) != dim:
            raise ConfigError(f"image_shape {self.image_shape} does not hold dim = {dim} values")
        image = self.image_shape is not None
        self.standardize = not image if standardize is None else bool(standardize)
        self.dequantize = image if dequantize is None else bool(dequantize)
        self.flow = TRANSFORMS[transform].build(self.dim, layers, hidden, bins, self.slope)
        # the data's location m and scale s (d,), set by prepare(); identity until then
        self.register_buffer("data_loc", torch.zeros(dim))
        self.register_buffer("data_scale", torch.ones(dim))

    def get_config(self) -> dict[str, Any]:
        return {
            "dim": self.dim,
            "transform": self.transform_name,
            "layers": self.layers,
            "hidden": list(self.hidden),
            "bins": self.bins,
            "slope": self.slope,
            "image_shape": list(self.image_shape) if self.image_shape else None,
            "standardize": self.standardize,
            "dequantize": self.dequantize,
        }

    # --- data checks and set-up ----------------------------------------------------------------

    def _check_data(self, x: object, name: str = "x") -> Tensor:
        """Return x (n, d) checked by :func:`check_pixels_or_rows`."""
        return check_pixels_or_rows(x, name, dim=self.dim, pixels=self.dequantize, what="flow")

    def dequantized(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Return :func:`dequantized` pixels (n, d) of x (n, d)."""
        return dequantized(x, generator=generator)

    def prepare(self, x: Tensor) -> None:
        """Record the per-coordinate mean m and scale s = max(standard deviation / :data:`SPREAD`,
        99.9th percentile of |x − m| / :data:`REACH`) of the training data x (n, d) when
        ``standardize`` is on. Dequantised images are measured
        as the layers see them, after the logit (their noise from a fixed seed), and keep unit
        spread. A coordinate that does not vary keeps scale 1."""
        x = self._check_data(x)
        if not self.standardize:
            return
        x = x.detach().to(self.data_loc.dtype)
        if self.dequantize:
            noise = torch.Generator(device=x.device).manual_seed(0)
            x = Logit()(self.dequantized(x, generator=noise))
        scale = x.std(0) if x.shape[0] > 1 else torch.ones_like(self.data_loc)
        scale = torch.where(scale > 1e-8 * scale.max().clamp_min(1e-30), scale, 1.0)
        if not self.dequantize:
            k = max(1, math.ceil(0.999 * x.shape[0]))
            reach = (x - x.mean(0)).abs().kthvalue(k, dim=0).values  # (d,)
            scale = torch.maximum(scale / SPREAD, reach / REACH)
        with torch.no_grad():
            self.data_loc.copy_(x.mean(0))
            self.data_scale.copy_(scale)

    # --- the bijection -------------------------------------------------------------------------

    def to_latent(self) -> Transform:
        """Return g⁻¹ as a torch Transform, data (n, d) → latent (n, d), with the current
        weights and data statistics; its ``.inv`` is g, and zuko's ``call_and_ladj`` gives
        g⁻¹(x) with log |det ∂g⁻¹/∂x| (n,)."""
        maps: list[Transform] = []
        if self.dequantize:
            maps.append(Logit())
        if self.standardize:
            inv_scale = 1 / self.data_scale
            maps.append(AffineTransform(-self.data_loc * inv_scale, inv_scale, event_dim=1))
        maps.append(self.flow.transform())
        return zuko.transforms.ComposedTransform(*maps)

    def distribution(self) -> Distribution:
        """Return the model as a zuko ``NormalizingFlow`` distribution over data rows (d,): its
        ``sample``, ``rsample_and_log_prob`` draw from the global RNG (use :meth:`sample` for
        seeded draws)."""
        return zuko.distributions.NormalizingFlow(self.to_latent(), self.flow.base())

    def as_pushforward(self) -> Pushforward:
        """Return the generative model g#N(0, I_d) as a Pushforward with an exact density (g a
        bijective Transform, of the current weights)."""
        return Pushforward(self.to_latent().inv, StandardNormal(self.dim))

    def _latent(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return z = g⁻¹(x) (n, d) and log |det ∂g⁻¹/∂x| (n,) in the weights' precision, even
        under bfloat16 autocast: a log-determinant summed over many layers needs it."""
        with torch.autocast(x.device.type, enabled=False):
            return self.to_latent().call_and_ladj(x.to(self.data_loc.dtype))

    @staticmethod
    def _base_log_prob(z: Tensor) -> Tensor:
        """Return log N(z; 0, I) (n,) for z (n, d)."""
        return -0.5 * (z.square().sum(-1) + z.shape[-1] * _LOG_2PI)

    def encode(self, x: Tensor) -> Tensor:
        """Return z = g⁻¹(x), shape (n, d), for data x (n, d): exact, no noise."""
        return self._latent(self._check_data(x))[0]

    def decode(self, z: Tensor) -> Tensor:
        """Return x = g(z), shape (n, d), for latents z (n, d) (for images the dequantised
        y ∈ (0, 1), before binning)."""
        z = check_rows(z, "z", dim=self.dim)
        with torch.autocast(z.device.type, enabled=False):
            return self.to_latent().inv(z.to(self.data_loc.dtype))

    def _noise(self, n: int, generator: torch.Generator | None) -> Tensor:
        """Return n draws z ~ N(0, I_d) (n, d) from ``generator``, on the model's device."""
        return StandardNormal(self.dim).sample(n, generator=generator).to(self.data_loc)

    def rsample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """Return g(z) for n draws z ~ N(0, I) (n, d), differentiable in the weights."""
        return self.decode(self._noise(n, generator))

    def rsample_and_log_prob(
        self, n: int, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Return n draws x = g(z) (n, d) and their log-densities (n,), walked forward:
        log p(x) = log N(z) − log |det ∂g/∂z| (zuko's ``rsample_and_log_prob``, seeded)."""
        z = self._noise(n, generator)
        with torch.autocast(z.device.type, enabled=False):
            x, ladj = self.to_latent().inv.call_and_ladj(z)
        return x, self._base_log_prob(z) - ladj

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """Return exactly n draws of g#N(0, I), shape (n, d), without gradients; dequantised
        images come back as 8-bit pixel values k/255 in [0, 1]."""
        with torch.no_grad():
            x = self.rsample(n, generator=generator)
        if self.dequantize:
            x = torch.floor(256 * x).clamp(0, 255) / 255
        return x

    def forward(self, x: Tensor) -> Tensor:
        """Return log p(x) (n,) for x (n, d)."""
        return self.log_prob(x)

    # --- the density ---------------------------------------------------------------------------

    def log_prob(self, x: Tensor) -> Tensor:
        """Return the exact log-density log p(x) in nats, shape (n,), for x (n, d).

        For dequantised images this is the density of the dequantised pixels y ∈ [0, 1]^d. Far
        from the data the layers are the identity (zuko's splines act on [−5, 5] in standardised
        units) and log p falls off as the Gaussian's −‖z‖²/2, computed in float64; a point so far
        out that float32 overflows raises DataError naming it.
        """
        x = self._check_data(x)
        out = []
        for xb in x.split(EVAL_BATCH):
            z, ladj = self._latent(xb)
            out.append(self._base_log_prob(z.double()) + ladj.double())
        lp = (torch.cat(out) if out else x.new_zeros(0, dtype=torch.float64)).to(x.dtype)
        bad = ~torch.isfinite(lp)
        if bool(bad.any()):
            row = int(bad.nonzero()[0])
            if not all(bool(torch.isfinite(p).all()) for p in self.parameters()):
                raise TrainingError("the flow's weights hold NaN or infinite values")
            far = float(((x[row] - self.data_loc) / self.data_scale).abs().max())
            raise DataError(
                f"log p(x) is not finite at row {row} of x ({x[row].tolist()[:4]}…), at "
                f"{far:.3g} in the layers' standardised units (the data reach about ±5): too far "
                f"out for {x.dtype} arithmetic (the flow's weights are {self.data_loc.dtype})"
            )
        return lp

    def loss(
        self, x: Tensor, *, generator: torch.Generator | None = None, epoch: float | None = None
    ) -> dict[str, Tensor]:
        """Return {'loss': −mean log p, 'nll': the same[, 'bits_per_dim']} on a batch x (B, d),
        in nats; images are dequantised with noise from ``generator`` first."""
        y = self.dequantized(x, generator=generator) if self.dequantize else x
        z, ladj = self._latent(y)
        nll = -(self._base_log_prob(z) + ladj).mean()
        terms = {"loss": nll, "nll": nll}
        if self.dequantize:
            terms["bits_per_dim"] = (nll / self.dim + math.log(256)) / math.log(2)
        return terms

    @torch.no_grad()
    def evaluate(
        self, x: Tensor, *, generator: torch.Generator | None = None, iwae_k: int = 1000
    ) -> dict[str, Any]:
        """Return the mean log-likelihood of the rows of x (n, d) and its standard error.

        Keys: ``log_likelihood`` (nats per row), ``log_likelihood_stderr`` (the standard error
        of that mean over rows), ``nll``, ``bits_per_dim`` (−log_likelihood / (d log 2)),
        ``rows`` and ``exact`` (True: no bound, no sampling). For dequantised images the rows are
        dequantised with ``generator`` and the log-likelihood is that of the 8-bit data,
        log p(y) − d log 256 (Jensen's bound of the discrete likelihood, the standard
        convention).
        """
        x = self._check_data(x)
        if self.dequantize:
            parts = [
                self.log_prob(self.dequantized(xb, generator=generator)).double()
                for xb in x.split(EVAL_BATCH)
            ]
            lp = torch.cat(parts) - self.dim * math.log(256)
        else:
            lp = self.log_prob(x).double()
        return likelihood_summary(lp, dim=self.dim, exact=True)


# --- the command line's view ---------------------------------------------------------------------

# The benchmarked setting (ring8 and grid25, benchmarks/fidelity.py; BENCHMARKS.md): four
# spline coupling layers of 24 bins with conditioners of two layers of 48, Adam at 8e-3 decaying
# to 0 on a cosine over 90 epochs of 512 points, about 50 CPU seconds on 10,000 points. What was
# tried, on seed 0 (KL(p ‖ q) nats / high-quality share, ring8; grid25):
#   5 layers of 8 bins, 64-wide, 60 epochs of 1024 at 3e-3:  0.33 / 79.8%;  1.98 / 34.5%
#   3 layers of 32 bins, 60 epochs of 256 at 3e-3:           0.056 / 94.4%; 0.060 / 94.8%
#   the same with the splines' slope at 1e-5 (SPLINE_SLOPE): 0.039 / 95.4%; 0.036 / 96.6%
#   and the data at a spread of 3 (SPREAD):                  0.026 / 97.2%; 0.027 / 97.9%
#   4 layers of 24 bins, 48-wide, 60 epochs of 256 at 6e-3:  0.024 / 98.0%; 0.022 / 98.3%
#   the same, 90 epochs of 512 at 8e-3 (this setting):       0.022 / 98.4%; 0.026 / 98.5%
# Slope 1e-7, 80 epochs instead of 60, and 5 layers of 16 bins changed little.
MAX_FLOW_BYTES = 4 * 2**30
"""The most weights a flow may have (4 GiB of float32): a larger one is a typo."""

RECOMMENDED: dict[str, dict[str, Any]] = {
    "model": {"transform": "nsf", "layers": 4, "hidden": [48, 48], "bins": 24},
    "train": {"epochs": 90, "batch_size": 512, "lr": 8e-3, "lr_schedule": "cosine"},
}


@dataclass
class FlowConfig(ModelConfig):
    """The settings of a flow a user chooses (the CLI's flags); :meth:`build` makes the model."""

    transform: str = field(
        default=RECOMMENDED["model"]["transform"],
        metadata={
            "help": "the layers: "
            + ", ".join(f"{name} ({t.description})" for name, t in TRANSFORMS.items())
        },
    )
    layers: int = field(
        default=RECOMMENDED["model"]["layers"], metadata={"help": "how many invertible layers"}
    )
    hidden: list[int] = field(
        default_factory=lambda: list(RECOMMENDED["model"]["hidden"]),
        metadata={"help": "widths of each layer's conditioner network, e.g. 64,64"},
    )
    bins: int = field(
        default=RECOMMENDED["model"]["bins"],
        metadata={"help": "spline bins per coordinate (nsf, nsf-ar)"},
    )

    def __post_init__(self) -> None:
        self.transform, self.layers, self.hidden, self.bins = _check_settings(
            self.transform, self.layers, self.hidden, self.bins
        )
        super().__post_init__()

    def build(self, ds: Dataset) -> Flow:
        """Return a Flow for the data set ``ds``: its dimension, and dequantised for images."""
        return Flow(
            ds.dim, transform=self.transform, layers=self.layers, hidden=self.hidden,
            bins=self.bins, image_shape=ds.image_shape, dequantize=ds.image_shape is not None,
        )  # fmt: skip


SPEC = ModelSpec(
    Flow,
    FlowConfig,
    "a normalizing flow: an invertible g with an exact density (zuko transforms)",
    train_defaults=RECOMMENDED["train"],
)

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
  standard deviations of ring8 and grid25 reach ±4.2 and every bin can serve (BENCHMARKS.md,
  "Fidelity to the truth"). It is off by default for images: their logits are already bounded
  (|w| ≤ 2.94), and standardising makes a rarely lit pixel an outlier of a hundred standard
  deviations, which an affine flow cannot fit; when asked for, dequantised pixels are
  standardised after the logit, to unit spread;
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

import dataclasses
import functools
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import zuko
from torch import Tensor
from torch.distributions import Distribution, Transform

from pushforward.core import (
    EVAL_BATCH,
    ConfigError,
    DataError,
    ModelConfig,
    ModelSpec,
    TrainingError,
    check_rows,
    setting,
)
from pushforward.data import (
    LOG_BINS,
    Dataset,
    Logit,
    Standardize,
    check_pixels_or_rows,
    dequantized,
    discrete_log_likelihood,
    fit_standardize,
    quantized,
)
from pushforward.measures import (
    Pushforward,
    StandardNormal,
    likelihood_summary,
    standard_normal_log_prob,
)
from pushforward.nets import MAX_LATENT, MAX_WIDTH
from pushforward.train import Trainable, full_precision

__all__ = [
    "AFFINE_SLOPE",
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
]

MAX_LAYERS = 256
"""The most flow layers; more is a typo."""

MAX_BINS = 1024
"""The most spline bins; each costs three outputs of the conditioner per coordinate."""

MAX_FLOW_BYTES = 4 * 2**30
"""The most weights a flow may have (4 GiB of float32): a larger one is a typo."""

SPLINE_SLOPE = 1e-5
"""The splines' default smallest slope (zuko's ``slope``, whose own default is 1e-3): each spline's
knot derivatives and bin-size ratios are held within [slope, 1/slope]. Sharp modes need steep
maps between them (BENCHMARKS.md, "Fidelity to the truth")."""

SPREAD = 3.0
"""The standard deviation of standardised (non-image) data in the layers' units (see the module
docstring)."""

REACH = 4.5
"""How far from the mean, in the layers' units, standardisation lets the data reach (their 99.9th
percentile of |x − m| per coordinate), inside the splines' [−5, 5]: the scale is the larger of
std/:data:`SPREAD` and that percentile/REACH, so that data whose extremes lie few standard
deviations out (moons) do not spill past ±5, where the layers are the identity; on ring8 and
grid25 std/3 is the larger (BENCHMARKS.md, "Fidelity to the truth")."""

AFFINE_SLOPE = 1e-3
"""The affine layers' default smallest scale (zuko's default): scales stay within [1e-3, 1e3]; the
splines' 1e-5 lets an affine flow start far off on images (BENCHMARKS.md, "Fidelity to the
truth")."""


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


# --- the settings --------------------------------------------------------------------------------

RECOMMENDED: dict[str, dict[str, Any]] = {
    "model": {"transform": "nsf", "layers": 4, "hidden": [48, 48], "bins": 24},
    "train": {"epochs": 90, "batch_size": 512, "lr": 8e-3, "lr_schedule": "cosine"},
}
"""The benchmarked setting (ring8 and grid25, ``benchmarks/fidelity.py``; BENCHMARKS.md, "Fidelity
to the truth", has what else was tried)."""


@dataclass
class FlowConfig(ModelConfig):
    """The settings of a flow: those a user chooses (the CLI's flags) and those derived from the
    data, filled in by :meth:`build` (or, left None, by :meth:`filled`).

    Args:
        transform: the layers by name (:data:`TRANSFORMS`): ``nsf``, ``nsf-ar``, ``realnvp``,
            ``maf``. The defaults of this and the next three are :data:`RECOMMENDED`'s.
        layers: how many invertible layers.
        hidden: the widths of each layer's conditioner network.
        bins: spline bins per coordinate (``nsf`` and ``nsf-ar``; ignored by the affine ones).
        dim: data dimension d (derived).
        image_shape: (h, w) of image data (derived).
        slope: the smallest slope of each layer, in (0, 1): spline derivatives and bin-size
            ratios, or affine scales, stay within [slope, 1/slope]; None: the transform's
            (:data:`SPLINE_SLOPE` for splines, :data:`AFFINE_SLOPE` for affine layers).
        standardize: act on (x − m)/s with the training data's mean m and s its standard
            deviation over :data:`SPREAD` (d,) (unit spread for dequantised images), recorded by
            :meth:`Flow.prepare`; the log-Jacobian −Σ log s is counted. None: on for non-image
            data (no ``image_shape``), off for images.
        dequantize: treat the data as 8-bit pixels in [0, 1] (see the module docstring); None:
            on for images (``image_shape`` given).
    """

    transform: str = setting(
        RECOMMENDED["model"]["transform"],
        "the layers: " + ", ".join(f"{name} ({t.description})" for name, t in TRANSFORMS.items()),
        choices=TRANSFORMS,
        what="flow transform",
    )
    layers: int = setting(
        RECOMMENDED["model"]["layers"], "how many invertible layers", minimum=1, maximum=MAX_LAYERS
    )
    hidden: list[int] = setting(
        RECOMMENDED["model"]["hidden"],
        "widths of each layer's conditioner network, e.g. 64,64",
        minimum=1,
        maximum=MAX_WIDTH,
    )
    bins: int = setting(
        RECOMMENDED["model"]["bins"],
        "spline bins per coordinate (nsf, nsf-ar)",
        minimum=2,
        maximum=MAX_BINS,
    )
    dim: int | None = setting(
        None, "the data's dimension d", minimum=1, maximum=MAX_LATENT, derived=True
    )
    image_shape: tuple[int, int] | None = setting(
        None, "(h, w) of image data", minimum=1, derived=True
    )
    slope: float | None = setting(
        None, "the layers' smallest slope (default: the transform's)", above=0, below=1,
        derived=True,
    )  # fmt: skip
    standardize: bool | None = setting(
        None, "standardise the data (default: on for points, off for images)", derived=True
    )
    dequantize: bool | None = setting(
        None, "dequantise 8-bit pixels (default: on for images)", derived=True
    )

    def check(self) -> None:
        if self.dim is None:
            return
        if self.image_shape is not None and math.prod(self.image_shape) != self.dim:
            raise ConfigError(
                f"image_shape {self.image_shape} does not hold dim = {self.dim} values"
            )
        # an upper bound on the weights (each layer's conditioner maps d inputs through the
        # hidden widths to at most d·(3·bins + 1) spline parameters), checked before allocating
        widths = [self.dim, *self.hidden, self.dim * (3 * self.bins + 1)]
        size = 4 * self.layers * sum(a * b + b for a, b in itertools.pairwise(widths))
        if size > MAX_FLOW_BYTES:
            raise ConfigError(
                f"a flow of {self.layers} layers of widths {self.hidden} on {self.dim} dimensions "
                f"would hold up to {size / 2**30:.1f} GiB of weights, more than "
                f"{MAX_FLOW_BYTES / 2**30:.0f} GiB"
            )

    def filled(self) -> FlowConfig:
        """Return a copy with the derived settings left None filled in (the slope by the
        transform, standardisation and dequantisation by the kind of data); ``dim`` must be
        set."""
        if self.dim is None:
            raise ConfigError("dim must be set: the data's dimension (build fills it in)")
        image = self.image_shape is not None
        fill = {
            "slope": TRANSFORMS[self.transform].slope,
            "standardize": not image,
            "dequantize": image,
        }
        return dataclasses.replace(
            self, **{k: v for k, v in fill.items() if getattr(self, k) is None}
        )

    def build(self, ds: Dataset) -> Flow:
        """Return a Flow for the data set ``ds``: its dimension, and dequantised for images."""
        image = ds.image_shape is not None
        return Flow(dataclasses.replace(
            self, dim=ds.dim, image_shape=ds.image_shape, dequantize=image,
        ))  # fmt: skip


# --- the model -----------------------------------------------------------------------------------


class Flow(Trainable):
    """A normalizing flow g#N(0, I_d) on ℝ^d with exact density; g⁻¹ (n, d) → (n, d) by zuko.

    Args:
        config: its settings (:class:`FlowConfig`, ``dim`` set); kept, with the derived ones
            filled in, as :attr:`config`.

    Declared capabilities: an exact density (:meth:`log_prob`), an encoder (:meth:`encode`,
    exactly g⁻¹), generative (:meth:`sample`), trained by :func:`pushforward.train.fit`.
    """

    config_class = FlowConfig
    has_exact_density = True
    has_encoder = True
    generative = True
    trained = True
    # torch.compile (inductor, torch 2.13) gives the loss's value but wrong gradients through
    # zuko's splines (off by up to the gradients' own size; aot_eager is right): not compiled
    compiles = False

    def __init__(self, config: FlowConfig):
        super().__init__()
        self.config = config = config.filled()
        self.dim = self.latent = config.dim
        self.flow = TRANSFORMS[config.transform].build(
            config.dim, config.layers, config.hidden, config.bins, config.slope
        )
        # the data's location m and scale s (d,), set by prepare(); identity until then
        self.register_buffer("data_loc", torch.zeros(config.dim))
        self.register_buffer("data_scale", torch.ones(config.dim))

    # --- data checks and set-up ----------------------------------------------------------------

    def _check_data(self, x: object, name: str = "x") -> Tensor:
        """Return x (n, d) checked by :func:`~pushforward.data.check_pixels_or_rows`."""
        pixels = self.config.dequantize
        return check_pixels_or_rows(x, name, dim=self.dim, pixels=pixels, what="flow")

    def prepare(self, x: Tensor) -> None:
        """Record the per-coordinate mean m and scale s = max(standard deviation / :data:`SPREAD`,
        99.9th percentile of |x − m| / :data:`REACH`) of the training data x (n, d) when
        ``standardize`` is on (:func:`~pushforward.data.fit_standardize`). Dequantised images
        are measured as the layers see them, after the logit (their noise from a fixed seed), and
        keep unit spread. A coordinate that does not vary counts as of standard deviation 1."""
        x = self._check_data(x)
        if not self.config.standardize:
            return
        x = x.detach().to(self.data_loc.dtype)
        if self.config.dequantize:
            noise = torch.Generator(device=x.device).manual_seed(0)
            fitted = fit_standardize(Logit()(dequantized(x, generator=noise)))
        else:
            fitted = fit_standardize(x, spread=SPREAD, reach=REACH)
        with torch.no_grad():
            self.data_loc.copy_(fitted.loc)
            self.data_scale.copy_(fitted.scale)

    # --- the bijection -------------------------------------------------------------------------

    def to_latent(self) -> Transform:
        """Return g⁻¹ as a torch Transform, data (n, d) → latent (n, d), with the current
        weights and data statistics; its ``.inv`` is g, and zuko's ``call_and_ladj`` gives
        g⁻¹(x) with log |det ∂g⁻¹/∂x| (n,)."""
        maps: list[Transform] = []
        if self.config.dequantize:
            maps.append(Logit())
        if self.config.standardize:
            maps.append(Standardize(self.data_loc, self.data_scale))
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
        with full_precision(x.device):
            return self.to_latent().call_and_ladj(x.to(self.data_loc.dtype))

    def encode(self, x: Tensor) -> Tensor:
        """Return z = g⁻¹(x), shape (n, d), for data x (n, d): exact, no noise."""
        return self._latent(self._check_data(x))[0]

    def decode(self, z: Tensor) -> Tensor:
        """Return x = g(z), shape (n, d), for latents z (n, d) (for images the dequantised
        y ∈ (0, 1), before binning)."""
        z = check_rows(z, "z", dim=self.dim)
        with full_precision(z.device):
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
        with full_precision(z.device):
            x, ladj = self.to_latent().inv.call_and_ladj(z)
        return x, standard_normal_log_prob(z) - ladj

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """Return exactly n draws of g#N(0, I), shape (n, d), without gradients; dequantised
        images come back as 8-bit pixel values k/255 in [0, 1]."""
        with torch.no_grad():
            x = self.rsample(n, generator=generator)
        return quantized(x) if self.config.dequantize else x

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
            out.append(standard_normal_log_prob(z.double()) + ladj.double())
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
        y = dequantized(x, generator=generator) if self.config.dequantize else x
        z, ladj = self._latent(y)
        nll = -(standard_normal_log_prob(z) + ladj).mean()
        terms = {"loss": nll, "nll": nll}
        if self.config.dequantize:
            terms["bits_per_dim"] = (nll / self.dim + LOG_BINS) / math.log(2)
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
        if self.config.dequantize:
            parts = [
                self.log_prob(dequantized(xb, generator=generator)).double()
                for xb in x.split(EVAL_BATCH)
            ]
            lp = discrete_log_likelihood(torch.cat(parts), self.dim)
        else:
            lp = self.log_prob(x).double()
        return likelihood_summary(lp, dim=self.dim, exact=True)


SPEC = ModelSpec(
    Flow,
    FlowConfig,
    "a normalizing flow: an invertible g with an exact density (zuko transforms)",
    train_defaults=RECOMMENDED["train"],
)

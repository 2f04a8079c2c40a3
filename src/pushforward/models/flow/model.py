"""The flow: g#μ with g a stack of invertible layers and μ its base measure (:class:`Flow`)."""

from __future__ import annotations

import math
from typing import Any

import torch
import zuko
from torch import Tensor
from torch.distributions import Distribution, Transform

from pushforward.core import EVAL_BATCH, DataError, TrainingError, check_rows
from pushforward.data import (
    LOG_BINS,
    Logit,
    Standardize,
    check_pixels_or_rows,
    dequantized,
    discrete_log_likelihood,
    fit_standardize,
    quantized,
)
from pushforward.measures import (
    BaseMeasure,
    Pushforward,
    StandardNormal,
    likelihood_summary,
    standard_normal_log_prob,
)
from pushforward.models.flow.base import KMEANS_ROWS, MixtureBase
from pushforward.models.flow.config import REACH, SPREAD, FlowConfig
from pushforward.models.flow.transforms import TRANSFORMS
from pushforward.train import Trainable, full_precision

__all__ = ["Flow"]


class Flow(Trainable):
    """A normalizing flow g#μ on ℝ^d with exact density; g⁻¹ (n, d) → (n, d) by zuko, μ the
    base measure (:mod:`~pushforward.models.flow.base`): N(0, I_d), or a learned mixture.

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
    # zuko's masks take torch.unique, which has no meta kernel (a 1-D flow has none, but is
    # built for real too: MAX_FLOW_BYTES bounds every flow's size before it is built)
    builds_on_meta = False

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
        # the base measure's parameters when it is learned; None: N(0, I_d)
        self.base = MixtureBase(config.dim, config.pieces) if config.base == "mixture" else None

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
        keep unit spread. A coordinate that does not vary counts as of standard deviation 1.

        A mixture base then has its means placed on the codes g⁻¹(x) under the initial layers
        (:meth:`MixtureBase.place`)."""
        x = self._check_data(x)
        x = x.detach().to(self.data_loc.dtype)
        noise = torch.Generator(device=x.device).manual_seed(0)
        if self.config.standardize:
            if self.config.dequantize:
                fitted = fit_standardize(Logit()(dequantized(x, generator=noise)))
            else:
                fitted = fit_standardize(x, spread=SPREAD, reach=REACH)
            with torch.no_grad():
                self.data_loc.copy_(fitted.loc)
                self.data_scale.copy_(fitted.scale)
        if self.base is not None:
            rows = x[:KMEANS_ROWS]
            if self.config.dequantize:
                rows = dequantized(rows, generator=noise)
            with torch.no_grad():
                self.base.place(self._latent(rows)[0])

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
        base = self.flow.base() if self.base is None else self.base.distribution()
        return zuko.distributions.NormalizingFlow(self.to_latent(), base)

    @property
    def latent_measure(self) -> BaseMeasure:
        """The base measure μ the latents are drawn from, detached: N(0, I_d), or the learned
        mixture as a :class:`~pushforward.measures.MixtureMeasure`."""
        return StandardNormal(self.dim) if self.base is None else self.base.measure()

    def as_pushforward(self) -> Pushforward:
        """Return the generative model g#μ as a Pushforward with an exact density (g a
        bijective Transform, μ the base measure, both of the current weights)."""
        return Pushforward(self.to_latent().inv, self.latent_measure)

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
        """Return n draws z ~ μ (n, d) from ``generator``, on the model's device (the same
        numbers on any device)."""
        if self.base is not None:
            return self.base.sample(n, generator=generator).to(self.data_loc)
        return StandardNormal(self.dim).sample(n, generator=generator).to(self.data_loc)

    def _base_log_prob(self, z: Tensor) -> Tensor:
        """Return log μ(z) (n,) for latents z (n, d), in z's dtype."""
        return standard_normal_log_prob(z) if self.base is None else self.base.log_prob(z)

    def rsample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """Return g(z) for n draws z ~ μ (n, d), differentiable in the layers' weights."""
        return self.decode(self._noise(n, generator))

    def rsample_and_log_prob(
        self, n: int, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Return n draws x = g(z) (n, d) and their log-densities (n,), walked forward:
        log p(x) = log μ(z) − log |det ∂g/∂z| (zuko's ``rsample_and_log_prob``, seeded)."""
        z = self._noise(n, generator)
        with full_precision(z.device):
            x, ladj = self.to_latent().inv.call_and_ladj(z)
        return x, self._base_log_prob(z) - ladj

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """Return exactly n draws of g#μ, shape (n, d), without gradients; dequantised
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
        y = dequantized(x, generator=generator) if self.config.dequantize else x
        z, ladj = self._latent(y)
        nll = -(self._base_log_prob(z) + ladj).mean()
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

"""Pushforwards g#μ: sampling, and exact densities where they exist.

The lecture's basic generative story: draw z ~ μ from an easy measure (uniform on a box or a
standard Gaussian), output y = g(z). :class:`Pushforward` is that story as an object, in the spirit
of ``torch.distributions.TransformedDistribution``: ``sample`` pushes base draws forward, and
``log_prob`` walks back when the density is tractable:

* 1-D maps, by summing over preimages: p_Y(y) = Σ_b p_X(h_b(y)) |h_b'(y)| over the inverse
  branches h_b of g (:class:`Map1D`);
* bijections, by change of variables: log p_Y(y) = log p_X(g⁻¹(y)) − log|det J_g(g⁻¹(y))|
  (any ``torch.distributions.transforms.Transform``, chains included);
* anything else, a clear :class:`~pushforward.errors.NoDensityError` (the lecture's "Nope").

Every stochastic call takes an explicit ``torch.Generator``; nothing here touches global seeds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.distributions import Distribution, transforms

from pushforward.core import ConfigError, NoDensityError
from pushforward.measures.base import BaseMeasure, Fn, Uniform, _device_of, as_measure

__all__ = ["Map1D", "Pushforward", "empirical_quantile", "inverse_cdf"]


@dataclass(frozen=True)
class Map1D:
    """A univariate map g: ℝ → ℝ with its inverse branches, so that g#μ has a density.

    For y in the range of g, the preimage g⁻¹({y}) is {h_b(y)} over the branches; each h_b is
    monotone, so p_Y(y) = Σ_b p_X(h_b(y)) |h_b'(y)|. A branch returns NaN where y is outside its
    range; the derivative h_b' is taken by autograd unless ``inverse_derivatives`` are given.

    Example: g(x) = x² has the branches h₁(y) = √y and h₂(y) = −√y.
    """

    forward: Fn
    inverses: Sequence[Fn]
    inverse_derivatives: Sequence[Fn] | None = None

    def __post_init__(self) -> None:
        if len(self.inverses) == 0:
            raise ConfigError("Map1D needs at least one inverse branch")
        if self.inverse_derivatives is not None and len(self.inverse_derivatives) != len(
            self.inverses
        ):
            raise ConfigError(
                f"Map1D has {len(self.inverses)} inverse branches but "
                f"{len(self.inverse_derivatives)} inverse_derivatives"
            )

    def __call__(self, x: Tensor) -> Tensor:
        return self.forward(x)

    def branches(self, y: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Return [(h_b(y), |h_b'(y)|)] for each branch, each of shape y.shape."""
        out = []
        for b, h in enumerate(self.inverses):
            if self.inverse_derivatives is not None:
                x = h(y)
                dx = self.inverse_derivatives[b](y).abs()
            else:
                with torch.enable_grad():
                    y_ = y.detach().requires_grad_(True)
                    x_ = h(y_)
                    (dx,) = torch.autograd.grad(x_.sum(), y_, allow_unused=True)
                x = x_.detach()
                dx = torch.zeros_like(y) if dx is None else dx.abs()
            out.append((x, dx))
        return out


def _sum_per_row(x: Tensor, event_shape: torch.Size) -> Tensor:
    """Sum a per-element log-Jacobian (n, *shape) down to one value per row, shape (n,)."""
    return x.reshape(x.shape[0], -1).sum(dim=1) if x.dim() > 1 else x


class Pushforward:
    """The pushforward g#μ of a base measure μ through a map g.

    Args:
        g: the generator. A callable or ``nn.Module`` (sampling only), a :class:`Map1D` (exact
            density by summing over preimages), or a ``torch.distributions.transforms.Transform``
            or a sequence of them (exact density by change of variables).
        base: μ, a :class:`BaseMeasure` or any ``torch.distributions.Distribution``.

    Shapes: ``sample(n)`` and ``rsample(n)`` give (n, *event_shape); ``log_prob(y)`` takes
    (n, *event_shape) and gives (n,).
    """

    def __init__(
        self,
        g: Fn | Map1D | transforms.Transform | Sequence[transforms.Transform],
        base: BaseMeasure | Distribution,
    ):
        if isinstance(g, Sequence) and not isinstance(g, Map1D):
            if not all(isinstance(t, transforms.Transform) for t in g):
                raise ConfigError("a sequence g must hold torch.distributions Transforms only")
            g = transforms.ComposeTransform(list(g))
        if not callable(g):
            raise ConfigError(f"g must be callable, got {type(g).__name__}")
        self.g = g
        self.base = as_measure(base)
        self._event_shape: torch.Size | None = None

    @property
    def event_shape(self) -> torch.Size:
        """Shape of one draw of g(z), found by pushing one base draw through g."""
        if self._event_shape is None:
            z = self.base.sample(1, generator=torch.Generator().manual_seed(0))
            with torch.no_grad():
                self._event_shape = self.g(z).shape[1:]
        return self._event_shape

    def rsample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """Return g(z) for n draws z ~ μ, shape (n, *event_shape), differentiable through g.

        z is made on g's device when g is a module (its first parameter's), so a model on a GPU
        samples where it lives; the draws depend on ``generator`` alone (drawn on its device)."""
        return self.g(self.base.sample(n, generator=generator, device=_device_of(self.g)))

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """Return exactly n draws of g#μ, shape (n, *event_shape), without gradients."""
        with torch.no_grad():
            y = self.rsample(n, generator=generator)
        assert y.shape[0] == n, "g must map n rows to n rows"
        return y

    @property
    def has_density(self) -> bool:
        """Whether :meth:`log_prob` is exact for this g (a Map1D or a bijective Transform)."""
        return isinstance(self.g, Map1D | transforms.Transform)

    def log_prob(self, y: Tensor) -> Tensor:
        """Return the exact log-density log p_Y(y) of y (n, *event_shape), shape (n,).

        Raises NoDensityError when g is a general network, for which no exact density exists.
        """
        if isinstance(self.g, Map1D):
            return self._log_prob_preimages(y)
        if isinstance(self.g, transforms.Transform):
            return self._log_prob_bijection(y)
        raise NoDensityError(
            f"g#μ has no tractable density for g = {type(self.g).__name__}: log p(y) would need "
            "every preimage of y under g and the Jacobian there. Give g as a Map1D with its "
            "inverse branches or as a bijective torch Transform, or estimate the likelihood "
            "(e.g. the VAE's importance-weighted bound)."
        )

    def prob(self, y: Tensor) -> Tensor:
        """Return the density p_Y(y), shape (n,)."""
        return self.log_prob(y).exp()

    def _log_prob_preimages(self, y: Tensor) -> Tensor:
        assert isinstance(self.g, Map1D)
        terms = []
        for x, dx in self.g.branches(y):
            valid = torch.isfinite(x) & torch.isfinite(dx) & (dx > 0)
            x_safe = torch.where(valid, x, torch.zeros_like(x))
            lp = self.base.log_prob(x_safe) + _sum_per_row(
                torch.log(torch.where(valid, dx, 1.0)), y.shape
            )
            row_valid = valid.reshape(valid.shape[0], -1).all(dim=1) if valid.dim() > 1 else valid
            terms.append(torch.where(row_valid, lp, torch.full_like(lp, -math.inf)))
        return torch.logsumexp(torch.stack(terms), dim=0)

    def _log_prob_bijection(self, y: Tensor) -> Tensor:
        t = self.g
        assert isinstance(t, transforms.Transform)
        if not t.bijective:
            raise NoDensityError(f"{t} is not bijective; change of variables needs a bijection")
        x = t.inv(y)
        inside = torch.isfinite(x).reshape(x.shape[0], -1).all(dim=1)
        x_safe = torch.where(torch.isfinite(x), x, torch.zeros_like(x))
        lp = self.base.log_prob(x_safe) - _sum_per_row(t.log_abs_det_jacobian(x_safe, y), y.shape)
        return torch.where(inside, lp, torch.full_like(lp, -math.inf))

    def __repr__(self) -> str:
        return f"Pushforward(g={self.g!r}, base={self.base!r})"


def inverse_cdf(quantile: Distribution | Fn) -> Pushforward:
    """Return F⁻¹#Uniform([0, 1]): inverse-CDF sampling of a univariate distribution.

    ``quantile`` is a torch distribution with ``icdf`` (Normal, Cauchy, Exponential, …; its
    ``log_prob`` gives the exact density, since F⁻¹ is a bijection onto the support) or any
    quantile function F⁻¹: (n, 1) → (n, 1) on (0, 1). Draws have shape (n, 1).
    """
    if isinstance(quantile, Distribution):
        dist = quantile
        if dist.batch_shape != torch.Size() or dist.event_shape != torch.Size():
            raise ConfigError("inverse_cdf needs a univariate distribution with empty shapes")
        try:
            dist.icdf(torch.tensor(0.5))
        except NotImplementedError:
            raise ConfigError(
                f"{type(dist).__name__} has no quantile function (icdf); pass F⁻¹ as a callable "
                "or sample it by another route"
            ) from None
        bijection = transforms.CumulativeDistributionTransform(dist).inv
        return Pushforward(bijection, Uniform(0.0, 1.0))
    return Pushforward(quantile, Uniform(0.0, 1.0))


def empirical_quantile(samples: Tensor) -> Fn:
    """Return the empirical quantile function F_n⁻¹(u) = x_(⌈n·u⌉) of samples (n,) or (n, 1).

    Pushing Uniform([0, 1]) through it draws from the empirical distribution: each sample value
    with probability 1/n. Maps (m, 1) → (m, 1).
    """
    x = torch.as_tensor(samples).reshape(-1)
    if x.numel() == 0:
        raise ConfigError("empirical_quantile needs at least one sample")
    if not bool(torch.isfinite(x).all()):
        raise ConfigError("empirical_quantile got NaN or infinite samples")
    order = torch.sort(x).values
    n = order.numel()

    def quantile(u: Tensor) -> Tensor:
        idx = torch.ceil(u * n).long().clamp(1, n) - 1
        return order[idx]

    return quantile

"""Base measures μ and pushforwards g#μ: sampling, and exact densities where they exist.

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

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.distributions import Distribution, Normal, transforms

from pushforward.core import ConfigError, NoDensityError, check_n, lookup
from pushforward.data import GaussianMixture

__all__ = [
    "EXAMPLES",
    "BaseMeasure",
    "DistributionMeasure",
    "Example",
    "Map1D",
    "MixtureMeasure",
    "Pushforward",
    "Restricted",
    "StandardNormal",
    "Uniform",
    "as_measure",
    "empirical_quantile",
    "example",
    "inverse_cdf",
]

Fn = Callable[[Tensor], Tensor]

Device = torch.device | str | None


def _draw(
    fn: Callable[..., Tensor], shape: tuple[int, ...], generator: torch.Generator | None,
    device: Device,
) -> Tensor:  # fmt: skip
    """Return fn(*shape) (torch.rand or torch.randn) on ``device``: drawn where ``generator``
    lives, so that the numbers depend on the generator alone, then moved; with no generator,
    drawn on ``device`` directly."""
    where = generator.device if generator is not None else device
    z = fn(*shape, generator=generator, device=where)
    return z if device is None else z.to(device)


def _device_of(g: Any) -> torch.device | None:
    """Return the device of a module's first parameter or buffer, None for anything else."""
    if isinstance(g, torch.nn.Module):
        for t in itertools.chain(g.parameters(), g.buffers()):
            return t.device
    return None


class BaseMeasure:
    """An easy measure μ to draw z from: ``sample`` gives (n, *event_shape), ``log_prob`` (n,)."""

    event_shape: torch.Size
    product: ClassVar[bool] = False
    """True for a product of 1-D measures, one per coordinate: :meth:`quantile` is defined."""
    has_quantile: ClassVar[bool] = False
    """True when :meth:`quantile` is defined (every product measure, and :class:`MixtureMeasure`,
    whose quantiles are its marginals')."""

    def sample(
        self, n: int, *, generator: torch.Generator | None = None, device: Device = None
    ) -> Tensor:
        """Return n independent draws, shape (n, *event_shape), on ``device`` (default the
        CPU); the numbers depend on ``generator`` alone, not on the device."""
        raise NotImplementedError(f"{type(self).__name__} does not define sample")

    def quantile(self, u: Tensor) -> Tensor:
        """Return F_j⁻¹(u_j) coordinate by coordinate for u (n, d) in (0, 1)^d: the point with
        those marginal CDF values (a measure with :attr:`has_quantile` set)."""
        raise NotImplementedError(f"{type(self).__name__} has no quantile function")

    def log_prob(self, x: Tensor) -> Tensor:
        """Return log-density of x (n, *event_shape) w.r.t. Lebesgue measure, shape (n,)."""
        raise NotImplementedError(f"{type(self).__name__} does not define log_prob")


class Uniform(BaseMeasure):
    """Uniform measure on the box [low, high] ⊂ ℝ^d; draws have shape (n, d).

    ``low`` and ``high`` are scalars or (d,) tensors; with scalars, ``dim`` gives d (default 1).
    """

    def __init__(self, low: float | Tensor = 0.0, high: float | Tensor = 1.0, dim: int = 1):
        low_t = torch.as_tensor(low, dtype=torch.float32)
        high_t = torch.as_tensor(high, dtype=torch.float32)
        if low_t.dim() == 0 and high_t.dim() == 0:
            if dim < 1:
                raise ConfigError(f"dim must be ≥ 1, got {dim}")
            low_t, high_t = low_t.expand(dim), high_t.expand(dim)
        low_t, high_t = torch.broadcast_tensors(low_t.reshape(-1), high_t.reshape(-1))
        if not bool(torch.all(high_t > low_t)):
            raise ConfigError(f"Uniform needs low < high in every coordinate, got {low} and {high}")
        self.low, self.high = low_t.clone(), high_t.clone()
        self.event_shape = torch.Size([self.low.numel()])

    def sample(
        self, n: int, *, generator: torch.Generator | None = None, device: Device = None
    ) -> Tensor:
        shape = (check_n(n, allow_zero=True), *self.event_shape)
        u = _draw(torch.rand, shape, generator, device)
        return self.low.to(u.device) + (self.high - self.low).to(u.device) * u

    def log_prob(self, x: Tensor) -> Tensor:
        inside = ((x >= self.low) & (x <= self.high)).all(dim=-1)
        log_volume = torch.log(self.high - self.low).sum()
        return torch.where(inside, -log_volume, torch.full_like(log_volume, -math.inf)).to(x.dtype)

    product = True
    has_quantile = True

    def cdf(self, x: Tensor) -> Tensor:
        """Return the product CDF Π_j F_j(x_j) of x (n, d), shape (n,)."""
        return ((x - self.low) / (self.high - self.low)).clamp(0, 1).prod(dim=-1)

    def quantile(self, u: Tensor) -> Tensor:
        """Return low + u·(high − low) for u (n, d)."""
        return self.low + (self.high - self.low) * u

    def __repr__(self) -> str:
        return f"Uniform(low={self.low.tolist()}, high={self.high.tolist()})"


class StandardNormal(BaseMeasure):
    """Standard Gaussian N(0, I_d); draws have shape (n, d)."""

    def __init__(self, dim: int = 1):
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ConfigError(f"dim must be an integer ≥ 1, got {dim!r}")
        self.dim = dim
        self.event_shape = torch.Size([dim])

    def sample(
        self, n: int, *, generator: torch.Generator | None = None, device: Device = None
    ) -> Tensor:
        return _draw(torch.randn, (check_n(n, allow_zero=True), self.dim), generator, device)

    def log_prob(self, x: Tensor) -> Tensor:
        return -0.5 * (x.pow(2).sum(dim=-1) + self.dim * math.log(2 * math.pi))

    product = True
    has_quantile = True

    def cdf(self, x: Tensor) -> Tensor:
        """Return Π_j Φ(x_j) of x (n, d), shape (n,)."""
        return torch.special.ndtr(x).prod(dim=-1)

    def quantile(self, u: Tensor) -> Tensor:
        """Return Φ⁻¹(u) coordinate by coordinate for u (n, d)."""
        return torch.special.ndtri(u)

    def __repr__(self) -> str:
        return f"StandardNormal(dim={self.dim})"


class DistributionMeasure(BaseMeasure):
    """Any ``torch.distributions.Distribution`` used as a base measure.

    torch.distributions draw from the global generator, so a draw here forks the global RNG state,
    seeds it from ``generator`` and restores it: results depend on ``generator`` alone.
    """

    def __init__(self, distribution: Distribution):
        if distribution.batch_shape != torch.Size():
            raise ConfigError(
                f"base distribution must have an empty batch_shape, got {distribution.batch_shape}"
            )
        self.distribution = distribution
        self.event_shape = distribution.event_shape

    def sample(
        self, n: int, *, generator: torch.Generator | None = None, device: Device = None
    ) -> Tensor:
        n = check_n(n, allow_zero=True)
        if generator is None:
            z = self.distribution.sample((n,))
        else:
            seed = int(torch.randint(0, 2**62, (1,), generator=generator))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                z = self.distribution.sample((n,))
        return z if device is None else z.to(device)

    def log_prob(self, x: Tensor) -> Tensor:
        return self.distribution.log_prob(x)

    def cdf(self, x: Tensor) -> Tensor:
        return self.distribution.cdf(x)

    def __repr__(self) -> str:
        return f"DistributionMeasure({self.distribution})"


class Restricted(BaseMeasure):
    """μ restricted to a set A = {z : accept(z)} and renormalised: μ_A(B) = μ(B ∩ A) / μ(A).

    Drawn by rejection: base draws in rounds, kept where ``accept`` holds, in draw order, so the
    rows returned depend on ``generator`` and n alone (the rounds' sizes depend on n, so a
    shorter call is not always a prefix of a longer one).

    Args:
        base: μ, a :class:`BaseMeasure` or any ``torch.distributions.Distribution``.
        accept: z (m, *event_shape) → (m,) bool, True where z ∈ A.
        mass: μ(A) when it is known exactly; :meth:`log_prob` needs it.
        rate: the expected share of draws accepted, to size the first round (default ``mass``,
            else ½); later rounds use the share seen so far.
        max_draws: base draws one call may spend per row it returns before it gives up (A has
            too little μ-mass to be drawn by rejection).
        batch: the most base draws one round takes.
    """

    def __init__(
        self,
        base: BaseMeasure | Distribution,
        accept: Fn,
        *,
        mass: float | None = None,
        rate: float | None = None,
        max_draws: int = 1000,
        batch: int = 65536,
    ):
        if not callable(accept):
            raise ConfigError(f"accept must be callable, got {type(accept).__name__}")
        for name, value in (("mass", mass), ("rate", rate)):
            if value is not None and not 0 < value <= 1:
                raise ConfigError(f"{name} = {value!r} is not allowed; use a number in (0, 1]")
        for name, value in (("max_draws", max_draws), ("batch", batch)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer ≥ 1, got {value!r}")
        self.base = as_measure(base)
        self.accept, self.mass = accept, mass
        self.rate = rate or mass or 0.5
        self.max_draws, self.batch = max_draws, batch
        self.event_shape = self.base.event_shape

    def sample(
        self, n: int, *, generator: torch.Generator | None = None, device: Device = None
    ) -> Tensor:
        """Return exactly n draws of μ_A, shape (n, *event_shape), on ``device``."""
        n = check_n(n, allow_zero=True)
        kept: list[Tensor] = []
        have = drawn = 0
        while have < n:
            rate = have / drawn if have else self.rate
            want = min(math.ceil(1.1 * (n - have) / rate) + 16, self.batch)
            z = self.base.sample(want, generator=generator)
            ok = self.accept(z)
            if ok.shape != (want,) or ok.dtype != torch.bool:
                raise ConfigError(
                    f"accept must return a bool tensor of shape ({want},) for {want} draws, "
                    f"got {ok.dtype} {tuple(ok.shape)}"
                )
            kept.append(z[ok])
            have, drawn = have + int(ok.sum()), drawn + want
            if have < n and drawn >= self.max_draws * n:
                raise ConfigError(
                    f"only {have:,} of {drawn:,} base draws fell in the set (n = {n:,} wanted): "
                    f"its μ-mass is too small to draw from by rejection (max_draws = "
                    f"{self.max_draws:,} per row)"
                )
        z = torch.cat(kept)[:n] if kept else self.base.sample(0, generator=generator)
        return z if device is None else z.to(device)

    def log_prob(self, x: Tensor) -> Tensor:
        """Return log μ(x) − log μ(A) on A and −inf off it, x (n, *event_shape) → (n,)."""
        if self.mass is None:
            raise NoDensityError(
                "the restricted measure's density needs μ(A); give mass= when it is known"
            )
        lp = self.base.log_prob(x) - math.log(self.mass)
        return torch.where(self.accept(x), lp, torch.full_like(lp, -math.inf))

    def __repr__(self) -> str:
        return f"Restricted({self.base!r}, mass={self.mass!r})"


class MixtureMeasure(BaseMeasure):
    """A Gaussian mixture Σ_c w_c N(m_c, Σ_c) on R^k as a base measure: draws (n, k).

    Wraps a :class:`~pushforward.mixtures.GaussianMixture` (its exact density and seeded draws),
    e.g. the VAE's prior fitted to the codes of the training data. Not a product measure, but
    each coordinate's marginal is a 1-D mixture Σ_c w_c N(m_cj, Σ_c,jj), so :meth:`quantile`
    gives the point with the given marginal CDF values.
    """

    has_quantile = True

    def __init__(self, mixture: GaussianMixture, dtype: torch.dtype = torch.float32):
        self.mixture, self.dtype = mixture, dtype
        self.event_shape = torch.Size([mixture.dim])
        # each coordinate's marginal: weights (C,), means and standard deviations (C, k), float64
        self._w, self._m = mixture.weights, mixture.means
        self._sd = mixture.covariances.diagonal(dim1=-2, dim2=-1).sqrt()

    def sample(
        self, n: int, *, generator: torch.Generator | None = None, device: Device = None
    ) -> Tensor:
        z = self.mixture.sample(check_n(n, allow_zero=True), generator=generator, dtype=self.dtype)
        return z if device is None else z.to(device)

    def log_prob(self, x: Tensor) -> Tensor:
        return self.mixture.log_prob(x)

    def cdf_marginal(self, t: Tensor) -> Tensor:
        """Return F_j(t_j), each coordinate's marginal CDF, for t (n, k): shape (n, k)."""
        m, sd, w = self._m.to(t.device), self._sd.to(t.device), self._w.to(t.device)
        u = torch.special.ndtr((t.double().unsqueeze(1) - m) / sd)  # (n, C, k)
        return (w[:, None] * u).sum(1).to(t.dtype)

    def quantile(self, u: Tensor) -> Tensor:
        """Return F_j⁻¹(u_j) coordinate by coordinate for u (n, k) in (0, 1)^k, by bisection in
        float64 (to about 1e-12 of the components' spread)."""
        m, sd = self._m, self._sd
        ud = u.double().cpu()
        q = torch.special.ndtri(ud.clamp(1e-300, 1 - 1e-16))  # (n, k) within ±38
        lo = ((m - 40 * sd).amin(0) + q.clamp(max=0) * sd.amax(0)).expand_as(ud).clone()
        hi = ((m + 40 * sd).amax(0) + q.clamp(min=0) * sd.amax(0)).expand_as(ud).clone()
        for _ in range(100):
            mid = (lo + hi) / 2
            below = self.cdf_marginal(mid) < ud
            lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
        return ((lo + hi) / 2).to(u.dtype).to(u.device)

    def __repr__(self) -> str:
        return f"MixtureMeasure({self.mixture!r})"


def as_measure(base: BaseMeasure | Distribution) -> BaseMeasure:
    """Return ``base`` as a :class:`BaseMeasure` (wrapping torch distributions)."""
    if isinstance(base, BaseMeasure):
        return base
    if isinstance(base, Distribution):
        return DistributionMeasure(base)
    raise ConfigError(
        "base must be a BaseMeasure or a torch.distributions.Distribution, "
        f"got {type(base).__name__}"
    )


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


def _identity(x: Tensor) -> Tensor:
    return x


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


@dataclass(frozen=True)
class Example:
    """A named univariate pushforward with its exact density and CDF in closed form.

    The closed forms are written independently of :meth:`Pushforward.log_prob`, so tests and
    figures can check one against the other.
    """

    name: str
    title: str
    make: Callable[[], Pushforward]
    log_density: Fn
    cdf: Fn
    support: tuple[float, float]


def _sqrt_branches() -> Map1D:
    return Map1D(lambda x: x**2, [torch.sqrt, lambda y: -torch.sqrt(y)])


def _log_positive(y: Tensor) -> Tensor:
    return torch.log(y.clamp_min(1e-300))


def _chi2_1_log_density(y: Tensor) -> Tensor:
    # χ²₁: p(y) = exp(-y/2) / sqrt(2πy) on (0, ∞)
    out = -0.5 * y - 0.5 * torch.log(2 * math.pi * y.clamp_min(1e-300))
    return torch.where(y > 0, out, torch.full_like(y, -math.inf))


def _on_unit(y: Tensor, value: Tensor) -> Tensor:
    return torch.where((y >= 0) & (y <= 1), value, torch.full_like(value, -math.inf))


EXAMPLES: dict[str, Example] = {
    "identity": Example(
        "identity",
        "g(x) = x on Uniform([0,1])",
        lambda: Pushforward(Map1D(_identity, [_identity]), Uniform(0.0, 1.0)),
        lambda y: _on_unit(y, torch.zeros_like(y)),
        lambda y: y.clamp(0, 1),
        (0.0, 1.0),
    ),
    "square": Example(
        "square",
        "g(x) = x² on Uniform([0,1]): density 1/(2√y)",
        lambda: Pushforward(_sqrt_branches(), Uniform(0.0, 1.0)),
        lambda y: _on_unit(y, -math.log(2) - 0.5 * _log_positive(y)),
        lambda y: torch.sqrt(y.clamp(0, 1)),
        (0.0, 1.0),
    ),
    "gaussian-icdf": Example(
        "gaussian-icdf",
        "g = Φ⁻¹ on Uniform([0,1]): the standard Gaussian N(0,1)",
        lambda: inverse_cdf(Normal(0.0, 1.0)),
        lambda y: -0.5 * y**2 - 0.5 * math.log(2 * math.pi),
        torch.special.ndtr,
        (-4.0, 4.0),
    ),
    "square-normal": Example(
        "square-normal",
        "g(x) = x² on N(0,1): the χ² density with one degree of freedom",
        lambda: Pushforward(_sqrt_branches(), StandardNormal(1)),
        _chi2_1_log_density,
        lambda y: torch.special.gammainc(torch.tensor(0.5, dtype=y.dtype), y.clamp_min(0) / 2),
        (0.0, 6.0),
    ),
}


def example(name: str) -> Pushforward:
    """Return the built-in univariate example ``name`` (see ``EXAMPLES``) as a Pushforward."""
    return lookup(EXAMPLES, name, what="example").make()

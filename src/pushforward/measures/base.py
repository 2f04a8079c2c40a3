"""Base measures μ: the easy measures a pushforward draws z from (uniform on a box, the standard
Gaussian, a restriction, a Gaussian mixture, any torch distribution).

Each has ``sample`` (n, *event_shape) and ``log_prob`` (n,); those with a quantile function
(``has_quantile``) also map uniforms to draws coordinate by coordinate. Every stochastic call takes
an explicit ``torch.Generator``; nothing here touches global seeds.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.distributions import Distribution

from pushforward.core import ConfigError, NoDensityError, check_n
from pushforward.data import GaussianMixture
from pushforward.measures.gaussian import standard_normal_log_prob

__all__ = [
    "BaseMeasure",
    "DistributionMeasure",
    "MixtureMeasure",
    "Restricted",
    "StandardNormal",
    "Uniform",
    "as_measure",
    "draw",
]

Fn = Callable[[Tensor], Tensor]
"""A map of tensors, applied elementwise or row by row."""

Device = torch.device | str | None


def draw(
    fn: Callable[..., Tensor], *args: Any, generator: torch.Generator | None = None,
    device: Device = None, **kwargs: Any,
) -> Tensor:  # fmt: skip
    """Return ``fn(*args, **kwargs)`` (``torch.randn``, ``rand``, ``randint``, ``randperm``) on
    ``device``: drawn where ``generator`` lives, so that the numbers depend on the generator
    alone (a CPU generator gives the same draws to a model on any device), then moved; with no
    generator, drawn on ``device`` directly. ``kwargs`` (``dtype``) apply to the draw itself."""
    where = generator.device if generator is not None else device
    z = fn(*args, generator=generator, device=where, **kwargs)
    return z if device is None else z.to(device)


def _draw(
    fn: Callable[..., Tensor], shape: tuple[int, ...], generator: torch.Generator | None,
    device: Device,
) -> Tensor:  # fmt: skip
    """Return fn(*shape) (torch.rand or torch.randn) on ``device``, as :func:`draw`."""
    return draw(fn, *shape, generator=generator, device=device)


def _device_of(g: Any) -> torch.device | None:
    """Return the device of a module's first parameter or buffer (a module's bound method, such
    as a model's ``decode``, counts as its module), None for anything else."""
    g = getattr(g, "__self__", g)
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
        return standard_normal_log_prob(x)

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

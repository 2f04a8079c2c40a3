"""Two-dimensional benchmark measures with exact densities: Gaussian mixtures and moons.

:class:`GaussianMixture` is a finite mixture Σ_k w_k N(μ_k, Σ_k) with exact ``log_prob`` and seeded
``sample``; :func:`ring8` and :func:`grid25` are the PacGAN benchmark mixtures, :func:`moons`
scikit-learn's two half-moons, and :func:`mixture_from_spec` reads a mixture from a .json or
.toml file. Randomness only comes from the ``torch.Generator`` passed in.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final, final

import torch
from torch import Tensor

from pushforward.core import ConfigError, DataError, check_int, check_n, check_positive, one_line

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = ["GaussianMixture", "grid25", "mixture_from_spec", "moons", "ring8"]


def _float64_tensor(value: object, name: str) -> Tensor:
    try:
        t = torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"{name} must be an array of numbers: {one_line(exc)}") from None
    bad = ~torch.isfinite(t)
    if bad.any():
        index = ", ".join(str(i) for i in bad.nonzero()[0].tolist())
        where = f"{name}[{index}]" if index else name
        raise ConfigError(f"{name} must be finite, got {where} = {t[bad][0].item()}")
    return t.detach().cpu()


@final
class GaussianMixture:
    """A finite mixture Σ_k w_k N(μ_k, Σ_k) of Gaussians in d dimensions, with exact density.

    ``weights`` (K,) must be positive (they are normalised to sum to 1), ``means`` (K, d), and
    ``covariances`` (K, d, d) symmetric positive-definite. Parameters are kept in float64.
    """

    def __init__(self, weights: object, means: object, covariances: object) -> None:
        w = _float64_tensor(weights, "weights")
        mu = _float64_tensor(means, "means")
        cov = _float64_tensor(covariances, "covariances")
        if w.ndim != 1 or w.shape[0] == 0:
            raise ConfigError(f"weights must have shape (K,) with K >= 1, got {tuple(w.shape)}")
        k = w.shape[0]
        if mu.ndim != 2 or mu.shape[0] != k or mu.shape[1] == 0:
            raise ConfigError(
                f"means must have shape (K, d) = ({k}, d) to match weights, got {tuple(mu.shape)}"
            )
        d = mu.shape[1]
        if cov.shape != (k, d, d):
            raise ConfigError(
                f"covariances must have shape (K, d, d) = ({k}, {d}, {d}), got {tuple(cov.shape)}"
            )
        if (w <= 0).any():
            i = int((w <= 0).nonzero()[0])
            raise ConfigError(f"weights must be > 0, got weights[{i}] = {w[i].item():g}")
        asym = (cov - cov.mT).abs().amax(dim=(1, 2))  # (K,)
        tol = 1e-8 * cov.abs().amax(dim=(1, 2)).clamp(min=1.0)
        if (asym > tol).any():
            i = int((asym > tol).nonzero()[0])
            raise ConfigError(
                f"covariances[{i}] must be symmetric, got max |C - Cᵀ| = {asym[i].item():.3g}"
            )
        cov = (cov + cov.mT) / 2
        scale_tril, info = torch.linalg.cholesky_ex(cov)
        if (info != 0).any():
            i = int((info != 0).nonzero()[0])
            smallest = torch.linalg.eigvalsh(cov[i])[0].item()
            raise ConfigError(
                f"covariances[{i}] must be positive-definite, its smallest eigenvalue is "
                f"{smallest:.3g}"
            )
        self._weights = w / w.sum()  # (K,)
        self._means = mu  # (K, d)
        self._covariances = cov  # (K, d, d)
        self._scale_tril = scale_tril  # (K, d, d), Σ_k = L_k L_kᵀ

    @classmethod
    def isotropic(
        cls, means: object, stds: object, weights: object | None = None
    ) -> GaussianMixture:
        """Return the mixture with covariances std_k² I; ``stds`` is a number or (K,), weights
        default to equal."""
        mu = _float64_tensor(means, "means")
        k = mu.shape[0] if mu.ndim >= 1 else 1
        s = _float64_tensor(stds, "stds")
        if s.ndim == 0:
            s = s.expand(k)
        if s.shape != (k,):
            raise ConfigError(
                f"stds must be a number or have shape (K,) = ({k},), got {tuple(s.shape)}"
            )
        if (s <= 0).any():
            i = int((s <= 0).nonzero()[0])
            raise ConfigError(f"stds must be > 0, got stds[{i}] = {s[i].item():g}")
        d = mu.shape[-1] if mu.ndim == 2 else 1
        cov = s.square()[:, None, None] * torch.eye(d, dtype=torch.float64)  # (K, d, d)
        return cls(torch.ones(k) if weights is None else weights, mu, cov)

    @property
    def n_components(self) -> int:
        """Number of components K."""
        return self._weights.shape[0]

    @property
    def dim(self) -> int:
        """Dimension d of the points."""
        return self._means.shape[1]

    @property
    def weights(self) -> Tensor:
        """Normalised weights, (K,) float64."""
        return self._weights.clone()

    @property
    def means(self) -> Tensor:
        """Component means, (K, d) float64."""
        return self._means.clone()

    @property
    def covariances(self) -> Tensor:
        """Component covariances, (K, d, d) float64."""
        return self._covariances.clone()

    @property
    def stds(self) -> Tensor:
        """Component standard deviations σ_k of isotropic covariances σ_k² I, (K,) float64."""
        var = self._covariances[:, 0, 0]  # (K,)
        iso = var[:, None, None] * torch.eye(self.dim, dtype=torch.float64)
        off = (self._covariances - iso).abs().amax(dim=(1, 2)) > 1e-12 * var
        if off.any():
            i = int(off.nonzero()[0])
            raise ConfigError(f"stds: covariances[{i}] is not isotropic (σ² I); use .covariances")
        return var.sqrt()

    def log_prob(self, x: Tensor) -> Tensor:
        """Return log p(x), shape (n,), for points x of shape (n, d); computed in float64."""
        x = torch.as_tensor(x)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise DataError(f"log_prob: x must have shape (n, {self.dim}), got {tuple(x.shape)}")
        xd = x.to(torch.float64)
        mu = self._means.to(xd.device)
        scale_tril = self._scale_tril.to(xd.device)
        diff = (xd.unsqueeze(0) - mu.unsqueeze(1)).transpose(1, 2)  # (K, d, n)
        z = torch.linalg.solve_triangular(scale_tril, diff, upper=False)  # (K, d, n)
        log_det = 2 * scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)  # (K,)
        log_norm = -0.5 * (self.dim * math.log(2 * math.pi) + log_det)  # (K,)
        log_comp = self._weights.to(xd.device).log() + log_norm  # (K,)
        out = torch.logsumexp(log_comp[:, None] - 0.5 * z.square().sum(1), dim=0)  # (n,)
        return out.to(x.dtype) if x.is_floating_point() else out

    def sample_with_labels(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> tuple[Tensor, Tensor]:
        """Return exactly n points, (n, d) of ``dtype``, and their components, (n,) int64."""
        n = check_n(n, allow_zero=True)
        device = generator.device if generator is not None else torch.device("cpu")
        if n == 0:  # torch.multinomial refuses to draw nothing
            empty = torch.empty(0, self.dim, dtype=dtype, device=device)
            return empty, torch.empty(0, dtype=torch.int64, device=device)
        k = torch.multinomial(
            self._weights.to(device), n, replacement=True, generator=generator
        )  # (n,)
        eps = torch.randn(n, self.dim, generator=generator, dtype=torch.float64, device=device)
        x = torch.empty(n, self.dim, dtype=torch.float64, device=device)
        for j in range(self.n_components):
            rows = k == j
            x[rows] = self._means[j].to(device) + eps[rows] @ self._scale_tril[j].to(device).mT
        return x.to(dtype), k

    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """Return exactly n points drawn from the mixture, (n, d) of ``dtype``."""
        return self.sample_with_labels(n, generator=generator, dtype=dtype)[0]

    def to_spec(self) -> dict[str, list]:
        """Return the parameters as lists, the dict :func:`mixture_from_spec` reads."""
        return {
            "weights": self._weights.tolist(),
            "means": self._means.tolist(),
            "covariances": self._covariances.tolist(),
        }

    def __repr__(self) -> str:
        return f"GaussianMixture(n_components={self.n_components}, dim={self.dim})"


def ring8(radius: float = 1.0, std: float = 0.01, n_modes: int = 8) -> GaussianMixture:
    """Return the PacGAN ring: equal-weight modes radius·(cos 2πk/K, sin 2πk/K), covariance
    std² I."""
    radius = check_positive(radius, "radius")
    n_modes = check_int(n_modes, "n_modes", minimum=1)
    angle = 2 * math.pi * torch.arange(n_modes, dtype=torch.float64) / n_modes  # (K,)
    means = radius * torch.stack([angle.cos(), angle.sin()], dim=1)  # (K, 2)
    return GaussianMixture.isotropic(means, check_positive(std, "std"))


def grid25(spacing: float = 2.0, std: float = 0.05) -> GaussianMixture:
    """Return the PacGAN grid: 25 equal-weight modes at spacing·{−2, …, 2}², covariance std² I."""
    steps = check_positive(spacing, "spacing") * torch.arange(-2, 3, dtype=torch.float64)
    means = torch.cartesian_prod(steps, steps)  # (25, 2)
    return GaussianMixture.isotropic(means, check_positive(std, "std"))


def moons(
    n: int, *, noise: float = 0.1, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Return two interleaving half-moons as in ``sklearn.datasets.make_moons``: points (n, 2)
    float32, shuffled, with Gaussian noise of std ``noise``, and labels (n,) int64 (0 upper moon,
    1 lower moon)."""
    n = check_n(n)
    noise = check_positive(noise, "noise", allow_zero=True)
    n_upper = n // 2
    t_up = torch.linspace(0, math.pi, n_upper, dtype=torch.float64)
    t_low = torch.linspace(0, math.pi, n - n_upper, dtype=torch.float64)
    upper = torch.stack([t_up.cos(), t_up.sin()], dim=1)  # (n_upper, 2)
    lower = torch.stack([1 - t_low.cos(), 0.5 - t_low.sin()], dim=1)  # (n - n_upper, 2)
    labels = torch.cat([torch.zeros(n_upper), torch.ones(n - n_upper)]).long()
    perm = torch.randperm(n, generator=generator)
    x = torch.cat([upper, lower])[perm] + noise * torch.randn(
        n, 2, generator=generator, dtype=torch.float64
    )
    return x.float(), labels[perm]


def _read_spec_json(text: str, path: Path) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"mixture spec '{path}' is not valid JSON: line {exc.lineno}, column {exc.colno}: "
            f"{exc.msg}"
        ) from None


def _read_spec_toml(text: str, path: Path) -> object:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DataError(f"mixture spec '{path}' is not valid TOML: {one_line(exc)}") from None


_SPEC_READERS: Final[Mapping[str, Callable[[str, Path], object]]] = {
    ".json": _read_spec_json,
    ".toml": _read_spec_toml,
}
_SPEC_KEYS: Final = ("weights", "means", "covariances", "stds")


def mixture_from_spec(path: str | os.PathLike[str]) -> GaussianMixture:
    """Return the :class:`GaussianMixture` described by a .json or .toml file.

    Keys: ``means`` (K×d), ``covariances`` (K×d×d) or ``stds`` (a number or K numbers, for
    σ_k² I), and optionally ``weights`` (K positive numbers; equal when left out).
    """
    path = Path(path)
    reader = _SPEC_READERS.get(path.suffix.lower())
    if reader is None:
        raise DataError(f"mixture spec '{path}' must be a .json or .toml file")
    if not path.is_file():
        raise DataError(f"mixture spec '{path}' not found")
    try:
        spec = reader(path.read_text(encoding="utf-8"), path)
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"mixture spec '{path}' cannot be read: {one_line(exc)}") from None
    if not isinstance(spec, dict):
        raise DataError(
            f"mixture spec '{path}' must hold a table of keys, got {type(spec).__name__}"
        )
    allowed = ", ".join(_SPEC_KEYS)
    unknown = sorted(set(spec) - set(_SPEC_KEYS))
    if unknown:
        raise DataError(f"mixture spec '{path}' has unknown key {unknown[0]!r}; allowed: {allowed}")
    if "means" not in spec:
        raise DataError(f"mixture spec '{path}' is missing key 'means' (K lists of d numbers)")
    if ("covariances" in spec) == ("stds" in spec):
        got = "both" if "stds" in spec else "neither"
        raise DataError(
            f"mixture spec '{path}' needs exactly one of 'covariances' (K×d×d) or 'stds' "
            f"(K numbers), got {got}"
        )
    try:
        if "stds" in spec:
            return GaussianMixture.isotropic(spec["means"], spec["stds"], spec.get("weights"))
        means = _float64_tensor(spec["means"], "means")
        weights = spec.get("weights", torch.ones(means.shape[0] if means.ndim else 1))
        return GaussianMixture(weights, means, spec["covariances"])
    except ConfigError as exc:
        raise DataError(f"mixture spec '{path}': {exc}") from None

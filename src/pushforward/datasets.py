"""Datasets, validated at the door: 2-D Gaussian mixtures, moons, digits, MNIST and user arrays.

Everything enters through :func:`load_data`, which turns one string into a :class:`Dataset` of
float32 points ``x`` of shape (n, d):

* built-in names (:data:`BUILTIN_DATA`): ``ring8`` and ``grid25`` (the PacGAN benchmark mixtures,
  with their exact density in ``Dataset.distribution``), ``moons``, ``digits`` (scikit-learn's 8×8
  digits) and ``mnist`` (the 10,000-image test set, found by :func:`find_mnist_folder`);
* ``mnist:DIR`` (IDX files in DIR, gzipped or raw), ``mixture:FILE.json|.toml`` (a
  :class:`GaussianMixture` spec, sampled);
* a ``.npy``, ``.npz`` or ``.csv`` file of numbers.

Whatever comes in is checked once, here: finite, non-empty, numeric, shape (n, d), no pickles.
Every failure is a :class:`~pushforward.errors.DataError` (bad data) or
:class:`~pushforward.errors.ConfigError` (bad option) whose one-line message names the file or the
parameter and what is wrong. Randomness only comes from the ``torch.Generator`` passed in.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import struct
import sys
import zipfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, NamedTuple, final

import numpy as np
import torch
from torch import Tensor

from pushforward.errors import ConfigError, DataError, lookup
from pushforward.validate import check_int, check_n, check_positive

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = [
    "BUILTIN_DATA",
    "DEFAULT_N",
    "KNOWN_MNIST_SHA256",
    "MNIST_MIRRORS",
    "Dataset",
    "GaussianMixture",
    "download_mnist",
    "find_mnist_folder",
    "grid25",
    "load_array",
    "load_data",
    "load_digits",
    "load_mnist",
    "mixture_from_spec",
    "moons",
    "read_idx",
    "ring8",
    "select_rows",
    "train_test_split",
]

log = logging.getLogger(__name__)

DEFAULT_N: Final = 10_000
_REPO_ROOT: Final = Path(__file__).resolve().parents[2]


def _one_line(exc: BaseException) -> str:
    """Return an exception's message squeezed onto one line."""
    return " ".join(str(exc).split()) or type(exc).__name__


# --- Gaussian mixtures ---------------------------------------------------------------------------


def _float64_tensor(value: object, name: str) -> Tensor:
    try:
        t = torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"{name} must be an array of numbers: {_one_line(exc)}") from None
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
        raise DataError(f"mixture spec '{path}' is not valid TOML: {_one_line(exc)}") from None


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
        raise DataError(f"mixture spec '{path}' cannot be read: {_one_line(exc)}") from None
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


# --- the Dataset ---------------------------------------------------------------------------------


@final
@dataclass(frozen=True, kw_only=True, eq=False)
class Dataset:
    """Points ``x`` (n, d) float32, optional ``labels`` (n,) int64, and what is known about them.

    ``image_shape`` is (h, w) when each row is an h×w image; ``distribution`` is the true density
    for the mixtures; ``meta`` records the source (file, split, SHA-256, whether official MNIST).
    """

    x: Tensor
    name: str
    labels: Tensor | None = None
    image_shape: tuple[int, int] | None = None
    distribution: GaussianMixture | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.x, Tensor) or self.x.ndim != 2 or self.x.dtype != torch.float32:
            got = f"{self.x.dtype} {tuple(self.x.shape)}" if isinstance(self.x, Tensor) else "?"
            raise DataError(f"Dataset {self.name!r}: x must be a float32 tensor (n, d), got {got}")
        if self.labels is not None and (
            self.labels.shape != (self.x.shape[0],) or self.labels.dtype != torch.int64
        ):
            raise DataError(
                f"Dataset {self.name!r}: labels must be int64 of shape ({self.x.shape[0]},), "
                f"got {self.labels.dtype} {tuple(self.labels.shape)}"
            )
        if self.image_shape is not None and math.prod(self.image_shape) != self.x.shape[1]:
            raise DataError(
                f"Dataset {self.name!r}: image_shape {self.image_shape} does not hold "
                f"{self.x.shape[1]} values per row"
            )

    @property
    def n(self) -> int:
        """Number of points."""
        return self.x.shape[0]

    @property
    def dim(self) -> int:
        """Dimension of each point."""
        return self.x.shape[1]

    def describe(self) -> str:
        """Return a short multi-line description: name, shape, value range, labels, source."""
        lo, hi = self.x.min().item(), self.x.max().item()
        lines = [
            f"{self.name}: {self.n:,} points × {self.dim} dims, values in [{lo:.4g}, {hi:.4g}]"
        ]
        if self.image_shape is not None:
            lines.append(f"images: {self.image_shape[0]}×{self.image_shape[1]}")
        if self.labels is not None:
            values, counts = torch.unique(self.labels, return_counts=True)
            pairs = ", ".join(
                f"{v}: {c}" for v, c in zip(values.tolist(), counts.tolist(), strict=True)
            )
            lines.append(f"labels: {len(values)} classes ({pairs})")
        if self.distribution is not None:
            d = self.distribution
            lines.append(f"true density: Gaussian mixture of {d.n_components} components")
        if "official" in self.meta:
            lines.append(
                "official MNIST files (SHA-256 verified)"
                if self.meta["official"]
                else "not the official MNIST files (SHA-256 differs)"
            )
        if "rows" in self.meta:
            lines.append(f"rows {self.meta['rows'][0]}:{self.meta['rows'][1]} of the source")
        if "source" in self.meta:
            lines.append(f"source: {self.meta['source']}")
        return "\n".join(lines)


def _rows_view(ds: Dataset, start: int, stop: int) -> Dataset:
    labels = None if ds.labels is None else ds.labels[start:stop]
    meta = {**ds.meta, "rows": (start, stop)}
    return replace(ds, x=ds.x[start:stop], labels=labels, meta=meta)


def train_test_split(ds: Dataset, n_train: int) -> tuple[Dataset, Dataset]:
    """Return (the first ``n_train`` rows, the rest) of ``ds``, by position, as views."""
    n_train = check_int(n_train, "n_train", minimum=1)
    if n_train >= ds.n:
        raise ConfigError(f"n_train must be < the {ds.n} rows of {ds.name!r}, got {n_train}")
    return _rows_view(ds, 0, n_train), _rows_view(ds, n_train, ds.n)


def select_rows(ds: Dataset, rows: str | None) -> Dataset:
    """Return the rows ``START:STOP`` of ``ds`` (Python slice syntax, e.g. ':8000' or '8000:').

    The shared MNIST protocol is ``--rows :8000`` to train and ``--rows 8000:`` to evaluate.
    """
    if rows is None:
        return ds
    parts = rows.split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        start, stop = (int(p) if p.strip() else None for p in parts)
    except ValueError:
        raise ConfigError(
            f"rows {rows!r} is not allowed; use START:STOP, e.g. ':8000' or '8000:'"
        ) from None
    lo, hi, _ = slice(start, stop).indices(ds.n)
    if hi <= lo:
        raise ConfigError(f"rows {rows!r} selects no rows of the {ds.n} in {ds.name!r}")
    return _rows_view(ds, lo, hi)


def _head(ds: Dataset, n: int | None) -> Dataset:
    """Return the first n rows of a fixed dataset (all of it when n is None)."""
    if n is None or n == ds.n:
        return ds
    if n > ds.n:
        raise ConfigError(f"n must be <= the {ds.n} rows of {ds.name!r}, got {n}")
    labels = None if ds.labels is None else ds.labels[:n]
    return replace(ds, x=ds.x[:n], labels=labels, meta={**ds.meta, "rows": (0, n)})


def _mixture_dataset(
    name: str, mixture: GaussianMixture, n: int | None, generator: torch.Generator, **meta: Any
) -> Dataset:
    x, k = mixture.sample_with_labels(DEFAULT_N if n is None else n, generator=generator)
    return Dataset(x=x, labels=k, name=name, distribution=mixture, meta=meta)


# --- checks at the door for arrays ---------------------------------------------------------------


def _cell_0based(row: int, col: int) -> str:
    return f"row {row}, column {col} (counting from 0)"


def _validated_x(
    x: np.ndarray, source: str, cell: Callable[[int, int], str] = _cell_0based
) -> Tensor:
    """Return ``x`` as a float32 tensor (n, d) after the checks every loaded array passes."""
    if x.dtype.kind not in "biuf":
        raise DataError(f"{source}: dtype {x.dtype} is not numeric; expected integers or floats")
    if x.ndim == 1:
        x = x.reshape(-1, 1)
    if x.ndim != 2:
        raise DataError(f"{source}: expected shape (n, d), got {tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise DataError(f"{source} is empty: shape {tuple(x.shape)}")
    with np.errstate(over="ignore", invalid="ignore"):
        x32 = np.ascontiguousarray(x, dtype=np.float32)
    bad = ~np.isfinite(x32)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise DataError(
            f"{source} has {int(bad.sum())} non-finite values (NaN, inf or beyond float32); "
            f"first at {cell(row, col)}"
        )
    return torch.from_numpy(x32)


def _validated_labels(y: np.ndarray, source: str, n: int) -> Tensor:
    """Return integer-valued labels (n,) as an int64 tensor, or raise :class:`DataError`."""
    if y.shape != (n,) or y.dtype.kind not in "biuf":
        raise DataError(f"{source}: labels must be {n} numbers, got {y.dtype} {tuple(y.shape)}")
    if y.dtype.kind == "f" and not (np.isfinite(y).all() and (y == np.round(y)).all()):
        raise DataError(f"{source}: labels must be whole numbers")
    return torch.from_numpy(y.astype(np.int64))


class _Arrays(NamedTuple):
    x: np.ndarray
    labels: np.ndarray | None = None
    cell: Callable[[int, int], str] = _cell_0based


_X_KEYS: Final = ("x", "X", "data")
_LABEL_KEYS: Final = ("y", "labels")


def _read_numpy(path: Path) -> _Arrays:
    """Read a .npy array or an .npz archive, never unpickling anything."""
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            return _Arrays(loaded)
        with loaded:
            keys = list(loaded.files)
            x_key = next((k for k in _X_KEYS if k in keys), keys[0] if len(keys) == 1 else None)
            if x_key is None:
                raise DataError(
                    f"data file '{path}' holds arrays {', '.join(keys) or 'none'}; name the data "
                    f"array {' or '.join(_X_KEYS)}"
                )
            y_key = next((k for k in _LABEL_KEYS if k in keys and k != x_key), None)
            return _Arrays(loaded[x_key], None if y_key is None else loaded[y_key])
    except DataError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(
            f"data file '{path}' is not a numeric NumPy file ({_one_line(exc)}); object and "
            "pickled arrays are refused, never unpickled"
        ) from None


def _as_float(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def _read_csv(path: Path) -> _Arrays:
    """Read comma-separated numbers; an all-text first row is a header, whose column named
    label or labels (if any) holds the labels."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"data file '{path}' cannot be read as text: {_one_line(exc)}") from None
    header: list[str] | None = None
    rows: list[list[float]] = []
    lines: list[int] = []
    reader = csv.reader(io.StringIO(text))
    for cells in reader:
        if not cells or all(not c.strip() for c in cells):
            continue
        values = [_as_float(c) for c in cells]
        if header is None and not rows and all(v is None for v in values):
            header = [c.strip().lower() for c in cells]
            continue
        width = len(header) if header is not None else len(rows[0]) if rows else len(values)
        if len(values) != width:
            raise DataError(
                f"data file '{path}' line {reader.line_num} has {len(values)} columns, "
                f"expected {width}"
            )
        for col, (cell, value) in enumerate(zip(cells, values, strict=True)):
            if value is None:
                raise DataError(
                    f"data file '{path}' line {reader.line_num}, column {col + 1}: "
                    f"{cell.strip()!r} is not a number"
                )
        rows.append(values)  # type: ignore[arg-type]
        lines.append(reader.line_num)
    width = len(rows[0]) if rows else len(header or ())
    table = np.array(rows, dtype=np.float64).reshape(len(rows), width)  # (n, width)
    label_col = next((header.index(h) for h in ("label", "labels") if header and h in header), None)
    labels = None
    if label_col is not None:
        labels = table[:, label_col]
        table = np.delete(table, label_col, axis=1)
    return _Arrays(table, labels, lambda row, col: f"line {lines[row]}, column {col + 1}")


_ARRAY_READERS: Final[Mapping[str, Callable[[Path], _Arrays]]] = {
    ".npy": _read_numpy,
    ".npz": _read_numpy,
    ".csv": _read_csv,
}


def load_array(path: str | os.PathLike[str]) -> Dataset:
    """Return the points in a .npy, .npz or .csv file as a :class:`Dataset` (x (n, d) float32).

    A 1-D array (n,) becomes (n, 1). An .npz holds the data under ``x``, ``X`` or ``data`` (or
    as its only array) and optional labels under ``y`` or ``labels``.
    """
    path = Path(path)
    reader = _ARRAY_READERS.get(path.suffix.lower())
    if reader is None:
        raise DataError(f"data file '{path}' must end in {', '.join(_ARRAY_READERS)}")
    if not path.is_file():
        raise DataError(f"data file '{path}' not found")
    arrays = reader(path)
    source = f"data file '{path}'"
    x = _validated_x(arrays.x, source, arrays.cell)
    labels = None if arrays.labels is None else _validated_labels(arrays.labels, source, len(x))
    return Dataset(x=x, labels=labels, name=path.stem, meta={"source": str(path)})


def load_digits() -> Dataset:
    """Return scikit-learn's bundled 8×8 digits: x (1797, 64) in [0, 1], labels (1797,)."""
    from sklearn.datasets import load_digits as sklearn_digits  # slow import, only when needed

    bunch = sklearn_digits()
    x = _validated_x(np.asarray(bunch.data) / 16.0, "digits")
    labels = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))
    return Dataset(
        x=x, labels=labels, name="digits", image_shape=(8, 8), meta={"source": "scikit-learn"}
    )


# --- MNIST ---------------------------------------------------------------------------------------

_GZIP_MAGIC: Final = b"\x1f\x8b"
_IDX_DTYPES: Final[Mapping[int, str]] = {
    0x08: "u1",
    0x09: "i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}
_MNIST_STEMS: Final[Mapping[str, tuple[str, str]]] = {
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
}
KNOWN_MNIST_SHA256: Final[Mapping[str, str]] = {
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    "train-images-idx3-ubyte.gz": (
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"
    ),
    "train-labels-idx1-ubyte.gz": (
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"
    ),
    # the gunzipped test files
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
MNIST_MIRRORS: Final = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
_MNIST_HINT: Final = (
    "point at a folder of MNIST IDX files with --data mnist:DIR or PUSHFORWARD_DATA=DIR"
)


def _gunzip(raw: bytes, path: Path) -> tuple[bytes, bool]:
    """Return the decompressed bytes and whether the gzip stream was complete."""
    out = []
    rest = raw
    while True:
        stream = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            out.append(stream.decompress(rest))
            out.append(stream.flush())
        except zlib.error as exc:
            raise DataError(f"IDX file '{path}' is corrupt gzip: {_one_line(exc)}") from None
        if not stream.eof:
            return b"".join(out), False
        rest = stream.unused_data
        if not rest:
            return b"".join(out), True
        if rest[:2] != _GZIP_MAGIC:
            raise DataError(f"IDX file '{path}' has {len(rest)} trailing bytes after its gzip data")


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Return the array in an IDX file (raw or gzip, told apart by the magic bytes 1f 8b).

    The header is 0x00 0x00, a type code (0x08 uint8 … 0x0E float64), the number of dimensions,
    then each size as a big-endian uint32; the data must fill exactly the declared shape.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"IDX file '{path}' not found")
    raw = path.read_bytes()
    gzipped = raw[:2] == _GZIP_MAGIC
    data, complete = _gunzip(raw, path) if gzipped else (raw, True)
    what = "decompressed data" if gzipped else "file"
    early = "" if complete else " (the gzip stream ends early: file truncated)"
    if len(data) < 4:
        raise DataError(
            f"IDX file '{path}' is too short for an IDX header: {len(data)} bytes{early}"
        )
    magic = int.from_bytes(data[:4], "big")
    if data[:2] != b"\x00\x00" or data[2] not in _IDX_DTYPES or data[3] == 0:
        raise DataError(
            f"IDX file '{path}' has bad magic number 0x{magic:08x}; expected 0x0000, a type code "
            "(0x08 uint8 … 0x0E float64) and ndim >= 1, e.g. 0x00000803 MNIST images, "
            f"0x00000801 labels{early}"
        )
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    ndim = data[3]
    offset = 4 + 4 * ndim
    if len(data) < offset:
        raise DataError(
            f"IDX file '{path}' is truncated: its {ndim}-D header needs {offset} bytes, the {what} "
            f"has {len(data)}{early}"
        )
    shape = struct.unpack(f">{ndim}I", data[4:offset])
    expected = offset + math.prod(shape) * dtype.itemsize
    if len(data) < expected or not complete:
        raise DataError(
            f"IDX file '{path}' is truncated: header declares shape {shape}, which needs "
            f"{expected} bytes, the {what} has {len(data)}{early}"
        )
    if len(data) > expected:
        raise DataError(
            f"IDX file '{path}' has {len(data) - expected} trailing bytes: header declares shape "
            f"{shape}, which needs {expected} bytes, the {what} has {len(data)}"
        )
    array = np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=offset)
    return array.reshape(shape).astype(dtype.newbyteorder("="))


def _idx_file(folder: Path, stem: str) -> Path | None:
    """Return ``folder/stem.gz`` or ``folder/stem``, whichever exists first."""
    return next((p for p in (folder / f"{stem}.gz", folder / stem) if p.is_file()), None)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_mnist(folder: str | os.PathLike[str], *, split: str = "test") -> Dataset:
    """Return MNIST from IDX files in ``folder``: x (n, 784) float32 in [0, 1], labels (n,).

    ``split`` is ``"test"`` (t10k-*, 10,000 images) or ``"train"`` (train-*, 60,000); each file
    may be gzipped (``.gz``) or raw. ``meta["official"]`` says whether both files match the
    SHA-256 of the official release.
    """
    folder = Path(folder)
    stems = lookup(_MNIST_STEMS, split, what="MNIST split")
    if not folder.is_dir():
        problem = "is a file, not a folder" if folder.exists() else "not found"
        raise DataError(f"MNIST folder '{folder}' {problem}")
    files = [_idx_file(folder, stem) for stem in stems]
    missing = [f"{stem}(.gz)" for stem, f in zip(stems, files, strict=True) if f is None]
    if missing:
        raise DataError(f"MNIST folder '{folder}' has no {' and no '.join(missing)}; {_MNIST_HINT}")
    image_file, label_file = files
    assert image_file is not None and label_file is not None
    images, labels = read_idx(image_file), read_idx(label_file)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(
            f"MNIST images '{image_file}' must be uint8 of shape (n, rows, cols), got "
            f"{images.dtype} {images.shape}"
        )
    if labels.ndim != 1 or labels.dtype != np.uint8 or (labels.size > 0 and labels.max() > 9):
        raise DataError(f"MNIST labels '{label_file}' must be uint8 digits 0-9 of shape (n,)")
    if len(images) != len(labels):
        raise DataError(
            f"MNIST images '{image_file}' hold {len(images)} images but labels '{label_file}' "
            f"hold {len(labels)} labels"
        )
    sha = {f.name: _sha256(f) for f in (image_file, label_file)}
    official = all(KNOWN_MNIST_SHA256.get(name) == digest for name, digest in sha.items())
    x = _validated_x(images.reshape(len(images), -1) / np.float32(255), f"MNIST '{image_file}'")
    return Dataset(
        x=x,
        labels=torch.from_numpy(labels.astype(np.int64)),
        name="mnist",
        image_shape=(images.shape[1], images.shape[2]),
        meta={"source": str(folder), "split": split, "official": official, "sha256": sha},
    )


def _mnist_cache_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "pushforward" / "mnist"


def _mnist_search_paths() -> list[Path]:
    """Return the folders :func:`find_mnist_folder` tries, in order."""
    paths = []
    env = os.environ.get("PUSHFORWARD_DATA")
    if env:
        paths += [Path(env).expanduser(), Path(env).expanduser() / "mnist"]
    shared = Path("..", "shared", "data", "mnist")
    paths += [Path.cwd() / shared, _REPO_ROOT / shared, _mnist_cache_dir()]
    unique: dict[Path, Path] = {}
    for p in paths:
        unique.setdefault(p.resolve(), p)
    return list(unique.values())


def find_mnist_folder(*, split: str = "test") -> Path | None:
    """Return the first folder holding the MNIST ``split`` files, or None.

    Tries ``$PUSHFORWARD_DATA`` (or its ``mnist/`` subfolder), ``../shared/data/mnist`` from the
    working directory and from the repository root, then the cache
    (``$XDG_CACHE_HOME/pushforward/mnist`` or ``~/.cache/pushforward/mnist``).
    """
    stems = lookup(_MNIST_STEMS, split, what="MNIST split")
    for folder in _mnist_search_paths():
        if all(_idx_file(folder, stem) is not None for stem in stems):
            log.debug("MNIST %s files found in %s", split, folder)
            return folder.resolve()
    return None


def download_mnist(folder: str | os.PathLike[str] | None = None, *, split: str = "test") -> Path:
    """Download the MNIST ``split`` .gz files into ``folder`` (default: the cache), checking
    their SHA-256; return the folder."""
    stems = lookup(_MNIST_STEMS, split, what="MNIST split")
    folder = _mnist_cache_dir() if folder is None else Path(folder)
    try:
        import pooch
    except ImportError:
        raise DataError(f"downloading MNIST needs the 'pooch' package; {_MNIST_HINT}") from None
    for name in (f"{stem}.gz" for stem in stems):
        failures = []
        for mirror in MNIST_MIRRORS:
            log.info("downloading %s%s into %s", mirror, name, folder)
            try:
                pooch.retrieve(
                    mirror + name,
                    known_hash=f"sha256:{KNOWN_MNIST_SHA256[name]}",
                    fname=name,
                    path=folder,
                    progressbar=False,
                )
                break
            except Exception as exc:  # network stacks raise many types; all mean "try the next"
                failures.append(f"{mirror}{name}: {_one_line(exc)}")
        else:
            raise DataError(
                f"could not download MNIST {name} into '{folder}' (no network, or checksum "
                f"mismatch): {'; '.join(failures)}; {_MNIST_HINT}"
            )
    return folder


# --- the one entry point -------------------------------------------------------------------------


def _mnist_data(n: int | None, generator: torch.Generator) -> Dataset:
    folder = find_mnist_folder()
    if folder is None:
        looked = ", ".join(f"'{p}'" for p in _mnist_search_paths())
        try:
            folder = download_mnist(_mnist_cache_dir())
        except DataError as exc:
            raise DataError(f"MNIST test files not found in {looked}, and {exc}") from None
    return _head(load_mnist(folder), n)


def _moons_data(n: int | None, generator: torch.Generator) -> Dataset:
    x, labels = moons(DEFAULT_N if n is None else n, generator=generator)
    return Dataset(x=x, labels=labels, name="moons", meta={"noise": 0.1})


BUILTIN_DATA: Final[Mapping[str, Callable[[int | None, torch.Generator], Dataset]]] = {
    "ring8": lambda n, g: _mixture_dataset("ring8", ring8(), n, g),
    "grid25": lambda n, g: _mixture_dataset("grid25", grid25(), n, g),
    "moons": _moons_data,
    "digits": lambda n, g: _head(load_digits(), n),
    "mnist": _mnist_data,
}
"""Built-in data by name: each maker takes (n or None, generator) and returns a Dataset."""


def _mnist_dir_data(rest: str, n: int | None, generator: torch.Generator) -> Dataset:
    if not rest:
        raise DataError("data 'mnist:' needs a folder, as in mnist:DIR")
    return _head(load_mnist(rest), n)


def _mixture_file_data(rest: str, n: int | None, generator: torch.Generator) -> Dataset:
    if not rest:
        raise DataError("data 'mixture:' needs a file, as in mixture:FILE.json")
    mixture = mixture_from_spec(rest)
    return _mixture_dataset(f"mixture-{Path(rest).stem}", mixture, n, generator, source=rest)


_PREFIXED_DATA: Final[Mapping[str, Callable[[str, int | None, torch.Generator], Dataset]]] = {
    "mnist": _mnist_dir_data,
    "mixture": _mixture_file_data,
}
_DATA_FORMS: Final = (
    f"{', '.join(BUILTIN_DATA)}, mnist:DIR, mixture:FILE.json|.toml, "
    f"or a {'/'.join(_ARRAY_READERS)} file"
)


def load_data(
    spec: str | os.PathLike[str], *, n: int | None = None, generator: torch.Generator | None = None
) -> Dataset:
    """Return the dataset named by ``spec``, checked at the door: x (n, d) float32.

    ``spec`` is a built-in name (``ring8``, ``grid25``, ``moons``, ``digits``, ``mnist``),
    ``mnist:DIR``, ``mixture:FILE.json|.toml`` or a path to a .npy/.npz/.csv file. For sampled
    data (mixtures, moons) ``n`` is the number of points (default 10,000), drawn with
    ``generator`` (default: seeded 0, so equal calls give equal data); for fixed data it keeps the
    first n rows (default all).
    """
    spec = os.fspath(spec)
    if n is not None:
        n = check_n(n)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ConfigError(f"generator must be a torch.Generator or None, got {type(generator)}")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    if spec in BUILTIN_DATA:
        return BUILTIN_DATA[spec](n, gen)
    prefix, colon, rest = spec.partition(":")
    if colon and prefix in _PREFIXED_DATA:
        return _PREFIXED_DATA[prefix](rest, n, gen)
    if Path(spec).suffix.lower() in _ARRAY_READERS:
        return _head(load_array(spec), n)
    raise DataError(f"unknown data {spec!r}; use one of: {_DATA_FORMS}")

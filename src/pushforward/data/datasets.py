"""Datasets, validated at the door: one string names the data, one :class:`Dataset` holds it.

Everything enters through :func:`load_data`, which turns one string into a :class:`Dataset` of
float32 points ``x`` of shape (n, d):

* built-in names (:data:`BUILTIN_DATA`): ``ring8`` and ``grid25`` (the PacGAN benchmark mixtures,
  with their exact density in ``Dataset.distribution``), ``moons``, ``digits`` (scikit-learn's 8×8
  digits) and ``mnist`` (the 10,000-image test set, found by :func:`find_mnist_folder`);
* ``mnist:DIR`` (IDX files in DIR, gzipped or raw), ``mixture:FILE.json|.toml`` (a
  :class:`GaussianMixture` spec, sampled);
* a ``.npy``, ``.npz`` or ``.csv`` file of numbers.

The sources live in their own modules, which know nothing of :class:`Dataset`:
:mod:`pushforward.mixtures` (Gaussian mixtures and moons), :mod:`pushforward.mnist` (IDX files)
and :mod:`pushforward.arrays` (user files); this module wraps what they return, and re-exports
their public names. Whatever comes in is checked once: finite, non-empty, numeric, shape (n, d),
no pickles. Every failure is a :class:`~pushforward.errors.DataError` (bad data) or
:class:`~pushforward.errors.ConfigError` (bad option) whose one-line message names the file or the
parameter and what is wrong. Randomness only comes from the ``torch.Generator`` passed in.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, final

import numpy as np
import torch
from torch import Tensor

from pushforward.core import ConfigError, DataError, check_int, check_n
from pushforward.data.arrays import ARRAY_SUFFIXES, as_points, read_array
from pushforward.data.mixtures import GaussianMixture, grid25, mixture_from_spec, moons, ring8
from pushforward.data.mnist import (
    KNOWN_MNIST_SHA256,
    MNIST_MIRRORS,
    download_mnist,
    find_mnist_folder,
    locate_mnist,
    read_idx,
    read_mnist,
)

__all__ = [
    "BUILTIN_DATA",
    "DEFAULT_N",
    "KNOWN_MNIST_SHA256",
    "MNIST_MIRRORS",
    "Dataset",
    "GaussianMixture",
    "data_kind",
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

DEFAULT_N: Final = 10_000


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

    @property
    def kind(self) -> str:
        """The kind of data (a key of :data:`~pushforward.contract.DATA_KINDS`): ``images`` when
        each row is an image, else ``points``."""
        return "points" if self.image_shape is None else "images"

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


# --- fixed data sets -----------------------------------------------------------------------------


def load_array(path: str | os.PathLike[str]) -> Dataset:
    """Return the points in a .npy, .npz or .csv file as a :class:`Dataset` (x (n, d) float32).

    A 1-D array (n,) becomes (n, 1). An .npz holds the data under ``x``, ``X`` or ``data`` (or
    as its only array) and optional labels under ``y`` or ``labels``
    (:func:`~pushforward.arrays.read_array`).
    """
    path = Path(path)
    x, labels = read_array(path)
    return Dataset(x=x, labels=labels, name=path.stem, meta={"source": str(path)})


DIGITS_FILE = ("datasets", "data", "digits.csv.gz")
"""Where scikit-learn's package holds the 8×8 digits (1,797 rows of 64 pixels in 0…16, then the
label), relative to its folder."""


def _bundled_digits() -> tuple[np.ndarray, np.ndarray] | None:
    """Return (pixels (1797, 64), labels (1797,)) read from scikit-learn's bundled file without
    importing scikit-learn (0.7–0.8 s of a fresh process on a 2-core AMD EPYC with AVX-512:
    BENCHMARKS.md), or None where the file is not at :data:`DIGITS_FILE`."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")  # finds the package without running it
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent.joinpath(*DIGITS_FILE)
    if not path.is_file():
        return None
    return _read_digits_file(path, path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=2)
def _read_digits_file(path: Path, mtime_ns: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Parse the digits' file at ``path`` once per process (and again if it changes: ``mtime_ns``
    is part of the key): the text parse takes 30 ms a call, and a process may load the digits
    many times (the gallery, the tests). The arrays are read-only; callers copy them."""
    import gzip

    with gzip.open(path, "rt", encoding="utf-8") as f:
        data = np.loadtxt(f, delimiter=",")
    if data.ndim != 2 or data.shape[1] != 65:
        return None
    pixels, labels = data[:, :-1].copy(), data[:, -1].astype(np.int64)
    pixels.setflags(write=False)
    labels.setflags(write=False)
    return pixels, labels


def load_digits() -> Dataset:
    """Return scikit-learn's bundled 8×8 digits: x (1797, 64) in [0, 1], labels (1797,)."""
    bundled = _bundled_digits()
    if bundled is None:  # the file moved: scikit-learn's own loader (a slow import)
        from sklearn.datasets import load_digits as sklearn_digits

        bunch = sklearn_digits()
        bundled = np.asarray(bunch.data), np.asarray(bunch.target, dtype=np.int64)
    pixels, target = bundled
    x = as_points(pixels / 16.0, "digits")
    labels = torch.from_numpy(np.array(target, dtype=np.int64))  # a copy: the parse is shared
    return Dataset(
        x=x, labels=labels, name="digits", image_shape=(8, 8), meta={"source": "scikit-learn"}
    )


def load_mnist(folder: str | os.PathLike[str], *, split: str = "test") -> Dataset:
    """Return MNIST from IDX files in ``folder``: x (n, 784) float32 in [0, 1], labels (n,).

    ``split`` is ``"test"`` (t10k-*, 10,000 images) or ``"train"`` (train-*, 60,000); each file
    may be gzipped (``.gz``) or raw. ``meta["official"]`` says whether both files match the
    SHA-256 of the official release.
    """
    m = read_mnist(folder, split=split)
    n, rows, cols = m.images.shape
    x = as_points(m.images.reshape(n, -1) / np.float32(255), f"MNIST '{m.image_file}'")
    meta = {"source": str(Path(folder)), "split": split, "official": m.official, "sha256": m.sha256}
    return Dataset(
        x=x,
        labels=torch.from_numpy(m.labels.astype(np.int64)),
        name="mnist",
        image_shape=(rows, cols),
        meta=meta,
    )


# --- the one entry point -------------------------------------------------------------------------


def _mnist_data(n: int | None, generator: torch.Generator) -> Dataset:
    return _head(load_mnist(locate_mnist()), n)


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
    f"or a {'/'.join(ARRAY_SUFFIXES)} file"
)


_IMAGE_DATA: Final = frozenset({"digits", "mnist"})
"""The built-in names and ``NAME:`` prefixes whose rows are images."""


def data_kind(spec: str | os.PathLike[str]) -> str:
    """Return the kind of data ``spec`` names (``images`` or ``points``, as
    :attr:`Dataset.kind` of :func:`load_data`'s result), from the spec alone, reading nothing:
    the digits and MNIST are images; mixtures, moons and array files are points."""
    spec = os.fspath(spec)
    prefix, colon, _ = spec.partition(":")
    return "images" if spec in _IMAGE_DATA or (colon and prefix in _IMAGE_DATA) else "points"


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
    if Path(spec).suffix.lower() in ARRAY_SUFFIXES:
        return _head(load_array(spec), n)
    raise DataError(f"unknown data {spec!r}; use one of: {_DATA_FORMS}")

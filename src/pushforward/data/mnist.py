"""MNIST from its IDX files: reading, finding, downloading, checked against the official SHA-256.

:func:`read_idx` reads one IDX file (raw or gzipped, told apart by the magic bytes), and
:func:`read_mnist` one split of a folder of them. :func:`find_mnist_folder` looks where the files
usually are (``$PUSHFORWARD_DATA``, ``../shared/data/mnist``, the cache), :func:`download_mnist`
fetches them into the cache, and :func:`locate_mnist` does one and then the other. Every problem
with a file is one :class:`~pushforward.errors.DataError` naming it.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import struct
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Final, NamedTuple

import numpy as np

from pushforward.core import DataError, lookup, one_line

__all__ = [
    "KNOWN_MNIST_SHA256",
    "MNIST_MIRRORS",
    "MnistArrays",
    "download_mnist",
    "find_mnist_folder",
    "locate_mnist",
    "mnist_search_paths",
    "read_idx",
    "read_mnist",
]

log = logging.getLogger(__name__)

_REPO_ROOT: Final = Path(__file__).resolve().parents[3]
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
            raise DataError(f"IDX file '{path}' is corrupt gzip: {one_line(exc)}") from None
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


class MnistArrays(NamedTuple):
    """One MNIST split as read from its IDX files, with where it came from."""

    images: np.ndarray  # (n, rows, cols) uint8
    labels: np.ndarray  # (n,) uint8 digits 0-9
    image_file: Path
    label_file: Path
    official: bool  # both files match the SHA-256 of the official release
    sha256: dict[str, str]  # file name → hex digest


def read_mnist(folder: str | os.PathLike[str], *, split: str = "test") -> MnistArrays:
    """Return the MNIST ``split`` in ``folder``: images (n, rows, cols) uint8, labels (n,) uint8.

    ``split`` is ``"test"`` (t10k-*, 10,000 images) or ``"train"`` (train-*, 60,000); each file
    may be gzipped (``.gz``) or raw. ``official`` says whether both files match the SHA-256 of
    the official release.
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
    return MnistArrays(images, labels, image_file, label_file, official, sha)


def _mnist_cache_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "pushforward" / "mnist"


def mnist_search_paths() -> list[Path]:
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
    for folder in mnist_search_paths():
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
                failures.append(f"{mirror}{name}: {one_line(exc)}")
        else:
            raise DataError(
                f"could not download MNIST {name} into '{folder}' (no network, or checksum "
                f"mismatch): {'; '.join(failures)}; {_MNIST_HINT}"
            )
    return folder


def locate_mnist(*, split: str = "test") -> Path:
    """Return the folder holding the MNIST ``split`` files: the first of
    :func:`mnist_search_paths` that has them, else the cache after :func:`download_mnist`.

    When neither works, the :class:`DataError` lists every folder tried and why the download
    failed.
    """
    folder = find_mnist_folder(split=split)
    if folder is not None:
        return folder
    looked = ", ".join(f"'{p}'" for p in mnist_search_paths())
    try:
        return download_mnist(_mnist_cache_dir(), split=split)
    except DataError as exc:
        raise DataError(f"MNIST {split} files not found in {looked}, and {exc}") from None

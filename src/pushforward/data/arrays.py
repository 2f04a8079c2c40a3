"""User arrays, checked at the door: .npy, .npz and .csv files of numbers, never unpickled.

:func:`read_array` reads a file into points x (n, d) float32 and optional labels (n,) int64;
:func:`as_points` is the check every loaded array passes (numeric, (n, d), not empty, finite in
float32), shared by the MNIST and digits loaders. Each failure is one
:class:`~pushforward.errors.DataError` naming the file and, for a bad value, where it is.
"""

from __future__ import annotations

import csv
import io
import os
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final, NamedTuple

import numpy as np
import torch
from torch import Tensor

from pushforward.core import DataError, one_line

__all__ = ["ARRAY_SUFFIXES", "as_points", "read_array"]


def _cell_0based(row: int, col: int) -> str:
    return f"row {row}, column {col} (counting from 0)"


def as_points(x: np.ndarray, source: str, cell: Callable[[int, int], str] = _cell_0based) -> Tensor:
    """Return ``x`` as a float32 tensor (n, d) after the checks every loaded array passes.

    Numeric dtype, shape (n,) (made (n, 1)) or (n, d), not empty, and finite in float32;
    otherwise a :class:`DataError` naming ``source`` and, for a bad value, ``cell(row, col)``.
    """
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
            f"data file '{path}' is not a numeric NumPy file ({one_line(exc)}); object and "
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
        raise DataError(f"data file '{path}' cannot be read as text: {one_line(exc)}") from None
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
ARRAY_SUFFIXES: Final = tuple(_ARRAY_READERS)
"""The file suffixes :func:`read_array` reads."""


def read_array(path: str | os.PathLike[str]) -> tuple[Tensor, Tensor | None]:
    """Return the points in a .npy, .npz or .csv file, x (n, d) float32, and their labels (n,)
    int64 or None, each checked by :func:`as_points` and the label rules.

    A 1-D array (n,) becomes (n, 1). An .npz holds the data under ``x``, ``X`` or ``data`` (or
    as its only array) and optional labels under ``y`` or ``labels``; a .csv may start with a
    header row whose column ``label`` or ``labels`` holds the labels.
    """
    path = Path(path)
    reader = _ARRAY_READERS.get(path.suffix.lower())
    if reader is None:
        raise DataError(f"data file '{path}' must end in {', '.join(_ARRAY_READERS)}")
    if not path.is_file():
        raise DataError(f"data file '{path}' not found")
    arrays = reader(path)
    source = f"data file '{path}'"
    x = as_points(arrays.x, source, arrays.cell)
    labels = None if arrays.labels is None else _validated_labels(arrays.labels, source, len(x))
    return x, labels

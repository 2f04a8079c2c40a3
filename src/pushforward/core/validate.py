"""Checks at the boundary: each returns the value it accepts or raises one clear error.

Options (counts, sizes, rates, shares) are refused with a
:class:`~pushforward.errors.ConfigError`, data tensors with a
:class:`~pushforward.errors.DataError`; every message names the parameter, the value given and
what is allowed. Floating-point checks refuse NaN and ±inf, and no check takes a bool for a
number.
"""

from __future__ import annotations

import math
import numbers
from typing import Final

import numpy as np
import torch
from torch import Tensor

from pushforward.core.errors import ConfigError, DataError

__all__ = [
    "MAX_N",
    "as_float64_rows",
    "check_int",
    "check_n",
    "check_positive",
    "check_rows",
    "check_share",
]

MAX_N: Final = 10_000_000
"""Most points one call may draw: 80 MB of float32 in 2-D."""


def check_int(value: object, name: str, *, minimum: int, maximum: int | None = None) -> int:
    """Return ``value`` as an int if it is an integer in [minimum, maximum], else raise
    :class:`ConfigError`; NumPy integers count, bools do not."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} = {value:,} is too large; at most {maximum:,}")
    return int(value)


def check_n(value: object, name: str = "n", *, allow_zero: bool = False) -> int:
    """Return ``value``, a number of points to draw, if it is an integer in [1, :data:`MAX_N`]
    ([0, MAX_N] with ``allow_zero``), else raise :class:`ConfigError`."""
    return check_int(value, name, minimum=0 if allow_zero else 1, maximum=MAX_N)


def check_positive(value: object, name: str, *, allow_zero: bool = False) -> float:
    """Return ``value`` as a float if it is a finite real number > 0 (≥ 0 with ``allow_zero``),
    else raise :class:`ConfigError`."""
    ok = (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (value >= 0 if allow_zero else value > 0)
    )
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{name} must be a finite number {bound}, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def check_share(value: object, name: str) -> float:
    """Return ``value`` as a float if it is a number in [0, 1) (0 is off), else raise
    :class:`ConfigError`."""
    ok = (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and 0 <= value < 1  # false for NaN and ±inf
    )
    if not ok:
        raise ConfigError(f"{name} = {value!r} is not allowed; use a number in [0, 1) (0 is off)")
    return float(value)  # type: ignore[arg-type]


def check_rows(x: object, name: str, *, dim: int | None = None, why: str = "") -> Tensor:
    """Return ``x`` unchanged if it is a finite floating (n, d) tensor (d = ``dim`` when given).

    Otherwise raise :class:`DataError` naming ``name``, the shape wanted and the one given, or the
    first NaN/inf; ``why`` explains where ``dim`` comes from.
    """
    want = f"(n, {dim})" if dim is not None else "(n, d)"
    if not isinstance(x, torch.Tensor):
        raise DataError(f"{name} must be a torch.Tensor of shape {want}, got {type(x).__name__}")
    if x.dim() != 2 or (dim is not None and x.shape[1] != dim):
        raise DataError(f"{name} must have shape {want}{why}, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise DataError(
            f"{name} must be a floating-point tensor (float32 or float64), got {x.dtype}"
        )
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        row, col = (int(i) for i in bad.nonzero()[0])
        raise DataError(
            f"{name} of shape {tuple(x.shape)} holds {int(bad.sum())} NaN or infinite values; "
            f"first at row {row}, column {col}"
        )
    return x


def as_float64_rows(
    x: object, name: str, *, dim: int | None = None, why: str = "", min_rows: int = 0
) -> Tensor:
    """Return ``x`` (n, d) as a detached float64 tensor after :func:`check_rows`, with
    n ≥ ``min_rows`` and d ≥ 1, else raise :class:`DataError` naming ``name`` and its shape."""
    x = check_rows(x, name, dim=dim, why=why)
    if x.shape[0] < min_rows or x.shape[1] == 0:
        need = {0: "", 1: "at least one row and "}.get(min_rows, f"at least {min_rows} rows and ")
        raise DataError(f"{name} must have shape (n, d) with {need}d ≥ 1, got {tuple(x.shape)}")
    return x.detach().to(torch.float64)

"""Errors a user can cause, each with one clear message, and the registry lookup that names them.

Every exception the library raises for bad input derives from :class:`PushforwardError`; the CLI
prints its message on one line and exits non-zero, with no traceback. Internal invariants use
``assert``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

import torch

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "Interrupted",
    "NoDensityError",
    "PushforwardError",
    "TrainingError",
    "check_rows",
    "lookup",
]

T = TypeVar("T")


class PushforwardError(Exception):
    """A mistake in what the user asked for or handed in; the message says what and where."""


class DataError(PushforwardError, ValueError):
    """A data file or array that cannot be used: missing, corrupt, NaN, wrong shape, empty."""


class ConfigError(PushforwardError, ValueError):
    """An option or setting outside what is allowed; the message names it and the allowed values."""


class NoDensityError(PushforwardError, NotImplementedError):
    """The pushforward has no tractable density; the message says why."""


class CheckpointError(PushforwardError):
    """A run folder or checkpoint that cannot be read or written."""


class TrainingError(PushforwardError, RuntimeError):
    """Training stopped because a quantity became non-finite; the message names it and when."""


class Interrupted(PushforwardError):
    """Training was stopped by a signal (Ctrl-C, SIGTERM) after writing a checkpoint."""


def lookup(registry: Mapping[str, T], name: str, *, what: str) -> T:
    """Return ``registry[name]``, or raise :class:`ConfigError` listing the known names."""
    try:
        return registry[name]
    except KeyError:
        known = ", ".join(sorted(registry))
        raise ConfigError(f"unknown {what} {name!r}; known: {known}") from None


def check_rows(x: object, name: str, *, dim: int | None = None, why: str = "") -> torch.Tensor:
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

"""Errors a user can cause, each with one clear message, and the registry lookup that names them.

Every exception the library raises for bad input derives from :class:`PushforwardError`; the CLI
prints its message on one line and exits non-zero, with no traceback. Internal invariants use
``assert``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "Interrupted",
    "NoDensityError",
    "PushforwardError",
    "SolverError",
    "TrainingError",
    "a_or_an",
    "lookup",
    "one_line",
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


class SolverError(PushforwardError, RuntimeError):
    """An ODE solve that could not finish (its step budget spent, a step size that underflowed,
    non-finite values); the message names t and the step size."""


class Interrupted(PushforwardError):
    """Training was stopped by a signal (Ctrl-C, SIGTERM) after writing a checkpoint."""


def lookup(registry: Mapping[str, T], name: str, *, what: str) -> T:
    """Return ``registry[name]``, or raise :class:`ConfigError` listing the known names."""
    try:
        return registry[name]
    except KeyError:
        known = ", ".join(sorted(registry))
        raise ConfigError(f"unknown {what} {name!r}; known: {known}") from None


def one_line(exc: BaseException) -> str:
    """Return an exception's message squeezed onto one line (its type name when it has none)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def a_or_an(name: str) -> str:
    """Return ``name`` after its indefinite article, "a" or "an" by its first letter: "an
    Autoencoder", "a VAE".

    By the letter, not the sound: right for the model names here (PCA, VAE, GAN are "a"; an
    initialism read letter by letter from a vowel-sounding consonant would need its own rule).

    >>> a_or_an("Autoencoder"), a_or_an("VAE")
    ('an Autoencoder', 'a VAE')
    """
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"

"""How each key of an evaluation reads: its label, number format, unit and meaning.

Generic code prints a model's measures from these declarations: the keys every model with an
encoder or a likelihood gives are here; a model's own keys are its :attr:`Model.evaluate_keys
<pushforward.core.model.Model.evaluate_keys>`; the keys of a run and of sample quality are
:data:`pushforward.runs.RESULT_KEYS`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from torch import Tensor

__all__ = ["ENCODER_KEYS", "LIKELIHOOD_KEYS", "ResultKey", "likelihood_summary"]


@dataclass(frozen=True)
class ResultKey:
    """How one key of :func:`evaluate_run`'s result reads: its label, number format, unit and
    meaning; ``stderr`` and ``floor`` name the keys printed beside it, ``floor_label`` what the
    floor is."""

    label: str
    fmt: str
    doc: str
    unit: str = ""
    stderr: str | None = None
    floor: str | None = None
    floor_label: str = "real vs real"


ENCODER_KEYS: dict[str, ResultKey] = {
    "squared_error": ResultKey(
        "squared error", ".4f", "mean ‖x − g(f(x))‖² per example", unit="per example"
    ),
}
"""What :meth:`Model.evaluate` gives for a model with an encoder."""

LIKELIHOOD_KEYS: dict[str, ResultKey] = {
    "log_likelihood": ResultKey(
        "log p(x)",
        ".3f",
        "mean log-likelihood: exact, or the IWAE estimate (a lower bound)",
        unit="nats",
        stderr="log_likelihood_stderr",
    ),
    "log_likelihood_stderr": ResultKey("", ".3f", "standard error of log_likelihood", "nats"),
    "nll": ResultKey(
        "−log p(x)", ".3f", "minus log_likelihood", unit="nats", stderr="log_likelihood_stderr"
    ),
    "bits_per_dim": ResultKey("bits per dimension", ".4f", "−log₂ p(x) / d"),
    "exact": ResultKey("exact likelihood", "", "true when log_likelihood is exact"),
}
"""What a model with a likelihood gives (exact, or a bound)."""


def likelihood_summary(lp: Tensor, *, dim: int, exact: bool) -> dict[str, Any]:
    """Return the mean of the log-likelihoods lp (n,) of rows of ``dim`` values, in nats per row,
    with its standard error over rows: keys ``log_likelihood``, ``log_likelihood_stderr``,
    ``nll``, ``bits_per_dim`` (−log_likelihood / (dim·log 2)), ``rows`` and ``exact``.

    The standard error of a mean of one row is undefined: it is NaN, never 0 (which would claim
    a certainty one row cannot give).
    """
    n = lp.numel()
    lp = lp.double()
    mean = float(lp.mean()) if n else math.nan
    stderr = float(lp.std() / math.sqrt(n)) if n > 1 else math.nan
    return {
        "log_likelihood": mean,
        "log_likelihood_stderr": stderr,
        "nll": -mean,
        "bits_per_dim": -mean / (dim * math.log(2)),
        "rows": n,
        "exact": exact,
    }

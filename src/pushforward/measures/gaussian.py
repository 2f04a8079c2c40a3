"""The standard normal's log-density and the summary of log-likelihoods, each written once.

Every model that scores data in nats (the flow, flow matching, the VAE, probabilistic PCA) and
every base measure N(0, I) uses these, so that the constants and the conventions (nats per row,
the standard error over rows) cannot drift apart between copies.
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor

__all__ = ["LOG_2PI", "likelihood_summary", "standard_normal_log_prob"]

LOG_2PI = math.log(2 * math.pi)
"""log 2π, the constant of every Gaussian log-density."""


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """Return log N(z; 0, I) (...,) in nats for z (..., k), summed over the last dimension.

    >>> import torch
    >>> standard_normal_log_prob(torch.zeros(1, 2))  # −log 2π
    tensor([-1.8379])
    """
    return -0.5 * (z.square().sum(-1) + z.shape[-1] * LOG_2PI)


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

"""The standard normal's log-density, written once (the summary of log-likelihoods, written once
in :mod:`pushforward.core.results`, is re-exported here beside it).

Every model that scores data in nats (the flow, flow matching, the VAE, probabilistic PCA) and
every base measure N(0, I) uses these, so that the constants and the conventions (nats per row,
the standard error over rows) cannot drift apart between copies.
"""

from __future__ import annotations

import math

from torch import Tensor

from pushforward.core.results import likelihood_summary

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

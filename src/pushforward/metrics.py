"""Measures of fit between samples and a reference: goodness of fit first, more as models land."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from pushforward.errors import ConfigError

__all__ = ["ks_critical_value", "ks_distance"]


def ks_distance(samples: Tensor, cdf: Callable[[Tensor], Tensor]) -> float:
    """Return the Kolmogorov–Smirnov distance sup_y |F_n(y) − F(y)| of samples to an exact CDF.

    ``samples`` has shape (n,) or (n, 1); ``cdf`` maps (n,) to (n,). The supremum is attained at
    the sorted samples, just before or at each jump of the empirical CDF F_n, so it is computed
    exactly (in float64).
    """
    x = torch.as_tensor(samples).reshape(-1).to(torch.float64)
    n = x.numel()
    if n == 0:
        raise ConfigError("ks_distance needs at least one sample")
    if not bool(torch.isfinite(x).all()):
        raise ConfigError("ks_distance got NaN or infinite samples")
    x = torch.sort(x).values
    f = cdf(x).to(torch.float64).reshape(-1)
    i = torch.arange(1, n + 1, dtype=torch.float64)
    above = (i / n - f).max()
    below = (f - (i - 1) / n).max()
    return float(torch.maximum(above, below))


def ks_critical_value(n: int, alpha: float = 0.001) -> float:
    """Return the asymptotic KS critical value sqrt(−ln(α/2) / (2n)) at level α for n samples."""
    if n < 1 or not 0 < alpha < 1:
        raise ConfigError(f"need n ≥ 1 and 0 < alpha < 1, got n={n}, alpha={alpha}")
    return math.sqrt(-math.log(alpha / 2) / (2 * n))

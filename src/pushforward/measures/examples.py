"""Named univariate pushforwards whose density and CDF are known in closed form, written
independently of :meth:`~pushforward.measures.Pushforward.log_prob` so that tests and figures can
check one against the other."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.distributions import Normal

from pushforward.core import lookup
from pushforward.measures.base import Fn, StandardNormal, Uniform
from pushforward.measures.gaussian import LOG_2PI
from pushforward.measures.pushforward import Map1D, Pushforward, inverse_cdf

__all__ = ["EXAMPLES", "Example", "example"]


@dataclass(frozen=True)
class Example:
    """A named univariate pushforward with its exact density and CDF in closed form.

    The closed forms are written independently of :meth:`Pushforward.log_prob`, so tests and
    figures can check one against the other.
    """

    name: str
    title: str
    make: Callable[[], Pushforward]
    log_density: Fn
    cdf: Fn
    support: tuple[float, float]


def _identity(x: Tensor) -> Tensor:
    return x


def _sqrt_branches() -> Map1D:
    return Map1D(lambda x: x**2, [torch.sqrt, lambda y: -torch.sqrt(y)])


def _log_positive(y: Tensor) -> Tensor:
    return torch.log(y.clamp_min(1e-300))


def _chi2_1_log_density(y: Tensor) -> Tensor:
    # χ²₁: p(y) = exp(-y/2) / sqrt(2πy) on (0, ∞)
    out = -0.5 * y - 0.5 * torch.log(2 * math.pi * y.clamp_min(1e-300))
    return torch.where(y > 0, out, torch.full_like(y, -math.inf))


def _on_unit(y: Tensor, value: Tensor) -> Tensor:
    return torch.where((y >= 0) & (y <= 1), value, torch.full_like(value, -math.inf))


EXAMPLES: dict[str, Example] = {
    "identity": Example(
        "identity",
        "g(x) = x on Uniform([0,1])",
        lambda: Pushforward(Map1D(_identity, [_identity]), Uniform(0.0, 1.0)),
        lambda y: _on_unit(y, torch.zeros_like(y)),
        lambda y: y.clamp(0, 1),
        (0.0, 1.0),
    ),
    "square": Example(
        "square",
        "g(x) = x² on Uniform([0,1]): density 1/(2√y)",
        lambda: Pushforward(_sqrt_branches(), Uniform(0.0, 1.0)),
        lambda y: _on_unit(y, -math.log(2) - 0.5 * _log_positive(y)),
        lambda y: torch.sqrt(y.clamp(0, 1)),
        (0.0, 1.0),
    ),
    "gaussian-icdf": Example(
        "gaussian-icdf",
        "g = Φ⁻¹ on Uniform([0,1]): the standard Gaussian N(0,1)",
        lambda: inverse_cdf(Normal(0.0, 1.0)),
        lambda y: -0.5 * y**2 - 0.5 * LOG_2PI,
        torch.special.ndtr,
        (-4.0, 4.0),
    ),
    "square-normal": Example(
        "square-normal",
        "g(x) = x² on N(0,1): the χ² density with one degree of freedom",
        lambda: Pushforward(_sqrt_branches(), StandardNormal(1)),
        _chi2_1_log_density,
        lambda y: torch.special.gammainc(torch.tensor(0.5, dtype=y.dtype), y.clamp_min(0) / 2),
        (0.0, 6.0),
    ),
}


def example(name: str) -> Pushforward:
    """Return the built-in univariate example ``name`` (see ``EXAMPLES``) as a Pushforward."""
    return lookup(EXAMPLES, name, what="example").make()

"""Invertible preprocessing shared by the models: standardise, dequantise, logit.

Each is a ``torch.distributions.transforms.Transform`` from data space towards the space a model's
layers see, with its log-Jacobian, so that a model with an exact density composes them into its
change of variables (log p_x(x) = log p_y(T(x)) + log |det ∂T/∂x|) and a model without one (the
GAN) just calls them. The 8-bit conventions of images live here once: dequantising k/255 to
y ∈ [k/256, (k + 1)/256) and scoring the discrete data as log p(y) − d·log 256.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.distributions import constraints
from torch.distributions.transforms import Transform

__all__ = [
    "LOGIT_ALPHA",
    "LOG_BINS",
    "Dequantize",
    "Logit",
    "Standardize",
    "dequantized",
    "discrete_log_likelihood",
    "quantized",
]

LOGIT_ALPHA = 0.05
"""α of :class:`Logit`: pixels are squeezed into [α, 1 − α] before the logit (RealNVP)."""

LOG_BINS = math.log(256)
"""log 256: the log-volume of one 8-bit bin of width 1/256, per dimension."""


class Standardize(Transform):
    """x ↦ (x − m)/s coordinate by coordinate (rows are events), log |det| = −Σ_j log s_j.

    Args:
        loc: m, shape (d,).
        scale: s, shape (d,), positive.

    >>> import torch
    >>> t = Standardize(torch.tensor([1.0, 0.0]), torch.tensor([2.0, 1.0]))
    >>> t(torch.tensor([[3.0, 1.0]]))
    tensor([[1., 1.]])
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True
    sign = +1

    def __init__(self, loc: Tensor, scale: Tensor):
        super().__init__()
        self.loc, self.scale = loc, scale

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Standardize)
            and torch.equal(other.loc, self.loc)
            and torch.equal(other.scale, self.scale)
        )

    def _call(self, x: Tensor) -> Tensor:
        return (x - self.loc) / self.scale

    def _inverse(self, y: Tensor) -> Tensor:
        return y * self.scale + self.loc

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return (-torch.log(self.scale).sum()).expand(x.shape[:-1])


def dequantized(x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """Return y = (255·x + u)/256, u ~ U[0, 1) drawn from ``generator``, for pixels x (n, d)
    holding k/255: each 8-bit value spread uniformly over its bin [k/256, (k + 1)/256)."""
    device = generator.device if generator is not None else x.device
    u = torch.rand(x.shape, generator=generator, device=device, dtype=x.dtype)
    return (x * 255 + u.to(x.device)) / 256


def quantized(y: Tensor) -> Tensor:
    """Return the 8-bit pixels k/255 (n, d) whose bins hold y (n, d): the inverse of
    :func:`dequantized` up to the noise."""
    return torch.floor(256 * y).clamp(0, 255) / 255


def discrete_log_likelihood(log_density: Tensor, dim: int) -> Tensor:
    """Return log p(y) − d·log 256 (n,): the log-likelihood of 8-bit data from the density
    log p(y) (n,) of its dequantised values (Jensen's bound of the discrete likelihood, the
    standard convention for bits per dimension)."""
    return log_density - dim * LOG_BINS


class Dequantize:
    """Pixels k/255 ↦ y ∈ [0, 1) with uniform noise in each 8-bit bin, and back.

    Not a bijection (the noise is drawn), so not a Transform: :meth:`__call__` draws,
    :meth:`inverse` rounds back to the pixels, and :func:`discrete_log_likelihood` turns a
    density of y into the likelihood of the pixels.
    """

    def __call__(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        return dequantized(x, generator=generator)

    def inverse(self, y: Tensor) -> Tensor:
        return quantized(y)


class Logit(Transform):
    """y ↦ logit(α + (1 − 2α)·y) from (0, 1)^d onto ℝ^d (rows are events), RealNVP's
    pre-processing of dequantised pixels; α keeps the ends finite."""

    domain = constraints.independent(constraints.unit_interval, 1)
    codomain = constraints.real_vector
    bijective = True
    sign = +1

    def __init__(self, alpha: float = LOGIT_ALPHA):
        super().__init__()
        self.alpha = alpha

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Logit) and other.alpha == self.alpha

    def _squeeze(self, y: Tensor) -> Tensor:
        return self.alpha + (1 - 2 * self.alpha) * y

    def _call(self, y: Tensor) -> Tensor:
        p = self._squeeze(y)
        return torch.log(p) - torch.log1p(-p)

    def _inverse(self, w: Tensor) -> Tensor:
        return (torch.sigmoid(w) - self.alpha) / (1 - 2 * self.alpha)

    def log_abs_det_jacobian(self, y: Tensor, w: Tensor) -> Tensor:
        # dw/dy = (1 − 2α) / (p (1 − p)), one factor per coordinate
        p = self._squeeze(y)
        return (math.log(1 - 2 * self.alpha) - torch.log(p) - torch.log1p(-p)).sum(-1)

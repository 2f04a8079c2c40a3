"""Invertible preprocessing shared by the models: standardise, dequantise, logit.

Each is a ``torch.distributions.transforms.Transform`` from data space towards the space a model's
layers see, with its log-Jacobian, so that a model with an exact density composes them into its
change of variables (log p_x(x) = log p_y(T(x)) + log |det ∂T/∂x|) and a model without one (the
GAN) just calls them. The 8-bit conventions of images live here once: dequantising k/255 to
y ∈ [k/256, (k + 1)/256) and scoring the discrete data as log p(y) − d·log 256. So does the
rule that fits a standardisation to training data (:func:`fit_standardize`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.distributions import constraints
from torch.distributions.transforms import Transform

from pushforward.core import DataError, check_rows

__all__ = [
    "LOGIT_ALPHA",
    "LOG_BINS",
    "Dequantize",
    "Logit",
    "Standardize",
    "check_pixels_or_rows",
    "dequantized",
    "discrete_log_likelihood",
    "fit_standardize",
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


def fit_standardize(
    x: Tensor, *, spread: float = 1.0, reach: float | None = None, quantile: float = 0.999
) -> Standardize:
    """Return the :class:`Standardize` fitted to the training rows x (n, d): m their mean (d,)
    and s (d,) their standard deviation over ``spread``, in x's dtype.

    A coordinate that does not vary (standard deviation at most 10⁻⁸ of the largest), or data of
    one row, counts as of standard deviation 1. With ``reach``, s is at least the ``quantile`` of
    |x − m| over ``reach`` (per coordinate), so that that share of the rows lies within ±reach
    after the map: the flow's rule (its splines act on [−5, 5]), which
    ``spread=3, reach=4.5`` gives.

    >>> t = fit_standardize(torch.tensor([[0.0, 1.0], [2.0, 1.0]]))
    >>> t.loc, t.scale
    (tensor([1., 1.]), tensor([1.4142, 1.0000]))
    """
    std = x.std(0) if x.shape[0] > 1 else x.new_ones(x.shape[1])
    scale = torch.where(std > 1e-8 * std.max().clamp_min(1e-30), std, 1.0) / spread
    loc = x.mean(0)
    if reach is not None:
        k = max(1, math.ceil(quantile * x.shape[0]))
        far = (x - loc).abs().kthvalue(k, dim=0).values  # (d,)
        scale = torch.maximum(scale, far / reach)
    return Standardize(loc, scale)


def check_pixels_or_rows(x: object, name: str, *, dim: int, pixels: bool, what: str) -> Tensor:
    """Return x (n, ``dim``) if finite and of that dimension (and in [0, 1] when it holds
    ``pixels`` to dequantise), else raise DataError naming the first bad row; ``what`` names the
    model in messages."""
    x = check_rows(x, name, dim=dim, why=f" (the {what} was built for d = {dim})")
    if pixels:
        bad = (x < 0) | (x > 1)
        if bool(bad.any()):
            row, col = (int(i) for i in bad.nonzero()[0])
            raise DataError(
                f"{name} holds values outside [0, 1], the range of the 8-bit pixels this {what} "
                f"dequantises: first at row {row}, column {col} ({float(x[row, col]):g})"
            )
    return x


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

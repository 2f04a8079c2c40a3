"""Reconstruction terms R(x, x̂) and the likelihoods they stand for; KL divergences in closed form.

Conventions, everywhere in pushforward: every function here returns one value per example,
summed over the data dimensions, shape (B,). Training losses average those over the batch. No
function here takes a mean over dimensions.

The decoder outputs ``out`` (B, d): the mean x̂ for ``l2`` and ``l1``, and the logits for ``bce``
(x̂ = sigmoid(out)), so that binary cross-entropy is computed from logits, stably.

Each R is, up to a constant, a negative log-likelihood −log p(x | x̂):

========  ==========================  =====================================================
name      R(x, x̂) per example          the likelihood it stands for, −log p(x | x̂)
========  ==========================  =====================================================
``l2``    Σ_j (x_j − x̂_j)²            Gaussian N(x̂, σ²I): R/(2σ²) + (d/2)·log(2πσ²)
``l1``    Σ_j |x_j − x̂_j|             Laplace(x̂, b): R/b + d·log(2b)
``bce``   Σ_j BCE(x_j, sigmoid(o_j))  Bernoulli(sigmoid(o)): exactly R (for x ∈ [0, 1])
========  ==========================  =====================================================
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from pushforward.core import ConfigError, lookup
from pushforward.measures import LOG_2PI

__all__ = [
    "RECONSTRUCTIONS",
    "gaussian_kl",
    "gaussian_kl_terms",
    "negative_log_likelihood",
    "output_mean",
    "reconstruction",
    "reconstruction_grad",
]


def _l2(x: Tensor, out: Tensor) -> Tensor:
    return (x - out).pow(2).flatten(1).sum(dim=1)


def _l1(x: Tensor, out: Tensor) -> Tensor:
    return (x - out).abs().flatten(1).sum(dim=1)


def _bce(x: Tensor, logits: Tensor) -> Tensor:
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(dim=1)


RECONSTRUCTIONS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "l2": _l2,
    "l1": _l1,
    "bce": _bce,
}


def reconstruction(name: str, x: Tensor, out: Tensor) -> Tensor:
    """Return R(x, x̂) per example, summed over dimensions: shape (B,) for x, out (B, d)."""
    if x.shape != out.shape:
        raise ConfigError(f"reconstruction {name!r}: x has shape {tuple(x.shape)}, "
                          f"the decoder output {tuple(out.shape)}")  # fmt: skip
    return lookup(RECONSTRUCTIONS, name, what="reconstruction loss")(x, out)


def reconstruction_grad(name: str, x: Tensor, out: Tensor) -> Tensor:
    """Return ∂R(x, out)/∂out (B, d) for x, out (B, d), R per example as :func:`reconstruction`
    takes it: 2(out − x) for ``l2``, sign(out − x) for ``l1`` (0 where they are equal, as
    autograd's), σ(out) − x for ``bce`` on logits."""
    lookup(RECONSTRUCTIONS, name, what="reconstruction loss")
    if name == "bce":
        return torch.sigmoid(out).sub_(x)
    r = out - x
    return 2.0 * r if name == "l2" else torch.sign(r)


def output_activation(name: str) -> str:
    """Return the name (in :data:`pushforward.nets.ACTIVATIONS`) of the map from the decoder's
    output to the reconstruction x̂ under the loss ``name``: sigmoid for ``bce``, else identity."""
    lookup(RECONSTRUCTIONS, name, what="reconstruction loss")
    return "sigmoid" if name == "bce" else "identity"


def output_mean(name: str, out: Tensor) -> Tensor:
    """Return the reconstruction x̂ from the decoder output: sigmoid(logits) for ``bce``."""
    return torch.sigmoid(out) if output_activation(name) == "sigmoid" else out


def negative_log_likelihood(
    name: str, x: Tensor, out: Tensor, log_scale: Tensor | float = 0.0
) -> Tensor:
    """Return −log p(x | decoder output) in nats with every normalising constant, shape (B,).

    ``log_scale`` is log σ (Gaussian, for ``l2``) or log b (Laplace, for ``l1``), a scalar or a
    (d,) tensor (a learned per-dimension scale); it is ignored for ``bce`` (Bernoulli).
    """
    d = x[0].numel()
    r = reconstruction(name, x, out)
    if name == "bce":
        return r
    s = torch.as_tensor(log_scale, dtype=x.dtype, device=x.device)
    if name == "l2":
        z2 = ((x - out) * torch.exp(-s)).pow(2).flatten(1).sum(1)
        log_norm = (s.expand(d).sum() if s.dim() else d * s) + 0.5 * d * LOG_2PI
        return 0.5 * z2 + log_norm
    if name == "l1":
        z1 = ((x - out).abs() * torch.exp(-s)).flatten(1).sum(1)
        log_norm = (s.expand(d).sum() if s.dim() else d * s) + d * math.log(2)
        return z1 + log_norm
    raise AssertionError(name)


def gaussian_kl_terms(mu: Tensor, logvar: Tensor) -> Tensor:
    """Return the per-dimension terms ½ (μ_j² + e^{ξ_j} − 1 − ξ_j) of the KL below, shape (B, k)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """Return KL(N(μ, diag e^ξ) ‖ N(0, I)) = ½ Σ_j (μ_j² + e^{ξ_j} − 1 − ξ_j) per row, shape (B,).

    μ and ξ (the log-variance) have shape (B, k).
    """
    return gaussian_kl_terms(mu, logvar).sum(dim=1)

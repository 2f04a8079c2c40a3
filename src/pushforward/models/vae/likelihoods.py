"""The VAE's reconstruction terms, each the negative log-likelihood −log p(x | z) of a family, and
the schedules of the KL weight λ over training.

Reconstruction terms (computed in :mod:`pushforward.nets.losses`), each a negative
log-likelihood −log p(x | z):

============  =================================================  ==============================
``loss``      what the training loss uses                         the likelihood p(x | z) it is
============  =================================================  ==============================
``bce``       Σ_j BCE(x_j, sigmoid(g(z)_j)), from logits          Bernoulli(sigmoid(g(z))), exactly
``l2``        ‖x − g(z)‖²                                         N(g(z), ½I), up to (d/2)·log π
``l1``        Σ_j |x_j − g(z)_j|                                  Laplace(g(z), 1), up to d·log 2
``gaussian``  −log N(x; g(z), σ²I), σ fixed (``sigma``) or learned  N(g(z), σ²I), exactly
``laplace``   −log Laplace(x; g(z), b), b fixed or learned         Laplace(g(z), b), exactly
============  =================================================  ==============================

So with λ = 1 the training loss is the negative ELBO in nats, up to the stated constant for ``l2``
and ``l1``; :meth:`VAE.elbo` and :meth:`VAE.log_likelihood` always report the exact quantities,
with every normalising constant. Every term is summed over data dimensions and averaged over
examples; nothing is ever averaged over dimensions.

So with λ = 1 the training loss is the negative ELBO in nats, up to the stated constant for ``l2``
and ``l1``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["KL_SCHEDULES", "LIKELIHOODS", "Likelihood"]


@dataclass(frozen=True)
class Likelihood:
    """A reconstruction term: the R it trains on, and the exact likelihood it stands for."""

    family: str  # 'l2' (Gaussian), 'l1' (Laplace) or 'bce' (Bernoulli)
    trains_on_nll: bool  # train on the exact NLL (with σ) rather than the bare R
    fixed_log_scale: float | None  # log σ (or log b) of the likelihood that R stands for


LIKELIHOODS: dict[str, Likelihood] = {
    "bce": Likelihood("bce", False, None),
    "l2": Likelihood("l2", False, 0.5 * math.log(0.5)),
    "l1": Likelihood("l1", False, 0.0),
    "gaussian": Likelihood("l2", True, None),
    "laplace": Likelihood("l1", True, None),
}
"""The reconstruction terms by name (see :mod:`pushforward.models.vae.model`)."""


def _constant(kl_weight: float, epoch: float, period: float) -> float:
    return kl_weight


def _linear(kl_weight: float, epoch: float, period: float) -> float:
    return kl_weight * min(1.0, epoch / period) if period > 0 else kl_weight


def _cyclical(kl_weight: float, epoch: float, period: float) -> float:
    # Fu et al. (2019): within each cycle of `period` epochs, ramp up over the first half
    tau = (epoch % period) / period
    return kl_weight * min(1.0, 2.0 * tau)


KL_SCHEDULES = {"constant": _constant, "linear": _linear, "cyclical": _cyclical}
"""λ at an epoch, by name: f(kl_weight, epoch, period) → λ."""

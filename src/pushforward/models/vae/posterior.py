"""The VAE's approximate posterior q(z | x) = N(μ, e^ξ): the range its log-variance ξ is kept in,
and its log-density, shared by the model and its hand-written gradients.

The per-epoch diagnostics (active units, KL per unit) measure how much q(z | x) depends on x.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from pushforward.measures import draw, standard_normal_log_prob
from pushforward.nets import gaussian_kl_terms

__all__ = [
    "DIAGNOSTIC_ROWS",
    "LOGVAR_RANGE",
    "posterior_diagnostics",
    "posterior_log_prob",
    "standardise",
]

LOGVAR_RANGE = (-30.0, 20.0)
"""The interval ξ is clamped to: e^-30 to e^20, wide, but keeps exp(ξ) and 1/exp(ξ) finite."""


def posterior_log_prob(eps: Tensor, logvar: Tensor) -> Tensor:
    """Return log N(z; μ, diag e^ξ) (...,) in nats at z = μ + e^{ξ/2}·ε, from the standardised
    draw ε (..., k) and the log-variance ξ (..., k) (broadcast against ε)."""
    return standard_normal_log_prob(eps) - 0.5 * logvar.sum(-1)


def standardise(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """Return ε = (z − μ)·e^{−ξ/2} (..., k), the draw of N(0, I) that gives z."""
    return (z - mu) * torch.exp(-0.5 * logvar)


DIAGNOSTIC_ROWS = 512
"""Rows the per-epoch diagnostics are estimated on: at 2,048 they cost 4% of an MNIST epoch of
8,000 digits (BENCHMARKS.md, "Training speed"); 512 give Var_x μ_j(x) to about 6% (relative
standard error √(2/511)), ample beside the active-unit threshold 0.01."""


def posterior_diagnostics(
    posterior: Callable[[Tensor], tuple[Tensor, Tensor]],
    x: Tensor,
    *,
    generator: torch.Generator | None = None,
) -> tuple[int, Tensor]:
    """Return the number of active units and the mean KL(q(z_j | x) ‖ N(0, 1)) of each latent
    unit j (k,) of the posterior (x ↦ (μ, ξ), each (n, k)) over the rows of x (n, d).

    A unit j is active when Cov_x(E[z_j | x]) = Var_x(μ_j(x)) > 0.01 (Burda et al., 2016).
    Estimated on at most :data:`DIAGNOSTIC_ROWS` rows (a random subset drawn with
    ``generator``).
    """
    if x.shape[0] > DIAGNOSTIC_ROWS:
        pick = draw(torch.randperm, x.shape[0], generator=generator, device=x.device)
        x = x[pick[:DIAGNOSTIC_ROWS]]
    mus, kls = [], []
    for xb in x.split(2048):
        mu, logvar = posterior(xb)
        mus.append(mu)
        kls.append(gaussian_kl_terms(mu, logvar).sum(0))
    mu = torch.cat(mus)
    kl_dims = torch.stack(kls).sum(0) / x.shape[0]
    active = int((mu.var(0) > 0.01).sum()) if mu.shape[0] > 1 else 0
    return active, kl_dims

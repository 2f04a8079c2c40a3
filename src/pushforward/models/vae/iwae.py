"""The importance-weighted estimate of a VAE's log-likelihood (Burda et al., 2016): a lower bound
on log p(x) in expectation that rises to it as the number of importance samples k grows."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from pushforward.core import ConfigError
from pushforward.measures import draw
from pushforward.models.vae.posterior import posterior_log_prob

__all__ = ["IWAE_CHUNK", "LogLikelihood", "iwae_log_likelihood", "iwae_log_likelihoods"]

IWAE_CHUNK = 2**20
"""The most decoder outputs (samples × rows × d) one pass of the estimate holds: 4 MB of float32,
which stays near the cores. At 2**24 (64 MB) the MNIST decoder's passes took 1.5–1.8 times as
long on a 2-core AMD EPYC, with AVX-512 or its AVX2 code paths (BENCHMARKS.md, "The VAE's
importance-sampling passes")."""


@dataclass(frozen=True)
class LogLikelihood:
    """Importance-weighted log-likelihood estimates per example, in nats."""

    log_px: Tensor  # (n,) estimates of log p(x)
    stderr: Tensor  # (n,) Monte Carlo standard errors of those estimates (delta method)
    k: int

    @property
    def mean(self) -> float:
        """Mean estimate over examples."""
        return float(self.log_px.mean())

    @property
    def mean_stderr(self) -> float:
        """Monte Carlo standard error of :attr:`mean`."""
        return float(self.stderr.pow(2).sum().sqrt() / self.log_px.numel())


def iwae_log_likelihood(
    vae: Any,
    x: Tensor,
    k: int,
    *,
    prior: Any = None,
    generator: torch.Generator | None = None,
    batch_size: int = 100,
    max_elements: int | None = None,
) -> LogLikelihood:
    """Return the estimate log (1/k) Σ_j p(x | z_j) p(z_j)/q(z_j | x), z_j ~ q, of the
    :class:`~pushforward.models.vae.VAE` ``vae`` for each row of x (n, d), with its Monte Carlo
    standard error, p(z) the measure ``prior`` (default: the prior the VAE was trained with,
    ``vae.training_prior``; see :meth:`VAE.log_likelihood
    <pushforward.models.vae.VAE.log_likelihood>`)."""
    prior = vae.training_prior if prior is None else prior
    (ll,) = iwae_log_likelihoods(
        vae, x, k, [prior], generator=generator, batch_size=batch_size, max_elements=max_elements
    )
    return ll


def iwae_log_likelihoods(
    vae: Any,
    x: Tensor,
    k: int,
    priors: Sequence[Any],
    *,
    generator: torch.Generator | None = None,
    batch_size: int = 100,
    max_elements: int | None = None,
) -> list[LogLikelihood]:
    """Return :func:`iwae_log_likelihood` under each of the measures ``priors`` (each with
    ``log_prob`` (m, k) → (m,)), all from the same draws z_j ~ q(z | x) and decoder passes: the
    decoder, not the prior, is what costs."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"k = {k!r} is not allowed; use an integer ≥ 1")
    max_elements = IWAE_CHUNK if max_elements is None else max_elements
    out_lp: list[list[Tensor]] = [[] for _ in priors]
    out_se: list[list[Tensor]] = [[] for _ in priors]
    for xb in x.split(batch_size):
        b = xb.shape[0]
        mu, logvar = vae.posterior(xb)
        std = torch.exp(0.5 * logvar)
        chunk = max(1, min(k, max_elements // (b * vae.dim)))
        m = torch.full((len(priors), b), -math.inf, dtype=torch.float64, device=xb.device)
        s1 = torch.zeros_like(m)
        s2 = torch.zeros_like(m)
        done = 0
        while done < k:
            s = min(chunk, k - done)
            eps = draw(torch.randn, (s, b, vae.latent), generator=generator, device=xb.device)
            z = mu + std * eps  # (s, b, k)
            flat = z.reshape(s * b, vae.latent)
            log_px_z = -vae._nll(xb.repeat(s, 1), vae.decoder(flat)).reshape(s, b)
            log_qz = posterior_log_prob(eps, logvar)  # (s, b)
            for i, prior in enumerate(priors):
                log_pz = prior.log_prob(flat).reshape(s, b)
                lw = (log_px_z + log_pz - log_qz).double()  # (s, b)
                new_m = torch.maximum(m[i], lw.max(0).values)
                s1[i] = s1[i] * torch.exp(m[i] - new_m) + torch.exp(lw - new_m).sum(0)
                s2[i] = s2[i] * torch.exp(2 * (m[i] - new_m)) + torch.exp(2 * (lw - new_m)).sum(0)
                m[i] = new_m
            done += s
        mean_w = s1 / k
        var_w = (s2 / k - mean_w.pow(2)).clamp_min(0)
        for i in range(len(priors)):
            out_lp[i].append(m[i] + torch.log(mean_w[i]))
            out_se[i].append(torch.sqrt(var_w[i] / k) / mean_w[i])
    return [
        LogLikelihood(torch.cat(lp), torch.cat(se), k)
        for lp, se in zip(out_lp, out_se, strict=True)
    ]

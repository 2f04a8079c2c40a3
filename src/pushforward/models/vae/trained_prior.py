"""Priors p(z) trained with the VAE, so that the prior can match the aggregate posterior.

The KL term of the ELBO pulls each q(z | x) towards p(z); with p(z) = N(0, I) fixed, the codes of
data with separated modes still leave gaps that N(0, I) puts mass on, and samples decoded there
fall between the modes. A trained prior closes the gap from the other side: it is a parameter of
the ELBO like the decoder, fitted jointly by maximum likelihood, so it is the prior the model is
scored under *and* sampled from. Its KL term has no closed form: it is estimated from the same
reparameterised draw as the reconstruction, log q(z | x) − log p(z).

* :class:`VampPrior` (``prior="vamp"``): the mixture of the posteriors at K learned pseudo-inputs,
  p(z) = (1/K) Σ_k q(z | u_k) (Tomczak & Welling, 2018, "VAE with a VampPrior"); the
  pseudo-inputs start at K training rows (:meth:`VampPrior.prepare`).
* :class:`FlowPrior` (``prior="flow"``): a neural spline flow on ℝ^k (zuko's NSF) pushing N(0, I)
  forward.

Every prior takes the VAE's posterior map x ↦ (μ, ξ) in its calls (the VampPrior needs it; the
flow ignores it), so that it holds no second reference to the encoder.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import zuko
from torch import Tensor, nn

from pushforward.measures import BaseMeasure, draw, standard_normal_log_prob

__all__ = [
    "EXP_FLOOR",
    "FLOW_PRIOR",
    "TRAINED_PRIORS",
    "FlowPrior",
    "TrainedPriorMeasure",
    "VampPrior",
    "component_log_probs",
    "floored_logsumexp",
    "mixture_logsumexp_",
]

Posterior = Callable[[Tensor], tuple[Tensor, Tensor]]
"""The VAE's x (n, d) ↦ (μ, ξ), each (n, k)."""


class VampPrior(nn.Module):
    """p(z) = (1/K) Σ_k N(z; μ(u_k), diag e^{ξ(u_k)}) with K learned pseudo-inputs u (K, d).

    Args:
        components: K.
        dim: d, the data dimension.
        latent: k (unused: the posterior gives it).
    """

    def __init__(self, components: int, dim: int, latent: int):
        super().__init__()
        self.pseudo_inputs = nn.Parameter(torch.zeros(components, dim))

    @torch.no_grad()
    def prepare(self, x: Tensor) -> None:
        """Start the pseudo-inputs at K rows of the training data x (n, d), drawn with a fixed
        seed (with replacement when n < K)."""
        k, n = self.pseudo_inputs.shape[0], x.shape[0]
        g = torch.Generator().manual_seed(0)
        pick = torch.randperm(n, generator=g)[:k] if n >= k else torch.randint(n, (k,), generator=g)
        self.pseudo_inputs.copy_(x[pick.to(x.device)].to(self.pseudo_inputs))

    def log_prob(self, z: Tensor, posterior: Posterior) -> Tensor:
        """Return log p(z) (m,) for z (m, k)."""
        mu, logvar = posterior(self.pseudo_inputs)  # (K, k)
        if torch.is_grad_enabled() and (z.requires_grad or mu.requires_grad):
            eps = (z.unsqueeze(1) - mu) * torch.exp(-0.5 * logvar)  # (m, K, k)
            log_comp = standard_normal_log_prob(eps) - 0.5 * logvar.sum(-1)  # (m, K)
        else:  # scoring (an IWAE bound draws m = n·k of z): one (m, K) buffer, built in place
            log_comp = component_log_probs(z, mu, logvar)
        if torch.is_grad_enabled():  # training; under torch.func's transforms (fit --seeds) z
            # and μ look like constants above, and the sum must keep its input for the backward
            return floored_logsumexp(log_comp) - math.log(mu.shape[0])
        return mixture_logsumexp_(log_comp) - math.log(mu.shape[0])

    def sample(
        self, n: int, posterior: Posterior, *, generator: torch.Generator | None = None
    ) -> Tensor:
        """Return n draws (n, k): a pseudo-input uniformly, then z ~ q(z | u)."""
        mu, logvar = posterior(self.pseudo_inputs)
        dev = mu.device
        pick = draw(torch.randint, mu.shape[0], (n,), generator=generator, device=dev)
        eps = draw(torch.randn, (n, mu.shape[1]), generator=generator, device=dev, dtype=mu.dtype)
        return mu[pick] + torch.exp(0.5 * logvar[pick]) * eps


EXP_FLOOR = -60.0
"""The floor :func:`mixture_logsumexp_` raises exponents to before taking exp: e^−60 ≈ 10^−26 beside
the largest term e^0 changes nothing in float32 or float64, and the exp of numbers far below it
(components far from z) takes a slow path on CPUs, 13× slower on a 64 × 200 block (a 2-core AMD
EPYC with AVX2; BENCHMARKS.md, "the slow host itself")."""


def mixture_logsumexp_(log_comp: Tensor, *, weights: bool = False) -> Tensor:
    """Return logsumexp_j log_comp_ij (m,) for log_comp (m, K), overwriting log_comp with
    exp(log_comp − max) (floored at :data:`EXP_FLOOR`), normalised to the softmax weights
    (responsibilities) when ``weights``. No gradients: scoring and the hand-written step."""
    top = log_comp.amax(dim=1, keepdim=True)  # (m, 1)
    terms = log_comp.sub_(top).clamp_(min=EXP_FLOOR).exp_()
    total = terms.sum(dim=1, keepdim=True)
    if weights:
        terms.div_(total)
    return (top + total.log()).squeeze(1)


def floored_logsumexp(log_comp: Tensor) -> Tensor:
    """Return logsumexp_j log_comp_ij (m,) for log_comp (m, K), differentiably (training through
    autograd: ``fit --seeds``, torchrun), with the shifted exponents floored at
    :data:`EXP_FLOOR` as :func:`mixture_logsumexp_` floors them; a floored term's gradient, at
    most e^−60, is dropped. Forward and backward of a (64, 200) block with far components: 0.23
    against 0.54 ms through ``torch.logsumexp`` (a 2-core AMD EPYC with AVX2)."""
    top = log_comp.detach().amax(dim=1, keepdim=True)
    return (log_comp - top).clamp(min=EXP_FLOOR).exp().sum(dim=1).log() + top.squeeze(1)


def component_log_probs(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """Return log N(z_i; μ_j, diag e^{ξ_j}) (m, K) for z (m, k) and μ, ξ (K, k), without
    gradients (scoring, and the hand-written step of :mod:`~pushforward.models.vae.fused`): a
    coordinate at a time into one (m, K) buffer, 1.6–2× faster than through the (m, K, k)
    differences on a CPU for k = 2, K = 200."""
    inv_std = torch.exp(-0.5 * logvar)  # (K, k)
    out = ((z[:, :1] - mu[:, 0]) * inv_std[:, 0]).square()  # (m, K)
    for d in range(1, z.shape[1]):
        # out of place: torch.vmap (fit --seeds) has no batching rule for square_ or addcmul_
        # and loops over the seeds; the same bits and time unbatched, 13% less batched
        t = (z[:, d : d + 1] - mu[:, d]) * inv_std[:, d]
        out = torch.addcmul(out, t, t)
    const = 0.5 * logvar.sum(-1) + 0.5 * z.shape[1] * math.log(2 * math.pi)  # (K,)
    return out.mul_(-0.5).sub_(const)


FLOW_PRIOR = {"transforms": 3, "hidden_features": (64, 64), "bins": 8}
"""The flow prior's zuko NSF: coupling layers, conditioner widths, spline bins."""


class FlowPrior(nn.Module):
    """p(z) = T#N(0, I_k) with T a neural spline flow (zuko's NSF, :data:`FLOW_PRIOR`).

    Args:
        components: unused.
        dim: unused.
        latent: k.
    """

    def __init__(self, components: int, dim: int, latent: int):
        super().__init__()
        self.latent = latent
        self.flow = zuko.flows.NSF(latent, **FLOW_PRIOR)

    def prepare(self, x: Tensor) -> None:
        """Nothing: the flow starts near the identity, p(z) near N(0, I)."""

    def log_prob(self, z: Tensor, posterior: Posterior) -> Tensor:
        """Return log p(z) (m,) for z (m, k)."""
        return self.flow().log_prob(z)

    def sample(
        self, n: int, posterior: Posterior, *, generator: torch.Generator | None = None
    ) -> Tensor:
        """Return n draws (n, k): T(ε), ε ~ N(0, I) drawn from ``generator``."""
        p = next(self.parameters())
        eps = draw(torch.randn, (n, self.latent), generator=generator, device=p.device)
        return self.flow().transform.inv(eps.to(p.dtype))


TRAINED_PRIORS: dict[str, type[nn.Module]] = {"vamp": VampPrior, "flow": FlowPrior}
"""The priors trained with the VAE, by the name of the ``prior`` setting."""


class TrainedPriorMeasure(BaseMeasure):
    """A trained prior (with the VAE's posterior map) as a base measure: draws (n, k)."""

    def __init__(self, prior: nn.Module, posterior: Posterior, latent: int):
        self.prior, self.posterior = prior, posterior
        self.event_shape = torch.Size([latent])

    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        z = self.prior.sample(n, self.posterior, generator=generator)
        return z if device is None else z.to(device)

    def log_prob(self, x: Tensor) -> Tensor:
        p = next(self.prior.parameters())
        return self.prior.log_prob(x.to(p), self.posterior).to(x.dtype)

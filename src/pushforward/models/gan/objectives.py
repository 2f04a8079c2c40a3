"""The GAN's objectives, written on the critic's logits l = D(·).

The game is min_g max_D E_x[φ(D(x))] + E_z[ψ(D(g(z)))]. Every objective here is a pair of
losses on logits, with softplus where a sigmoid would be logged, so that no probability is ever
formed and then logged:

* ``minimax`` (Goodfellow et al., 2014, "Generative adversarial nets"): D minimises
  −log σ(l_real) − log(1 − σ(l_fake)) = softplus(−l_real) + softplus(l_fake); g minimises
  log(1 − σ(l_fake)) = −softplus(l_fake), whose gradient in the logit is −σ(l): it vanishes when
  D confidently rejects the fakes;
* ``nonsaturating`` (the same paper): the same D; g minimises −log σ(l_fake) = softplus(−l_fake),
  with gradient −(1 − σ(l)), strong exactly where the minimax one vanishes;
* ``wgan-gp`` (Gulrajani et al., 2017, "Improved training of Wasserstein GANs"): D minimises
  E[D(g(z))] − E[D(x)] (plus the gradient penalty, :mod:`.penalties`); g minimises −E[D(g(z))];
* ``hinge`` (Lim & Ye, 2017, "Geometric GAN"; Miyato et al., 2018): D minimises
  E[relu(1 − l_real)] + E[relu(1 + l_fake)]; g minimises −E[l_fake].

Each objective also gives its gradients in the logits written out (the ``*_grad`` functions),
for the training step that takes no autograd (:mod:`.fused`); with P logits, each is the
derivative of a mean, so it carries 1/P. Where autograd's kernels define a derivative at a kink
(relu at 0), these take the same value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["GAN_LOSSES", "GANLoss"]


def _minimax_critic(real: Tensor, fake: Tensor) -> Tensor:
    # −log σ(l) = softplus(−l) and −log(1 − σ(l)) = softplus(l)
    return F.softplus(-real).mean() + F.softplus(fake).mean()


def _minimax_generator(fake: Tensor) -> Tensor:
    return -F.softplus(fake).mean()  # log(1 − σ(l)); d/dl = −σ(l)


def _nonsaturating_generator(fake: Tensor) -> Tensor:
    return F.softplus(-fake).mean()  # −log σ(l); d/dl = −(1 − σ(l))


def _wasserstein_critic(real: Tensor, fake: Tensor) -> Tensor:
    return fake.mean() - real.mean()


def _wasserstein_generator(fake: Tensor) -> Tensor:
    return -fake.mean()


def _hinge_critic(real: Tensor, fake: Tensor) -> Tensor:
    return F.relu(1 - real).mean() + F.relu(1 + fake).mean()


# the gradients in the logits, written out: d softplus(l)/dl = σ(l), d softplus(−l)/dl = −σ(−l)


def _minimax_critic_grad(real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
    return torch.sigmoid(-real).div_(-real.numel()), torch.sigmoid(fake).div_(fake.numel())


def _minimax_generator_grad(fake: Tensor) -> Tensor:
    return torch.sigmoid(fake).div_(-fake.numel())


def _nonsaturating_generator_grad(fake: Tensor) -> Tensor:
    return torch.sigmoid(-fake).div_(-fake.numel())


def _wasserstein_critic_grad(real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
    return torch.full_like(real, -1 / real.numel()), torch.full_like(fake, 1 / fake.numel())


def _wasserstein_generator_grad(fake: Tensor) -> Tensor:
    return torch.full_like(fake, -1 / fake.numel())


def _hinge_critic_grad(real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
    # relu's derivative is 0 at 0, as autograd's threshold_backward takes it
    d_real = (1 - real > 0).to(real.dtype).div_(-real.numel())
    d_fake = (1 + fake > 0).to(fake.dtype).div_(fake.numel())
    return d_real, d_fake


@dataclass(frozen=True)
class GANLoss:
    """A GAN objective: what the critic and the generator minimise, from logits (P,) each.

    Args:
        critic: (real logits (P,), fake logits (P,)) → the critic's loss, a scalar.
        generator: fake logits (P,) → the generator's loss, a scalar.
        critic_grad: (real logits, fake logits) → the critic loss's gradients in them (P,) each,
            written out for the step without autograd (:mod:`.fused`), which takes only the
            objectives of :data:`GAN_LOSSES`; any other objective trains through autograd.
        generator_grad: fake logits (P,) → the generator loss's gradient in them (P,).
        default_gp_weight: the gradient penalty's weight λ its paper uses (10 for
            Gulrajani et al.'s WGAN-GP), 0 where it uses none.
    """

    critic: Callable[[Tensor, Tensor], Tensor]
    generator: Callable[[Tensor], Tensor]
    critic_grad: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None = None
    generator_grad: Callable[[Tensor], Tensor] | None = None
    default_gp_weight: float = 0.0


GAN_LOSSES: dict[str, GANLoss] = {
    "minimax": GANLoss(
        _minimax_critic, _minimax_generator, _minimax_critic_grad, _minimax_generator_grad
    ),
    "nonsaturating": GANLoss(
        _minimax_critic,
        _nonsaturating_generator,
        _minimax_critic_grad,
        _nonsaturating_generator_grad,
    ),
    "wgan-gp": GANLoss(
        _wasserstein_critic,
        _wasserstein_generator,
        _wasserstein_critic_grad,
        _wasserstein_generator_grad,
        default_gp_weight=10.0,
    ),
    "hinge": GANLoss(
        _hinge_critic, _wasserstein_generator, _hinge_critic_grad, _wasserstein_generator_grad
    ),
}
"""The objectives by name (see the module docstring)."""

"""The GAN's training step with its backward written out, so that a step on points needs no
autograd.

The mixture GAN's networks are 128-wide MLPs on batches of 256 points: a step is about 4 ms of
matrix products and, through autograd, as much again of graph bookkeeping, elementwise kernels
and dispatch (BENCHMARKS.md, "Training speed"). With MLP players, the two steps are written out
on :mod:`pushforward.nets.fused`'s passes, as the lecture writes the game:

* the critic's step: one pass of D over the real and the fake packs together, the objective's
  gradients in the logits (:mod:`.objectives`), and the chain rule back to D's weights;
* R1 on the critic steps that take it (lazy regularisation): with g(x) = ∇ₓD(x) at the real
  packs, R1 = ½ E‖g‖², and its gradient in D's weights is the derivative of the input gradient
  itself (a double backward): for piecewise-linear activations it has no second-order term
  (:func:`~pushforward.nets.fused.input_gradient_backward`); other activations take autograd
  on those steps;
* the generator's step: fakes y = g(z), D's gradient in its input at y (D's weights held), the
  kernel term's gradient in y when ``mmd_weight`` > 0 (:mod:`.mmd`), and the chain rule back to
  g's weights.

The draws (noise, packing orders) come from the run's generator in the order autograd's step
takes them, so a run takes the same random numbers either way and the two agree to rounding (the
tests compare every gradient with autograd's). Augmentation, a conv or minibatch-std critic, a
sigmoid output, autocast, torchrun and hooked networks take autograd.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from pushforward.models.gan.mmd import generator_mmd_and_gradient
from pushforward.models.gan.objectives import GAN_LOSSES
from pushforward.models.gan.penalties import r1_penalty
from pushforward.nets.fused import (
    PIECEWISE_LINEAR,
    backward,
    forward,
    hooked,
    input_gradient,
    input_gradient_backward,
    plain_mlp,
)
from pushforward.train import Shard, autocast_enabled

__all__ = [
    "GAME_PARTS",
    "critic_gradients",
    "fusable",
    "generator_gradients",
    "penalty_fusable",
    "set_gradients",
]

Pairs = list[tuple[Tensor, Tensor]]
"""(parameter, gradient) pairs."""


GAME_PARTS = ("_score", "_critic_terms", "_fakes", "_view", "_generator_backward")
"""The GAN's methods whose work the step written out does itself: a subclass that overrides one
of them trains through autograd."""


def fusable(gan: Any, x: Tensor, shard: Shard | None, *, base: type) -> bool:
    """Whether :func:`critic_gradients` and :func:`generator_gradients` compute the GAN's step on
    the batch x (B, d): MLP players with known activations, no hooks, float32 weights and data,
    a linear output, no augmentation, no autocast, one process, the library's own objective of
    the ``loss`` setting (its gradients written out beside it), and none of :data:`GAME_PARTS`
    overridden from the class ``base`` (the GAN). Called every step: cheap."""
    if any(getattr(type(gan), name) is not getattr(base, name) for name in GAME_PARTS):
        return False
    cfg = gan.config
    if gan.objective is not GAN_LOSSES.get(cfg.loss):  # a user's own objective: autograd
        return False
    if shard is not None or cfg.augment != "none" or cfg.output != "linear":
        return False
    if x.dtype != torch.float32 or autocast_enabled(x.device):
        return False
    g, tail = gan.generator_net
    if hooked(gan) or hooked(gan.generator_net) or hooked(tail) or tail._parameters:
        return False
    return plain_mlp(g) and plain_mlp(gan.critic)


def penalty_fusable(gan: Any) -> bool:
    """Whether a critic step that takes the penalty is written out too: none is taken, or R1
    (the library's own) with a piecewise-linear critic."""
    if gan.config.gp_weight <= 0:
        return True
    return gan.penalty_fn is r1_penalty and gan.critic.activation in PIECEWISE_LINEAR


def set_gradients(terms: dict[str, Tensor], pairs: Pairs) -> dict[str, Tensor]:
    """Set each parameter's ``.grad`` to its gradient in ``pairs`` and return ``terms``."""
    for p, g in pairs:
        p.grad = g
    return terms


def _add(pairs: Pairs, more: Pairs) -> Pairs:
    """The pairs with ``more``'s gradients added to their parameters' (in place)."""
    extra = {id(p): g for p, g in more}
    for p, g in pairs:
        if id(p) in extra:
            g.add_(extra[id(p)])
    return pairs


@torch.no_grad()
def critic_gradients(
    gan: Any, real: Tensor, fake: Tensor, lazy: float | None
) -> tuple[dict[str, Tensor], Pairs]:
    """Return (the terms of ``gan._critic_terms(real, fake, lazy=lazy)``, (parameter, gradient
    of 'critic_loss') pairs for every weight of the critic) for real and fake packs (P, c), with
    R1 weighted ``lazy``·λ (None: not on this step). Call only where :func:`fusable` holds, and
    :func:`penalty_fusable` when the penalty is due."""
    p = real.shape[0]
    logits, tape = forward(gan.critic, torch.cat([real, fake]))  # (2P, 1)
    l_real, l_fake = logits[:p, 0], logits[p:, 0]
    loss = gan.objective.critic(l_real, l_fake)
    d_real, d_fake = gan.objective.critic_grad(l_real, l_fake)
    _, pairs = backward(gan.critic, tape, torch.cat([d_real, d_fake]).unsqueeze(1))
    weight = gan.config.gp_weight
    if weight <= 0:
        return {"critic_loss": loss}, pairs
    if lazy is None:
        return {"critic_loss": loss, "gradient_penalty": torch.zeros_like(loss)}, pairs
    real_tape = tape.rows(p)
    grad, us = input_gradient(gan.critic, real_tape)  # ∇ₓD at the real packs (P, c)
    gp = 0.5 * grad.square().sum(1).mean()
    c = lazy * weight
    _add(pairs, input_gradient_backward(gan.critic, real_tape, us, grad.mul(c / p)))
    terms = {"critic_loss": loss + c * gp, "gradient_penalty": gp if lazy == 1.0 else lazy * gp}
    return terms, pairs


@torch.no_grad()
def generator_gradients(
    gan: Any, z: Tensor, packs: Tensor, mmd_weight: float = 0.0
) -> tuple[dict[str, Tensor], Pairs]:
    """Return ({'gen_loss'[, 'mmd_term']}, (parameter, gradient) pairs for every weight of g) of
    the generator's step on the noise z (P·m, k) against the real packs (P, m·d) of this
    training step, the critic held fixed, with the kernel term weighted ``mmd_weight`` (0: not
    on this step). Call only where :func:`fusable` holds."""
    net = gan.generator_net[0]
    y, g_tape = forward(net, z)  # (P·m, d), the critic's units
    logits, d_tape = forward(gan.critic, y.reshape(packs.shape[0], -1))
    gen = gan.objective.generator(logits[:, 0])
    d_logits = gan.objective.generator_grad(logits[:, 0]).unsqueeze(1)
    d_fake, _ = backward(gan.critic, d_tape, d_logits, weights=False, inputs=True)
    dy = d_fake.reshape(y.shape)
    terms = {"gen_loss": gen}
    w = mmd_weight
    if w > 0:  # the kernel term at the modes' scale, on the samples' rows
        data = packs.reshape(-1, y.shape[1])
        mmd, d_mmd = generator_mmd_and_gradient(y, data, gan.config.mmd_bandwidths)
        dy.add_(d_mmd, alpha=w)
        terms["mmd_term"] = mmd
    _, pairs = backward(net, g_tape, dy)
    return terms, pairs

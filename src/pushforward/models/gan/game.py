"""The GAN's game: the critic's and the generator's steps on a batch, and the losses they take.

:class:`Game` holds the training side of :class:`~pushforward.models.gan.GAN` (which builds the
networks and samples): packing the batch, the critic's terms with the penalty (lazily weighted),
the generator's step with the kernel term, the running average of g's weights, and the step
itself, written out for MLP players on points (:mod:`.fused`) or through autograd. A subclass
provides ``config`` (:class:`~pushforward.models.gan.GANConfig`), ``critic``,
``generator_net``, ``generator_ema``, ``objective``, ``penalty_fn``, ``base`` (μ), the buffers
``data_loc``, ``data_scale`` and ``ema_updates``, and ``_updates``, as the GAN does.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import replace

import torch
from torch import Tensor

from pushforward.measures import draw
from pushforward.models.gan import fused as gan_fused
from pushforward.models.gan.mmd import generator_mmd
from pushforward.nets import augment
from pushforward.train import (
    OPTIMIZERS,
    Optimization,
    Shard,
    Trainable,
    TrainConfig,
    average_gradients_,
    check_finite,
    draw_rows,
    grad_norm,
    running_average_,
)

__all__ = ["Game"]


class Game(Trainable):
    """The adversarial training of a generator g against a critic D (the module's docstring)."""

    optimization = Optimization.OWN_STEP
    syncs_gradients = True

    fused_step: bool = True
    """Train MLP players on points on gradients written out by hand (:mod:`.fused`: the same
    losses and gradients to rounding, no autograd graph); False: through autograd."""

    def _packs(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        """Return x (B, d) as ⌈B/m⌉ packs (P, m·d) in a random order, the last one completed, in
        the critic's units (standardised when ``standardize`` is on)."""
        if self.standardize:
            x = (x - self.data_loc) / self.data_scale
        m = self.config.pack
        if m == 1:
            return x
        b = x.shape[0]
        p = -(-b // m)
        order = draw(torch.randperm, b, generator=generator, device=x.device)
        order = order.repeat(-(-p * m // b))[: p * m]
        return x[order].reshape(p, m * self.dim)

    def _latent(self, n_packs: int, generator: torch.Generator | None, device,
                shard: Shard | None = None) -> Tensor:  # fmt: skip
        """Return the draws z ~ μ (P·m, k) on ``device`` of n_packs packs of generated samples
        (under torchrun, this process's rows of the whole batch's draws)."""
        noise = functools.partial(self.base.sample, generator=generator, device=device)
        return draw_rows(noise, n_packs * self.config.pack, shard)

    def _fakes(
        self, n_packs: int, generator: torch.Generator | None, device, shard: Shard | None = None
    ) -> Tensor:
        """Return n_packs packs of generated samples (P, m·d) in the critic's units."""
        y = self.generator_net(self._latent(n_packs, generator, device, shard))
        return y.reshape(n_packs, self.config.pack * self.dim)

    def _mmd_term(self, fake: Tensor, packs: Tensor, shard: Shard | None = None) -> Tensor:
        """Return the generator's kernel term (:func:`~pushforward.models.gan.mmd.generator_mmd`)
        between the samples of the fake and the real packs (P, m·d), unpacked to rows (·, d);
        under torchrun the whole batch's, its gradient this process's share."""
        rows = (fake.reshape(-1, self.dim), packs.reshape(-1, self.dim))
        return generator_mmd(*rows, self.config.mmd_bandwidths, shard)

    def _score(self, packs: Tensor) -> Tensor:
        return self.critic(packs).squeeze(1)  # (P,) logits

    def _view(
        self, packs: Tensor, generator: torch.Generator | None, shard: Shard | None
    ) -> Tensor:
        """Return the packs (P, m·d) as the critic sees them: through the random transformation
        T of the ``augment`` setting (:mod:`pushforward.nets.augment`), or unchanged when it is
        ``none``. Under
        torchrun the draws are this process's rows of the whole batch's draws."""
        if self.config.augment == "none":
            return packs
        device = generator.device if generator is not None else None

        def draw(p: int) -> Tensor:
            def uniform(m: int) -> Tensor:
                return torch.rand(m, 2, generator=generator, device=device)

            return draw_rows(uniform, p, shard)

        return augment(self.config.augment, packs, draw)

    def _critic_terms(
        self,
        real: Tensor,
        fake: Tensor,
        generator: torch.Generator | None,
        shard: Shard | None = None,
        *,
        lazy: float | None = 1.0,
    ) -> dict[str, Tensor]:
        """Return the critic's loss with the penalty weighted ``lazy``·λ, or, with ``lazy``
        None, without the penalty (a step that lazy regularisation skips). 'gradient_penalty'
        is then the penalty × ``lazy`` (0 on skipped steps), so that its mean over the steps
        of an epoch estimates the penalty's mean."""
        loss = self.objective.critic(self._score(real), self._score(fake))
        terms = {"critic_loss": loss}
        weight = self.config.gp_weight
        if weight > 0:
            if lazy is None:
                return {"critic_loss": loss, "gradient_penalty": torch.zeros_like(loss.detach())}
            gp = self.penalty_fn(self._score, real, fake, generator=generator, shard=shard)
            terms = {"critic_loss": loss + lazy * weight * gp, "gradient_penalty": gp}
            if lazy != 1.0:
                terms["gradient_penalty"] = lazy * gp.detach()
        return terms

    def loss(
        self, x: Tensor, *, generator: torch.Generator | None = None, epoch: float | None = None
    ) -> dict[str, Tensor]:
        """Return {'loss': generator loss, 'gen_loss', 'critic_loss'[, 'gradient_penalty'][,
        'mmd_term']} on a batch x (B, d), each a scalar, as a training step reports them; nothing
        is updated (for validation)."""
        packs = self._packs(x, generator)
        real = self._view(packs, generator, None)
        fakes = self._fakes(real.shape[0], generator, x.device)
        fake = self._view(fakes, generator, None)
        terms = self._critic_terms(real, fake, generator)
        gen = self.objective.generator(self._score(fake))
        if self.config.mmd_weight > 0:  # the generator's kernel term, on the samples themselves
            terms["mmd_term"] = self._mmd_term(fakes, packs)
        return {"loss": gen, "gen_loss": gen, **terms}

    def configure_optimizers(self, cfg: TrainConfig) -> dict[str, torch.optim.Optimizer]:
        """Return one optimiser for the critic (at ``critic_lr`` if set) and one for g."""
        make = OPTIMIZERS[cfg.optimizer]
        lr = self.config.critic_lr
        critic_cfg = cfg if lr is None else replace(cfg, lr=lr)
        return {
            "critic": make(self.critic.parameters(), critic_cfg),
            "generator": make(self.generator_net.parameters(), cfg),
        }

    def training_step(
        self,
        x: Tensor,
        optimizers: Mapping[str, torch.optim.Optimizer],
        cfg: TrainConfig,
        *,
        generator: torch.Generator | None = None,
        epoch: float = 0.0,
        shard: Shard | None = None,
    ) -> dict[str, Tensor]:
        """Take ``critic_steps`` critic steps and one generator step on x (B, d); return the
        detached terms: 'loss' (= 'gen_loss'), 'critic_loss' (mean over the critic steps),
        'critic_grad_norm', 'gen_grad_norm' (before clipping) and 'gradient_penalty' if on.

        Under torchrun (``shard`` given) x is this process's share of the batch, the noise is
        this process's rows of the whole batch's draws from the generator every process shares,
        and each network's gradients are averaged over the processes after its backward pass
        (:func:`~pushforward.distributed.average_gradients_`), so that every process takes the
        step one process would take on the whole batch. The penalties' input gradients are taken
        on the bare critic (no DDP wrapper, whose reducer cannot differentiate twice); each
        process's loss is a mean over its rows times ``shard.weight``, so the average is the
        whole batch's mean."""
        if shard is not None:
            self.config.check_processes()
        weight = shard.weight if shard is not None else 1.0
        sums: dict[str, Tensor] = {}
        steps = self.config.critic_steps
        if self._updates is None:
            self._updates = int(self.ema_updates)
        first = self._updates * steps  # this step's first critic step
        fused = self.fused_step and gan_fused.fusable(self, x, shard, base=Game)
        for i in range(steps):
            packs = self._packs(x, generator)
            real = self._view(packs, generator, shard)
            with torch.no_grad():
                fake = self._fakes(real.shape[0], generator, x.device, shard)
            fake = self._view(fake, generator, shard)
            # lazy regularisation: the penalty on every K-th critic step (counted from the
            # generator steps in the checkpoint, so that a resumed run keeps the rhythm)
            k = self.config.penalty_every
            lazy = float(k) if (first + i) % k == 0 else None
            optimizers["critic"].zero_grad(set_to_none=True)
            if fused and (lazy is None or gan_fused.penalty_fusable(self)):
                terms = gan_fused.set_gradients(*gan_fused.critic_gradients(self, real, fake, lazy))
            else:
                terms = self._critic_terms(real, fake, generator, shard, lazy=lazy)
                (terms["critic_loss"] * weight).backward()
            average_gradients_(self.critic.parameters())
            terms["critic_grad_norm"] = grad_norm(self.critic, cfg.grad_clip)
            check_finite(terms)  # before the step, so that the weights stay finite
            optimizers["critic"].step()
            for k, v in terms.items():
                sums[k] = sums.get(k, 0) + v.detach() / steps
        gen_terms = self._generator_step(packs, optimizers, cfg, generator, shard, weight,
                                         fused=fused)  # fmt: skip
        self.ema_updates += 1
        self._updates += 1
        return {"loss": gen_terms["gen_loss"], **sums, **gen_terms}

    def _mmd_due(self) -> float:
        """Return the kernel term's weight on this generator step: ``mmd_weight``·K on every
        K-th step (K = ``mmd_every``, counted from the generator steps in the checkpoint, so
        that a resumed run keeps the rhythm), else 0 (lazy, as the penalty; 0 when off)."""
        if self._updates is None:
            self._updates = int(self.ema_updates)
        k = self.config.mmd_every
        return self.config.mmd_weight * k if self._updates % k == 0 else 0.0

    def _generator_backward(
        self, packs: Tensor, generator: torch.Generator | None, shard: Shard | None, weight: float
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Set g's gradients by autograd (the critic held fixed) against the real packs (P, m·d);
        return (the generator's loss, {'mmd_term'} on a step the kernel term is due, else {})."""
        self.critic.requires_grad_(False)  # the generator's step needs no critic gradients
        try:
            fake = self._fakes(packs.shape[0], generator, packs.device, shard)
            gen = self.objective.generator(self._score(self._view(fake, generator, shard)))
            total, extra, w = gen * weight, {}, self._mmd_due()
            if w > 0:  # the kernel term at the modes' scale (gan.mmd): the whole batch's
                mmd = self._mmd_term(fake, packs, shard)
                total, extra = total + w * mmd, {"mmd_term": mmd.detach()}
            total.backward()
        finally:
            self.critic.requires_grad_(True)
        return gen, extra

    def _generator_step(
        self,
        packs: Tensor,
        optimizers: Mapping[str, torch.optim.Optimizer],
        cfg: TrainConfig,
        generator: torch.Generator | None,
        shard: Shard | None,
        weight: float,
        *,
        fused: bool = False,
    ) -> dict[str, Tensor]:
        """Take the generator's step against the real packs (P, m·d) of this training step (the
        critic held fixed; ``fused``: on gradients written out), then update the running
        average; return the detached terms 'gen_loss', 'gen_grad_norm' and, on a step the
        kernel term is on, 'mmd_term' (MMD² less the data's own sum, which does not depend on
        g: it can be negative), times K on a step it is due and 0 on the others, so that its
        mean over an epoch's steps estimates the term, as the lazy penalty's does."""
        optimizers["generator"].zero_grad(set_to_none=True)
        if fused:
            z = self._latent(packs.shape[0], generator, packs.device)
            grads = gan_fused.generator_gradients(self, z, packs, self._mmd_due())
            extra = gan_fused.set_gradients(*grads)
            gen = extra.pop("gen_loss")
        else:
            gen, extra = self._generator_backward(packs, generator, shard, weight)
        if self.config.mmd_weight > 0:  # reported as the penalty is: its epoch mean estimates it
            k = self.config.mmd_every
            mmd = extra.get("mmd_term")
            extra["mmd_term"] = gen.new_zeros(()) if mmd is None else mmd * k if k > 1 else mmd
        average_gradients_(self.generator_net.parameters())
        gen_terms = {
            "gen_loss": gen.detach(),
            **extra,
            "gen_grad_norm": grad_norm(self.generator_net, cfg.grad_clip),
        }
        check_finite(gen_terms)
        optimizers["generator"].step()
        if self.generator_ema is not None:
            running_average_(self.generator_ema, self.generator_net, self.config.ema, self._updates)
        return gen_terms

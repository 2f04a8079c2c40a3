"""Generative adversarial networks: the second way to fit the same pushforward g#μ.

A generator g (B, k) → (B, d), the same kind of network as a decoder, pushes noise z ~ μ
(``gaussian`` N(0, I_k) or ``uniform`` on [−1, 1]^k) forward; a critic D (B, m·d) → (B,), the same
kind of network as an encoder with one output, scores data. The two play the game

    min_g max_D  E_x[φ(D(x))] + E_z[ψ(D(g(z)))]

(the objectives on the critic's logits: :mod:`.objectives`; the penalties on its slope:
:mod:`.penalties`), taking ``critic_steps`` steps on D for each step on g.

Each critic step uses the whole batch, re-packed in a fresh random order (PacGAN's packs of m
samples, Lin et al., 2018), against fresh noise; then the generator takes one step against fresh
noise, through autograd or, for MLP players on points, on gradients written out (:mod:`.fused`).
All randomness (noise, packing orders, the penalty's ε, the augmentation's draws) comes from the
``generator`` argument. The game is played on standardised data on points (:meth:`GAN.prepare`),
and sampling may reject the latent draws where g stretches most (Jacobian truncation,
:mod:`.truncation`). The settings, their defaults and the benchmarked settings are in
:mod:`.config` (:class:`~pushforward.models.gan.GANConfig` explains each).
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Mapping
from dataclasses import replace
from typing import ClassVar

import torch
from torch import Tensor, nn

from pushforward.core import ConfigError, ModelSpec, ResultKey, check_share
from pushforward.data import fit_standardize
from pushforward.measures import BaseMeasure, Pushforward, Restricted, draw
from pushforward.models.gan import fused as gan_fused
from pushforward.models.gan.config import (
    NOISES,
    OUTPUTS,
    RECOMMENDED,
    RECOMMENDED_IMAGES,
    GANConfig,
)
from pushforward.models.gan.minibatch_std import MinibatchStdCritic
from pushforward.models.gan.mmd import generator_mmd
from pushforward.models.gan.objectives import GAN_LOSSES
from pushforward.models.gan.penalties import PENALTIES
from pushforward.models.gan.truncation import stretch, stretch_threshold, weights_digest
from pushforward.nets import (
    ACTIVATIONS,
    NetConfig,
    augment,
    build_decoder,
    build_encoder,
    decoder_program,
)
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

__all__ = ["GAN", "SPEC"]


class _InData(nn.Module):
    """u ↦ m + s·u after a generator network: its output in the data's units."""

    def __init__(self, net: nn.Module, owner: GAN):
        super().__init__()
        self.net = net
        self.__dict__["owner"] = owner  # not a submodule: the GAN owns the buffers

    def forward(self, z: Tensor) -> Tensor:
        return self.owner.data_loc + self.owner.data_scale * self.net(z)


class GAN(Trainable):
    """Generator g (B, k) → (B, d) and critic D (B, m·d) → (B,), trained adversarially.

    Args:
        config: the settings (:class:`~pushforward.models.gan.GANConfig`), with ``dim`` set;
            those left None take the defaults of the kind of data (images when ``image_shape``
            is set, else points), and the model keeps the filled-in copy as :attr:`config`.
    """

    config_class = GANConfig
    evaluate_keys: ClassVar[dict[str, ResultKey]] = {
        "jacobian_truncation": ResultKey(
            "Jacobian truncation", ".0%", "GAN: share of latent draws rejected when sampling"
        ),
    }
    """The keys of :meth:`evaluate` that only this model gives."""

    fused_step: bool = True
    """Train MLP players on points on gradients written out by hand (:mod:`.fused`: the same
    losses and gradients to rounding, no autograd graph); False: through autograd."""

    sampling_options = ("jacobian_truncation",)
    history_plot = "gan"
    optimization = Optimization.OWN_STEP
    syncs_gradients = True

    def __init__(self, config: GANConfig):
        super().__init__()
        if not isinstance(config, GANConfig):
            raise ConfigError(f"a GAN is built from a GANConfig, got a {type(config).__name__}")
        if config.dim is None:
            raise ConfigError("a GAN needs the data's dimension: GANConfig(dim=d, ...)")
        self.config = cfg = config.resolve("points" if config.image_shape is None else "images")
        self.objective = GAN_LOSSES[cfg.loss]
        self.penalty_fn = PENALTIES[cfg.penalty]
        self.net = NetConfig(**cfg.net_config())
        self.critic_config = NetConfig(**cfg.critic_net_config())
        self._threshold: tuple[tuple[float, bytes], float] | None = None  # ((q, weights), τ)
        # the data's location m and scale s (d,), set by prepare(); identity until then
        self.register_buffer("data_loc", torch.zeros(cfg.dim))
        self.register_buffer("data_scale", torch.ones(cfg.dim))
        self.base = NOISES[cfg.noise](cfg.latent)
        out_act = ACTIVATIONS[OUTPUTS[cfg.output]]
        self.generator_net = nn.Sequential(
            build_decoder(self.net, cfg.latent, cfg.dim, cfg.image_shape), out_act()
        )
        n_in = cfg.dim * cfg.pack
        if cfg.minibatch_std:
            c = self.critic_config
            self.critic = MinibatchStdCritic(n_in, list(c.hidden), activation=c.activation)
        else:
            self.critic = build_encoder(self.critic_config, n_in, 1, cfg.image_shape)
        # the running average of g's weights, which sampling uses when ema > 0
        self.generator_ema = (
            copy.deepcopy(self.generator_net).requires_grad_(False) if cfg.ema > 0 else None
        )
        # generator steps taken, for the average's warm-up (a buffer: checkpoints carry it)
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))
        # the same count on the host, read from the buffer once (no device sync in a step)
        self._updates: int | None = None
        self.register_load_state_dict_post_hook(_forget_updates)

    @property
    def dim(self) -> int:
        """The data dimension d."""
        return self.config.dim

    @property
    def latent(self) -> int:
        """The noise dimension k."""
        return self.config.latent

    @property
    def image_shape(self) -> tuple[int, int] | None:
        """(h, w) of image data, else None."""
        return self.config.image_shape

    @property
    def standardize(self) -> bool:
        """Whether the game is played on standardised data (:meth:`prepare`)."""
        return self.config.standardize

    def prepare(self, x: Tensor) -> None:
        """Record the training data's per-coordinate mean and standard deviation (x is (n, d))
        when ``standardize`` is on; a coordinate that does not vary keeps scale 1."""
        if not self.standardize:
            return
        fitted = fit_standardize(x.detach().to(self.data_loc.dtype))
        with torch.no_grad():
            self.data_loc.copy_(fitted.loc)
            self.data_scale.copy_(fitted.scale)

    # --- the pushforward -----------------------------------------------------------------------

    @property
    def jacobian_truncation(self) -> float:
        """The share q in [0, 1) of latent draws that sampling rejects (0 is off); setting it
        checks the value and records it in :attr:`config`."""
        return self.config.jacobian_truncation

    @jacobian_truncation.setter
    def jacobian_truncation(self, q: float) -> None:
        self.config = replace(self.config, jacobian_truncation=q)

    @property
    def latent_measure(self) -> BaseMeasure:
        """μ, the noise g pushes forward."""
        return self.base

    @property
    def sample_label(self) -> str:
        """What :meth:`sample` draws: g#μ, or g#μ_A under Jacobian truncation."""
        q = self.jacobian_truncation
        return f"samples of g#μ_A (Jacobian truncation {100 * q:g}%)" if q else "samples of g#μ"

    @property
    def _sampling_net(self) -> nn.Module:
        return self.generator_ema if self.generator_ema is not None else self.generator_net

    @property
    def g(self) -> nn.Module:
        """The generator samples come from, z (n, k) → (n, d) in data units: the weights' running
        average when ema > 0, then y = m + s·u when standardised."""
        net = self._sampling_net
        return _InData(net, self) if self.standardize else net

    def stretch(self, z: Tensor, *, chunk: int = 4096) -> Tensor:
        """Return ‖J(z)‖_F (n,), how much g stretches the latent space at each z (n, k).

        J(z) (d, k) is the Jacobian of g's network output (in standardised units when
        ``standardize`` is on, so that no coordinate's scale dominates), computed exactly,
        ``chunk`` rows at a time (:func:`~pushforward.models.gan.truncation.stretch`).
        """
        if z.dim() != 2 or z.shape[1] != self.latent:
            raise ConfigError(f"z must have shape (n, {self.latent}), got {tuple(z.shape)}")
        return stretch(self._sampling_net, z, self.dim, chunk=chunk)

    def truncation_threshold(self, q: float | None = None) -> float:
        """Return τ, the (1 − q)-quantile of ‖J(z)‖_F under μ (q defaults to
        ``jacobian_truncation``; :func:`~pushforward.models.gan.truncation.stretch_threshold`);
        it is kept while the sampling network's weights stay bit for bit the same."""
        q = self.jacobian_truncation if q is None else check_share(q, "jacobian_truncation")
        key = (q, weights_digest(self._sampling_net))
        if self._threshold is None or self._threshold[0] != key:
            tau = stretch_threshold(self._sampling_net, self.base, self.dim, q)
            self._threshold = (key, tau)
        return self._threshold[1]

    def decode(self, z: Tensor) -> Tensor:
        """Return g(z), shape (n, d), for noise z (n, k)."""
        return self.g(z)

    def forward(self, z: Tensor) -> Tensor:
        """Return g(z), shape (n, d)."""
        return self.g(z)

    def decoder_layers(self) -> list[tuple] | None:
        """Return :meth:`decode` as a portable program: the generator g samples come from, its
        output nonlinearity, and y = m + s·u when standardised (None for a conv generator)."""
        tail = [("activation", OUTPUTS[self.config.output])]
        if self.standardize:
            tail.append(("affine", self.data_scale.detach(), self.data_loc.detach()))
        return decoder_program(self._sampling_net[0], *tail)

    def as_pushforward(self, *, jacobian_truncation: float | None = None) -> Pushforward:
        """Return the generative model g#μ as a Pushforward, or g#μ_A under Jacobian truncation
        (``jacobian_truncation`` q > 0; default the model's own)."""
        q = self.jacobian_truncation
        if jacobian_truncation is not None:
            q = check_share(jacobian_truncation, "jacobian_truncation")
        if q == 0:
            return Pushforward(self.g, self.base)

        def accept(z: Tensor) -> Tensor:  # τ of the current weights (measured once per change)
            return (self.stretch(z) <= self.truncation_threshold(q)).cpu()

        draws = math.ceil(100 / (1 - q))  # never reached: about 1/(1 − q) draws give a row
        return Pushforward(self.g, Restricted(self.base, accept, rate=1 - q, max_draws=draws))

    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        jacobian_truncation: float | None = None,
    ) -> Tensor:
        """Return exactly n draws of g#μ (of g#μ_A under Jacobian truncation), shape (n, d)."""
        pushforward = self.as_pushforward(jacobian_truncation=jacobian_truncation)
        return pushforward.sample(n, generator=generator)

    # --- the game ------------------------------------------------------------------------------

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
        """Return {'loss': generator loss, 'gen_loss', 'critic_loss'[, 'gradient_penalty']} on a
        batch x (B, d), each a scalar; nothing is updated (for validation)."""
        real = self._view(self._packs(x, generator), generator, None)
        fake = self._view(self._fakes(real.shape[0], generator, x.device), generator, None)
        terms = self._critic_terms(real, fake, generator)
        gen = self.objective.generator(self._score(fake))
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
        fused = self.fused_step and gan_fused.fusable(self, x, shard, base=GAN)
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

    def _generator_backward(
        self, packs: Tensor, generator: torch.Generator | None, shard: Shard | None, weight: float
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Set g's gradients by autograd (the critic held fixed) against the real packs (P, m·d);
        return (the generator's loss, {'mmd_term'} when ``mmd_weight`` > 0, else {})."""
        self.critic.requires_grad_(False)  # the generator's step needs no critic gradients
        try:
            fake = self._fakes(packs.shape[0], generator, packs.device, shard)
            gen = self.objective.generator(self._score(self._view(fake, generator, shard)))
            total, extra = gen, {}
            if self.config.mmd_weight > 0:  # the kernel term at the modes' scale (gan.mmd)
                rows = (fake.reshape(-1, self.dim), packs.reshape(-1, self.dim))  # the samples
                mmd = generator_mmd(*rows, self.config.mmd_bandwidths)
                total, extra = gen + self.config.mmd_weight * mmd, {"mmd_term": mmd.detach()}
            (total * weight).backward()
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
        average; return the detached terms 'gen_loss', 'gen_grad_norm' and, with
        ``mmd_weight`` > 0, 'mmd_term' (MMD² less the data's own sum, which does not depend on
        g: it can be negative)."""
        optimizers["generator"].zero_grad(set_to_none=True)
        if fused:
            z = self._latent(packs.shape[0], generator, packs.device)
            extra = gan_fused.set_gradients(*gan_fused.generator_gradients(self, z, packs))
            gen = extra.pop("gen_loss")
        else:
            gen, extra = self._generator_backward(packs, generator, shard, weight)
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


def _forget_updates(module: nn.Module, _keys: object) -> None:
    """After ``load_state_dict``: the host's count of generator steps is read again."""
    module._updates = None


SPEC = ModelSpec(
    GAN,
    GANConfig,
    "a generative adversarial network: generator g against a critic D",
    train_defaults=RECOMMENDED["train"],
    kind_train_defaults={"images": RECOMMENDED_IMAGES["train"]},
)

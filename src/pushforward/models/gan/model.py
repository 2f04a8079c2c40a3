"""Generative adversarial networks: the second way to fit the same pushforward g#μ.

A generator g (B, k) → (B, d), the same kind of network as a decoder, pushes noise z ~ μ
(``gaussian`` N(0, I_k) or ``uniform`` on [−1, 1]^k) forward; a critic D (B, m·d) → (B,), the same
kind of network as an encoder with one output, scores data. The two play the game

    min_g max_D  E_x[φ(D(x))] + E_z[ψ(D(g(z)))]

(the objectives on the critic's logits: :mod:`.objectives`; the penalties on its slope:
:mod:`.penalties`), taking ``critic_steps`` steps on D for each step on g.

Each critic step uses the whole batch, re-packed in a fresh random order (PacGAN's packs of m
samples, Lin et al., 2018), against fresh noise; then the generator takes one step against fresh
noise, through autograd or, for MLP players on points, on gradients written out (:mod:`.fused`);
the training side is :class:`~.game.Game`, which :class:`GAN` extends with the networks and
sampling.
All randomness (noise, packing orders, the penalty's ε, the augmentation's draws) comes from the
``generator`` argument. The game is played on standardised data on points (:meth:`GAN.prepare`),
and sampling may reject the latent draws where g stretches most (Jacobian truncation,
:mod:`.truncation`). The settings, their defaults and the benchmarked settings are in
:mod:`.config` (:class:`~pushforward.models.gan.GANConfig` explains each).
"""

from __future__ import annotations

import copy
import math
from dataclasses import replace
from typing import ClassVar

import torch
from torch import Tensor, nn

from pushforward.core import ConfigError, ModelSpec, ResultKey, check_share
from pushforward.data import fit_standardize
from pushforward.measures import BaseMeasure, Pushforward, Restricted
from pushforward.models.gan.config import (
    NOISES,
    OUTPUTS,
    RECOMMENDED,
    RECOMMENDED_IMAGES,
    GANConfig,
)
from pushforward.models.gan.game import Game
from pushforward.models.gan.minibatch_std import MinibatchStdCritic
from pushforward.models.gan.objectives import GAN_LOSSES
from pushforward.models.gan.penalties import PENALTIES
from pushforward.models.gan.truncation import stretch, stretch_threshold, weights_digest
from pushforward.nets import (
    ACTIVATIONS,
    NetConfig,
    build_decoder,
    build_encoder,
    decoder_program,
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


class GAN(Game):
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

    sampling_options = ("jacobian_truncation",)
    history_plot = "gan"

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
        self.base = NOISES[cfg.noise](cfg.latent, cfg.pieces, cfg.piece_std)
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

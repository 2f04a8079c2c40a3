"""Generative adversarial networks: the second way to fit the same pushforward g#μ.

A generator g (B, k) → (B, d) — the same kind of network as a decoder — pushes noise z ~ μ
(``gaussian`` N(0, I_k) or ``uniform`` on [−1, 1]^k) forward; a critic D (B, m·d) → (B,) — the same
kind of network as an encoder with one output — scores data. The two play the game

    min_g max_D  E_x[φ(D(x))] + E_z[ψ(D(g(z)))],

taking ``critic_steps`` steps on D for each step on g. Every objective here is written on the
critic's logits l = D(·) with softplus, so no sigmoid is ever taken and then logged:

* ``minimax`` (Goodfellow et al., 2014): D minimises −log σ(l_real) − log(1 − σ(l_fake)) =
  softplus(−l_real) + softplus(l_fake); g minimises log(1 − σ(l_fake)) = −softplus(l_fake), whose
  gradient in the logit is −σ(l): it vanishes when D confidently rejects the fakes;
* ``nonsaturating``: the same D; g minimises −log σ(l_fake) = softplus(−l_fake), with gradient
  −(1 − σ(l)), strong exactly where the minimax one vanishes;
* ``wgan-gp`` (Gulrajani et al., 2017): D minimises E[D(g(z))] − E[D(x)] + λ E[(‖∇D(x̂)‖₂ − 1)²] at
  random interpolates x̂ = εx + (1 − ε)g(z), ε ~ U[0, 1]; g minimises −E[D(g(z))];
* ``hinge`` (Lim & Ye, 2017; Miyato et al., 2018): D minimises E[relu(1 − l_real)] +
  E[relu(1 + l_fake)]; g minimises −E[l_fake].

The gradient penalty λ (``gp_weight``) is on by default for ``wgan-gp`` only, but may be added to
any objective (Fedus et al., 2018, found it helps the non-saturating GAN too).

Packing (PacGAN, Lin et al., 2018): with ``pack`` = m > 1 the critic judges m samples at once,
concatenated into one row of m·d numbers — all real or all generated. A collapsed generator
makes packs of near-identical points, which a critic tells apart from real packs at once; it is
PacGAN's cure for mode collapse on the ring and grid mixtures (on standardised data the R1
penalty, ``penalty='r1'``, kept every mode where packing did not, so the recommended setting
does not pack).
A batch of B rows makes ⌈B/m⌉ real packs (a random permutation of the batch, the last pack
completed from its start) and as many generated ones. Packing needs an MLP critic.

Each critic step uses the whole batch, re-packed in a fresh random order, against fresh noise;
then the generator takes one step against fresh noise. All randomness (noise, packing orders and
the penalty's ε) comes from the ``generator`` argument.

Standardisation (on by default for real-valued, non-image data): the game is played on
(x − m)/s with the data's per-coordinate mean m and standard deviation s, recorded by
:meth:`GAN.prepare` when training starts; g's network output u becomes the sample m + s·u.

Jacobian truncation (Tanielian et al., 2020, "Learning disconnected manifolds: a no GAN's land"):
a continuous g pushing forward a connected latent space cannot put all its mass on disconnected
modes; somewhere it must pass between them, and it does so where it stretches the latent space
most. ``jacobian_truncation`` = q makes sampling reject the share q of latent draws with the
largest ‖J(z)‖_F (:meth:`GAN.stretch`): samples come from g#μ_A with μ restricted to
A = {z : ‖J(z)‖_F ≤ τ}, τ the (1 − q)-quantile of ‖J(z)‖_F under μ (a
:class:`~pushforward.measures.Restricted` base measure). On the benchmark's seed-0 generators
‖J(z)‖_F tells between-mode from on-mode samples apart with an AUC of 0.95 (ring) and 0.99 (grid),
and q = 3% removes most of them while the modes' width hardly moves (BENCHMARKS.md). It is on by
default for non-image data.

Recommended settings (the ring8/grid25 benchmark, ``benchmarks/gan_modes.py``): see
:data:`RECOMMENDED`. What the benchmark showed on these mixtures: without standardisation the
critic barely learns the grid (samples stay diffuse over the square); with it, packing alone
still drops modes, while the R1 penalty keeps all 25; a cosine decay of the learning rate to 0
then sharpens every mode. Adam's default β₁ = 0.9 carries stale momentum through the game's
rotations and oscillates; DCGAN's β₁ = 0.5 at 5·10⁻⁴ needed 600 epochs, while β = (0, 0.99) at
2·10⁻³ (StyleGAN2's and Mescheder et al.'s β) on narrower networks reaches the same share of
high-quality samples in a minute. A running average of g's weights narrows the learnt modes
further on these mixtures (to 55–70% of the data's width), so it is off on points.
"""

from __future__ import annotations

import copy
import hashlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pushforward.core import (
    ConfigError,
    ModelSpec,
    ResultKey,
    check_int,
    check_positive,
    check_share,
    lookup,
    setting,
)
from pushforward.measures import BaseMeasure, Pushforward, Restricted, StandardNormal, Uniform
from pushforward.nets import (
    ACTIVATIONS,
    AUGMENTS,
    MAX_LATENT,
    MAX_WIDTH,
    NetConfig,
    NetSettings,
    augment,
    build_decoder,
    build_encoder,
    check_sizes,
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
)

__all__ = [
    "GAN",
    "GAN_CONV_WIDTHS",
    "GAN_LOSSES",
    "NOISES",
    "OUTPUTS",
    "PENALTIES",
    "RECOMMENDED",
    "RECOMMENDED_IMAGES",
    "TRUNCATION",
    "TRUNCATION_DRAWS",
    "GANConfig",
    "GANLoss",
    "gradient_penalty",
    "r1_penalty",
]


# --- objectives, on the critic's logits ----------------------------------------------------------


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


@dataclass(frozen=True)
class GANLoss:
    """A GAN objective: what the critic and the generator minimise, from logits (P,) each."""

    critic: Callable[[Tensor, Tensor], Tensor]  # (real logits, fake logits) → scalar
    generator: Callable[[Tensor], Tensor]  # fake logits → scalar
    default_gp_weight: float = 0.0


GAN_LOSSES: dict[str, GANLoss] = {
    "minimax": GANLoss(_minimax_critic, _minimax_generator),
    "nonsaturating": GANLoss(_minimax_critic, _nonsaturating_generator),
    "wgan-gp": GANLoss(_wasserstein_critic, _wasserstein_generator, default_gp_weight=10.0),
    "hinge": GANLoss(_hinge_critic, _wasserstein_generator),
}


MAX_PACK = 64
"""The largest PacGAN pack: the critic's input is pack·d numbers (PacGAN itself uses 2 to 4)."""

MAX_STEPS = 100
"""The most critic steps per generator step."""


def _gaussian(k: int) -> BaseMeasure:
    return StandardNormal(k)


def _uniform(k: int) -> BaseMeasure:
    return Uniform(-1.0, 1.0, k)


NOISES: dict[str, Callable[[int], BaseMeasure]] = {"gaussian": _gaussian, "uniform": _uniform}

# the generator's last nonlinearity: 'sigmoid' keeps images in [0, 1], 'linear' is for ℝ^d data
OUTPUTS: dict[str, str] = {"linear": "identity", "sigmoid": "sigmoid"}

# latent draws (seeded 0) from which the Jacobian-truncation threshold τ is estimated
TRUNCATION_DRAWS = 20_000
# the share of latent draws Jacobian truncation rejects by default on non-image data (the
# benchmark's between-mode mass is 2–6% of the samples)
TRUNCATION = 0.03

# The benchmarked setting (ring8 and grid25, benchmarks/gan_modes.py; see BENCHMARKS.md): the
# non-saturating game on standardised data with Mescheder et al.'s R1 penalty (γ = 0.1) taken on
# every 4th critic step (lazy, weighted 4×), one critic step per generator step, 128-128-128 MLPs,
# Adam with β = (0, 0.99) from 2·10⁻³ down to 0 on a cosine over 320 epochs (under a minute on 2
# cores for 10,000 points), no running average of g's weights (it narrows the modes); sampling
# rejects the 3% of latent draws where g stretches most (Jacobian truncation), which are the
# between-mode samples. The training settings go to TrainConfig, the rest to GAN(...).
RECOMMENDED: dict[str, dict[str, Any]] = {
    "model": {
        "latent": 8,
        "loss": "nonsaturating",
        "penalty": "r1",
        "gp_weight": 0.1,
        "penalty_every": 4,
        "pack": 1,
        "critic_steps": 1,
        "net": {"hidden": [128, 128, 128], "activation": "relu"},
        "ema": 0.0,
        "jacobian_truncation": None,  # auto: TRUNCATION on non-image data
    },
    "train": {
        "epochs": 320,
        "batch_size": 256,
        "lr": 2e-3,
        "betas": [0.0, 0.99],
        "lr_schedule": "cosine",
    },
}


# The image setting (MNIST, benchmarks/dcgan.py and benchmarks/gan_mnist.py; see BENCHMARKS.md,
# "Images"): DCGAN's shape of conv networks at half its widths (generator k → 64·7·7 → 32 → 1
# channels, critic 1 → 32 → 64 channels → 1, 3×3 stride-2 layers: GAN_CONV_WIDTHS), ReLU in g and
# leaky ReLU (0.2) in the critic, the non-saturating game with R1 at the data taken every 4th
# critic step (lazy, weighted 4×), a running average of g's weights, and Adam at batch 128 with
# β = (0, 0.99) from 4·10⁻³ down to 0 on a cosine: of every lever screened (BENCHMARKS.md,
# "Images"), the only one that moved the Fréchet distance beyond the seeds' spread; DCGAN's
# β₁ = 0.5 at a constant 5·10⁻⁴, the previous setting, reached 214 after 1,200 CPU seconds.
GAN_CONV_WIDTHS = (32, 64)
"""The image GAN's channel counts: half DCGAN's 64,128 train an epoch 2.6× as fast and reach a
lower Fréchet distance in the same CPU time on MNIST (390 against 433 after 300 CPU seconds, 218
against 282 after 1,200; BENCHMARKS.md, "Images")."""
RECOMMENDED_IMAGES: dict[str, dict[str, Any]] = {
    "model": {
        "latent": 64,
        "loss": "nonsaturating",
        "penalty": "r1",
        "gp_weight": 1.0,
        "penalty_every": 4,
        "critic_activation": "leaky_relu_0.2",
        "ema": 0.999,
        "augment": "none",
    },
    "train": {
        "epochs": 40,
        "batch_size": 128,
        "lr": 4e-3,
        "betas": [0.0, 0.99],
        "lr_schedule": "cosine",
    },
}


def _input_gradient(critic: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """Return ∇ₓ D(x) (P, c) for each row of x, differentiable in the critic's parameters when
    gradients are enabled; under ``torch.no_grad`` it is computed without a graph."""
    train = torch.is_grad_enabled()
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(critic(x).sum(), x, create_graph=train)
    return grad


def gradient_penalty(
    critic: Callable[[Tensor], Tensor],
    real: Tensor,
    fake: Tensor,
    *,
    generator: torch.Generator | None = None,
    shard: Shard | None = None,
) -> Tensor:
    """Return E[(‖∇D(x̂)‖₂ − 1)²], a scalar, at x̂ = εx + (1 − ε)x̃ between real x and fake x̃ (P, c).

    Gulrajani et al.'s penalty. ε ~ U[0, 1] is one draw per row from ``generator``
    (``torch.rand(P, 1)``; under torchrun this process's rows of the whole batch's draws).
    """

    def uniform(m: int) -> Tensor:
        return torch.rand(m, 1, generator=generator, device=real.device, dtype=real.dtype)

    eps = draw_rows(uniform, real.shape[0], shard)
    x_hat = eps * real.detach() + (1 - eps) * fake.detach()  # (P, c)
    return (_input_gradient(critic, x_hat).norm(dim=1) - 1).pow(2).mean()


def r1_penalty(
    critic: Callable[[Tensor], Tensor],
    real: Tensor,
    fake: Tensor,
    *,
    generator: torch.Generator | None = None,
    shard: Shard | None = None,
) -> Tensor:
    """Return E[‖∇D(x)‖₂²] / 2, a scalar, at the real rows x (P, c): Mescheder et al.'s R1.

    Zero-centred on the data, it stops the critic from growing slopes there that push the
    generator past the target and back; ``fake``, ``generator`` and ``shard`` are unused.
    """
    return 0.5 * _input_gradient(critic, real).pow(2).sum(dim=1).mean()


PENALTIES: dict[str, Callable[..., Tensor]] = {"gp": gradient_penalty, "r1": r1_penalty}


def _grad_norm(module: nn.Module, clip: float) -> Tensor:
    """Return the global 2-norm of a module's gradients, clipping them to ``clip`` if > 0."""
    params = [p for p in module.parameters() if p.grad is not None]
    if not params:
        return torch.zeros(())
    if clip > 0:
        return nn.utils.clip_grad_norm_(params, clip)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))


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
        dim: data dimension d.
        latent: noise dimension k ≥ 1.
        noise: the base measure μ, ``gaussian`` (N(0, I_k)) or ``uniform`` (on [−1, 1]^k).
        loss: the objective by name (see the module docstring): ``nonsaturating``, ``minimax``,
            ``wgan-gp`` or ``hinge``.
        net: the generator's :class:`~pushforward.nets.NetConfig` (it is built as a decoder, so
            its hidden widths run in reverse); default one layer of 400.
        critic_net: the critic's NetConfig (built as an encoder); default the same as ``net``.
        critic_steps: critic updates per generator update, ≥ 1.
        gp_weight: λ of the gradient penalty; default 10 for ``wgan-gp``, 0 (off) otherwise.
        penalty_every: K ≥ 1: the penalty is taken on every K-th critic step only, weighted K×
            (lazy regularisation, Karras et al. 2020's StyleGAN2), so that its expected weight
            per step stays λ while the critic's double backward runs K times less often.
        pack: m, the number of samples the critic judges at once (PacGAN); 1 is no packing.
        critic_lr: the critic's learning rate; default the training config's ``lr``.
        output: the generator's last nonlinearity, ``linear`` or ``sigmoid`` (values in [0, 1]);
            default ``sigmoid`` for images (``image_shape`` given), else ``linear``.
        image_shape: (h, w) of image data, needed by convolutional nets.
        standardize: play the game in standardised units: before training, :meth:`prepare`
            records the data's per-coordinate mean m and standard deviation s (d,); the critic
            judges (x − m)/s and g's network output u gives the sample m + s·u. Default on for
            ``linear`` output on non-image data (off for images). Without it a critic on data
            spread over ±4 (the grid) learns slowly and the generator's samples stay diffuse.
        jacobian_truncation: q in [0, 1), the share of latent draws that sampling rejects where
            g stretches the latent space most (see :meth:`stretch`); 0 is off. Default
            :data:`TRUNCATION` (3%) on non-image data, off for images (benchmarked on the
            mixtures only, and it costs k forward-mode passes a sample). Training is not
            affected. Samples then come from g#μ_A, μ restricted to A = {z : ‖J(z)‖_F ≤ τ} with
            τ the (1 − q)-quantile of ‖J(z)‖_F under μ (Tanielian et al., 2020): a continuous g
            from a connected latent space must pass between disconnected modes somewhere, and
            it does so where it stretches most, so this drops the between-mode samples first.
        augment: a policy of :data:`~pushforward.augment.AUGMENTS` (square images, pack 1): the
            critic judges real and generated images alike through the same random, differentiable
            transformation T (DiffAugment), in both players' steps, and R1 is taken at the
            transformed data; ``none`` (the default) shows it the images as they are.
    """

    evaluate_keys: ClassVar[dict[str, ResultKey]] = {
        "jacobian_truncation": ResultKey(
            "Jacobian truncation", ".0%", "GAN: share of latent draws rejected when sampling"
        ),
    }
    """The keys of :meth:`evaluate` that only this model gives."""

    sampling_options = ("jacobian_truncation",)
    history_plot = "gan"
    optimization = Optimization.OWN_STEP
    syncs_gradients = True

    def __init__(
        self,
        dim: int,
        latent: int = 2,
        *,
        noise: str = "gaussian",
        loss: str = "nonsaturating",
        net: NetConfig | dict[str, Any] | None = None,
        critic_net: NetConfig | dict[str, Any] | None = None,
        critic_steps: int = 1,
        gp_weight: float | None = None,
        penalty: str = "gp",
        penalty_every: int = 1,
        pack: int = 1,
        critic_lr: float | None = None,
        ema: float = 0.0,
        output: str | None = None,
        image_shape: tuple[int, int] | list[int] | None = None,
        standardize: bool | None = None,
        jacobian_truncation: float | None = None,
        augment: str = "none",
    ):
        super().__init__()
        check_sizes(dim, latent)
        lookup(AUGMENTS, augment, what="augmentation")
        self.objective = lookup(GAN_LOSSES, loss, what="GAN loss")
        base = lookup(NOISES, noise, what="noise")
        self.image_shape = tuple(image_shape) if image_shape is not None else None
        output = output or ("sigmoid" if self.image_shape is not None else "linear")
        out_act = ACTIVATIONS[lookup(OUTPUTS, output, what="generator output")]
        critic_steps = check_int(critic_steps, "critic_steps", minimum=1, maximum=MAX_STEPS)
        pack = check_int(pack, "pack", minimum=1, maximum=MAX_PACK)
        penalty_every = check_int(penalty_every, "penalty_every", minimum=1, maximum=MAX_STEPS)
        self.penalty_fn = lookup(PENALTIES, penalty, what="gradient penalty")
        if gp_weight is None:
            gp_weight = self.objective.default_gp_weight
        gp_weight = check_positive(gp_weight, "gp_weight", allow_zero=True)
        ema = check_share(ema, "ema")
        if critic_lr is not None:
            critic_lr = check_positive(critic_lr, "critic_lr")
        if jacobian_truncation is None:
            jacobian_truncation = TRUNCATION if self.image_shape is None else 0.0
        self.jacobian_truncation = jacobian_truncation  # checked by the property's setter
        self._threshold: tuple[tuple[float, bytes], float] | None = None  # ((q, weights), τ)
        self.net = net if isinstance(net, NetConfig) else NetConfig(**(net or {}))
        if critic_net is None:
            self.critic_config = replace(self.net, hidden=list(self.net.hidden or []))
        elif isinstance(critic_net, NetConfig):
            self.critic_config = critic_net
        else:
            self.critic_config = NetConfig(**critic_net)
        if pack > 1 and self.critic_config.kind != "mlp":
            raise ConfigError(
                f"pack = {pack} needs an MLP critic (packing concatenates samples into one row); "
                f"the critic is {self.critic_config.kind!r}: use pack = 1 or an MLP critic"
            )
        self.dim, self.latent, self.noise, self.loss_name = dim, latent, noise, loss
        self.critic_steps, self.gp_weight, self.pack = critic_steps, gp_weight, pack
        self.penalty, self.penalty_every = penalty, penalty_every
        self.critic_lr, self.ema, self.output = critic_lr, float(ema), output
        square = self.image_shape is not None and len(set(self.image_shape)) == 1
        if augment != "none" and (pack != 1 or not square or dim != math.prod(self.image_shape)):
            raise ConfigError(
                f"augment = {augment!r} transforms square images one at a time: it needs square "
                f"image data and pack = 1 (got image shape {self.image_shape}, pack = {pack}); "
                "use augment = none"
            )
        self.augment = augment
        if standardize is None:
            standardize = output == "linear" and self.image_shape is None
        self.standardize = bool(standardize)
        # the data's location m and scale s (d,), set by prepare(); identity until then
        self.register_buffer("data_loc", torch.zeros(dim))
        self.register_buffer("data_scale", torch.ones(dim))
        self.base = base(latent)
        self.generator_net = nn.Sequential(
            build_decoder(self.net, latent, dim, self.image_shape), out_act()
        )
        self.critic = build_encoder(self.critic_config, dim * pack, 1, self.image_shape)
        # the running average of g's weights, which sampling uses when ema > 0
        self.generator_ema = (
            copy.deepcopy(self.generator_net).requires_grad_(False) if self.ema > 0 else None
        )
        # generator steps taken, for the average's warm-up (a buffer: checkpoints carry it)
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))

    def get_config(self) -> dict[str, Any]:
        return {
            "dim": self.dim,
            "latent": self.latent,
            "noise": self.noise,
            "loss": self.loss_name,
            "net": self.net.to_dict(),
            "critic_net": self.critic_config.to_dict(),
            "critic_steps": self.critic_steps,
            "gp_weight": self.gp_weight,
            "penalty": self.penalty,
            "penalty_every": self.penalty_every,
            "pack": self.pack,
            "critic_lr": self.critic_lr,
            "ema": self.ema,
            "output": self.output,
            "image_shape": list(self.image_shape) if self.image_shape else None,
            "standardize": self.standardize,
            "jacobian_truncation": self.jacobian_truncation,
            "augment": self.augment,
        }

    def prepare(self, x: Tensor) -> None:
        """Record the training data's per-coordinate mean and standard deviation (x is (n, d))
        when ``standardize`` is on; a coordinate that does not vary keeps scale 1."""
        if not self.standardize:
            return
        x = x.detach().to(self.data_loc.dtype)
        scale = x.std(0) if x.shape[0] > 1 else torch.ones_like(self.data_loc)
        scale = torch.where(scale > 1e-8 * scale.max().clamp_min(1e-30), scale, 1.0)
        with torch.no_grad():
            self.data_loc.copy_(x.mean(0))
            self.data_scale.copy_(scale)

    # --- the pushforward -----------------------------------------------------------------------

    @property
    def jacobian_truncation(self) -> float:
        """The share q in [0, 1) of latent draws that sampling rejects (0 is off); setting it
        checks the value."""
        return self._jacobian_truncation

    @jacobian_truncation.setter
    def jacobian_truncation(self, q: float) -> None:
        self._jacobian_truncation = check_share(q, "jacobian_truncation")

    @property
    def latent_measure(self) -> BaseMeasure:
        """μ, the noise g pushes forward."""
        return self.base

    @property
    def sample_label(self) -> str:
        """What :meth:`sample` draws: g#μ, or g#μ_A under Jacobian truncation."""
        q = self.jacobian_truncation
        return f"samples of g#μ_A (Jacobian truncation {100 * q:g}%)" if q else "samples of g#μ"

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> GAN:
        """Rebuild from :meth:`get_config`; runs from before Jacobian truncation load without it."""
        if "jacobian_truncation" not in config:
            config = {**config, "jacobian_truncation": 0.0}
        return super().from_config(config)

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
        ``chunk`` rows at a time: one reverse-mode pass per output coordinate when d ≤ k, else
        one forward-mode pass per latent coordinate (the rows of a batch are independent).
        """
        net = self._sampling_net
        weight = next(net.parameters())
        device = weight.device
        if z.dim() != 2 or z.shape[1] != self.latent:
            raise ConfigError(f"z must have shape (n, {self.latent}), got {tuple(z.shape)}")
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise ConfigError(f"chunk must be an integer ≥ 1, got {chunk!r}")
        z = z.to(weight)
        out = []
        for part in z.split(chunk):
            sq = torch.zeros(part.shape[0], device=device, dtype=weight.dtype)  # (c,)
            if self.dim <= self.latent:
                u, pull = torch.func.vjp(net, part)  # u (c, …) with d numbers a row
                flat = torch.zeros(u.shape[0], self.dim, device=device, dtype=u.dtype)
                for i in range(self.dim):
                    flat.zero_()
                    flat[:, i] = 1.0
                    (row,) = pull(flat.reshape(u.shape))  # ∂u_i/∂z, (c, k)
                    sq += row.detach().square().sum(1)
            else:
                e = torch.zeros_like(part)
                for j in range(self.latent):
                    e.zero_()
                    e[:, j] = 1.0
                    _, column = torch.func.jvp(net, (part,), (e,))  # ∂u/∂z_j, (c, …)
                    sq += column.detach().flatten(1).square().sum(1)
            out.append(sq.sqrt())
        return torch.cat(out) if out else z.new_zeros(0)

    def truncation_threshold(self, q: float | None = None) -> float:
        """Return τ, the (1 − q)-quantile of ‖J(z)‖_F under μ (q defaults to
        ``jacobian_truncation``), estimated from :data:`TRUNCATION_DRAWS` latent draws with a
        fixed seed, so the same weights always give the same τ; it is kept while the sampling
        network's weights stay bit for bit the same (a digest of them is compared)."""
        q = self.jacobian_truncation if q is None else check_share(q, "jacobian_truncation")
        digest = hashlib.blake2b(digest_size=16)  # fused optimisers do not bump _version
        for p in self._sampling_net.parameters():
            digest.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        key = (q, digest.digest())
        if self._threshold is None or self._threshold[0] != key:
            z = self.base.sample(TRUNCATION_DRAWS, generator=torch.Generator().manual_seed(0))
            tau = float(torch.quantile(self.stretch(z).double(), 1.0 - q))
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
        tail = [("activation", OUTPUTS[self.output])]
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

    def _noise(self, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
        """Return n draws z ~ μ (n, k) on ``device``."""
        return self.base.sample(n, generator=generator, device=device)

    def _packs(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        """Return x (B, d) as ⌈B/m⌉ packs (P, m·d) in a random order, the last one completed, in
        the critic's units (standardised when ``standardize`` is on)."""
        if self.standardize:
            x = (x - self.data_loc) / self.data_scale
        if self.pack == 1:
            return x
        b = x.shape[0]
        p = -(-b // self.pack)
        order = torch.randperm(b, generator=generator, device=x.device)
        order = order.repeat(-(-p * self.pack // b))[: p * self.pack]
        return x[order].reshape(p, self.pack * self.dim)

    def _fakes(
        self, n_packs: int, generator: torch.Generator | None, device, shard: Shard | None = None
    ) -> Tensor:
        """Return n_packs packs of generated samples (P, m·d) in the critic's units (under
        torchrun, from this process's rows of the whole batch's noise)."""
        z = draw_rows(lambda m: self._noise(m, generator, device), n_packs * self.pack, shard)
        y = self.generator_net(z)
        return y.reshape(n_packs, self.pack * self.dim)

    def _score(self, packs: Tensor) -> Tensor:
        return self.critic(packs).squeeze(1)  # (P,) logits

    def _view(
        self, packs: Tensor, generator: torch.Generator | None, shard: Shard | None
    ) -> Tensor:
        """Return the packs (P, m·d) as the critic sees them: through :attr:`augment`'s random
        transformation T (:mod:`pushforward.augment`), or unchanged when it is ``none``. Under
        torchrun the draws are this process's rows of the whole batch's draws."""
        if self.augment == "none":
            return packs
        device = generator.device if generator is not None else None

        def draw(p: int) -> Tensor:
            def uniform(m: int) -> Tensor:
                return torch.rand(m, 2, generator=generator, device=device)

            return draw_rows(uniform, p, shard)

        return augment(self.augment, packs, draw)

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
        if self.gp_weight > 0:
            if lazy is None:
                return {"critic_loss": loss, "gradient_penalty": torch.zeros_like(loss.detach())}
            gp = self.penalty_fn(self._score, real, fake, generator=generator, shard=shard)
            terms = {"critic_loss": loss + lazy * self.gp_weight * gp, "gradient_penalty": gp}
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
        critic_cfg = cfg if self.critic_lr is None else replace(cfg, lr=self.critic_lr)
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
        if shard is not None and self.pack > 1:
            raise ConfigError(
                f"pack = {self.pack} cannot train in several processes (a pack would mix rows of "
                "different processes); use pack = 1 or one process"
            )
        weight = shard.weight if shard is not None else 1.0
        sums: dict[str, Tensor] = {}
        first = int(self.ema_updates) * self.critic_steps  # this step's first critic step
        for i in range(self.critic_steps):
            real = self._view(self._packs(x, generator), generator, shard)
            with torch.no_grad():
                fake = self._fakes(real.shape[0], generator, x.device, shard)
            fake = self._view(fake, generator, shard)
            # lazy regularisation: the penalty on every K-th critic step (counted from the
            # generator steps in the checkpoint, so that a resumed run keeps the rhythm)
            k = self.penalty_every
            due = (first + i) % k == 0
            terms = self._critic_terms(real, fake, generator, shard, lazy=float(k) if due else None)
            optimizers["critic"].zero_grad(set_to_none=True)
            (terms["critic_loss"] * weight).backward()
            average_gradients_(self.critic.parameters())
            terms["critic_grad_norm"] = _grad_norm(self.critic, cfg.grad_clip)
            check_finite(terms)  # before the step, so that the weights stay finite
            optimizers["critic"].step()
            for k, v in terms.items():
                sums[k] = sums.get(k, 0) + v.detach() / self.critic_steps
        self.critic.requires_grad_(False)  # the generator's step needs no critic gradients
        try:
            fake = self._fakes(real.shape[0], generator, x.device, shard)
            gen = self.objective.generator(self._score(self._view(fake, generator, shard)))
            optimizers["generator"].zero_grad(set_to_none=True)
            (gen * weight).backward()
        finally:
            self.critic.requires_grad_(True)
        average_gradients_(self.generator_net.parameters())
        gen_terms = {
            "gen_loss": gen.detach(),
            "gen_grad_norm": _grad_norm(self.generator_net, cfg.grad_clip),
        }
        check_finite(gen_terms)
        optimizers["generator"].step()
        if self.generator_ema is not None:
            # decay min(ema, (1 + t)/(10 + t)) after t steps: early on the average follows g
            # closely instead of dragging the random initial weights through a short run
            t = float(self.ema_updates)
            decay = min(self.ema, (1 + t) / (10 + t))
            with torch.no_grad():
                torch._foreach_lerp_(
                    list(self.generator_ema.parameters()),
                    list(self.generator_net.parameters()),
                    1 - decay,
                )
        self.ema_updates += 1
        return {"loss": gen_terms["gen_loss"], **sums, **gen_terms}


@dataclass
class GANConfig(NetSettings):
    """Settings of ``pushforward fit gan``. Left unset, the settings that depend on the kind of
    data take :data:`RECOMMENDED` on points (benchmarked on ring8 and grid25) and
    :data:`RECOMMENDED_IMAGES` on images (benchmarked on MNIST); see BENCHMARKS.md."""

    mlp_widths = tuple(RECOMMENDED["model"]["net"]["hidden"])
    conv_widths = GAN_CONV_WIDTHS
    image_net = "conv"

    latent: int | None = setting(
        None, "noise dimension k (default 8 on points, 64 on images)", minimum=1,
        maximum=MAX_LATENT,
    )  # fmt: skip
    hidden: list[int] | None = setting(
        None, "generator widths, e.g. 512,256 (default "
        + ",".join(map(str, RECOMMENDED["model"]["net"]["hidden"]))
        + "; conv: channel counts, default " + ",".join(map(str, GAN_CONV_WIDTHS)) + ")",
        minimum=1, maximum=MAX_WIDTH,
    )  # fmt: skip
    noise: str = setting(
        "gaussian", "the base measure μ: gaussian (N(0, I)) or uniform ([−1, 1]^k)",
        choices=NOISES, what="noise",
    )  # fmt: skip
    loss: str = setting(
        "nonsaturating", "the game: nonsaturating, minimax, wgan-gp or hinge",
        choices=GAN_LOSSES, what="GAN loss",
    )  # fmt: skip
    critic_hidden: list[int] | None = setting(
        None, "critic widths (default: --hidden)", minimum=1, maximum=MAX_WIDTH
    )
    critic_activation: str | None = setting(
        None, "the critic's activation (default: --activation on points, leaky_relu_0.2 on "
        "images, as DCGAN's)", choices=ACTIVATIONS, what="activation",
    )  # fmt: skip
    critic_steps: int = setting(
        1, "critic updates per generator update", minimum=1, maximum=MAX_STEPS
    )
    critic_lr: float | None = setting(None, "critic learning rate (default: --lr)", above=0)
    pack: int = setting(1, "PacGAN: samples the critic judges at once", minimum=1, maximum=MAX_PACK)
    gp_weight: float | None = setting(
        None, "weight of the gradient penalty (0 = off; default 0.1 on points, "
        f"{RECOMMENDED_IMAGES['model']['gp_weight']:g} on images)", minimum=0,
    )  # fmt: skip
    penalty: str = setting(
        "r1", "gp (Gulrajani, at interpolates) or r1 (at the data)", choices=PENALTIES,
        what="gradient penalty",
    )  # fmt: skip
    penalty_every: int | None = setting(
        None, "take the penalty on every K-th critic step, weighted K× (lazy, as StyleGAN2; "
        f"default {RECOMMENDED['model']['penalty_every']} on points and images)",
        minimum=1, maximum=MAX_STEPS,
    )  # fmt: skip
    ema: float | None = setting(
        None, "EMA decay of the generator's weights (0 = off; default "
        f"{RECOMMENDED['model']['ema']:g} on points, {RECOMMENDED_IMAGES['model']['ema']:g} "
        "on images)", minimum=0, below=1,
    )  # fmt: skip
    jacobian_truncation: float | None = setting(
        None, "reject the share Q of latent draws where g stretches most when sampling "
        "(0 = off; default 0.03 on points, 0 on images)",
        minimum=0, below=1, sampling=True,
    )  # fmt: skip
    augment: str | None = setting(
        None, "the critic's differentiable augmentation of real and generated images alike: "
        "none, translation, cutout or translation,cutout (DiffAugment; default "
        f"{RECOMMENDED_IMAGES['model']['augment']} on images, none on points)",
        choices=AUGMENTS, what="augmentation",
    )  # fmt: skip

    @classmethod
    def stored_defaults(cls) -> dict[str, Any]:
        """Runs stored before augmentation existed showed the critic the images as they are;
        runs stored before lazy regularisation existed took the penalty on every critic step
        (today's default on both kinds of data is every 4th, so they would resume otherwise)."""
        return {"augment": "none", "penalty_every": 1}

    def check(self) -> None:
        if self.pack > 1 and self.net not in (None, "mlp"):
            raise ConfigError(
                f"pack = {self.pack} needs an MLP critic (packing concatenates samples into one "
                "row); use pack = 1 or --net mlp"
            )

    def kind_defaults(self, kind: str) -> dict[str, Any]:
        """Return the network (:meth:`NetSettings.kind_defaults`: a conv pair of
        :data:`GAN_CONV_WIDTHS` on images), the latent size, the critic's
        activation, the penalty's weight and Jacobian truncation for data of ``kind``."""
        rec = RECOMMENDED_IMAGES["model"] if kind == "images" else RECOMMENDED["model"]
        truncation = 0.0 if kind == "images" else TRUNCATION
        nets = super().kind_defaults(kind)
        # DCGAN's leaky critic goes with the conv pair; an MLP critic keeps --activation (as a
        # run stored before the setting existed was built)
        critic = rec.get("critic_activation") if nets["net"] == "conv" else None
        return {
            **nets,
            "latent": rec["latent"],
            "critic_activation": critic or self.activation,
            "gp_weight": rec["gp_weight"],
            "penalty_every": rec.get("penalty_every", 1),
            "ema": rec["ema"],
            "jacobian_truncation": truncation,
            "augment": rec.get("augment", "none"),
        }

    def build(self, ds: Any) -> GAN:
        cfg = self.resolve(ds.kind)
        net = cfg.net_config()
        hidden = cfg.critic_hidden if cfg.critic_hidden is not None else cfg.hidden
        activation = cfg.critic_activation or cfg.activation
        return GAN(
            ds.dim, cfg.latent, noise=cfg.noise, loss=cfg.loss, net=net,
            critic_net={**net, "hidden": hidden, "activation": activation},
            critic_steps=cfg.critic_steps, gp_weight=cfg.gp_weight, penalty=cfg.penalty,
            penalty_every=cfg.penalty_every,
            pack=cfg.pack, critic_lr=cfg.critic_lr, ema=cfg.ema, image_shape=ds.image_shape,
            jacobian_truncation=cfg.jacobian_truncation, augment=cfg.augment,
        )  # fmt: skip


SPEC = ModelSpec(
    GAN,
    GANConfig,
    "a generative adversarial network: generator g against a critic D",
    train_defaults=RECOMMENDED["train"],
    kind_train_defaults={"images": RECOMMENDED_IMAGES["train"]},
)

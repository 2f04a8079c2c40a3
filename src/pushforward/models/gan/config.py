"""The GAN's settings (:class:`GANConfig`) and the settings it was benchmarked with.

One dataclass holds every setting of a :class:`~pushforward.models.gan.GAN`: the ones a user
chooses (each also a flag of ``pushforward fit gan``), and the ones filled from the data when the
model is built (``derived``: the data's dimension and image shape, the generator's output and
whether the game is played on standardised data). Settings left unset take the defaults of the
kind of data (:meth:`GANConfig.kind_defaults`): :data:`RECOMMENDED` on points and
:data:`RECOMMENDED_IMAGES` on images.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from pushforward.core import ConfigError, lookup, setting
from pushforward.measures import BaseMeasure, GaussianPieces, StandardNormal, Uniform
from pushforward.models.gan.mmd import MMD_BANDWIDTHS
from pushforward.models.gan.objectives import GAN_LOSSES
from pushforward.models.gan.penalties import PENALTIES
from pushforward.models.gan.truncation import TRUNCATION
from pushforward.nets import ACTIVATIONS, AUGMENTS, MAX_LATENT, MAX_WIDTH, NetConfig, NetSettings

if TYPE_CHECKING:
    from pushforward.models.gan.model import GAN

__all__ = [
    "GAN_CONV_WIDTHS",
    "MAX_PACK",
    "MAX_STEPS",
    "NOISES",
    "OUTPUTS",
    "PIECES",
    "PIECE_STD",
    "RECOMMENDED",
    "RECOMMENDED_IMAGES",
    "STORED_ARGUMENTS",
    "GANConfig",
]

MAX_PACK = 64
"""The largest PacGAN pack: the critic's input is pack·d numbers (PacGAN itself uses 2 to 4)."""

PIECES = 200
"""The default number K of pieces of ``noise = pieces`` (BENCHMARKS.md, "GAN mode coverage")."""

PIECE_STD = 0.15
"""The default standard deviation σ of each piece of ``noise = pieces``: the nearest of 200
centres in ℝ^8 lies a median 11σ away, so the pieces barely touch; 0.15 rather than 0.1 merges
the pieces g sends to one mode into one smooth mode (BENCHMARKS.md, "GAN mode coverage")."""

MAX_PIECES = 100_000
"""The most pieces of ``noise = pieces``."""

MAX_STEPS = 100
"""The most critic steps per generator step (and the longest lazy-penalty interval)."""


def _gaussian(k: int, pieces: int, std: float) -> BaseMeasure:
    return StandardNormal(k)


def _uniform(k: int, pieces: int, std: float) -> BaseMeasure:
    return Uniform(-1.0, 1.0, k)


def _pieces(k: int, pieces: int, std: float) -> BaseMeasure:
    return GaussianPieces(k, pieces, std)


NOISES: dict[str, Callable[[int, int, float], BaseMeasure]] = {
    "gaussian": _gaussian,
    "uniform": _uniform,
    "pieces": _pieces,
}
"""The base measures μ by name, built from (k, ``pieces``, ``piece_std``): N(0, I_k), the
uniform measure on [−1, 1]^k, or K small Gaussian pieces N(c_j, σ² I_k) at fixed centres
(:class:`~pushforward.measures.GaussianPieces`; the other two ignore K and σ)."""

OUTPUTS: dict[str, str] = {"linear": "identity", "sigmoid": "sigmoid"}
"""The generator's last nonlinearity by name (a key of :data:`~pushforward.nets.ACTIVATIONS`):
``sigmoid`` keeps images in [0, 1], ``linear`` is for ℝ^d data."""

RECOMMENDED: dict[str, dict[str, Any]] = {
    "model": {
        "latent": 8,
        "noise": "pieces",
        "loss": "nonsaturating",
        "penalty": "r1",
        "gp_weight": 0.01,
        "penalty_every": 4,
        "pack": 1,
        "critic_steps": 1,
        "hidden": [128, 128, 128],
        "critic_hidden": [64, 64, 64],
        "activation": "relu",
        "ema": 0.0,
        "jacobian_truncation": None,  # by the kind of data: TRUNCATION on points
        "mmd_weight": 0.3,
        "mmd_every": 2,
    },
    "train": {
        "epochs": 320,
        "batch_size": 256,
        "lr": 2e-3,
        "betas": [0.0, 0.99],
        "lr_schedule": "cosine",
    },
}
"""The setting benchmarked on points (ring8 and grid25, ``benchmarks/fidelity.py``;
BENCHMARKS.md, "GAN mode coverage"): ``model`` holds :class:`GANConfig` fields, ``train``
:class:`~pushforward.train.TrainConfig` fields. The noise μ is :data:`PIECES` small Gaussian
pieces of σ = :data:`PIECE_STD` in ℝ^8 (g can send them to different modes with no path of
samples between them); the non-saturating game on standardised data with Mescheder et al.'s R1
penalty (γ = 0.01) taken on every 4th critic step (weighted 4×), one critic step per generator
step, a 128-128-128 generator against a 64-64-64 critic; the kernel term (MMD², W = 0.3) on
every 2nd generator step (weighted 2×), which widens the modes to the data's; Adam with β = (0,
0.99) from 2·10⁻³ down to 0 on a cosine over 320 epochs, no running average of g's weights, and
sampling with Jacobian truncation. It trains in the time the previous setting (N(0, I_8), γ =
0.1, no kernel term, a critic as wide as g) took, with modes 0.93–0.95 of the data's width
against 0.71–0.74 and a k-NN KL 7–10× lower (grid25's modes weighted somewhat less evenly)."""

GAN_CONV_WIDTHS = (32, 64)
"""The image GAN's channel counts: half DCGAN's (64, 128) (BENCHMARKS.md, "Images")."""

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
"""The setting benchmarked on images (MNIST, ``benchmarks/dcgan.py`` and
``benchmarks/gan_mnist.py``; BENCHMARKS.md, "Images"), as :data:`RECOMMENDED`: DCGAN's shape of
conv networks at :data:`GAN_CONV_WIDTHS` (generator k → 64·7·7 → 32 → 1 channels, critic
1 → 32 → 64 channels → 1, 3×3 stride-2 layers), ReLU in g and leaky ReLU (0.2) in the critic, the
non-saturating game with R1 at the data on every 4th critic step (weighted 4×), a running average
of g's weights, and Adam at batch 128 with β = (0, 0.99) from 4·10⁻³ down to 0 on a cosine."""

STORED_ARGUMENTS: dict[str, Any] = {
    "latent": 2,
    "noise": "gaussian",
    "loss": "nonsaturating",
    "net": None,
    "critic_net": None,
    "critic_steps": 1,
    "gp_weight": None,
    "penalty": "gp",
    "penalty_every": 1,
    "pack": 1,
    "critic_lr": None,
    "ema": 0.0,
    "output": None,
    "image_shape": None,
    "standardize": None,
    "jacobian_truncation": 0.0,
    "augment": "none",
}
"""The model's arguments besides ``dim`` as the releases of run formats 1 and 2 stored them (the
``model.config`` of a run's config.json), each with the value a stored config that lacks it was
built with: ``net`` and ``critic_net`` are :class:`~pushforward.nets.NetConfig` dicts (default
one layer of 400; the critic's, the generator's), ``gp_weight`` None is the objective's own
(:attr:`GANLoss.default_gp_weight`), ``output`` and ``standardize`` None follow the kind of data
(as in :meth:`GANConfig.from_stored`, a run stored before Jacobian truncation samples without
it)."""


@dataclass
class GANConfig(NetSettings):
    """Settings of a GAN, from ``pushforward fit gan``'s flags or ``GAN(GANConfig(dim=2, ...))``.

    Settings left None take the defaults of the kind of data (:meth:`kind_defaults`). Beyond
    each field's help:

    * ``hidden``: the generator is built as a decoder, so its MLP widths run in reverse (the
      critic, built as an encoder, runs them forward); for ``net`` conv they are channel counts.
    * ``pack`` = m (PacGAN, Lin et al., 2018): the critic judges m samples at once, concatenated
      into one row of m·d numbers, all real or all generated; it needs an MLP critic.
    * ``penalty_every`` = K: the penalty is taken on every K-th critic step only, weighted K×
      (lazy regularisation, Karras et al., 2020, StyleGAN2), so that its expected weight per
      step stays λ = ``gp_weight`` while the critic's double backward runs K times less often.
    * ``minibatch_std``: the critic's last layer also sees one number per batch, the mean over
      its last hidden features of their standard deviation over the batch (Karras et al., 2018,
      ProGAN; :mod:`~pushforward.models.gan.minibatch_std`), so that batches of generated
      samples spread less than the data's can be told apart; it needs an MLP critic.
    * ``jacobian_truncation`` = q in [0, 1): sampling rejects the share q of latent draws where g
      stretches the latent space most (:mod:`~pushforward.models.gan.truncation`); 0 is off.
    * ``augment``: a policy of :data:`~pushforward.nets.AUGMENTS` (square images, pack 1): the
      critic judges real and generated images alike through the same random, differentiable
      transformation (DiffAugment, Zhao et al., 2020), and R1 is taken at the transformed data.
    * ``dim``, ``image_shape`` (derived): the data's dimension d and, for images, (h, w).
    * ``output`` (derived): the generator's last nonlinearity (:data:`OUTPUTS`): ``sigmoid`` on
      images, else ``linear``.
    * ``standardize`` (derived): play the game in standardised units: the critic judges
      (x − m)/s, with the data's per-coordinate mean m and standard deviation s (d,) recorded
      when training starts, and g's network output u gives the sample m + s·u. On by default for
      ``linear`` output on points.
    """

    latent: int | None = setting(
        None, "noise dimension k (default 8 on points, 64 on images)", minimum=1,
        maximum=MAX_LATENT,
    )  # fmt: skip
    hidden: list[int] | None = setting(
        None, "generator widths, e.g. 512,256 (default "
        + ",".join(map(str, RECOMMENDED["model"]["hidden"]))
        + "; conv: channel counts, default " + ",".join(map(str, GAN_CONV_WIDTHS)) + ")",
        minimum=1, maximum=MAX_WIDTH,
    )  # fmt: skip
    noise: str | None = setting(
        None, "the base measure μ: gaussian (N(0, I)), uniform ([−1, 1]^k) or pieces "
        "(K small Gaussians N(c_j, σ²I) at fixed centres c_j ~ N(0, I); default pieces on "
        "points, gaussian on images)", choices=NOISES, what="noise",
    )  # fmt: skip
    pieces: int = setting(
        PIECES, "noise pieces: the number K of Gaussian pieces of μ", minimum=1, maximum=MAX_PIECES
    )
    piece_std: float = setting(
        PIECE_STD, "noise pieces: the standard deviation σ of each piece", above=0, maximum=10
    )
    loss: str = setting(
        "nonsaturating", "the game: nonsaturating, minimax, wgan-gp or hinge",
        choices=GAN_LOSSES, what="GAN loss",
    )  # fmt: skip
    critic_hidden: list[int] | None = setting(
        None, "critic widths (default "
        + ",".join(map(str, RECOMMENDED["model"]["critic_hidden"]))
        + " for an MLP on points; otherwise --hidden)", minimum=1, maximum=MAX_WIDTH,
    )  # fmt: skip
    critic_activation: str | None = setting(
        None, "the critic's activation (default: --activation on points, leaky_relu_0.2 on "
        "images, as DCGAN's)", choices=ACTIVATIONS, what="activation",
    )  # fmt: skip
    critic_steps: int = setting(
        1, "critic updates per generator update", minimum=1, maximum=MAX_STEPS
    )
    critic_lr: float | None = setting(None, "critic learning rate (default: --lr)", above=0)
    pack: int = setting(1, "PacGAN: samples the critic judges at once", minimum=1, maximum=MAX_PACK)
    minibatch_std: bool = setting(
        False, "append the batch's mean feature standard deviation to the critic's last hidden "
        "layer (ProGAN's minibatch-std feature; MLP critic)",
    )  # fmt: skip
    gp_weight: float | None = setting(
        None, "weight of the gradient penalty (0 = off; default "
        f"{RECOMMENDED['model']['gp_weight']:g} on points, "
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
        f"(0 = off; default {TRUNCATION:g} on points, 0 on images)",
        minimum=0, below=1, sampling=True,
    )  # fmt: skip
    augment: str | None = setting(
        None, "the critic's differentiable augmentation of real and generated images alike: "
        "none, translation, cutout or translation,cutout (DiffAugment; default "
        f"{RECOMMENDED_IMAGES['model']['augment']} on images, none on points)",
        choices=AUGMENTS, what="augmentation",
    )  # fmt: skip
    mmd_weight: float | None = setting(
        None, "weight of the kernel two-sample term (MMD²) added to the generator's loss "
        "(0 = off; default "
        f"{RECOMMENDED['model']['mmd_weight']:g} on points, 0 on images)", minimum=0,
    )  # fmt: skip
    mmd_every: int | None = setting(
        None, "take the kernel term on every K-th generator step, weighted K× (lazy, as "
        f"--penalty-every; default {RECOMMENDED['model']['mmd_every']} on points, 1 on images)",
        minimum=1, maximum=MAX_STEPS,
    )  # fmt: skip
    mmd_bandwidths: list[float] = setting(
        list(MMD_BANDWIDTHS), "the MMD kernel's Gaussian bandwidths, in the critic's units "
        "(standardised on points)", above=0,
    )  # fmt: skip
    dim: int | None = setting(None, "data dimension d", minimum=1, derived=True)
    image_shape: tuple[int, int] | None = setting(
        None, "(h, w) of image data", minimum=1, derived=True
    )
    output: str | None = setting(
        None, "the generator's last nonlinearity: linear or sigmoid (default sigmoid on "
        "images, linear on points)", choices=OUTPUTS, what="generator output", derived=True,
    )  # fmt: skip
    standardize: bool | None = setting(
        None, "play the game on standardised data (default on for linear output on points)",
        derived=True,
    )  # fmt: skip

    def __post_init__(self) -> None:
        # an empty critic_hidden, as an empty hidden (NetSettings), is a critic of one affine
        # map, which the settings machinery would refuse as an empty list
        affine = self.critic_hidden is not None and len(self.critic_hidden) == 0
        if affine:
            self.critic_hidden = None
        super().__post_init__()
        if affine:
            self.critic_hidden = []

    @classmethod
    def stored_defaults(cls) -> dict[str, Any]:
        """Runs stored before augmentation existed showed the critic the images as they are;
        runs stored before lazy regularisation existed took the penalty on every critic step
        (today's default on both kinds of data is every 4th, so they would resume otherwise);
        before the kernel term, the noise and its lazy rhythm existed, a run had none, N(0, I)
        and every step."""
        return {"augment": "none", "penalty_every": 1, "mmd_weight": 0.0, "mmd_every": 1,
                "noise": "gaussian"}  # fmt: skip

    @classmethod
    def from_stored(cls, stored: Mapping[str, Any]) -> GANConfig:
        """Return the config of a stored run's ``model.config``: :meth:`to_dict`'s output, or
        the model's arguments as run formats 1 and 2 stored them (:data:`STORED_ARGUMENTS`). A
        run stored before Jacobian truncation existed samples without it."""
        stored = {"jacobian_truncation": 0.0, **stored}
        if "critic_net" in stored or isinstance(stored.get("net"), Mapping):
            return cls.from_dict(_from_arguments(stored))
        return super().from_stored(stored)

    @classmethod
    def upgrade_stored(cls, stored: Mapping[str, Any]) -> dict[str, Any]:
        """Return stored settings as this release reads them: a run stored while the critic's
        widths followed g's (``critic_hidden`` None, before the critic had widths of its own on
        points) gets g's widths, so that it loads and resumes as it was built."""
        d = dict(stored)
        if d.get("critic_hidden") is None and d.get("hidden") is not None:
            d["critic_hidden"] = list(d["hidden"])
        return d

    def check(self) -> None:
        """Refuse packing or the minibatch-std feature with a conv critic, and augmentation of
        anything but square images judged one at a time."""
        if self.pack > 1 and self.net not in (None, "mlp"):
            raise ConfigError(
                f"pack = {self.pack} needs an MLP critic (packing concatenates samples into one "
                "row); use pack = 1 or net = mlp"
            )
        if self.minibatch_std and self.net not in (None, "mlp"):
            raise ConfigError(
                f"minibatch_std = True needs an MLP critic, got net = {self.net!r}; use "
                "minibatch_std = False or net = mlp"
            )
        if self.augment in (None, "none") or self.dim is None:
            return
        shape = self.image_shape
        square = shape is not None and shape[0] == shape[1]
        if self.pack != 1 or not square or self.dim != math.prod(shape):
            raise ConfigError(
                f"augment = {self.augment!r} transforms square images one at a time: it needs "
                f"square image data and pack = 1 (got image shape {shape}, pack = {self.pack}); "
                "use augment = none"
            )

    def check_processes(self) -> None:
        """Refuse the settings that cannot train in several processes (torchrun)."""
        if self.pack > 1:
            raise ConfigError(
                f"pack = {self.pack} cannot train in several processes (a pack would mix "
                "rows of different processes); use pack = 1 or one process"
            )

    def kind_defaults(self, kind: str) -> dict[str, Any]:
        """Return the defaults for data of ``kind``: on images a conv pair of
        :data:`GAN_CONV_WIDTHS` with DCGAN's leaky critic and :data:`RECOMMENDED_IMAGES`,
        sigmoid output and Jacobian truncation off; on points MLPs and :data:`RECOMMENDED`,
        linear output on standardised data and :data:`~.truncation.TRUNCATION`."""
        images = kind == "images"
        rec = RECOMMENDED_IMAGES["model"] if images else RECOMMENDED["model"]
        net = self.net or ("conv" if images else "mlp")
        hidden = RECOMMENDED["model"]["hidden"] if net == "mlp" else GAN_CONV_WIDTHS
        # DCGAN's leaky critic goes with the conv pair; an MLP critic keeps --activation (as a
        # run stored before the setting existed was built)
        critic = rec.get("critic_activation") if net == "conv" else None
        output = self.output or ("sigmoid" if images else "linear")
        # the critic: on points an MLP of its own widths; elsewhere as wide as g
        own = rec.get("critic_hidden") if net == "mlp" and not images else None
        critic_hidden = (
            own if own is not None else self.hidden if self.hidden is not None else hidden
        )
        return {
            **super().kind_defaults(kind),
            "net": net,
            "hidden": list(hidden),
            "critic_hidden": list(critic_hidden),
            "noise": rec.get("noise", "gaussian"),
            "latent": rec["latent"],
            "critic_activation": critic or self.activation,
            "gp_weight": rec["gp_weight"],
            "penalty_every": rec.get("penalty_every", 1),
            "ema": rec["ema"],
            "jacobian_truncation": 0.0 if images else TRUNCATION,
            "augment": rec.get("augment", "none"),
            "mmd_weight": 0.0 if images else rec["mmd_weight"],
            "mmd_every": 1 if images else rec["mmd_every"],
            "output": output,
            "standardize": output == "linear" and not images,
        }

    def critic_net_config(self) -> dict[str, Any]:
        """Return the critic's :class:`~pushforward.nets.NetConfig` fields: the generator's
        network kind with ``critic_hidden`` and ``critic_activation`` where they are set."""
        net = self.net_config()
        hidden = self.critic_hidden if self.critic_hidden is not None else net["hidden"]
        return {**net, "hidden": hidden, "activation": self.critic_activation or net["activation"]}

    def build(self, ds: Any) -> GAN:
        """Return a fresh GAN for the data set ``ds``, its dimension and image shape filled in."""
        from pushforward.models.gan.model import GAN  # the model module imports this one

        return GAN(replace(self, dim=ds.dim, image_shape=ds.image_shape))


def _from_arguments(stored: Mapping[str, Any]) -> dict[str, Any]:
    """Return :class:`GANConfig` fields for the model's arguments as run formats 1 and 2 stored
    them (:data:`STORED_ARGUMENTS`, plus ``dim``)."""
    unknown = sorted(set(stored) - set(STORED_ARGUMENTS) - {"dim"})
    if unknown:
        known = ", ".join(["dim", *STORED_ARGUMENTS])
        raise ConfigError(f"unknown stored GAN argument {unknown[0]!r}; known: {known}")
    old = {**STORED_ARGUMENTS, **stored}
    net = NetConfig(**(old.pop("net") or {}))
    critic = old.pop("critic_net")
    critic = net if critic is None else NetConfig(**critic)
    if critic.kind != net.kind:
        raise ConfigError(
            f"a stored GAN with a {net.kind} generator and a {critic.kind} critic cannot be "
            "rebuilt: both networks are of one kind"
        )
    if old["gp_weight"] is None:
        old["gp_weight"] = lookup(GAN_LOSSES, old["loss"], what="GAN loss").default_gp_weight
    return {
        **old,
        "net": net.kind,
        "hidden": net.hidden,
        "activation": net.activation,
        "critic_hidden": critic.hidden,
        "critic_activation": critic.activation,
    }

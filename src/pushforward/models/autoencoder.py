"""Deep autoencoders: an encoder f: ℝ^d → ℝ^k and a decoder g: ℝ^k → ℝ^d trained on R(x, g(f(x))).

Also the lecture's memorisation remark as an experiment: with k = 1 and enough capacity, the
autoencoder can store the training set (f(xᵢ) = 1/i, g(1/i) = xᵢ) and drive its training error to
nearly zero while held-out error stays large; unregularised, it learns nothing general.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from pushforward.core import ConfigError, ModelSpec, check_rows, setting
from pushforward.nets import (
    MAX_LATENT,
    MLP,
    RECONSTRUCTIONS,
    NetConfig,
    NetSettings,
    TiedDecoder,
    build_decoder,
    build_encoder,
    check_sizes,
    decoder_program,
    output_mean,
    reconstruction,
)
from pushforward.nets.losses import output_activation
from pushforward.train import Trainable, TrainConfig, fit, seeded

__all__ = ["Autoencoder", "AutoencoderConfig", "MemorisationResult", "memorisation_experiment"]


@dataclass
class AutoencoderConfig(NetSettings):
    """Settings of an :class:`Autoencoder` (``pushforward fit ae``); :meth:`build` fills
    ``dim`` and ``image_shape`` from the data."""

    dim: int | None = setting(None, "data dimension d", minimum=1, derived=True)
    latent: int = setting(2, "latent dimension k", minimum=1, maximum=MAX_LATENT)
    loss: str = setting(
        "l2", "reconstruction loss R: l2, l1 or bce", choices=RECONSTRUCTIONS,
        what="reconstruction loss",
    )  # fmt: skip
    tied: bool = setting(False, "the decoder reuses the encoder's weights, transposed (MLP)")
    image_shape: tuple[int, int] | None = setting(
        None, "(h, w) of image data (conv nets, figures)", minimum=1, derived=True
    )

    def check(self) -> None:
        if self.tied and self.net not in (None, "mlp"):
            raise ConfigError("tied weights need an MLP network (--net mlp)")

    def filled(self) -> AutoencoderConfig:
        """Return a copy with the network left open filled: an MLP of the model's widths."""
        net = self.net_config()
        return dataclasses.replace(self, net=net["kind"], hidden=net["hidden"])

    def build(self, ds: Any) -> Autoencoder:
        cfg = self.resolve(ds.kind)
        return Autoencoder(dataclasses.replace(cfg, dim=ds.dim, image_shape=ds.image_shape))


class Autoencoder(Trainable):
    """Encoder f (B, d) → (B, k) and decoder g (B, k) → (B, d) trained on R(x, g(f(x))).

    Args:
        config: its :class:`AutoencoderConfig`, kept as ``self.config``: d and k, the
            reconstruction R (``l2``, ``l1`` or ``bce``, the decoder then outputting logits;
            summed over dimensions, averaged over examples), the encoder's network (the decoder
            mirrors it, or reuses the transposes of its matrices when ``tied``) and the image
            shape conv nets need.
    """

    has_encoder = True
    generative = False
    stacks = True  # several seeds train as one stacked model (fit_seeds)
    config_class = AutoencoderConfig

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        self.config = config = config.filled()
        check_sizes(config.dim, config.latent)
        self.net = NetConfig.from_dict(config.net_config())
        self.encoder = build_encoder(self.net, config.dim, config.latent, config.image_shape)
        if config.tied:
            assert isinstance(self.encoder, MLP)
            self.decoder = TiedDecoder(self.encoder, activation=self.net.activation)
        else:
            self.decoder = build_decoder(self.net, config.latent, config.dim, config.image_shape)

    @property
    def dim(self) -> int:  # type: ignore[override]
        """d, the data dimension."""
        return self.config.dim

    @property
    def latent(self) -> int:  # type: ignore[override]
        """k, the latent dimension."""
        return self.config.latent

    def encode(self, x: Tensor) -> Tensor:
        """Return the codes z = f(x), shape (n, k), for x (n, d)."""
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        """Return the reconstructions x̂ = g(z) (means, in data space), shape (n, d)."""
        return output_mean(self.config.loss, self.decoder(z))

    def decoder_layers(self) -> list[tuple] | None:
        """Return :meth:`decode` as a portable program (None for a conv decoder)."""
        return decoder_program(self.decoder, ("activation", output_activation(self.config.loss)))

    def forward(self, x: Tensor) -> Tensor:
        """Return g(f(x)), shape (n, d)."""
        return self.decode(self.encode(x))

    def loss(
        self, x: Tensor, *, generator: torch.Generator | None = None, epoch: float | None = None
    ) -> dict[str, Tensor]:
        r = reconstruction(self.config.loss, x, self.decoder(self.encoder(x))).mean()
        return {"loss": r}

    @torch.no_grad()
    def reconstruction_error(self, x: Tensor) -> float:
        """Return the mean over examples of R(x, g(f(x))) (summed over dimensions)."""
        check_rows(x, "x", dim=self.dim)
        return float(self.loss(x)["loss"])


SPEC = ModelSpec(Autoencoder, AutoencoderConfig, "a deep autoencoder: encoder f, decoder g")


@dataclass
class MemorisationResult:
    """Errors (mean R per example) on the training set and on held-out data."""

    train_error: float
    test_error: float
    baseline_error: float  # predicting the training mean for every x
    n_train: int
    history: list[dict[str, Any]]


def memorisation_experiment(
    x_train: Tensor,
    x_test: Tensor,
    *,
    hidden: tuple[int, ...] = (512, 512),
    epochs: int = 1500,
    lr: float = 3e-3,
    seed: int = 0,
) -> MemorisationResult:
    """Train a k = 1 autoencoder with a large MLP, full batch, on a small x_train (n, d).

    Adam at 3·10⁻³: at 10⁻³, 1,500 steps sat at the edge of convergence (20 digits, three
    layers of 256, seed 0: training error 0.95 against 6.7 held out on one CPU, near 0 on
    another, the floating-point kernels deciding); at 3·10⁻³ seeds 0–5 reach a training error
    below 1% of the held-out one in 600 or 1,500 steps.

    Return its training and held-out errors (ℓ2, mean over examples). With enough capacity the
    training error goes to nearly zero — the net can store each xᵢ at its own code — while the
    held-out error stays near the baseline of predicting the mean: memorisation, not learning.
    """
    check_rows(x_train, "x_train")
    check_rows(x_test, "x_test", dim=x_train.shape[1], why=" like x_train")
    with seeded(seed):
        config = AutoencoderConfig(dim=x_train.shape[1], latent=1, loss="l2", hidden=list(hidden))
        model = Autoencoder(config)
    cfg = TrainConfig(epochs=epochs, batch_size=0, lr=lr, seed=seed)
    history = fit(model, x_train, cfg)
    baseline = float((x_test - x_train.mean(0)).pow(2).sum(1).mean())
    return MemorisationResult(
        train_error=model.reconstruction_error(x_train),
        test_error=model.reconstruction_error(x_test),
        baseline_error=baseline,
        n_train=x_train.shape[0],
        history=history,
    )

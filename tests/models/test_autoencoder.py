"""Autoencoders: a linear one trained by gradient descent finds PCA; a big one memorises."""

import pytest
import torch
from sklearn.datasets import load_digits

from pushforward.core import ConfigError, DataError, a_or_an
from pushforward.models.autoencoder import (
    Autoencoder,
    AutoencoderConfig,
    memorisation_experiment,
)
from pushforward.train import TrainConfig, fit, seeded


def test_linear_autoencoder_reaches_pca_error_within_one_percent():
    g = torch.Generator().manual_seed(0)
    scales = torch.tensor([3.0, 2.0, 1.5, 0.5, 0.3, 0.2, 0.1, 0.1])
    x = (
        torch.randn(200, 8, generator=g)
        * scales
        @ torch.linalg.qr(torch.randn(8, 8, generator=g))[0]
    )
    k = 3
    s = torch.linalg.svdvals((x - x.mean(0)).double())
    pca_error = float((s[k:] ** 2).sum()) / x.shape[0]  # the theorem: discarded energy
    with seeded(0):
        ae = Autoencoder(AutoencoderConfig(dim=8, latent=k, hidden=[], activation="identity"))
    fit(ae, x, TrainConfig(epochs=1500, batch_size=0, lr=3e-2))
    assert ae.reconstruction_error(x) == pytest.approx(pca_error, rel=0.01)
    assert ae.reconstruction_error(x) >= pca_error * (1 - 1e-4)  # nothing linear beats PCA


def test_memorisation_train_error_is_far_below_held_out_error():
    x = torch.tensor(load_digits().data / 16.0, dtype=torch.float32)
    r = memorisation_experiment(x[:20], x[1000:1500], hidden=(256, 256, 256), epochs=1500)
    assert r.train_error < 0.05 * r.test_error
    assert r.test_error > 0.9 * r.baseline_error  # no better than predicting the mean


@pytest.mark.parametrize("loss", ["l2", "l1", "bce"])
def test_every_loss_trains_and_decodes_in_data_space(loss):
    x = torch.rand(64, 16, generator=torch.Generator().manual_seed(1))
    with seeded(0):
        ae = Autoencoder(AutoencoderConfig(dim=16, latent=2, loss=loss, hidden=[32]))
    before = ae.reconstruction_error(x)
    fit(ae, x, TrainConfig(epochs=30, batch_size=16))
    assert ae.reconstruction_error(x) < before
    assert ae.encode(x).shape == (64, 2)
    out = ae(x).detach()
    assert out.shape == (64, 16)
    if loss == "bce":
        assert 0 <= float(out.min()) and float(out.max()) <= 1


def test_tied_autoencoder_has_fewer_parameters_and_trains():
    x = torch.rand(64, 16, generator=torch.Generator().manual_seed(2))
    with seeded(0):
        tied = Autoencoder(AutoencoderConfig(dim=16, latent=2, tied=True, hidden=[32]))
        free = Autoencoder(AutoencoderConfig(dim=16, latent=2, hidden=[32]))
    n_tied = sum(p.numel() for p in tied.parameters())
    assert n_tied == sum(p.numel() for p in free.encoder.parameters()) + 32 + 16
    before = tied.reconstruction_error(x)
    fit(tied, x, TrainConfig(epochs=20, batch_size=16))
    assert tied.reconstruction_error(x) < before


def test_conv_autoencoder_on_8x8_digits():
    x = torch.tensor(load_digits().data[:128] / 16.0, dtype=torch.float32)
    with seeded(0):
        ae = Autoencoder(
            AutoencoderConfig(dim=64, latent=2, loss="bce", image_shape=(8, 8), net="conv")
        )
    assert ae.decode(ae.encode(x)).shape == (128, 64)


@pytest.mark.parametrize(
    ("make", "err", "match"),
    [
        (
            lambda: Autoencoder(AutoencoderConfig(dim=16, latent=0)),
            ConfigError,
            "latent = 0 is not allowed; use an integer ≥ 1",
        ),
        (
            lambda: Autoencoder(AutoencoderConfig(dim=16, latent=2, loss="mse")),
            ConfigError,
            "unknown reconstruction loss 'mse'",
        ),
        (
            lambda: Autoencoder(
                AutoencoderConfig(dim=64, latent=2, tied=True, image_shape=(8, 8), net="conv")
            ),
            ConfigError,
            "tied",
        ),
        (
            lambda: Autoencoder(AutoencoderConfig(dim=16, latent=2)).reconstruction_error(
                torch.zeros(3, 5)
            ),
            DataError,
            r"\(n, 16\)",
        ),
        (
            lambda: Autoencoder(AutoencoderConfig(dim=2, latent=1)).reconstruction_error(
                torch.tensor([[float("nan"), 0.0]])
            ),
            DataError,
            "NaN",
        ),
    ],
)
def test_bad_autoencoder_input(make, err, match):
    with pytest.raises(err, match=match):
        make()


def test_messages_name_the_model_with_its_article():
    ae = Autoencoder(AutoencoderConfig(dim=2, latent=1))
    with pytest.raises(ConfigError, match=r"^an Autoencoder is not generative: it cannot sample$"):
        ae.sample(3)
    with pytest.raises(ConfigError, match="not a sampling setting of an Autoencoder"):
        ae.set_sampling(temperature=0.5)
    assert [a_or_an(n) for n in ("Autoencoder", "VAE", "ProbabilisticPCA", "encoder")] == [
        "an Autoencoder",
        "a VAE",
        "a ProbabilisticPCA",
        "an encoder",
    ]

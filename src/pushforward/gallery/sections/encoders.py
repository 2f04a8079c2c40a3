"""The gallery's section on encoders and decoders: PCA, the autoencoder, and memorisation."""

from __future__ import annotations

import torch

from pushforward.data import datasets
from pushforward.gallery.page import Report, Section
from pushforward.runs import plots

__all__ = ["encoders_section"]


def encoders_section(report: Report, quick: bool, seed: int) -> Section:
    """Return the section comparing PCA with an autoencoder on the 8×8 digits (held-out error
    against k, reconstructions and 2-D codes) and the memorisation of 20 digits with k = 1."""
    from pushforward.models.autoencoder import (
        Autoencoder,
        AutoencoderConfig,
        memorisation_experiment,
    )
    from pushforward.models.pca import PCA, PCAConfig
    from pushforward.train import TrainConfig, seeded

    ds = datasets.load_data("digits")
    train, test = datasets.train_test_split(ds, 1500)
    assert ds.image_shape is not None
    sec = Section(
        "Encoders and decoders: PCA and the autoencoder",
        "PCA is the optimal linear encoder: with the (centred) data X = USVᵀ, encoding by "
        "Z = XV_k and decoding by ZV_kᵀ leaves the squared error Σ_{i>k} s_i², and no other "
        "rank-k linear pair does better. A deep autoencoder replaces both maps by networks "
        "f: ℝ^d → ℝ^k and g: ℝ^k → ℝ^d. On scikit-learn's 8×8 digits (1,500 to train, 297 "
        "held out) with k = 2, both give a 2-D code; the non-linear one separates the digits "
        "better. Unregularised, an autoencoder with enough capacity can memorise: with k = 1 "
        "and a large network it stores the training set (f(xᵢ) = 1/i, g(1/i) = xᵢ), so its "
        "training error goes to nearly zero while its held-out error stays large.",
    )
    ks = [1, 2, 8] if quick else [1, 2, 3, 4, 6, 8, 12, 16]
    epochs = 10 if quick else 60
    pca_err, ae_err, ae_models = [], [], {}
    for k in ks:
        pca = PCA(PCAConfig(latent=k)).fit(train.x)
        pca_err.append(pca.reconstruction_error(test.x) / test.n)
        with seeded(seed):
            ae = Autoencoder(AutoencoderConfig(dim=ds.dim, latent=k, loss="l2", hidden=[256, 128]))
        report.fit(ae, train.x, TrainConfig(epochs=epochs, batch_size=64, seed=seed),
            progress=report.training(f"autoencoder k = {k}"))  # fmt: skip
        ae_err.append(ae.reconstruction_error(test.x))
        ae_models[k] = ae
    fig = plots.error_vs_k(
        {"PCA": (ks, pca_err), "autoencoder (MLP 256-128)": (ks, ae_err)},
        title="held-out reconstruction error against k (digits)",
    )
    report.figure(sec, fig, "error_vs_k", "Held-out squared error per image against latent size k")
    rows = [[str(k), f"{p:.3f}", f"{a:.3f}"] for k, p, a in zip(ks, pca_err, ae_err, strict=True)]
    sec.tables.append((["k", "PCA error", "autoencoder error"], rows))

    pca2, ae2 = PCA(PCAConfig(latent=2)).fit(train.x), ae_models[2]
    with torch.no_grad():
        x = test.x[:16]
        grid = torch.cat([x, pca2.decode(pca2.encode(x)).clamp(0, 1), ae2(x).clamp(0, 1)])
        codes = {"PCA": pca2.encode(test.x), "autoencoder": ae2.encode(test.x)}
    fig = plots.image_grid(grid, ds.image_shape, ncols=16, title="originals · PCA k=2 · AE k=2")
    report.figure(sec, fig, "reconstructions_k2", "Held-out digits, PCA and autoencoder with k = 2")
    for name, z in codes.items():
        fig = plots.scatter_2d(z, labels=test.labels, title=f"{name}: 2-D codes", size=6.0)
        report.figure(sec, fig, f"latent_{name.lower()}", f"{name} codes of held-out digits")

    # 20 digits are stored as surely as 1,500 and far sooner (BENCHMARKS.md)
    r = memorisation_experiment(train.x[:20], test.x, hidden=(256, 256, 256), epochs=600, seed=seed)
    sec.tables.append(
        (
            ["memorisation (k = 1)", "train error", "held-out error", "predict-the-mean error"],
            [[f"{r.n_train} training digits", f"{r.train_error:.4f}", f"{r.test_error:.3f}",
              f"{r.baseline_error:.3f}"]],
        )
    )  # fmt: skip
    return sec

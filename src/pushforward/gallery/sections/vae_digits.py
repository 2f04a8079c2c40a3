"""The gallery's section on the VAE on digits: codes, the decoded manifold, the explorer, the
ELBO, the IWAE likelihood and Fréchet distances under the N(0, I) and the mixture prior."""

from __future__ import annotations

import math
from typing import Any

import torch

from pushforward.data import datasets
from pushforward.explore import explorer_page
from pushforward.gallery.page import Report, Section
from pushforward.runs import plots

__all__ = ["vae_digits_section"]


def vae_digits_section(
    report: Report, quick: bool, seed: int, mnist: str | None, trained: dict[str, Any]
) -> Section:
    """Return the section on a VAE with a 2-D latent space trained on the 8×8 digits (and on
    MNIST when ``mnist`` names its data spec); each VAE's Fréchet distances, under both priors,
    and its epochs are left in ``trained["vae_LABEL"]`` for the GAN's section."""
    sec = Section(
        "The VAE: digits with a 2-D latent space",
        "The VAE's encoder gives (μ, ξ) with ξ the log-variance; training samples "
        "z = μ + exp(ξ/2)·ε and steps on R(x, g(z)) + λ·KL(N(μ, e^ξ) ‖ N(0, I)) with R the "
        "binary cross-entropy (a Bernoulli likelihood) and λ = 1, so the loss is the negative "
        "ELBO in nats. With k = 2 the posterior means of held-out digits, coloured by label, "
        "form clusters; the decoded manifold shows g(z) on a grid of z whose coordinates are "
        "spaced by the Gaussian inverse CDF Φ⁻¹, so each cell holds equal prior mass. The table "
        "gives the ELBO and the importance-weighted (IWAE) log-likelihood of held-out digits, and "
        "the Fréchet distance between samples and held-out digits in the feature space of a "
        "small digit classifier trained here (two halves of the real held-out digits score the "
        "floor in brackets), for samples g(z) with z from N(0, I) and with z from a mixture of "
        "Gaussians fitted to the codes of the training digits after training "
        "(<code>--prior gmm</code>, the default of <code>fit vae</code> on images): the "
        "codes' aggregate is not N(0, I), and the mixture draws z where the decoder was "
        "trained. The explorer below decodes the pointer's z in the page, from the "
        "decoder's weights (<code>pushforward explore</code>).",
    )
    sets = [("digits", "digits", 1500, 20 if quick else 150)]
    if mnist is not None:
        sets.append(("MNIST", mnist, 8000, 3 if quick else 30))
    rows = []
    for label, spec, n_train, epochs in sets:
        row, k = _vae_on(report, sec, label, spec, n_train, epochs, quick, seed, trained)
        rows.append(row)
    header = ["data", "train / test", "epochs", "−ELBO", f"−log p(x), IWAE k={k}", "bits/dim",
              "Fréchet distance, z ~ N(0, I) (real floor)", "Fréchet distance, mixture prior",
              "feature net accuracy %"]  # fmt: skip
    sec.tables.append((header, rows))
    return sec


def _vae_on(report: Report, sec: Section, label: str, spec: str, n_train: int, epochs: int,
            quick: bool, seed: int, trained: dict[str, Any]) -> tuple[list[str], int]:  # fmt: skip
    """Train the 2-D VAE on the first ``n_train`` images of ``spec`` for ``epochs``; add its
    figures and explorer page to ``sec``; return its table row and the IWAE's k."""
    from pushforward.metrics import image_quality
    from pushforward.models.vae import VAE, VAEConfig
    from pushforward.runs import codes, manifold
    from pushforward.train import TrainConfig, seeded

    ds = datasets.load_data(spec)
    train, test = datasets.train_test_split(ds, n_train)
    assert ds.image_shape is not None
    with seeded(seed):
        vae = VAE(
            VAEConfig(
                dim=ds.dim,
                latent=2,
                loss="bce",
                image_shape=ds.image_shape,
                hidden=[512],
                activation="silu",
            )
        )
    report.fit(vae, train.x, TrainConfig(epochs=epochs, batch_size=64, lr=3e-3, seed=seed),
        progress=report.training(f"VAE on {label}"))  # fmt: skip
    fig = plots.scatter_2d(codes(vae, test.x), labels=test.labels, size=4.0,
                           title=f"{label}: posterior means of held-out images")  # fmt: skip
    report.figure(sec, fig, f"vae_latent_{label.lower()}", f"{label}: μ(x) by digit label")
    fig = plots.image_grid(manifold(vae, 15), ds.image_shape, ncols=15, scale=0.42,
                           title=f"{label}: decoded manifold g(Φ⁻¹(u), Φ⁻¹(v))")  # fmt: skip
    report.figure(sec, fig, f"vae_manifold_{label.lower()}", f"{label}: the decoded manifold")
    page = explorer_page(vae, test, title=f"{label}: explore the VAE's latent space")
    sec.pages.append((f"{label}: move the pointer over the codes to decode z live; "
                      "click twice to interpolate", page, 720))  # fmt: skip
    gen = torch.Generator().manual_seed(seed)
    elbo = float(vae.elbo(test.x, generator=gen)["elbo"].mean())
    # 250 importance samples: 1,000 cost a tenth of the gallery for little (BENCHMARKS.md); 20
    # in quick mode, whose bound is looser
    ll = vae.log_likelihood(test.x, k=20 if quick else 250, generator=gen)
    bpd = -ll.mean / (ds.dim * math.log(2))
    fd = image_quality(lambda n, g, m=vae: m.sample(n, generator=g), test, ds, seed=seed)
    # the same weights, sampled from the mixture prior fitted to the training codes
    mixed = VAE.from_config({**vae.get_config(), "prior": "gmm"})
    mixed.load_state_dict(vae.state_dict(), strict=False)
    mixed.finish(train.x)
    fd_mix = image_quality(lambda n, g, m=mixed: m.sample(n, generator=g), test, ds, seed=seed)
    trained[f"vae_{label}"] = fd, fd_mix, epochs
    row = [label, f"{train.n:,} / {test.n:,}", str(epochs), f"{-elbo:.2f}",
           f"{-ll.mean:.2f} ± {ll.mean_stderr:.2f}", f"{bpd:.4f}",
           f"{fd['frechet_distance']:.1f} ({fd['frechet_distance_floor']:.1f})",
           f"{fd_mix['frechet_distance']:.1f}", f"{100 * fd['feature_accuracy']:.1f}"]  # fmt: skip
    return row, ll.k

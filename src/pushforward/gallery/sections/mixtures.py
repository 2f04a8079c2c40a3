"""The gallery's section on the Gaussian mixtures learned over training: the 2-D VAE's
animation, its explorer page and its estimated density."""

from __future__ import annotations

import torch

from pushforward.data import datasets
from pushforward.explore import explorer_page
from pushforward.gallery.page import Report, Section
from pushforward.gallery.sections.common import every, grid_over, mixture_gif
from pushforward.runs import plots
from pushforward.train import SampleSnapshots

__all__ = ["mixtures_section", "vae_mixture"]


def mixtures_section() -> Section:
    """Return the (empty) section on the 2-D VAE over training; each mixture's chain adds its
    figures and explorer pages (:func:`vae_mixture`)."""
    return Section(
        "Gaussian mixtures learned over training",
        "A VAE with a 2-D latent space and a Gaussian likelihood of learned variance (from "
        "σ = 0.1, with the KL weight warmed up over 5 epochs), trained on the ring and grid "
        "mixtures. The animations show 1,000 samples of g#N(0, I) (orange) "
        "over the data (blue), frame by frame as training proceeds; the heat map is the "
        "model's density p(x), estimated by importance weighting on a grid. The VAE finds every "
        "mode but blurs between them: its decoder is smooth, and the Gaussian likelihood "
        "accounts for what it cannot place. Below, the same runs live "
        "(<code>pushforward explore</code>): the pointer's z is decoded in the page and g(z) "
        "drawn over the data, and the slider scrubs the samples through training. The shades "
        "under the codes mark where N(0, I) puts its densest 50%, 90% and 99% of mass: on "
        "the ring its densest half lies in the empty middle of the ring of codes, and on both "
        "mixtures much of it falls in the gaps between the clusters of codes, which g decodes "
        "into the blur between the modes. <code>fit vae</code>'s default on points, a "
        "VampPrior trained with the nets, puts its mass under the codes instead and lands on "
        "the modes (BENCHMARKS.md, “The VAE on points”); this page keeps the lecture’s "
        "N(0, I).",
    )


def vae_mixture(report: Report, sec: Section, name: str, quick: bool, seed: int) -> tuple:
    """Train the 2-D VAE on mixture ``name``; add its animation, explorer page and heat map to
    ``sec``; return the data (n, 2) the chain's other parts train on, and the VAE."""
    from pushforward.models.vae import VAE, VAEConfig
    from pushforward.train import TrainConfig, seeded

    epochs = 20 if quick else 60
    points = 2_500 if quick else 10_000  # the GAN, flow and fm parts train on these too
    ds = datasets.load_data(name, n=points, generator=torch.Generator().manual_seed(seed))
    with seeded(seed):
        vae = VAE(
            VAEConfig(
                dim=2,
                latent=2,
                loss="gaussian",
                sigma=0.1,
                learn_sigma=True,
                kl_schedule="linear",
                kl_warmup=5,
                hidden=[256, 256],
                activation="silu",
            )
        )
    snaps = SampleSnapshots(vae, 1000, every=every(epochs, quick), seed=seed)
    report.fit(
        vae,
        ds.x,
        TrainConfig(epochs=epochs, batch_size=128, lr=2e-3, seed=seed),
        progress=report.training(f"VAE on {name}", snaps),
    )
    shots = ([e for e, _ in snaps.frames], torch.stack([y for _, y in snaps.frames]))
    page = explorer_page(vae, ds, snapshots=shots, title=f"{name}: explore the VAE")
    sec.pages.append((f"{name}: decode z live over the data; scrub g#μ over training",
                      page, 1100))  # fmt: skip
    report.animation(sec, mixture_gif(name, ds, snaps), f"train_{name}", f"{name}: training")
    side = 40 if quick else 100
    grid, limits = grid_over(ds, side)
    gen = torch.Generator().manual_seed(seed)
    logp = vae.log_likelihood(grid, k=64, generator=gen).log_px
    fig = plots.density_heatmap(logp.reshape(side, side), limits, title=f"{name}: model density")
    report.figure(sec, fig, f"density_{name}", f"{name}: the VAE's density (IWAE estimate)")
    return ds, vae

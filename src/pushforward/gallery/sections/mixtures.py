"""The gallery's section on the Gaussian mixtures learned over training: the 2-D VAE's
animation, its explorer page and its estimated density."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from pushforward.data import datasets
from pushforward.explore import explorer_page
from pushforward.gallery.page import Report, Section
from pushforward.gallery.sections.common import every, grid_over, mixture_gif
from pushforward.runs import plots
from pushforward.train import SampleSnapshots, seeded

__all__ = ["mixtures_section", "vae_mixture", "vamp_mixture"]


def mixtures_section() -> Section:
    """Return the (empty) section on the 2-D VAE over training; each mixture's chain adds its
    figures and explorer pages (:func:`vae_mixture`)."""
    return Section(
        "Gaussian mixtures learned over training",
        "Two VAEs with a 2-D latent space and a Gaussian likelihood of learned variance, trained "
        "on the ring and grid mixtures. The first is the lecture's: the prior N(0, I) (from "
        "σ = 0.1, with the KL weight warmed up over 5 epochs). The second is <code>fit vae"
        "</code>'s default on points: the same kind of nets with a VampPrior (Tomczak & "
        "Welling, 2018), a prior that is the average of the encoder's posteriors at 200 "
        "pseudo-inputs trained with the nets, so that it can put its mass where the codes are "
        "(BENCHMARKS.md, “The VAE on points”). The animations show 1,000 samples of g#μ "
        "(orange) over the data (blue), frame by frame as training proceeds; the heat maps are "
        "each model's density p(x), estimated by importance weighting on a grid. With N(0, I) "
        "the VAE finds every mode but blurs between them: its decoder is smooth, and the "
        "Gaussian likelihood accounts for what it cannot place. Below, the same runs live "
        "(<code>pushforward explore</code>): the pointer's z is decoded in the page and g(z) "
        "drawn over the data, and the slider scrubs the samples through training. The shades "
        "under the codes mark where the prior puts its densest 50%, 90% and 99% of mass. Under "
        "N(0, I), on the ring its densest half lies in the empty middle of the ring of codes, "
        "and on both mixtures much of it falls in the gaps between the clusters of codes, which "
        "g decodes into the blur between the modes; the VampPrior puts its mass under the "
        "codes, and the VAE lands on the modes (the fidelity table below scores both).",
    )


def vae_mixture(report: Report, sec: Section, name: str, quick: bool, seed: int) -> tuple:
    """Train the 2-D VAE on mixture ``name``; add its animation, explorer page and heat map to
    ``sec``; return the data (n, 2) the chain's other parts train on, and the VAE."""
    from pushforward.models.vae import VAE, VAEConfig
    from pushforward.train import TrainConfig

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
    _show(report, sec, vae, ds, snaps, name, quick, seed, label="N(0, I) prior", key="")
    return ds, vae


def vamp_mixture(report: Report, sec: Section, name: str, ds: datasets.Dataset, quick: bool,
                 seed: int) -> Any:  # fmt: skip
    """Train ``fit vae``'s default on points (the VampPrior VAE, as ``pushforward fit vae --data
    NAME --seed SEED`` builds and trains it, on the chain's data ``ds`` (n, 2); 10 epochs in
    ``quick``); add its animation, explorer page and heat map to ``sec``; return the VAE."""
    from pushforward.runs import RunConfig

    rc = RunConfig.from_flat({"model": "vae", "data": name, "n": ds.n, "seed": seed})
    assert rc.settings is not None
    with seeded(seed):
        vae = rc.settings.build(ds)
    epochs = 10 if quick else rc.train.epochs
    snaps = SampleSnapshots(vae, 1000, every=every(epochs, quick), seed=seed)
    cfg = dataclasses.replace(rc.train, epochs=epochs)
    report.fit(vae, ds.x, cfg, progress=report.training(f"VampPrior VAE on {name}", snaps))
    _show(report, sec, vae, ds, snaps, name, quick, seed, label="VampPrior", key="vamp_")
    return vae


def _show(report: Report, sec: Section, vae: Any, ds: datasets.Dataset, snaps: SampleSnapshots,
          name: str, quick: bool, seed: int, *, label: str, key: str) -> None:  # fmt: skip
    """Add a trained 2-D VAE's explorer page, training animation and heat map to ``sec``: its
    prior named by ``label`` in captions, files named with the prefix ``key``."""
    shots = ([e for e, _ in snaps.frames], torch.stack([y for _, y in snaps.frames]))
    page = explorer_page(vae, ds, snapshots=shots, title=f"{name}: explore the VAE, {label}")
    sec.pages.append((f"{name}, {label}: decode z live over the data; scrub g#μ over "
                      "training", page, 1100))  # fmt: skip
    report.animation(sec, mixture_gif(name, ds, snaps), f"{key}train_{name}",
                     f"{name}: training, {label}")  # fmt: skip
    side = 40 if quick else 72
    grid, limits = grid_over(ds, side)
    gen = torch.Generator().manual_seed(seed)
    logp = vae.log_likelihood(grid, k=64, generator=gen).log_px
    fig = plots.density_heatmap(logp.reshape(side, side), limits,
                                title=f"{name}: model density, {label}")  # fmt: skip
    report.figure(sec, fig, f"{key}density_{name}",
                  f"{name}: the VAE's density (IWAE estimate), {label}")  # fmt: skip

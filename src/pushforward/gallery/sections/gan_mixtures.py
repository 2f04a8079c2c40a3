"""The gallery's section on the GAN on the mixtures: the same g fitted adversarially, its
animation and training health, and the PacGAN scores of the VAE and the GAN."""

from __future__ import annotations

from typing import Any

from pushforward.data import datasets
from pushforward.gallery.page import Report, Section
from pushforward.gallery.sections.common import every, mixture_gif
from pushforward.runs import plots
from pushforward.train import SampleSnapshots

__all__ = ["GAN_HEADER", "gan_epochs", "gan_mixture", "gan_section"]


GAN_HEADER = ["data", "model", "modes", "high quality %", "reverse KL", "MMD²", "W₁"]
"""The columns of the section's table (:func:`gan_mixture` makes its rows)."""


def gan_epochs(quick: bool) -> int:
    """Epochs of the mixture GAN: two thirds of the benchmark's (BENCHMARKS.md, "The mixture
    GAN's time to quality"), a fiftieth in ``--quick``."""
    from pushforward.models.gan import RECOMMENDED

    epochs = RECOMMENDED["train"]["epochs"]
    return max(1, epochs // 50 if quick else epochs * 2 // 3)


def gan_section(quick: bool) -> Section:
    """Return the section on the mixture GAN, its text only; the chains add figures and rows."""
    from pushforward.models.gan import RECOMMENDED, TRUNCATION
    from pushforward.models.gan.config import PIECES

    return Section(
        "The GAN: the same g, fitted adversarially",
        "The second way to fit the pushforward g#μ: a critic D learns to tell data from "
        "samples while g learns to fool it. The benchmarked setting draws z from μ = "
        f"{PIECES} small Gaussian pieces in ℝ^{RECOMMENDED['model']['latent']} "
        "(g can send different pieces to different modes, with no path of samples between "
        "them), plays the non-saturating game on standardised data with an R1 penalty on the "
        "critic's slope at the data (which keeps every mode), adds a kernel two-sample term "
        "(MMD² at the modes' scale) to g's loss on every second step (R1 leaves the critic flat "
        "across each mode, so the game alone lets the modes narrow; the term widens them to the "
        "data's), lets the learning rate decay to 0 on a cosine, and samples g#μ, rejecting the "
        f"{100 * TRUNCATION:g}% of latent draws where g stretches most (Jacobian truncation: "
        "there g passes between modes). Unlike the VAE it has no likelihood to "
        "estimate; it is judged by its samples. The table compares both models on 2,500 "
        "samples (PacGAN protocol: a sample is high quality within 3σ of its nearest mode; "
        "reverse KL of the mode histogram against uniform), and by unbiased MMD² and W₁ against "
        "fresh draws of the true mixture, beside the floor that a second set of real draws scores "
        "(on 500 points per set in quick mode, 2,000 otherwise)."
        + f" Here it trains {gan_epochs(quick)} of the benchmark's "
        f"{RECOMMENDED['train']['epochs']} epochs.",
    )


def gan_mixture(report: Report, sec: Section, name: str, ds: datasets.Dataset, vae: Any,
                 quick: bool, seed: int) -> tuple[Any, list[list[str]]]:  # fmt: skip
    """Train the recommended GAN on ``ds`` (n, 2); add its animation and curves to ``sec``; return
    the GAN and the table's rows: the VAE's and the GAN's PacGAN scores, then the real floor."""
    from pushforward.metrics import point_quality
    from pushforward.models.gan import GAN, RECOMMENDED, GANConfig
    from pushforward.train import TrainConfig, seeded

    epochs = gan_epochs(quick)
    with seeded(seed):
        gan = GAN(GANConfig(dim=2, **RECOMMENDED["model"]))
    snaps = SampleSnapshots(gan, 1000, every=every(epochs, quick), seed=seed)
    cfg = TrainConfig(**{**RECOMMENDED["train"], "epochs": epochs, "seed": seed})
    history = report.fit(gan, ds.x, cfg, progress=report.training(f"GAN on {name}", snaps))
    report.animation(sec, mixture_gif(name, ds, snaps), f"gan_train_{name}", f"{name}: training")
    fig = plots.gan_curves(history, title=f"{name}: the GAN's losses and gradient norms")
    report.figure(sec, fig, f"gan_curves_{name}", f"{name}: training health")
    rows = []
    points = 500 if quick else 2000
    for label, model in (("VAE", vae), ("GAN", gan)):
        q = point_quality(  # the real floor once: the last row's
            lambda n, g, m=model: m.sample(n, generator=g),
            ds,
            seed=seed,
            points=points,
            floors=label == "GAN",
        )
        rows.append([name, label, f"{q['modes_captured']} / {q['n_modes']}",
                     f"{100 * q['high_quality']:.1f}", f"{q['reverse_kl']:.3f}",
                     f"{q['mmd2']:.5f}", f"{q['wasserstein1']:.4f}"])  # fmt: skip
    rows.append([name, "real data (floor)", "", "", "", f"{q['mmd2_floor']:.5f}",
                 f"{q['wasserstein1_floor']:.4f}"])  # fmt: skip
    return gan, rows

"""The gallery's section on the GAN on digits: samples, great-circle interpolation, training
health, and its Fréchet distance beside the VAE's."""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor

from pushforward.data import datasets
from pushforward.gallery.page import Report, Section
from pushforward.runs import plots

__all__ = ["GALLERY_GAN", "gan_digits_section", "interpolation", "with_vae_rows"]


GALLERY_GAN: dict[str, Any] = {"epochs": 3, "quick_epochs": 1, "rows": 8000, "quick_rows": 4000}
"""The gallery's image GAN: the default image GAN
(:data:`pushforward.models.gan.RECOMMENDED_IMAGES`, conv 32,64) for ``epochs`` on the first
``rows`` MNIST images (in ``--quick``, ``quick_epochs`` over the first ``quick_rows`` of them),
far too short for good digits; BENCHMARKS.md has its cost an epoch and its Fréchet distance
after longer training."""


def interpolation(model: Any, pairs: int, steps: int, seed: int) -> Tensor:
    """Return g(z_t) (pairs·steps, d) along great circles z_t = slerp(z_a, z_b, t) between pairs
    of latent draws (a Gaussian's draws keep their norm along a great circle, not a chord)."""
    gen = torch.Generator().manual_seed(seed)
    a = model.latent_measure.sample(pairs, generator=gen)  # (pairs, k)
    b = model.latent_measure.sample(pairs, generator=gen)
    t = torch.linspace(0, 1, steps)
    cos = torch.nn.functional.cosine_similarity(a, b).clamp(-1, 1)
    omega = torch.arccos(cos).unsqueeze(1)  # (pairs, 1)
    sin = torch.sin(omega).clamp_min(1e-6)
    wa = torch.sin((1 - t) * omega) / sin  # (pairs, steps)
    wb = torch.sin(t * omega) / sin
    z = wa.unsqueeze(2) * a.unsqueeze(1) + wb.unsqueeze(2) * b.unsqueeze(1)  # (pairs, steps, k)
    with torch.no_grad():
        return model.decode(z.reshape(pairs * steps, -1)).clamp(0, 1)


def gan_digits_section(report: Report, quick: bool, seed: int, mnist: str | None) -> Section:
    """Return the section on the image GAN, trained on MNIST when ``mnist`` names its data spec
    (else on the 8×8 digits); its table has the GAN's row, which :func:`with_vae_rows` sets the
    VAEs' beside (the two sections may be made in different processes)."""
    from pushforward.metrics import image_quality
    from pushforward.models.gan import RECOMMENDED_IMAGES, GANConfig
    from pushforward.train import TrainConfig, seeded

    label, spec = ("MNIST", mnist) if mnist is not None else ("digits", "digits")
    ds = datasets.load_data(spec)
    n_train = GALLERY_GAN["rows"] if mnist is not None else 1500
    train, test = datasets.train_test_split(ds, n_train)
    assert ds.image_shape is not None
    epochs = GALLERY_GAN["quick_epochs" if quick else "epochs"]
    with seeded(seed):
        gan = GANConfig().build(train)
    settings = RECOMMENDED_IMAGES["train"]
    seen = train.x[: GALLERY_GAN["quick_rows"]] if quick and mnist is not None else train.x
    start = time.perf_counter()
    history = report.fit(gan, seen, TrainConfig(**{**settings, "epochs": epochs, "seed": seed}),
                  progress=report.training("GAN on digits"))  # fmt: skip
    seconds = time.perf_counter() - start
    partial = seen.shape[0] < train.n  # --quick on MNIST: the table and the text say so
    sec = Section(
        "The GAN on digits",
        "The same pushforward g#N(0, I) on images, fitted adversarially with the image defaults "
        "of `pushforward fit gan`: DCGAN's pair of conv networks at half its widths (g: k = 64 "
        "→ 7×7 maps → 14×14 → 28×28 through transposed convolutions of "
        f"{gan.net.hidden[1]} and {gan.net.hidden[0]} channels; the critic: convolutions back "
        "down to one logit), the non-saturating game with R1 at the data and a running average "
        f"of g's weights. Here for {epochs} epoch(s)"
        + (f" over the first {seen.shape[0]:,} training digits" if partial else "")
        + f", {seconds:.0f} s on this machine; "
        "BENCHMARKS.md has the same setting after longer training. The interpolation walks great "
        "circles between pairs of latent draws. The table sets the GAN's Fréchet distance "
        "beside the VAE's of the section above, on the same held-out digits, in the feature "
        "space of the digit classifier (its held-out accuracy beside each); two halves of the "
        "real held-out digits give the floor.",
    )
    with torch.no_grad():
        images = gan.sample(64, generator=torch.Generator().manual_seed(seed))
    fig = plots.image_grid(images.clamp(0, 1), ds.image_shape, ncols=16, scale=0.42,
                           title=f"{label}: samples of the GAN")  # fmt: skip
    report.figure(sec, fig, f"gan_samples_{label.lower()}", f"{label}: GAN samples")
    fig = plots.image_grid(interpolation(gan, 6, 12, seed), ds.image_shape, ncols=12,
                           scale=0.42, title=f"{label}: g along great circles in z")  # fmt: skip
    report.figure(sec, fig, f"gan_interpolation_{label.lower()}", f"{label}: latent interpolation")
    fig = plots.gan_curves(history, title=f"{label}: the GAN's losses and gradient norms")
    report.figure(sec, fig, f"gan_curves_{label.lower()}", f"{label}: training health")
    fd = image_quality(lambda n, g: gan.sample(n, generator=g), test, ds, seed=seed)
    seen_rows = f", {seen.shape[0]:,} rows seen" if partial else ""
    rows = [_row(f"GAN (k = {gan.latent}, conv {gan.net.hidden}{seen_rows})", epochs, fd)]
    header = [f"{label}: {train.n:,} to train, {test.n:,} held out", "epochs",
              "Fréchet distance", "real floor", "feature net accuracy %"]  # fmt: skip
    sec.tables.append((header, rows))
    return sec


def _row(model: str, epochs: int, q: dict[str, Any]) -> list[str]:
    return [model, str(epochs), f"{q['frechet_distance']:.1f}",
            f"{q['frechet_distance_floor']:.1f}", f"{100 * q['feature_accuracy']:.1f}"]  # fmt: skip


def with_vae_rows(sec: Section, mnist: str | None, trained: dict[str, Any]) -> Section:
    """Return the GAN's section ``sec`` with the VAEs' Fréchet distances, left in ``trained`` by
    :func:`~pushforward.gallery.sections.vae_digits.vae_digits_section`, above the GAN's row."""
    label = "MNIST" if mnist is not None else "digits"
    if f"vae_{label}" in trained:
        vae_fd, vae_mix, vae_epochs = trained[f"vae_{label}"]
        _, rows = sec.tables[0]
        priors = (("z ~ N(0, I)", vae_fd), ("mixture prior", vae_mix))
        rows[:0] = [_row(f"VAE (k = 2, MLP), {name}", vae_epochs, q) for name, q in priors]
    return sec

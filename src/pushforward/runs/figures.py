"""The figures of a run folder: reconstructions, latents, samples, the decoded manifold, the
training error against PCA's, the training curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pushforward.core import FIGURES, Model, lookup, save_figure
from pushforward.data import datasets
from pushforward.runs import plots
from pushforward.train import read_metrics, to_model_device

__all__ = ["codes", "manifold", "write_figures"]


def codes(model: Model, x: Tensor) -> Tensor:
    """Return the latent codes (n, k) of x (n, d) under a model with an encoder, on the CPU (x
    is moved to the model's device for the computation)."""
    with torch.no_grad():
        return model.encode(to_model_device(x, model)).cpu()


def _decode(model: Model, z: Tensor) -> Tensor:
    """Return the decoded points (n, d) of z (n, k), computed on the model's device, on the
    CPU."""
    with torch.no_grad():
        return model.decode(to_model_device(z, model)).cpu()


def write_figures(folder: Path, model: Model, ds: datasets.Dataset) -> list[Path]:
    """Draw the run's figures into ``folder/figures``: reconstructions and latents (models with
    an encoder), samples (generative models), the training error against PCA's for every latent
    size (encoders with a bottleneck, latent < d: a bijection's error is its solver's), the
    training curves. The model computes on its own device; the data ``ds`` (on the CPU) go there
    and the results come back for drawing."""
    out = []
    figs = folder / FIGURES
    if model.has_encoder:
        out += _encoder_figures(figs, model, ds)
    if model.generative:
        with torch.no_grad():
            samples = model.sample(
                64 if ds.image_shape else 2500, generator=torch.Generator().manual_seed(0)
            ).cpu()
        label = model.sample_label
        if ds.image_shape is not None:
            fig = plots.image_grid(
                samples.float().clamp(0, 1), ds.image_shape, ncols=16, title=label
            )
        elif ds.dim == 2:
            fig = plots.scatter_2d(ds.x[:2500], others=[(samples, label)], title="data and samples")
        else:
            fig = None
        if fig is not None:
            out.append(save_figure(fig, figs / "samples.png"))
    measure = model.latent_measure
    images = ds.image_shape is not None
    if measure is not None and measure.has_quantile and model.latent == 2 and images:
        fig = plots.image_grid(
            manifold(model, 15), ds.image_shape, ncols=15, title="decoded manifold", scale=0.45
        )
        out.append(save_figure(fig, figs / "manifold.png"))
    if model.has_encoder and model.latent < ds.dim:  # a bottleneck: the error says something
        fig = _error_vs_k_figure(model, ds.x)
        out.append(save_figure(fig, figs / "error_vs_k.png"))
    history = read_metrics(folder)
    if history:
        fig = lookup(plots.HISTORY_PLOTS, model.history_plot, what="history plot")(history)
        out.append(save_figure(fig, figs / "loss.png"))
    return out


def _encoder_figures(figs: Path, model: Model, ds: datasets.Dataset) -> list[Path]:
    """Reconstructions (images, or 2-D points) and the latent codes coloured by label."""
    out = []
    x = ds.x[:16]
    recon = _decode(model, codes(model, x))
    z = codes(model, ds.x[:5000])
    labels = ds.labels[:5000] if ds.labels is not None else None
    if ds.image_shape is not None:
        grid = torch.cat([x, recon.to(x.dtype).clamp(0, 1)])
        fig = plots.image_grid(
            grid, ds.image_shape, ncols=16, title="originals (top), reconstructions"
        )
        out.append(save_figure(fig, figs / "reconstructions.png"))
    elif ds.dim == 2:
        back = _decode(model, z)
        fig = plots.scatter_2d(ds.x[:5000], others=[(back, "g(f(x))")], title="reconstructions")
        out.append(save_figure(fig, figs / "reconstructions.png"))
    if z.shape[1] >= 2:
        fig = plots.scatter_2d(z[:, :2], labels=labels, title=model.code_label, size=3.0)
        out.append(save_figure(fig, figs / "latent.png"))
    return out


def manifold(model: Model, side: int = 15) -> Tensor:
    """Return decoded images (side², d) on a grid of 2-D latents spaced by the inverse marginal
    CDFs of the model's base measure μ (one with a quantile function).

    z = (F₁⁻¹(u), F₂⁻¹(v)) for u, v evenly spaced in (0, 1) (Φ⁻¹ for a Gaussian μ): each cell
    of a product measure holds equal prior mass; for a mixture prior, each row and each column
    of cells does.
    """
    u = torch.linspace(0.5 / side, 1 - 0.5 / side, side)
    uu = torch.stack(torch.meshgrid(u, u.flip(0), indexing="xy"), dim=-1).reshape(-1, 2)
    grid = model.latent_measure.quantile(to_model_device(uu, model))  # (side², 2)
    return _decode(model, grid).clamp(0, 1)


def _error_vs_k_figure(model: Model, x: Tensor) -> Any:
    """PCA's training error for every k (one SVD) beside this model's, both in squared ℓ2."""
    n, d = x.shape
    s2 = torch.linalg.svdvals((x - x.mean(0)).double()).pow(2)
    kmax = min(32, d, n - 1)
    ks = list(range(1, kmax + 1))
    pca = [float(s2[k:].sum()) / n for k in ks]
    own = float((_decode(model, codes(model, x)).to(x.dtype) - x).pow(2).sum(1).mean())
    name = type(model).__name__
    curves = {"PCA (closed form)": (ks, pca), f"this {name}": ([model.latent], [own])}
    return plots.error_vs_k(curves, title="training error against latent size k")

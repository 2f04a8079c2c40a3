"""The gallery's section on the data the models learn: the mixtures, moons and digits."""

from __future__ import annotations

import torch

from pushforward.data import datasets
from pushforward.gallery.page import Report, Section
from pushforward.runs import plots

__all__ = ["data_section"]


def data_section(report: Report, n: int, seed: int, mnist: str | None) -> Section:
    """Return the section showing ``n`` points of each 2-D data set and the first 64 images of
    the digits (and of MNIST, when ``mnist`` names its data spec)."""
    sec = Section(
        "The data the models learn",
        "The 2-D Gaussian mixtures of the PacGAN benchmark (ring8: 8 modes on the unit circle, "
        "std 0.01; grid25: 25 modes on {−4, −2, 0, 2, 4}², std 0.05), two moons, and "
        "handwritten digits: scikit-learn's 8×8 digits, and MNIST when its files are present.",
    )
    rows = []
    for name in ("ring8", "grid25", "moons"):
        ds = datasets.load_data(name, n=n, generator=torch.Generator().manual_seed(seed))
        fig = plots.scatter_2d(ds.x, title=f"{name}: {ds.n:,} points", size=1.0)
        report.figure(sec, fig, f"data_{name}", f"{name}, {ds.n:,} samples")
        rows.append([name, f"{ds.n:,} × {ds.dim}", "—" if ds.labels is None else "yes"])
    specs = ["digits"] + ([mnist] if mnist else [])
    for spec in specs:
        ds = datasets.load_data(spec)
        assert ds.image_shape is not None
        fig = plots.image_grid(ds.x[:64], ds.image_shape, ncols=16, title=f"{ds.name}: first 64")
        report.figure(sec, fig, f"data_{ds.name}", f"{ds.name}: the first 64 of {ds.n:,} images")
        rows.append([ds.name, f"{ds.n:,} × {ds.dim}", "0–9"])
    sec.tables.append((["data", "shape", "labels"], rows))
    return sec

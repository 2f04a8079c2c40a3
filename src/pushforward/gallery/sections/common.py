"""What the gallery's sections on 2-D data share: the plane around the data, a grid over it,
and the frames of a training animation."""

from __future__ import annotations

import torch
from torch import Tensor

from pushforward.data import datasets
from pushforward.runs import plots
from pushforward.train import SampleSnapshots

__all__ = ["FRAMES", "every", "extent_of", "grid_over", "mixture_gif"]

FRAMES = 12
"""Frames of each training animation in the full gallery (8 in ``--quick``)."""


def every(epochs: int, quick: bool) -> int:
    """Epochs between the frames of a training animation of ``epochs`` epochs."""
    return max(1, epochs // (8 if quick else FRAMES))


def extent_of(ds: datasets.Dataset) -> tuple[float, float, float, float]:
    """The square (x_min, x_max, y_min, y_max) around 2-D data, with a margin of 0.5."""
    lo, hi = float(ds.x.min()) - 0.5, float(ds.x.max()) + 0.5
    return lo, hi, lo, hi


def grid_over(ds: datasets.Dataset, side: int) -> tuple[Tensor, tuple[float, float, float, float]]:
    """Return a side × side grid of points (side², 2) over :func:`extent_of` and that extent."""
    box = extent_of(ds)
    t = torch.linspace(box[0], box[1], side)
    return torch.stack(torch.meshgrid(t, t, indexing="xy"), dim=-1).reshape(-1, 2), box


def mixture_gif(name: str, ds: datasets.Dataset, snaps: SampleSnapshots) -> bytes:
    """Return the animated GIF of a training run on the 2-D data ``ds`` named ``name``: one
    frame for each snapshot, its samples over the data (first 2,000 points)."""
    frames = [(y, f"{name}: epoch {e}") for e, y in snaps.frames]
    return plots.scatter_gif(ds.x[:2000], frames, label="g#μ", ax_limits=extent_of(ds))

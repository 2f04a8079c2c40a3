"""Pure functions that return matplotlib figures; callers save them (nothing is shown).

Figures are built on ``matplotlib.figure.Figure`` directly, never through pyplot's global state,
so they are safe in libraries, tests and worker processes.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "HISTORY_PLOTS",
    "density_heatmap",
    "density_histogram",
    "error_vs_k",
    "gan_curves",
    "gif_bytes",
    "image_grid",
    "loss_curves",
    "pmf_bars",
    "scatter_2d",
    "scatter_gif",
]

COLORS = "tab10"

DATA_COLOR = "#3182bd"
"""The data's points in a scatter (blue)."""

LAYER_COLORS = ("#e6550d", "#31a354", "#756bb1", "#636363")
"""The layers drawn over the data, in turn: model samples first, in orange (the default colour
cycle would start at a blue a shade from the data's)."""


def _figure(**options: Any) -> Figure:
    """Return a new ``matplotlib.figure.Figure(**options)``. matplotlib is imported here, at the
    first figure: importing it takes about 0.45 s (the 2-core AMD EPYC with AVX2), which a
    command that draws nothing (a rank other than 0, ``sample``, ``--help``) need not pay."""
    from matplotlib.figure import Figure

    return Figure(**options)


def _numpy(x: Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)


def density_histogram(
    samples: Tensor,
    log_density: Callable[[Tensor], Tensor] | None = None,
    *,
    title: str = "",
    bins: int = 100,
    support: tuple[float, float] | None = None,
) -> Figure:
    """Return a histogram of samples (n,) or (n, 1) with the exact density p(y) drawn over it.

    ``log_density`` maps a (m,) float64 tensor of points to (m,) log-densities.
    """
    y = _numpy(samples).reshape(-1)
    lo, hi = support if support is not None else (float(np.min(y)), float(np.max(y)))
    fig = _figure(figsize=(5.0, 3.4), layout="constrained")
    ax = fig.add_subplot()
    ax.hist(
        y, bins=bins, range=(lo, hi), density=True, color="#9ecae1", label=f"{y.size:,} samples"
    )
    if log_density is not None:
        grid = torch.linspace(lo, hi, 801, dtype=torch.float64)
        p = log_density(grid).exp().numpy()
        ax.plot(grid.numpy(), p, color="#d62728", lw=1.8, label="exact density")
        finite = p[np.isfinite(p)]
        if finite.size:
            # singular densities (1/(2√y) at 0) would flatten the picture; cap the axis
            hist_top = np.histogram(y, bins=bins, range=(lo, hi), density=True)[0].max()
            ax.set_ylim(0, 1.15 * max(hist_top, np.percentile(finite, 95)))
    ax.set_xlabel("y")
    ax.set_ylabel("density")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    return fig


def pmf_bars(pmf: Mapping[Hashable, Fraction], *, title: str = "") -> Figure:
    """Return a bar chart of an exact pmf, each bar labelled with its fraction."""
    fig = _figure(figsize=(5.0, 3.4), layout="constrained")
    ax = fig.add_subplot()
    labels = [str(v) for v in pmf]
    heights = [float(p) for p in pmf.values()]
    bars = ax.bar(labels, heights, color="#6baed6")
    for bar, p in zip(bars, pmf.values(), strict=True):
        ax.annotate(
            str(p), (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center", va="bottom", fontsize=7,
        )  # fmt: skip
    ax.set_ylabel("probability")
    ax.set_ylim(0, max(heights) * 1.18)
    ax.set_title(title, fontsize=10)
    return fig


def scatter_2d(
    x: Tensor,
    *,
    labels: Tensor | None = None,
    others: Sequence[tuple[Tensor, str]] = (),
    title: str = "",
    size: float = 2.0,
    ax_limits: tuple[float, float, float, float] | None = None,
) -> Figure:
    """Return a scatter plot of points x (n, 2), coloured by integer labels (n,) when given.

    ``others`` are further (points (m, 2), legend label) layers drawn on top, e.g. model samples.
    """
    pts = _numpy(x)
    fig = _figure(figsize=(4.6, 4.2), layout="constrained")
    ax = fig.add_subplot()
    if labels is not None:
        lab = _numpy(labels)
        sc = ax.scatter(pts[:, 0], pts[:, 1], c=lab, cmap=COLORS, s=size, vmin=-0.5, vmax=9.5)
        if lab.max() < 10:
            fig.colorbar(sc, ax=ax, ticks=np.unique(lab), shrink=0.8, label="label")
    else:
        ax.scatter(pts[:, 0], pts[:, 1], s=size, color=DATA_COLOR, alpha=0.5, label="data")
    for (layer, name), color in zip(others, itertools.cycle(LAYER_COLORS)):
        q = _numpy(layer)
        ax.scatter(q[:, 0], q[:, 1], s=size, alpha=0.6, label=name, color=color)
    if others:
        ax.legend(fontsize=8, markerscale=4, frameon=False)
    if ax_limits is not None:
        ax.set_xlim(*ax_limits[:2])
        ax.set_ylim(*ax_limits[2:])
        ax.set_aspect("equal", adjustable="box")
    else:
        ax.set_aspect("equal", adjustable="datalim")
    ax.set_title(title, fontsize=10)
    return fig


def image_grid(
    images: Tensor,
    image_shape: tuple[int, int],
    *,
    ncols: int | None = None,
    title: str = "",
    scale: float = 0.6,
) -> Figure:
    """Return a grid of grey images from rows (n, h·w) with values in [0, 1], drawn as one
    picture: the images tiled with a one-pixel white gap (one axes and one ``imshow``, so that a
    15×15 grid draws in milliseconds rather than seconds)."""
    imgs = _numpy(images).reshape(-1, *image_shape)
    n = imgs.shape[0]
    ncols = ncols or min(n, math.ceil(math.sqrt(n)))
    nrows = math.ceil(n / ncols)
    h, w = image_shape
    tiled = np.zeros((nrows * (h + 1) - 1, ncols * (w + 1) - 1), dtype=np.float32)
    for i in range(n):
        r, c = divmod(i, ncols)
        tiled[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = imgs[i]
    fig = _figure(figsize=(scale * ncols + 0.2, scale * nrows + (0.4 if title else 0.1)))
    ax = fig.add_axes((0.01, 0.01, 0.98, (0.9 if title else 0.99) - 0.01))
    ax.set_axis_off()
    ax.imshow(tiled, cmap="gray_r", vmin=0, vmax=1, interpolation="nearest", aspect="auto")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def loss_curves(history: Sequence[Mapping[str, float]], *, title: str = "training") -> Figure:
    """Return the per-epoch curves of every loss term in ``history`` (records from metrics.jsonl).

    Each numeric key other than bookkeeping (epoch, seconds, samples_per_s) becomes one curve, so
    a VAE's reconstruction and KL terms, or a GAN's two losses, appear apart.
    """
    skip = {"epoch", "seconds", "samples_per_s"}
    epochs = [r["epoch"] for r in history]
    keys = [k for k in history[0] if k not in skip and isinstance(history[0][k], float)]
    fig = _figure(figsize=(5.0, 3.4), layout="constrained")
    ax = fig.add_subplot()
    for k in keys:
        ax.plot(epochs, [r.get(k, np.nan) for r in history], label=k, lw=1.5)
    values = np.array([r.get(k, np.nan) for r in history for k in keys], dtype=float)
    if values.size and np.nanmin(values) > 0 and np.nanmax(values) / np.nanmin(values) > 50:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean per example")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    return fig


def gan_curves(history: Sequence[Mapping[str, float]], *, title: str = "GAN training") -> Figure:
    """Return a GAN's training health per epoch: its two losses (and the gradient penalty) on the
    left, the critic's and the generator's gradient norms on the right (log scale)."""
    epochs = [r["epoch"] for r in history]
    fig = _figure(figsize=(8.0, 3.2), layout="constrained")
    left, right = fig.subplots(1, 2)
    for ax, keys, ylabel in (
        (left, ("critic_loss", "gen_loss", "gradient_penalty"), "loss"),
        (right, ("critic_grad_norm", "gen_grad_norm"), "gradient norm"),
    ):
        for k in keys:
            if any(k in r for r in history):
                ax.plot(epochs, [r.get(k, np.nan) for r in history], label=k, lw=1.5)
        if ylabel == "gradient norm" and ax.lines:
            values = np.array([line.get_ydata() for line in ax.lines], dtype=float)
            if np.nanmin(values) > 0:
                ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        if ax.lines:
            ax.legend(fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    return fig


# how a model's training history is drawn, by the name it declares (Model.history_plot)
HISTORY_PLOTS = {"loss": loss_curves, "gan": gan_curves}


def error_vs_k(
    curves: Mapping[str, tuple[Sequence[int], Sequence[float]]], *, title: str = ""
) -> Figure:
    """Return reconstruction error against latent size k, one line per method name."""
    fig = _figure(figsize=(5.0, 3.4), layout="constrained")
    ax = fig.add_subplot()
    for name, (ks, errs) in curves.items():
        ax.plot(list(ks), list(errs), marker="o", label=name)
    ax.set_xlabel("latent dimension k")
    ax.set_ylabel("reconstruction error per example")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    return fig


def density_heatmap(
    log_density: Tensor,
    extent: tuple[float, float, float, float],
    *,
    points: Tensor | None = None,
    title: str = "",
) -> Figure:
    """Return a heat map of a density given on a grid: ``log_density`` (H, W) over ``extent``.

    ``extent`` is (x_min, x_max, y_min, y_max); row 0 of the grid is y_min. Optional ``points``
    (n, 2) are drawn on top.
    """
    fig = _figure(figsize=(4.6, 4.2), layout="constrained")
    ax = fig.add_subplot()
    lp = _numpy(log_density).astype(float)
    finite = lp[np.isfinite(lp)]
    # log scale, robust to the few grid points where a Monte Carlo estimate overshoots
    hi = float(np.percentile(finite, 99.5)) if finite.size else 0.0
    lo = max(float(np.percentile(finite, 1)) if finite.size else hi - 1, hi - 15.0)
    im = ax.imshow(np.clip(lp, lo, hi), origin="lower", extent=extent, cmap="magma",
                   aspect="equal", vmin=lo, vmax=hi)  # fmt: skip
    fig.colorbar(im, ax=ax, shrink=0.8, label="log density")
    if points is not None:
        q = _numpy(points)
        ax.scatter(q[:, 0], q[:, 1], s=0.5, color="#7fdbff", alpha=0.4)
    ax.set_xlim(*extent[:2])
    ax.set_ylim(*extent[2:])
    ax.set_title(title, fontsize=10)
    return fig


def trajectories(
    paths: Tensor,
    *,
    data: Tensor | None = None,
    title: str = "",
    ax_limits: tuple[float, float, float, float] | None = None,
) -> Figure:
    """Return the lines of particles moving in the plane: ``paths`` (T, n, 2), one line per
    particle from its start (a dot) to its end (a cross), over ``data`` (m, 2) when given."""
    p = _numpy(paths)
    fig = _figure(figsize=(4.6, 4.2), layout="constrained")
    ax = fig.add_subplot()
    if data is not None:
        q = _numpy(data)
        ax.scatter(q[:, 0], q[:, 1], s=1.0, color="#bbbbbb", alpha=0.5, label="data")
    ax.plot(p[:, :, 0], p[:, :, 1], lw=0.5, color="#3182bd", alpha=0.35)
    ax.scatter(p[0, :, 0], p[0, :, 1], s=3, color="#31a354", label="t = 0 (μ)")
    ax.scatter(p[-1, :, 0], p[-1, :, 1], s=6, marker="x", color="#e6550d", label="t = 1")
    ax.legend(fontsize=8, markerscale=2, frameon=False)
    if ax_limits is not None:
        ax.set_xlim(*ax_limits[:2])
        ax.set_ylim(*ax_limits[2:])
    ax.set_aspect("equal", adjustable="box" if ax_limits is not None else "datalim")
    ax.set_title(title, fontsize=10)
    return fig


def scatter_gif(
    background: Tensor,
    frames: Sequence[tuple[Tensor, str]],
    *,
    label: str,
    size: float = 1.5,
    ax_limits: tuple[float, float, float, float] | None = None,
    duration_ms: int = 250,
    dpi: int = 80,
) -> bytes:
    """Return an animated GIF (looping) of the frames (points (m, 2), title) drawn over the
    points ``background`` (n, 2), each frame as :func:`scatter_2d` draws it with ``others`` =
    [(points, ``label``)], laid out once: the axes, their ticks, the background and the legend
    are drawn once and each frame's points and title blitted over them, so that a frame costs
    its points, not the axes' text (a quarter of :func:`gif_bytes` of the figures in all), and
    nothing but the points and the title moves from frame to frame."""

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    fig = scatter_2d(background, others=[(frames[0][0], label)], title=frames[0][1], size=size,
                     ax_limits=ax_limits)  # fmt: skip
    fig.set_dpi(dpi)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()  # the layout, once, then kept where it put the axes
    where = [a.get_position() for a in fig.axes]
    fig.set_layout_engine("none")
    for a, box in zip(fig.axes, where, strict=True):
        a.set_position(box)
    ax = fig.axes[0]
    moving, title = ax.collections[-1], ax.title  # the legend stays where the first frame put it
    anchor = title.get_position()
    for artist in (moving, title):
        artist.set_visible(False)
    canvas.draw()
    still = canvas.copy_from_bbox(fig.bbox)
    for artist in (moving, title):
        artist.set_visible(True)
    title.set_position(anchor)  # (a hidden title is placed elsewhere by the draw)
    images = []
    for points, text in frames:
        moving.set_offsets(_numpy(points))
        title.set_text(text)
        canvas.restore_region(still)
        ax.draw_artist(moving)
        ax.draw_artist(title)
        images.append(Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3]))
    return _gif(images, duration_ms)


def gif_bytes(figures: Sequence[Figure], *, duration_ms: int = 250, dpi: int = 80) -> bytes:
    """Return an animated GIF (looping) whose frames are the given figures, in order."""
    import io

    from PIL import Image

    frames = []
    # every frame shows the same axes: lay out the first (constrained layout is most of a
    # frame's cost) and give the others its positions
    first = figures[0] if figures else None
    if first is not None and first.get_layout_engine() is not None:
        first.canvas.draw()
        where = [ax.get_position() for ax in first.axes]
        for fig in figures[1:]:
            if len(fig.axes) == len(where):
                fig.set_layout_engine("none")
                for ax, box in zip(fig.axes, where, strict=True):
                    ax.set_position(box)
    for fig in figures:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi)
        buf.seek(0)
        frames.append(Image.open(buf))
    return _gif(frames, duration_ms)


def _gif(frames: Sequence[Any], duration_ms: int) -> bytes:
    """Return the PIL images ``frames`` as an animated GIF (looping), each on its own palette."""
    import io

    from PIL import Image

    paletted = [f.convert("P", palette=Image.Palette.ADAPTIVE) for f in frames]
    out = io.BytesIO()
    paletted[0].save(out, format="GIF", save_all=True, append_images=paletted[1:],
                     duration=duration_ms, loop=0)  # fmt: skip
    return out.getvalue()

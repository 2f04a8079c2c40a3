"""The gallery's section on flow matching: μ carried to the data along the ODE, the paths, and
the exact densities of the moving particles."""

from __future__ import annotations

from typing import Any

import torch

from pushforward.data import datasets
from pushforward.gallery.page import Report, Section
from pushforward.gallery.sections.common import FRAMES, extent_of, grid_over
from pushforward.runs import plots

__all__ = ["FM_TIMES", "fm_epochs", "fm_mixture", "fm_section"]


def fm_epochs(quick: bool) -> int:
    """Epochs of flow matching: a tenth of the benchmark's, a fortieth in ``--quick``."""
    from pushforward.models.fm import RECOMMENDED

    return max(1, RECOMMENDED["train"]["epochs"] // (40 if quick else 10))


FM_TIMES = (0.5, 0.8, 1.0)
"""The times t of the heat maps of the exact marginal density p_t."""


def fm_section(quick: bool) -> Section:
    """Return the section on flow matching, its text only; the chains add the figures."""
    from pushforward.models.fm import RECOMMENDED

    return Section(
        "Flow matching: the pushforward as a motion",
        "Flow matching moves μ continuously: a network v(t, x) defines the ODE dx/dt = v(t, x), "
        "and g is its flow map from t = 0 (μ = N(0, I)) to t = 1. It is trained by regression "
        "(draw x₀ ~ μ, a data point x₁ and t, and fit v(t, t·x₁ + (1 − t)·x₀) to x₁ − x₀), "
        "with no ODE solved in training; sampling solves the ODE (adaptive Dormand–Prince, "
        "its number of field evaluations in each caption). The density stays exact through the "
        "instantaneous change of variables, log q(x) = log μ(x₀) − ∫₀¹ tr ∂v/∂x dt. Here "
        f"{fm_epochs(quick)} of the benchmarked {RECOMMENDED['train']['epochs']} epochs: the "
        "animation carries 1,000 "
        "draws of μ to the data, the lines are their paths, and the heat maps are the exact "
        "density of the moving particles at t = " + ", ".join(f"{t:g}" for t in FM_TIMES) + ".",
    )


def fm_mixture(report: Report, sec: Section, name: str, ds: datasets.Dataset, quick: bool,
                seed: int) -> Any:  # fmt: skip
    """Train flow matching on ``ds`` (n, 2); add its motion, paths and exact marginal densities
    at :data:`FM_TIMES` to ``sec``; return the model."""
    from pushforward.models.fm import RECOMMENDED, FlowMatching, FlowMatchingConfig
    from pushforward.train import TrainConfig, seeded

    settings = RECOMMENDED["train"]
    with seeded(seed):
        model = FlowMatching(FlowMatchingConfig(dim=2, **RECOMMENDED["model"]))
    batch = settings["batch_size"] if settings["batch_size"] < ds.n else 0  # 0: full batch
    cfg = TrainConfig(**{**settings, "epochs": fm_epochs(quick), "seed": seed,
                         "batch_size": batch})  # fmt: skip
    report.fit(model, ds.x, cfg, progress=report.training(f"flow matching on {name}"))
    extent = extent_of(ds)
    steps = torch.linspace(0, 1, 9 if quick else 2 * FRAMES + 1)
    path = model.motion(1000, steps, generator=torch.Generator().manual_seed(seed))
    nfe = model.sampling_cost()["nfe"]
    frames = [(p, f"{name}: t = {float(t):.2f}") for t, p in zip(steps, path, strict=True)]
    gif = plots.scatter_gif(ds.x[:2000], frames, label="particles", ax_limits=extent)
    caption = f"{name}: μ carried to the data ({nfe} field evaluations)"
    report.animation(sec, gif, f"fm_motion_{name}", caption)
    fig = plots.trajectories(path[:, :300], data=ds.x[:2000], ax_limits=extent,
                             title=f"{name}: paths of the ODE")  # fmt: skip
    report.figure(sec, fig, f"fm_paths_{name}", f"{name}: 300 paths from μ to the data")
    side = 32 if quick else 64
    grid, extent = grid_over(ds, side)
    saved = model.sampling_settings()
    model.set_sampling(rtol=1e-3, atol=1e-3)  # pictures need no more; the table uses 1e-5
    for t in FM_TIMES:
        with torch.no_grad():
            lp = model.marginal_log_prob(grid, t).reshape(side, side)
        fig = plots.density_heatmap(lp, extent, title=f"{name}: log p_t at t = {t:g}")
        report.figure(sec, fig, f"fm_density_{name}_{t:g}", f"{name}: exact log p_t, t = {t:g}")
    model.set_sampling(**saved)
    return model

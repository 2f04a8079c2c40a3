"""The gallery's section on pushforwards with exact densities: the spline flow on the mixtures
beside the true density, and a masked autoregressive flow on dequantised digits."""

from __future__ import annotations

from typing import Any

import torch

from pushforward.data import datasets
from pushforward.gallery.page import Report, Section
from pushforward.gallery.sections.common import every, grid_over, mixture_gif
from pushforward.runs import plots
from pushforward.train import SampleSnapshots

__all__ = ["flow_digits", "flow_epochs", "flow_mixture", "flow_section"]


def flow_epochs(quick: bool) -> int:
    """Epochs of the mixture flow: a third of the benchmark's, an eighteenth in ``--quick``."""
    from pushforward.models.flow import RECOMMENDED

    return max(1, RECOMMENDED["train"]["epochs"] // (18 if quick else 3))


def flow_section(quick: bool) -> Section:
    """Return the section on flows, its text only; the chains and :func:`flow_digits` fill it."""
    from pushforward.models.flow import RECOMMENDED

    return Section(
        "Pushforwards with exact densities",
        "A normalizing flow is a pushforward g#N(0, I) with g invertible, so its density is the "
        "lecture's change of variables in d dimensions: log q(x) = log μ(g⁻¹(x)) + "
        "log |det ∂g⁻¹/∂x|. Trained by maximum likelihood (here the benchmarked neural spline "
        f"flow: {RECOMMENDED['model']['layers']} rational-quadratic coupling layers of "
        f"{RECOMMENDED['model']['bins']} bins, for {flow_epochs(quick)} of its "
        f"{RECOMMENDED['train']['epochs']} epochs), its density can be set beside the truth's: "
        "the heat maps show log q of the "
        "flow next to log p of the mixture it learned. Last, a flow on images: pixels are "
        "dequantised (uniform noise spreads each 8-bit value over its bin) and sent through a "
        "logit, both Jacobians counted, so that held-out digits get an exact likelihood in "
        "bits per dimension of the discrete data (8 would be a uniform guess).",
    )


def flow_mixture(report: Report, sec: Section, name: str, ds: datasets.Dataset, quick: bool,
                  seed: int) -> Any:  # fmt: skip
    """Train the recommended spline flow on ``ds`` (n, 2); add its animation, exact density
    beside the truth's and its samples to ``sec``; return the flow."""
    from pushforward.models.flow import RECOMMENDED, Flow, FlowConfig
    from pushforward.train import TrainConfig, seeded

    epochs = flow_epochs(quick)
    with seeded(seed):
        flow = Flow(FlowConfig(dim=2, **RECOMMENDED["model"]))
    snaps = SampleSnapshots(flow, 1000, every=every(epochs, quick), seed=seed)
    report.fit(flow, ds.x, TrainConfig(**{**RECOMMENDED["train"], "epochs": epochs, "seed": seed}),
        progress=report.training(f"flow on {name}", snaps))  # fmt: skip
    report.animation(sec, mixture_gif(name, ds, snaps), f"flow_train_{name}", f"{name}: training")
    side = 60 if quick else 200
    grid, extent = grid_over(ds, side)
    with torch.no_grad():
        log_q = flow.log_prob(grid).reshape(side, side)
    log_p = ds.distribution.log_prob(grid.double()).reshape(side, side)
    fig = plots.density_heatmap(log_p, extent, title=f"{name}: the truth, log p")
    report.figure(sec, fig, f"truth_density_{name}", f"{name}: the true density")
    fig = plots.density_heatmap(log_q, extent, title=f"{name}: the flow, log q (exact)")
    report.figure(sec, fig, f"flow_density_{name}", f"{name}: the flow's exact density")
    with torch.no_grad():
        y = flow.sample(2000, generator=torch.Generator().manual_seed(seed))
    fig = plots.scatter_2d(ds.x[:2000], others=[(y, "flow samples")], size=1.5,
                           ax_limits=extent, title=f"{name}: samples of the flow")  # fmt: skip
    report.figure(sec, fig, f"flow_samples_{name}", f"{name}: flow samples over the data")
    return flow


def flow_digits(report: Report, sec: Section, quick: bool, seed: int) -> None:
    """Train a masked autoregressive flow on dequantised 8×8 digits; add its samples and a table
    of its exact held-out likelihood (nats and bits/dim) to ``sec``."""
    from pushforward.models.flow import Flow, FlowConfig
    from pushforward.train import TrainConfig, seeded

    train, test = datasets.train_test_split(datasets.load_digits(), 1500)
    digit_epochs = 10 if quick else 40
    with seeded(seed):
        flow = Flow(FlowConfig(dim=64, transform="maf", layers=5, hidden=[256], image_shape=(8, 8)))
    report.fit(flow, train.x, TrainConfig(epochs=digit_epochs, batch_size=128, lr=1e-3, seed=seed),
        progress=report.training("MAF on 8×8 digits"))  # fmt: skip
    r = flow.evaluate(test.x, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        images = flow.sample(64, generator=torch.Generator().manual_seed(seed))
    title = f"digits: samples of a MAF ({r['bits_per_dim']:.2f} bits/dim)"
    fig = plots.image_grid(images.clamp(0, 1), (8, 8), ncols=16, scale=0.42, title=title)
    report.figure(sec, fig, "flow_samples_digits", "digits: samples of the flow")
    sec.tables.append((
        ["data", "flow", "train / test", "epochs", "held-out −log p(x), nats", "bits/dim"],
        [["digits (8×8)", "MAF, 5 layers of 256", f"{train.n:,} / {test.n:,}", str(digit_epochs),
          f"{r['nll']:.1f} ± {r['log_likelihood_stderr']:.1f}", f"{r['bits_per_dim']:.3f}"]],
    ))  # fmt: skip

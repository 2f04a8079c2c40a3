"""The gallery's opening sections: pushforwards of a uniform z through 1-D maps, and the exact
pushforward of two dice."""

from __future__ import annotations

import torch

from pushforward.gallery.page import Report, Section
from pushforward.measures import EXAMPLES, two_dice_sum
from pushforward.metrics import ks_critical_value, ks_distance
from pushforward.runs import plots

__all__ = ["dice_section", "univariate_section"]


def univariate_section(report: Report, n: int, seed: int) -> Section:
    """Return the section on y = g(z): ``n`` samples of each 1-D example, its exact density and
    the Kolmogorov–Smirnov distance to its exact CDF."""
    sec = Section(
        "The basic generative story: y = g(z), z uniform",
        "A generative network is a pushforward g#μ: draw z from an easy measure μ and output "
        "g(z). For a one-dimensional g the density of y sums over the preimages of y, "
        "p(y) = Σ p(x)/|g'(x)| over g(x) = y. Each histogram below holds samples of g#μ, "
        "and the red curve is the exact density. The Kolmogorov–Smirnov distance between "
        "samples and the exact CDF stays below the 0.1% critical value.",
    )
    rows = []
    for i, (name, ex) in enumerate(EXAMPLES.items()):
        gen = torch.Generator().manual_seed(seed + i)
        y = ex.make().sample(n, generator=gen)
        ks = ks_distance(y, ex.cdf)
        rows.append([name, ex.title, f"{n:,}", f"{ks:.4f}", f"{ks_critical_value(n):.4f}"])
        fig = plots.density_histogram(y, ex.log_density, title=ex.title, support=ex.support)
        report.figure(sec, fig, f"univariate_{name}", ex.title)
    sec.tables.append((["example", "map", "samples", "KS distance", "0.1% critical"], rows))
    return sec


def dice_section(report: Report) -> Section:
    """Return the section on the exact pmf of the sum of two fair dice."""
    y = two_dice_sum()
    sec = Section(
        "Discrete pushforwards, exactly",
        "Pushing two fair dice through g(x₁, x₂) = x₁ + x₂ sums the probability of every "
        f"outcome with the same total, in exact fractions: Pr[Y = 3] = {y.prob(3)}.",
    )
    fig = plots.pmf_bars(y.pmf, title="Y = X₁ + X₂ for two fair dice")
    report.figure(sec, fig, "two_dice", "The exact pmf of the sum of two dice")
    return sec

"""μ's mass on the explorer's latent canvas: where the latent measure μ (a VAE's prior or
sampler, a GAN's or a flow's noise) puts its mass, shaded under the codes over each plane the
canvas can show, so that a person sees whether μ's mass lies where the codes are (a VAE whose
N(0, I) fills the gaps between its codes' clusters decodes those gaps into the blur between
modes).

The canvas shows the plane through the codes' centre c (k,) spanned by two of its directions
u, v (rows of the plane's axes). At z = c + a·u + b·v the value is

    m(z) = Pr_{Z ~ μ}[p(Z) ≤ p(z)],

the share of μ's mass that is no denser than z: z lies in the highest-density region holding a
share α of μ's mass exactly when m(z) ≥ 1 − α, so the page's bands m ≥ 0.5, 0.1 and 0.01 are the
regions of μ's densest 50%, 90% and 99%. (A flat μ, the uniform noise of a GAN, has m = 1 on its
whole support, which is then one region holding all of the mass.) p is
:meth:`~pushforward.measures.BaseMeasure.log_prob` itself; the distribution of p(Z) comes from
seeded draws of μ. For k > 2 the plane is a slice through the k-dimensional regions. (For
μ = N(0, I) on two dimensions m(z) = exp(−|z|²/2).)
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import Tensor

__all__ = ["MASS_DIRECTIONS", "MASS_DRAWS", "MASS_SIDE", "grid_cells", "mass_planes", "prior_mass"]

MASS_SIDE = 64
"""Cells a side of each plane's grid of μ's density."""

MASS_DRAWS = 20_000
"""Draws of μ that give the distribution of p(Z): m(z) to a standard error ≤ 0.0036."""

MASS_DIRECTIONS = 6
"""For k > 2, the planes of any two of the first this many directions are shaded (15 planes);
a plane of a later direction is drawn without the shade."""


def grid_cells(lo: list[float], hi: list[float], side: int = MASS_SIDE) -> tuple[Tensor, Tensor]:
    """Return the coordinates a, b (side², ) of the centres of a side × side grid over the box
    [lo, hi] (cell (ix, iy) at row iy·side + ix, iy along the second coordinate): the cells of
    the shade, and of a precomputed grid of decodes."""
    cells = [lo[i] + (torch.arange(side, dtype=torch.float64) + 0.5) * (hi[i] - lo[i]) / side
             for i in (0, 1)]  # fmt: skip
    b, a = torch.meshgrid(cells[1], cells[0], indexing="ij")
    return a.reshape(-1), b.reshape(-1)


def prior_mass(
    measure: Any,
    center: Tensor,
    axes: Tensor,
    boxes: dict[tuple[int, int], tuple[list[float], list[float]]],
    *,
    generator: torch.Generator,
    draws: int = MASS_DRAWS,
) -> dict[str, Any] | None:
    """Return m(z) (see above) on the planes of ``boxes`` ((i, j), i < j: directions of
    ``axes`` (k, k) through ``center`` (k,) → the box [lo, hi] the canvas shows there): each a
    side × side grid of values in [0, 1] (planes, side², ), from ``draws`` draws of μ made with
    ``generator``. None when ``measure`` has no density (no latent measure, or one without
    ``log_prob``)."""
    if measure is None:
        return None
    planes, values = [], []
    with torch.no_grad():
        try:
            reference = measure.log_prob(measure.sample(draws, generator=generator).float())
        except NotImplementedError:
            return None
        reference = torch.nan_to_num(reference.double().cpu(), nan=-torch.inf).sort().values
        for (i, j), (lo, hi) in boxes.items():
            a, b = grid_cells(lo, hi)
            z = center.double() + a[:, None] * axes[i].double() + b[:, None] * axes[j].double()
            log_p = torch.nan_to_num(measure.log_prob(z.float()).double().cpu(), nan=-torch.inf)
            # the draws no denser than each cell, as a share of all draws
            below = torch.searchsorted(reference, log_p, side="right")
            planes.append([i, j])
            values.append(below.double() / draws)
    return {"side": MASS_SIDE, "planes": planes, "values": torch.stack(values).float()}


def mass_planes(k: int, sliders: bool) -> list[tuple[int, int]]:
    """Return the planes (i, j), i < j, the canvas may show: the first one alone without the
    sliders (k = 2, or a precomputed grid decoder), else any two of the first
    :data:`MASS_DIRECTIONS` directions."""
    if not sliders:
        return [(0, 1)]
    return list(itertools.combinations(range(min(k, MASS_DIRECTIONS)), 2))

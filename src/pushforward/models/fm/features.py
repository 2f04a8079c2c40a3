"""The Fourier features of the velocity field's input x: sin(Bx) and cos(Bx) for a fixed matrix of
frequencies B (:class:`FourierFeatures`), taken along the axes, in evenly spread directions that
include them, or in random directions that favour none."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = [
    "DIRECTIONS_PER_OCTAVE",
    "FEATURES",
    "FEATURE_SEED",
    "FourierFeatures",
    "constant",
    "frequency_matrix",
]

FEATURES: dict[str, str] = {
    "axes": "sin/cos(2ᵏxᵢ) for each coordinate i (runs stored before the setting; its errors "
    "are constant along the axes and draw ridges along them through the modes)",
    "isotropic": "sin/cos(2ᵏ ω·x) along random unit directions ω, drawn once from a fixed "
    "seed and stored with the weights (the default before 2026-12-07)",
    "even": "sin/cos(2ᵏ ω·x) along unit directions ω evenly spread over the half circle, the "
    "axes among them (in d ≠ 2: the d axes, then random directions as isotropic's)",
}

DIRECTIONS_PER_OCTAVE = 8
"""Directions ω per octave 2ᵏ of ``isotropic`` and ``even`` features (d of them at least)."""

FEATURE_SEED = 0
"""The seed of the generator that draws the ``isotropic`` directions."""


def frequency_matrix(kind: str, dim: int, frequencies: int) -> Tensor:
    """Return the frequencies B (m, d) of the features sin/cos(Bx) of ``kind`` (:data:`FEATURES`)
    on d = ``dim`` coordinates with F = ``frequencies`` octaves 2ᵏ, k < F.

    ``axes``: the m = d·F rows 2ᵏ·eᵢ, ordered by coordinate i, then k. ``isotropic``: for each k,
    R = max(d, :data:`DIRECTIONS_PER_OCTAVE`) rows 2ᵏ·ω with ω uniform on the unit sphere, from a
    generator seeded :data:`FEATURE_SEED` (m = R·F); their distribution is the same in every
    rotation of the coordinates. ``even``: for each k, R rows 2ᵏ·ω; in d = 2 the ω at angles
    jπ/R, j < R (the same at every octave: with R = 8 the axes, the diagonals and the four
    directions between them), so that no direction stands out and a lattice along the axes
    keeps the features that fit it; in d ≠ 2 the d axes eᵢ and then the first R − d of the
    ``isotropic`` directions of each octave.
    """
    octaves = 2.0 ** torch.arange(frequencies, dtype=torch.float32)  # (F,)
    per = max(dim, DIRECTIONS_PER_OCTAVE)
    if kind == "axes":
        return (torch.eye(dim)[:, None, :] * octaves[None, :, None]).reshape(-1, dim)
    if kind == "isotropic":
        return (_random_directions(frequencies, per, dim) * octaves[:, None, None]).reshape(-1, dim)
    if kind == "even":
        if dim == 2:
            angle = torch.arange(per, dtype=torch.float64) * (math.pi / per)  # (R,)
            omega = torch.stack([angle.cos(), angle.sin()], dim=1).float()  # (R, 2)
            omega = omega.expand(frequencies, per, dim)
        else:
            axes = torch.eye(dim).expand(frequencies, dim, dim)
            rest = _random_directions(frequencies, per, dim)[:, : per - dim]
            omega = torch.cat([axes, rest], dim=1)  # (F, R, d)
        return (omega * octaves[:, None, None]).reshape(-1, dim)
    raise ValueError(f"features = {kind!r} is not known; use one of {', '.join(FEATURES)}")


def constant(make: Callable[[], Tensor]) -> Tensor:
    """Return the constant tensor ``make()`` computes, on the device a ``torch.device`` context
    sets, but computed on the CPU, and left there inside a ``torch.device("meta")`` build
    (:meth:`~pushforward.train.Trainable.state_shapes`): on meta tensors ``arange`` and the
    like run torch's Python decompositions, which import ``torch._dynamo`` (2–3 s)."""
    target = torch.empty(0).device
    with torch.device("cpu"):
        value = make()
    return value if target.type in ("cpu", "meta") else value.to(target)


def _random_directions(frequencies: int, per: int, dim: int) -> Tensor:
    """Return ``per`` unit directions (F, R, d) for each of F octaves, uniform on the sphere, from
    a generator seeded :data:`FEATURE_SEED` (the same draws every call)."""
    gen = torch.Generator().manual_seed(FEATURE_SEED)
    omega = torch.randn(frequencies, per, dim, generator=gen, dtype=torch.float64)
    return (omega / omega.norm(dim=-1, keepdim=True)).float()


class FourierFeatures(nn.Module):
    """The features [sin(Bx), cos(Bx)] (N, 2m) of x (N, d), for B (m, d) = :func:`frequency_matrix`.

    ``axes`` derives B from its settings and keeps it out of the checkpoint (as before the
    setting, whose runs still load); ``isotropic`` and ``even`` store B with the weights, so a
    fitted field keeps its features whatever generator a later torch draws.
    """

    def __init__(self, dim: int, frequencies: int, kind: str = "even"):
        super().__init__()
        self.kind = kind
        matrix = constant(lambda: frequency_matrix(kind, dim, frequencies))
        self.register_buffer("matrix", matrix, persistent=kind != "axes")

    @property
    def out_features(self) -> int:
        """2m: a sine and a cosine for each row of B."""
        return 2 * self.matrix.shape[0]

    def forward(self, x: Tensor) -> Tensor:
        """Return [sin(Bx), cos(Bx)] (N, 2m) for x (N, d)."""
        bx = x @ self.matrix.to(x.dtype).T  # (N, m)
        return torch.cat([bx.sin(), bx.cos()], dim=1)

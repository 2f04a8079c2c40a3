"""The Fourier features of the velocity field's input x: sin(Bx) and cos(Bx) for a fixed matrix of
frequencies B (:class:`FourierFeatures`), taken along the axes or in directions that favour none."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = [
    "DIRECTIONS_PER_OCTAVE",
    "FEATURES",
    "FEATURE_SEED",
    "FourierFeatures",
    "frequency_matrix",
]

FEATURES: dict[str, str] = {
    "axes": "sin/cos(2ᵏxᵢ) for each coordinate i (runs stored before the setting; its errors "
    "are constant along the axes and draw ridges along them through the modes)",
    "isotropic": "sin/cos(2ᵏ ω·x) along random unit directions ω, drawn once from a fixed "
    "seed and stored with the weights",
}

DIRECTIONS_PER_OCTAVE = 8
"""Random directions ω per octave 2ᵏ of ``isotropic`` features (d of them at least)."""

FEATURE_SEED = 0
"""The seed of the generator that draws the ``isotropic`` directions."""


def frequency_matrix(kind: str, dim: int, frequencies: int) -> Tensor:
    """Return the frequencies B (m, d) of the features sin/cos(Bx) of ``kind`` (:data:`FEATURES`)
    on d = ``dim`` coordinates with F = ``frequencies`` octaves 2ᵏ, k < F.

    ``axes``: the m = d·F rows 2ᵏ·eᵢ, ordered by coordinate i, then k. ``isotropic``: for each k,
    R = max(d, :data:`DIRECTIONS_PER_OCTAVE`) rows 2ᵏ·ω with ω uniform on the unit sphere, from a
    generator seeded :data:`FEATURE_SEED` (m = R·F); their distribution is the same in every
    rotation of the coordinates.
    """
    octaves = 2.0 ** torch.arange(frequencies, dtype=torch.float32)  # (F,)
    if kind == "axes":
        return (torch.eye(dim)[:, None, :] * octaves[None, :, None]).reshape(-1, dim)
    if kind == "isotropic":
        gen = torch.Generator().manual_seed(FEATURE_SEED)
        per = max(dim, DIRECTIONS_PER_OCTAVE)
        omega = torch.randn(frequencies, per, dim, generator=gen, dtype=torch.float64)
        omega = (omega / omega.norm(dim=-1, keepdim=True)).float()  # (F, R, d)
        return (omega * octaves[:, None, None]).reshape(-1, dim)
    raise ValueError(f"features = {kind!r} is not known; use one of {', '.join(FEATURES)}")


class FourierFeatures(nn.Module):
    """The features [sin(Bx), cos(Bx)] (N, 2m) of x (N, d), for B (m, d) = :func:`frequency_matrix`.

    ``axes`` derives B from its settings and keeps it out of the checkpoint (as before the
    setting, whose runs still load); ``isotropic`` stores its random B with the weights, so a
    fitted field keeps its features whatever generator a later torch draws.
    """

    def __init__(self, dim: int, frequencies: int, kind: str = "isotropic"):
        super().__init__()
        self.kind = kind
        matrix = frequency_matrix(kind, dim, frequencies)
        self.register_buffer("matrix", matrix, persistent=kind != "axes")

    @property
    def out_features(self) -> int:
        """2m: a sine and a cosine for each row of B."""
        return 2 * self.matrix.shape[0]

    def forward(self, x: Tensor) -> Tensor:
        """Return [sin(Bx), cos(Bx)] (N, 2m) for x (N, d)."""
        bx = x @ self.matrix.to(x.dtype).T  # (N, m)
        return torch.cat([bx.sin(), bx.cos()], dim=1)

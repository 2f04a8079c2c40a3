"""A base measure in many small pieces: μ = (1/K) Σ_j N(c_j, σ² I_k), equal weights, centres fixed.

A continuous g pushes a connected latent measure to a connected one: between the preimages of two
modes every path carries some of μ's mass, so g#N(0, I) puts samples on bridges between the data's
modes. A latent made of K small pieces that barely touch lets g send pieces to modes without a
path between them (the GAN's ``noise = pieces``; BENCHMARKS.md, "GAN mode coverage").

The centres c_j (K, k) are a pure function of (K, k): K draws of N(0, I_k) from a CPU
``torch.Generator`` seeded :data:`PIECES_SEED`, in float64, so that a stored model's config
rebuilds its latent measure exactly (a test pins some of their digits, so that a change of
torch's generator would be seen).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pushforward.core import ConfigError, check_n
from pushforward.measures.base import BaseMeasure, Device, draw

__all__ = ["PIECES_SEED", "GaussianPieces", "piece_centres"]

PIECES_SEED = 12345
"""The seed of the generator that draws the pieces' centres."""


def piece_centres(pieces: int, dim: int) -> Tensor:
    """Return the centres c_j ~ N(0, I_dim), (pieces, dim) float64 on the CPU, drawn from a CPU
    generator seeded :data:`PIECES_SEED`: the same numbers on every call, also under a default
    device (the meta device of a model's size check, where ``randn`` would take torch's Python
    decomposition, which loads the compiler)."""
    g = torch.Generator().manual_seed(PIECES_SEED)
    return torch.randn(pieces, dim, generator=g, dtype=torch.float64, device="cpu")


class GaussianPieces(BaseMeasure):
    """μ = (1/K) Σ_j N(c_j, σ² I_k) on ℝ^k, K = ``pieces`` and σ = ``std``, centres from
    :func:`piece_centres`; draws (n, k).

    A draw picks a piece j uniformly and returns c_j + σ ε, ε ~ N(0, I_k): two draws from the
    generator, whatever K (the same numbers on any device).
    """

    def __init__(self, dim: int, pieces: int, std: float):
        if dim < 1 or pieces < 1:
            raise ConfigError(f"GaussianPieces needs dim ≥ 1 and pieces ≥ 1, got {dim}, {pieces}")
        if not (math.isfinite(std) and std > 0):
            raise ConfigError(f"GaussianPieces needs a finite std > 0, got {std}")
        self.pieces, self.std = pieces, float(std)
        self.centres = piece_centres(pieces, dim)  # (K, k) float64
        self._centres32 = {torch.device("cpu"): self.centres.float()}  # by device, copied once
        self.event_shape = torch.Size([dim])

    def sample(
        self, n: int, *, generator: torch.Generator | None = None, device: Device = None
    ) -> Tensor:
        n = check_n(n, allow_zero=True)
        where = generator.device if generator is not None else device
        j = draw(torch.randint, self.pieces, (n,), generator=generator, device=where)  # (n,)
        eps = draw(torch.randn, n, self.event_shape[0], generator=generator, device=where)
        c = self._centres32.get(eps.device)
        if c is None:
            c = self._centres32[eps.device] = self._centres32[torch.device("cpu")].to(eps.device)
        z = c[j] + self.std * eps  # (n, k)
        return z if device is None else z.to(device)

    def log_prob(self, x: Tensor) -> Tensor:
        """log μ(x) = logsumexp_j [log N(x; c_j, σ² I)] − log K for x (n, k): shape (n,)."""
        k = self.event_shape[0]
        c = self.centres.to(device=x.device)
        d2 = torch.cdist(x.double(), c).square()  # (n, K)
        log_n = -0.5 * d2 / self.std**2 - k * math.log(self.std) - 0.5 * k * math.log(2 * math.pi)
        return (torch.logsumexp(log_n, dim=1) - math.log(self.pieces)).to(x.dtype)

    def __repr__(self) -> str:
        return f"GaussianPieces(dim={self.event_shape[0]}, pieces={self.pieces}, std={self.std:g})"

"""The flow's base measure μ, whose density the change of variables walks back to.

log p(x) = log μ(g⁻¹(x)) + log |det ∂g⁻¹/∂x| holds for any μ with a density, so μ may be learned
with the layers by the same likelihood. Two kinds (:data:`BASES`):

* ``normal``: the lecture's N(0, I_d), fixed;
* ``mixture``: μ = Σ_j w_j N(m_j, diag s_j²), K pieces (:class:`MixtureBase`) whose weights
  w = softmax(a), means m and scales s = exp(ς) are trained with the layers. A bijection pushes a
  connected measure to a connected one, so g#N(0, I) must spread some mass along a path between
  every two modes; pieces placed near the codes g⁻¹(x) of the data let the layers carry each
  piece to its part of the data with less stretching between them. Before training the means are
  placed by k-means++ on the codes of the training data under the initial layers
  (:meth:`MixtureBase.place`; Arthur & Vassilvitskii, 2007).

Over 10 seeds of the benchmarked flow (the same seeds and host for both), 32 pieces lowered
ring8's KL(p ‖ q) from 0.022 to 0.017 nats but not grid25's (0.032 for both, with 2.5 times the
spread over seeds), and cost both mixtures high quality (97.8 and 97.4% against 98.0 and 98.0%),
so N(0, I) stays the default (BENCHMARKS.md, "Fidelity to the truth").
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.distributions import Categorical, Distribution, Independent, MixtureSameFamily, Normal

from pushforward.core import ConfigError, check_n
from pushforward.data import GaussianMixture
from pushforward.measures import MixtureMeasure
from pushforward.measures.base import draw

__all__ = [
    "BASES",
    "KMEANS_ROWS",
    "KMEANS_STEPS",
    "MAX_PIECES",
    "PIECES",
    "PIECE_SCALE",
    "MixtureBase",
]

BASES: dict[str, str] = {
    "normal": "N(0, I), fixed (the lecture's; the default)",
    "mixture": "a mixture of Gaussians learned with the layers, its means placed by k-means on "
    "the codes of the data",
}
"""The kinds of base measure, with a few words each for help texts."""

PIECES = 32
"""The mixture base's default number of pieces K: more than the modes of ring8 and grid25 (8, 25);
8 pieces on ring8 scored about as 32 did (BENCHMARKS.md, "Fidelity to the truth")."""

MAX_PIECES = 4096
"""The most pieces of a mixture base; more is a typo (each costs a Gaussian per row and step)."""

PIECE_SCALE = 0.2
"""Each piece's initial standard deviation per coordinate, in latent units (N(0, I) has 1)."""

KMEANS_ROWS = 4096
"""How many codes of the training data :meth:`MixtureBase.place` clusters (the first ones)."""

KMEANS_STEPS = 20
"""Lloyd's steps after the k-means++ seeding in :meth:`MixtureBase.place`."""

LOG_2PI = math.log(2 * math.pi)


class MixtureBase(nn.Module):
    """μ = Σ_j w_j N(m_j, diag s_j²) on ℝ^d, K = ``pieces``, all of it learned.

    Parameters: ``logits`` a (K,), w = softmax(a); ``loc`` m (K, d); ``log_scale`` ς (K, d),
    s = exp(ς). Initially equal weights, means at 0 (placed by :meth:`place` before training) and
    scales :data:`PIECE_SCALE`.
    """

    def __init__(self, dim: int, pieces: int = PIECES):
        super().__init__()
        if dim < 1 or pieces < 1:
            raise ConfigError(f"a mixture base needs dim ≥ 1 and pieces ≥ 1, got {dim}, {pieces}")
        self.dim, self.pieces = dim, pieces
        self.logits = nn.Parameter(torch.zeros(pieces))
        self.loc = nn.Parameter(torch.zeros(pieces, dim))
        self.log_scale = nn.Parameter(torch.full((pieces, dim), math.log(PIECE_SCALE)))

    def log_prob(self, z: Tensor) -> Tensor:
        """Return log μ(z) (n,) for z (n, d): log Σ_j w_j N(z; m_j, diag s_j²), in z's dtype."""
        loc, log_scale = self.loc.to(z.dtype), self.log_scale.to(z.dtype)
        u = (z.unsqueeze(1) - loc) * torch.exp(-log_scale)  # (n, K, d)
        pieces = -0.5 * (u * u).sum(-1) - log_scale.sum(-1) - 0.5 * self.dim * LOG_2PI  # (n, K)
        return torch.logsumexp(pieces + torch.log_softmax(self.logits.to(z.dtype), 0), dim=1)

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """Return n draws z ~ μ (n, d) on the parameters' device, without gradients: a piece j
        by inverting the weights' CDF at u ~ U[0, 1), then m_j + s_j ε, ε ~ N(0, I_d); u and ε
        come from ``generator`` where it lives, so the numbers do not depend on the device."""
        n = check_n(n, allow_zero=True)
        u = draw(torch.rand, n, generator=generator, dtype=torch.float64)  # (n,)
        eps = draw(torch.randn, n, self.dim, generator=generator, dtype=self.loc.dtype)  # (n, d)
        cdf = torch.cumsum(torch.softmax(self.logits.detach().double(), 0), 0).to(u.device)
        j = torch.searchsorted(cdf, u).clamp_max(self.pieces - 1)  # (n,)
        j, eps = j.to(self.loc.device), eps.to(self.loc.device)
        return self.loc[j] + torch.exp(self.log_scale[j]) * eps

    def distribution(self) -> Distribution:
        """Return μ as a ``torch.distributions`` mixture over rows (d,), of the current
        parameters (differentiable in them)."""
        normal = Independent(Normal(self.loc, torch.exp(self.log_scale)), 1)
        return MixtureSameFamily(Categorical(logits=self.logits), normal)

    def measure(self) -> MixtureMeasure:
        """Return μ, detached, as a base measure (:class:`~pushforward.measures.MixtureMeasure`
        of a :class:`~pushforward.data.GaussianMixture` in float64)."""
        variances = torch.exp(2 * self.log_scale.detach().double()).cpu()  # (K, d)
        mixture = GaussianMixture(
            torch.softmax(self.logits.detach().double(), 0).cpu(),
            self.loc.detach().double().cpu(),
            torch.diag_embed(variances),
        )
        return MixtureMeasure(mixture, dtype=self.loc.dtype)

    @torch.no_grad()
    def place(self, z: Tensor) -> None:
        """Set the means m (K, d) to k-means centres of the codes z (n, d) of the training data
        (the finite ones among its first :data:`KMEANS_ROWS` rows): k-means++ seeding, then
        :data:`KMEANS_STEPS` of Lloyd's steps; a piece left without codes keeps its seed. The
        seeding draws from a CPU generator seeded 0, so the means are a function of the codes
        alone."""
        z = z[:KMEANS_ROWS].detach().to(torch.float64)
        z = z[torch.isfinite(z).all(1)]  # the training's own checks name non-finite weights
        if z.shape[0] == 0:
            return
        generator = torch.Generator().manual_seed(0)
        first = int(torch.randint(z.shape[0], (1,), generator=generator))
        centres = [z[first]]
        d2 = ((z - z[first]) ** 2).sum(1)  # (n,) squared distance to the nearest centre
        for _ in range(self.pieces - 1):
            total = float(d2.sum())
            if total <= 0:  # every code is a centre already: repeat the first
                centres.append(z[first])
                continue
            pick = int(torch.multinomial((d2 / total).cpu(), 1, generator=generator))
            centres.append(z[pick])
            d2 = torch.minimum(d2, ((z - z[pick]) ** 2).sum(1))
        c = torch.stack(centres)  # (K, d)
        for _ in range(KMEANS_STEPS):
            nearest = torch.cdist(z, c).argmin(1)  # (n,)
            sums = torch.zeros_like(c).index_add_(0, nearest, z)
            counts = torch.bincount(nearest, minlength=self.pieces).to(z.dtype)  # (K,)
            c = torch.where(counts.unsqueeze(1) > 0, sums / counts.clamp_min(1).unsqueeze(1), c)
        self.loc.copy_(c.to(self.loc.dtype))

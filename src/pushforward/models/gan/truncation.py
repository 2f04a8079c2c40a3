"""Jacobian truncation: sample g#μ_A, μ restricted to where the generator stretches least.

Tanielian et al., 2020, "Learning disconnected manifolds: a no GAN's land": a continuous g
pushing forward a connected latent space cannot put all its mass on disconnected modes;
somewhere it must pass between them, and it does so where it stretches the latent space most.
Rejecting the share q of latent draws with the largest ‖J(z)‖_F (:func:`stretch`, J = ∂g/∂z)
samples g#μ_A with A = {z : ‖J(z)‖_F ≤ τ}, τ the (1 − q)-quantile of ‖J(z)‖_F under μ
(:func:`stretch_threshold`), a :class:`~pushforward.measures.Restricted` base measure; training
is not affected.

Each function takes the generator as a network z (n, k) → (n, d) (in any units: the model passes
its network's output before the data's location and scale are put back, so that no coordinate's
scale dominates) and the base measure μ where it needs one.
"""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor, nn

from pushforward.core import ConfigError
from pushforward.measures import BaseMeasure

__all__ = [
    "TRUNCATION",
    "TRUNCATION_DRAWS",
    "stretch",
    "stretch_threshold",
    "weights_digest",
]

TRUNCATION_DRAWS = 20_000
"""Latent draws (seeded 0) from which the threshold τ is estimated."""

TRUNCATION = 0.03
"""The share of latent draws Jacobian truncation rejects by default on non-image data (about the
share of between-mode samples on the benchmark's mixtures; BENCHMARKS.md)."""


def stretch(net: nn.Module, z: Tensor, dim: int, *, chunk: int = 4096) -> Tensor:
    """Return ‖J(z)‖_F (n,), how much ``net`` stretches the latent space at each z (n, k).

    J(z) (d, k) is the Jacobian of ``net`` (whose rows have ``dim`` = d numbers), computed
    exactly, ``chunk`` rows at a time: one reverse-mode pass per output coordinate when d ≤ k,
    else one forward-mode pass per latent coordinate (the rows of a batch are independent).
    """
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ConfigError(f"chunk must be an integer ≥ 1, got {chunk!r}")
    weight = next(net.parameters())
    device, latent = weight.device, z.shape[1]
    z = z.to(weight)
    out = []
    for part in z.split(chunk):
        sq = torch.zeros(part.shape[0], device=device, dtype=weight.dtype)  # (c,)
        if dim <= latent:
            # the rows are independent, so the gradient of Σ_rows u_i is each row's ∂u_i/∂z:
            # autograd's reverse pass (torch.func.vjp's would import torch._dynamo, 2-3 s)
            with torch.enable_grad():
                zz = part.detach().requires_grad_(True)
                u = net(zz).reshape(part.shape[0], dim)  # (c, d)
                for i in range(dim):
                    (row,) = torch.autograd.grad(u[:, i].sum(), zz, retain_graph=i < dim - 1)
                    sq += row.square().sum(1)  # ∂u_i/∂z, (c, k)
        else:
            e = torch.zeros_like(part)
            for j in range(latent):
                e.zero_()
                e[:, j] = 1.0
                _, column = torch.func.jvp(net, (part,), (e,))  # ∂u/∂z_j, (c, …)
                sq += column.detach().flatten(1).square().sum(1)
        out.append(sq.sqrt())
    return torch.cat(out) if out else z.new_zeros(0)


def stretch_threshold(net: nn.Module, base: BaseMeasure, dim: int, q: float) -> float:
    """Return τ, the (1 − q)-quantile of ‖J(z)‖_F under μ = ``base``, estimated from
    :data:`TRUNCATION_DRAWS` draws with a fixed seed, so the same weights always give the same τ."""
    z = base.sample(TRUNCATION_DRAWS, generator=torch.Generator().manual_seed(0))
    return float(torch.quantile(stretch(net, z, dim).double(), 1.0 - q))


def weights_digest(net: nn.Module) -> bytes:
    """Return a digest of the bits of ``net``'s parameters: equal digests, equal weights (fused
    optimisers step in place without bumping a tensor's version, so versions cannot tell)."""
    digest = hashlib.blake2b(digest_size=16)
    for p in net.parameters():
        digest.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.digest()

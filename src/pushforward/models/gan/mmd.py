"""A kernel two-sample term for the generator: the part of MMD² that depends on g.

The critic of the game on points is smooth at the scale of a mode (R1 flattens it across each
real mode), so the non-saturating loss pulls a mode's samples to its centre and the modes end
narrower than the data's (BENCHMARKS.md, "GAN mode coverage"). The maximum mean discrepancy with
a Gaussian kernel k_h(x, y) = exp(−|x − y|² / 2h²) (Gretton et al., 2012; as a generator loss,
Li et al., 2015 and Dziugaite et al., 2015) sees that scale directly: for samples a (n, d) of g
and data b (m, d), the unbiased

    MMD²(a, b) = Σ_{i≠j} k(aᵢ, aⱼ)/n(n−1) + Σ_{i≠j} k(bᵢ, bⱼ)/m(m−1) − 2 Σ_{i,j} k(aᵢ, bⱼ)/nm

is small only when the samples spread as the data do at every scale h: the first sum repels
g's samples from each other, the last attracts them to the data. The middle sum does not depend
on g and is left out, so :func:`generator_mmd` returns the other two, summed over the bandwidths
h of :data:`MMD_BANDWIDTHS` (in the critic's, standardised, units; the mixtures' modes have σ of
0.014–0.018 there). The gradient is written out, (∂/∂aᵢ) k_h(aᵢ, y) = k_h(aᵢ, y)(y − aᵢ)/h², so
that a step costs two (n, n + m) passes per bandwidth and two small products, not autograd's
graph of the kernel matrices.

Exponents are clamped at −50 before ``exp``: exp of a large negative number takes the slow path
of the vectorised exp (about 30× on a 256 × 512 matrix, on a 2-core Intel Xeon with AVX-512),
and products of its subnormal results take the slow path of the arithmetic units; e⁻⁵⁰ ≈
2·10⁻²² is nothing beside the kernel's 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from pushforward.train.distributed import gather_rows
from pushforward.train.trainable import Shard

__all__ = ["MMD_BANDWIDTHS", "generator_mmd", "generator_mmd_and_gradient"]

MMD_BANDWIDTHS = (0.01, 0.03, 0.1, 0.3, 1.0)
"""The kernel's bandwidths h, in the critic's units (standardised on points): from below a
mode's σ to the spacing between modes."""

_FLOOR = -50.0  # the exponents' clamp (module docstring)


def generator_mmd_and_gradient(
    a: Tensor, b: Tensor, bandwidths: Sequence[float] = MMD_BANDWIDTHS
) -> tuple[Tensor, Tensor]:
    """Return (:func:`generator_mmd`'s value, a scalar; its gradient in a (n, d)) for samples a
    (n, d) and data b (m, d), computed without autograd; (0, 0) where there is no unbiased
    estimate (fewer than 2 samples or no data)."""
    n, m = a.shape[0], b.shape[0]
    if n < 2 or m < 1:
        return a.new_zeros(()), torch.zeros_like(a)
    y = torch.cat([a, b])  # (n + m, d): the samples, then the data
    d2 = (a.square().sum(1, keepdim=True) - 2 * a @ y.T).add_(y.square().sum(1))
    d2.clamp_min_(0)  # (n, n + m) squared distances
    c_aa, c_ab = 1.0 / (n * (n - 1)), -2.0 / (n * m)
    total = torch.zeros_like(d2)  # Σ_h k_h
    slope = torch.zeros_like(d2)  # Σ_h k_h / h²
    k = torch.empty_like(d2)
    for h in bandwidths:
        torch.exp(torch.mul(d2, -0.5 / (h * h), out=k).clamp_min_(_FLOOR), out=k)
        total.add_(k)
        slope.add_(k, alpha=1.0 / (h * h))
    # the diagonal k(aᵢ, aᵢ) = 1 of each bandwidth is not a pair: taken out
    value = c_aa * (total[:, :n].sum() - n * len(bandwidths)) + c_ab * total[:, n:].sum()
    # ∂/∂aᵢ: Σⱼ cⱼ slopeᵢⱼ (yⱼ − aᵢ), the samples' pairs counted twice (k(aᵢ, aⱼ), k(aⱼ, aᵢ))
    slope[:, :n] *= 2 * c_aa
    slope[:, n:] *= c_ab
    return value, slope @ y - slope.sum(1, keepdim=True) * a


class _GeneratorMMD(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, bandwidths: tuple[float, ...],  # type: ignore[override]
                shard: Shard | None) -> Tensor:  # fmt: skip
        if shard is None:
            value, da = generator_mmd_and_gradient(a, b, bandwidths)
        else:  # the whole batch's term; this process's rows of its gradient, times the world
            rows = (gather_rows(t, shard.rows, shard.start) for t in (a, b))
            value, full = generator_mmd_and_gradient(*rows, bandwidths)
            da = full[shard.start : shard.start + a.shape[0]] * shard.world
        ctx.save_for_backward(da)
        return value

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None, None]:  # type: ignore[override]
        (da,) = ctx.saved_tensors
        return grad * da, None, None, None


def generator_mmd(
    a: Tensor, b: Tensor, bandwidths: Sequence[float] = MMD_BANDWIDTHS, shard: Shard | None = None
) -> Tensor:
    """Return the part of the unbiased MMD²(a, b) that depends on a, a scalar: samples a (n, d)
    with gradients, data b (m, d), none taken; summed over Gaussian kernels of the bandwidths h
    (module docstring). With fewer than 2 samples or no data (an epoch's last batch of one row)
    there is no unbiased estimate, and the term is 0.

    Under torchrun (``shard`` given) a and b are this process's rows of the batch's samples and
    data: the term is the whole batch's, the same in every process (both gathered, in rank
    order), and its gradient in a is this process's rows of the whole batch's, times the number
    of processes, so that gradients averaged over the processes are the whole term's."""
    n, m = (a.shape[0], b.shape[0]) if shard is None else (shard.rows, shard.rows)
    if n < 2 or m < 1:
        return a.sum() * 0.0
    return _GeneratorMMD.apply(a, b.detach(), tuple(float(h) for h in bandwidths), shard)

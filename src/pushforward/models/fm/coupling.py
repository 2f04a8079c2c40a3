"""The pairing of noise with data in a flow-matching step, and the regression's stable target:
the exact optimal-transport permutation of a minibatch (:func:`ot_pairing`, OT-CFM) and the
posterior-averaged target (:func:`stable_target`)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from pushforward.core import ConfigError, check_int
from pushforward.train import full_precision

__all__ = ["COUPLINGS", "MAX_REFERENCE", "OT_BLOCK", "ot_pairing", "stable_target"]

COUPLINGS: dict[str, str] = {
    "independent": "x₀ ~ μ drawn independently of the data row x₁ (I-CFM)",
    "ot": "x₀ re-paired with the batch's x₁ by the exact optimal-transport permutation (OT-CFM)",
}

OT_BLOCK = 32
"""Rows per exact optimal-transport problem in training's ``ot`` coupling: a batch of 256 is
paired as eight blocks of 32, which fit as well as blocks of 64 and cost under half as much to
solve (BENCHMARKS.md, "Flow matching")."""

MAX_REFERENCE = 4096
"""The largest stable-target reference set: its cost per step is B × R, and each block holds a few
R × R tensors (64 MiB each at 4,096)."""


def ot_pairing(x0: Tensor, x1: Tensor, *, block: int | None = None) -> Tensor:
    """Return the permutation π (B,) that minimises Σ_i ‖x0[π_i] − x1_i‖², exactly; with
    ``block``, exactly within each run of ``block`` consecutive rows (the last run shorter).

    The optimal transport plan between two sets of equally many, equally weighted points is a
    permutation matrix (a vertex of the Birkhoff polytope), so the transport problem is the
    linear assignment problem, solved exactly by SciPy's shortest-augmenting-path solver
    (``scipy.optimize.linear_sum_assignment``; Crouse, 2016), which releases the GIL. It returns
    a plan of the same cost as POT's network simplex (``ot.emd``; the same plan unless there are
    ties), 4× faster on blocks of 64 rows (BENCHMARKS.md, "Flow matching"). Its cost grows
    faster than B², so training solves blocks of :data:`OT_BLOCK` rows. Shapes: x0, x1 (B, d).
    """
    if x0.shape != x1.shape or x0.dim() != 2:
        raise ConfigError(f"ot_pairing needs two (B, d) batches, got {tuple(x0.shape)} and "
                          f"{tuple(x1.shape)}")  # fmt: skip
    n = x0.shape[0]
    step = max(n, 1) if block is None else check_int(block, "block", minimum=1)
    a = x0.detach().to("cpu", torch.float64)
    b = x1.detach().to("cpu", torch.float64)
    perm = np.arange(n)
    full = n - n % step
    # cost[k, i, j] = ‖x1_i − x0_j‖² within block k, from the differences (not the Gram matrix:
    # no cancellation), for every full block at once; the last, shorter block on its own
    exact = "donot_use_mm_for_euclid_dist"
    d = x0.shape[1]
    costs = [torch.cdist(b[:full].view(-1, step, d), a[:full].view(-1, step, d),
                         compute_mode=exact).square().numpy()]  # fmt: skip
    if full < n:
        last = torch.cdist(b[None, full:], a[None, full:], compute_mode=exact)
        costs.append(last.square().numpy())
    from scipy.optimize import (
        linear_sum_assignment,  # here: scipy.optimize takes 0.2-0.4 s to import
    )

    i = 0
    for cost in (c for group in costs for c in group):
        rows, cols = linear_sum_assignment(cost)
        perm[i + rows] = i + cols
        i += len(cost)
    return torch.from_numpy(perm).to(x0.device)


def stable_target(x1: Tensor, x0: Tensor, t: Tensor, sigma: float, reference: int) -> Tensor:
    """Return the stable target (B, d) of the flow-matching regression (Xu et al., 2023): for
    row i, the conditional target u_t(x_t | x₁) averaged over the posterior of x₁ given x_t among
    the rows of its reference set (the runs of ``reference`` consecutive rows of the batch,
    itself included),

        ũ_i = Σ_j w_ij (x₁ⱼ − (1 − σ)·x_t,i) / s_t,i,   w_ij ∝ N(x_t,i; t_i·x₁ⱼ, s_t,i² I),

    with s_t = 1 − (1 − σ)t and x_t = t·x₁ + s_t·x₀. Its regression has the same minimiser as the
    conditional one, the marginal field, up to the reference set's finite size, with far less
    noise where the paths of several data points cross. Computed as the conditional target plus
    Σ_{j≠i} w_ij (x₁ⱼ − x₁ᵢ)/s_t,i, so that it equals the conditional target exactly where the
    posterior is the row itself (t near 1). The log-weights, up to a term constant in j,
    (t_i/s_i²)·x_t,i·x₁ⱼ − (t_i²/2s_i²)·‖x₁ⱼ‖², are one (R, d + 1) × (d + 1, R) product per
    reference set, in float64 (the expanded square cancels), shifted by their row maximum before
    the exponential in the data's precision. Shapes: x1, x0 (B, d); t (B,). No gradient.
    """
    with torch.no_grad(), full_precision(x1.device):
        s = 1 - (1 - sigma) * t  # (B,)
        target = x1 - (1 - sigma) * x0  # the conditional target
        # below this width the posterior is the row itself to float precision
        live = s > 1e-6
        width = s.clamp_min(1e-6)  # (B,): s, kept off 0 where the row is not live
        f1, ft, fs = x1.double(), t.double(), width.double()
        xt = ft[:, None] * f1 + fs[:, None] * x0.double()  # (B, d)
        c = ft / fs.square()  # (B,)
        left = torch.cat([xt * c[:, None], (-0.5 * ft * c)[:, None]], dim=1)  # (B, d + 1)
        right = torch.cat([f1, f1.square().sum(1, keepdim=True)], dim=1)  # (B, d + 1)
        for i in range(0, x1.shape[0], reference):
            rows = slice(i, i + reference)
            logits = left[rows] @ right[rows].T  # (R, R)
            logits -= logits.amax(1, keepdim=True)
            w = torch.softmax(logits.to(x1.dtype), dim=1)
            w.diagonal().zero_()  # Σ_{j≠i}: the row's own term adds nothing
            b1 = x1[rows]
            shift = (w @ b1 - w.sum(1, keepdim=True) * b1) / width[rows, None]
            target[rows] += shift * live[rows, None]
    return target

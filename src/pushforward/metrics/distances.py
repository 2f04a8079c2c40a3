"""Measures of fit between samples and a reference: goodness of fit, mode coverage, two-sample
distances (MMD, energy, Wasserstein, Fréchet) and the mean log-density under a known truth.

Every sample set is a torch tensor of rows (n, d); every metric is computed in float64 and comes
back as a Python float (or a small dataclass). Pairwise sums never build an (n, m, d) tensor: they
run over blocks of rows against the other set, so n = m = 10,000 stays within a few hundred MiB.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from pushforward.core import ConfigError, DataError, as_float64_rows, check_int, check_positive

__all__ = [
    "ModeMetrics",
    "energy_distance",
    "frechet_distance",
    "frechet_distance_from_samples",
    "ks_critical_value",
    "ks_distance",
    "mean_log_density",
    "mmd2_unbiased",
    "mode_metrics",
    "wasserstein_distance",
]

BLOCK_ELEMENTS = 1 << 22
"""Entries of one (rows, m) block of pairwise distances: 4 Mi float64 values, 32 MiB."""

MAX_EXACT_OT = 5_000
"""Largest sample size the exact optimal-transport solvers accept; their cost is O(n³)."""

EMD_MAX_ITER = 1_000_000_000
"""Simplex pivots allowed to POT's ``ot.emd2``, far above the ~10⁶ needed at n = m = 5,000."""

_EXACT = "donot_use_mm_for_euclid_dist"  # cdist from differences: identical points at distance 0

MEDIAN_SUBSAMPLE = 1_000
"""Pooled points used by the median heuristic for the default MMD bandwidths."""


def ks_distance(samples: Tensor, cdf: Callable[[Tensor], Tensor]) -> float:
    """Return the Kolmogorov–Smirnov distance sup_y |F_n(y) − F(y)| of samples to an exact CDF.

    ``samples`` has shape (n,) or (n, 1); ``cdf`` maps (n,) to (n,). The supremum is attained at
    the sorted samples, just before or at each jump of the empirical CDF F_n, so it is computed
    exactly (in float64).
    """
    x = torch.as_tensor(samples).reshape(-1).to(torch.float64)
    n = x.numel()
    if n == 0:
        raise ConfigError("ks_distance needs at least one sample")
    if not bool(torch.isfinite(x).all()):
        raise ConfigError("ks_distance got NaN or infinite samples")
    x = torch.sort(x).values
    f = cdf(x).to(torch.float64).reshape(-1)
    i = torch.arange(1, n + 1, dtype=torch.float64)
    above = (i / n - f).max()
    below = (f - (i - 1) / n).max()
    return float(torch.maximum(above, below))


def ks_critical_value(n: int, alpha: float = 0.001) -> float:
    """Return the asymptotic KS critical value sqrt(−ln(α/2) / (2n)) at level α for n samples."""
    if n < 1 or not 0 < alpha < 1:
        raise ConfigError(f"need n ≥ 1 and 0 < alpha < 1, got n={n}, alpha={alpha}")
    return math.sqrt(-math.log(alpha / 2) / (2 * n))


# --- validation and pairwise sums ----------------------------------------------------------------


def _pair(x: object, y: object, *, min_rows: int = 1) -> tuple[Tensor, Tensor]:
    """Return x (n, d) and y (m, d) in float64, both centred on their pooled mean.

    Centring changes no distance but shrinks the cancellation in ‖a‖² + ‖b‖² − 2a·b.
    """
    xd = as_float64_rows(x, "x", min_rows=min_rows)
    yd = as_float64_rows(y, "y", dim=xd.shape[1], why=" to match x", min_rows=min_rows)
    centre = torch.cat([xd, yd]).mean(0)  # (d,)
    return xd - centre, yd - centre


def _pair_sum(a: Tensor, b: Tensor, fn: Callable[[Tensor], Tensor], *, same: bool) -> float:
    """Return Σ_ij fn(‖a_i − b_j‖²) over a (n, d) and b (m, d); with ``same`` (b is a) the i = j
    terms are left out.

    Rows of ``a`` go in blocks of about :data:`BLOCK_ELEMENTS` / m, so no more than a few
    (rows, m) matrices ever exist at once.
    """
    n, m = a.shape[0], b.shape[0]
    step = max(1, BLOCK_ELEMENTS // m)
    b_sq = b.square().sum(1)  # (m,)
    total = a.new_zeros(())
    for i0 in range(0, n, step):
        block = a[i0 : i0 + step]  # (rows, d)
        d2 = block.square().sum(1, keepdim=True) + b_sq - 2 * block @ b.mT  # (rows, m)
        values = fn(d2.clamp_(min=0))  # (rows, m)
        if same:
            r = torch.arange(block.shape[0], device=a.device)
            values[r, i0 + r] = 0
        total += values.sum()
    return float(total)


def _within_mean(a: Tensor, fn: Callable[[Tensor], Tensor], *, unbiased: bool) -> float:
    """Return the mean of fn(‖a_i − a_j‖²) over i ≠ j (U-statistic) or over all i, j
    (V-statistic, the i = j terms being fn(0))."""
    n = a.shape[0]
    off = _pair_sum(a, a, fn, same=True)
    if unbiased:
        return off / (n * (n - 1))
    zero = float(fn(a.new_zeros(1, 1)).sum())
    return (off + n * zero) / n**2


# --- mode coverage -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModeMetrics:
    """Mode coverage of samples from a mixture of K well-separated modes (PacGAN protocol).

    ``counts[k]`` is the number of high-quality samples nearest mode k; ``high_quality`` the
    fraction of all samples that are high quality; ``reverse_kl`` is KL(p ‖ uniform) of the
    histogram p = counts / Σ counts (``inf`` when no sample is high quality). ``width`` is the
    high-quality samples' root-mean-square distance to their mode over what a Gaussian mode of
    the given std has within the same radius: 1 is the right width, below 1 modes too narrow
    (a sampler trading recall for precision), ``nan`` when no sample is high quality.
    """

    modes_captured: int
    n_modes: int
    high_quality: float
    reverse_kl: float
    width: float
    counts: list[int]

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a JSON-ready dict (``counts`` a fresh list)."""
        return asdict(self)


def mode_metrics(
    samples: Tensor, means: Tensor, std: float, *, threshold: float = 3.0
) -> ModeMetrics:
    """Return the mode coverage of ``samples`` (n, d) around the mode centres ``means`` (K, d).

    As in PacGAN (Lin et al., 2018): each sample goes to its nearest mode k(i) = argmin_k
    ‖x_i − μ_k‖; it is *high quality* when ‖x_i − μ_k(i)‖ ≤ threshold · std; a mode is *captured*
    when at least one high-quality sample lands on it. With p_k = count_k / #HQ the histogram of
    high-quality samples,

        reverse KL = KL(p ‖ uniform) = Σ_k p_k log(K p_k)   (0 · log 0 = 0),

    which is 0 for a perfectly balanced generator, log K for one that collapsed to a single mode,
    and ``float('inf')`` when no sample is high quality (p is then undefined; inf keeps "worse than
    any collapse" ordered last).

    Width: for a Gaussian mode N(μ_k, σ² I_d), R = ‖x − μ_k‖²/σ² is χ²_d, and within the radius
    t = threshold, E[R | R ≤ t²] = d · F_{d+2}(t²) / F_d(t²) with F_ν the χ²_ν distribution function
    (E[R 1{R ≤ c}] = d · F_{d+2}(c)); width = √(mean R over the high-quality samples / that).
    """
    x = as_float64_rows(samples, "samples", min_rows=1)
    mu = as_float64_rows(means, "means", dim=x.shape[1], why=" to match samples", min_rows=1)
    std = check_positive(std, "std")
    threshold = check_positive(threshold, "threshold")
    k = mu.shape[0]
    dist = torch.cdist(x, mu, compute_mode=_EXACT)  # (n, K)
    nearest_dist, nearest = dist.min(1)  # (n,), (n,)
    good = nearest_dist <= threshold * std  # (n,)
    counts = torch.bincount(nearest[good], minlength=k)  # (K,)
    n_good = int(good.sum())
    if n_good == 0:
        reverse_kl, width = math.inf, math.nan
    else:
        p = counts[counts > 0].to(torch.float64) / n_good
        reverse_kl = max(float((p * (p * k).log()).sum()), 0.0)  # ≥ 0; clip rounding
        r = (nearest_dist[good].double() / std).square()  # (#HQ,) R = ‖x − μ‖²/σ²
        half = torch.tensor(x.shape[1] / 2, dtype=torch.float64)  # d/2
        c = torch.tensor(threshold**2 / 2, dtype=torch.float64)  # t²/2
        gaussian = 2 * half * torch.special.gammainc(half + 1, c) / torch.special.gammainc(half, c)
        width = math.sqrt(float(r.mean() / gaussian))
    return ModeMetrics(
        modes_captured=int((counts > 0).sum()),
        n_modes=k,
        high_quality=n_good / x.shape[0],
        reverse_kl=reverse_kl,
        width=width,
        counts=[int(c) for c in counts],
    )


# --- two-sample distances ------------------------------------------------------------------------


def _median_distance(x: Tensor, y: Tensor) -> float:
    """Return the median pairwise distance of up to :data:`MEDIAN_SUBSAMPLE` evenly spaced rows of
    the pooled sample, falling back to the largest distance, then 1, when it is 0."""
    pooled = torch.cat([x, y])  # (n + m, d)
    take = min(pooled.shape[0], MEDIAN_SUBSAMPLE)
    rows = torch.linspace(0, pooled.shape[0] - 1, take, dtype=torch.float64, device=pooled.device)
    rows = rows.round().long()
    dist = torch.nn.functional.pdist(pooled[rows])  # (take (take − 1) / 2,)
    for h in (float(dist.median()), float(dist.max())):
        if h > 0:
            return h
    return 1.0  # every point is the same: any bandwidth gives MMD² = 0


def _bandwidths(bandwidths: Sequence[float] | None) -> list[float] | None:
    """Return ``bandwidths`` as a list of positive floats, or raise :class:`ConfigError`."""
    if bandwidths is None:
        return None
    if isinstance(bandwidths, (str, bytes)) or not isinstance(bandwidths, Sequence):
        raise ConfigError(
            f"bandwidths must be a sequence of numbers > 0 or None, got {bandwidths!r}"
        )
    if len(bandwidths) == 0:
        raise ConfigError("bandwidths must hold at least one number > 0, got an empty sequence")
    return [check_positive(s, f"bandwidths[{i}]") for i, s in enumerate(bandwidths)]


def mmd2_unbiased(x: Tensor, y: Tensor, *, bandwidths: Sequence[float] | None = None) -> float:
    """Return the unbiased estimate of MMD² between samples x (n, d) and y (m, d), n, m ≥ 2.

    With the kernel k(a, b) = Σ_σ exp(−‖a − b‖² / (2σ²)) summed over ``bandwidths``,

        MMD²_u = 1/(n(n−1)) Σ_{i≠j} k(x_i, x_j) + 1/(m(m−1)) Σ_{i≠j} k(y_i, y_j)
                 − 2/(nm) Σ_{i,j} k(x_i, y_j)

    (Gretton et al., 2012, eq. 3). It is unbiased, so it can be slightly negative when x and y
    come from one distribution. By default the bandwidths are h · (0.5, 1, 2), h the median
    pairwise distance of the pooled sample (estimated on at most 1,000 evenly spaced pooled rows,
    so deterministic). Pass fixed bandwidths to compare values across runs.
    """
    sigmas = _bandwidths(bandwidths)
    a, b = _pair(x, y, min_rows=2)
    if sigmas is None:
        h = _median_distance(a, b)
        sigmas = [0.5 * h, h, 2.0 * h]
    scales = [-0.5 / s**2 for s in sigmas]

    def kernel(d2: Tensor) -> Tensor:
        out = torch.zeros_like(d2)
        for c in scales:
            out += torch.exp(d2 * c)
        return out

    n, m = a.shape[0], b.shape[0]
    kxx = _within_mean(a, kernel, unbiased=True)
    kyy = _within_mean(b, kernel, unbiased=True)
    kxy = _pair_sum(a, b, kernel, same=False) / (n * m)
    return kxx + kyy - 2 * kxy


def _norm(d2: Tensor) -> Tensor:
    return d2.sqrt_()


def energy_distance(x: Tensor, y: Tensor, *, unbiased: bool = True) -> float:
    """Return the squared energy distance between samples x (n, d) and y (m, d).

        E²(x, y) = 2 E‖X − Y‖ − E‖X − X'‖ − E‖Y − Y'‖   (Székely & Rizzo, 2013)

    The cross term is the mean over all n·m pairs. With ``unbiased`` (the default) the within
    terms are U-statistics, means over i ≠ j (needs n, m ≥ 2), and the estimate is unbiased but
    can be slightly negative; with ``unbiased=False`` they are V-statistics, means over all pairs,
    as in ``scipy.stats.energy_distance`` — which returns the square root of this V-statistic. In
    1-D the V-statistic equals 2 ∫ (F_n(t) − G_m(t))² dt of the empirical CDFs.
    """
    a, b = _pair(x, y, min_rows=2 if unbiased else 1)
    cross = _pair_sum(a, b, _norm, same=False) / (a.shape[0] * b.shape[0])
    within_x = _within_mean(a, _norm, unbiased=unbiased)
    within_y = _within_mean(b, _norm, unbiased=unbiased)
    return 2 * cross - within_x - within_y


def _wasserstein_1d(x: Tensor, y: Tensor, p: int) -> float:
    """Return W_p between 1-D samples x (n,) and y (m,): (∫_0^1 |F⁻¹(t) − G⁻¹(t)|^p dt)^{1/p},
    exact, since both quantile functions are constant between the breakpoints i/n and j/m."""
    n, m = x.shape[0], y.shape[0]
    xs, ys = torch.sort(x).values, torch.sort(y).values
    # float64 breakpoints: in float32, i/n and j/m closer than ~1e-7 merge and the weights t.diff()
    # carry relative errors of 1e-7
    arange = torch.arange(1, max(n, m) + 1, dtype=torch.float64, device=x.device)  # (max(n, m),)
    steps = torch.cat([arange[:n] / n, arange[:m] / m])  # (n + m,)
    t = torch.unique(torch.cat([steps.new_zeros(1), steps]))  # sorted breakpoints, 0 … 1
    mid = (t[1:] + t[:-1]) / 2  # one point inside each interval
    ix = (mid * n).floor().long().clamp_(max=n - 1)
    iy = (mid * m).floor().long().clamp_(max=m - 1)
    cost = ((xs[ix] - ys[iy]).abs() ** p * t.diff()).sum()
    return float(cost) ** (1 / p)


def wasserstein_distance(x: Tensor, y: Tensor, *, p: int = 1) -> float:
    """Return the exact p-Wasserstein distance between the empirical measures of x (n, d) and
    y (m, d), each point weighing 1/n (1/m).

        W_p = (min_π Σ_ij π_ij ‖x_i − y_j‖^p)^{1/p}

    * d = 1, any n and m: closed form from the sorted samples (quantile functions), O(n log n).
    * d > 1: the transport problem is solved exactly by POT's network simplex (``ot.emd2``);
      for n = m its optimum is a permutation. On 2,000 points in 2-D it takes 0.5–1 s where
      ``scipy.optimize.linear_sum_assignment`` took 8–20 s (measured; the Hungarian method
      slows most when the two sets lie far apart, as an untrained model's samples do).

    The exact solver costs up to O(n³) time and an (n, m) matrix, so it refuses n or m above
    5,000 with a :class:`ConfigError`; subsample first (the 1-D route has no limit).
    """
    p = check_int(p, "p", minimum=1)
    a = as_float64_rows(x, "x", min_rows=1)
    b = as_float64_rows(y, "y", dim=a.shape[1], why=" to match x", min_rows=1)
    n, m = a.shape[0], b.shape[0]
    if a.shape[1] == 1:
        return _wasserstein_1d(a[:, 0], b[:, 0], p)
    if max(n, m) > MAX_EXACT_OT:
        raise ConfigError(
            f"wasserstein_distance solves the transport problem exactly in O(n³) and allows at "
            f"most {MAX_EXACT_OT:,} points per set in d > 1, got x {tuple(a.shape)} and y "
            f"{tuple(b.shape)}; subsample both sets, e.g. x[torch.randperm(len(x))[:5000]]"
        )
    import ot  # POT, a dependency: imported here so that importing metrics stays light

    cost = (torch.cdist(a, b, compute_mode=_EXACT) ** p).cpu().numpy()  # (n, m)
    weights_x = torch.full((n,), 1 / n, dtype=torch.float64).numpy()
    weights_y = torch.full((m,), 1 / m, dtype=torch.float64).numpy()
    # POT's default cap of 100,000 simplex pivots stops short of the optimum (with only a warning)
    # already at n, m ≈ 5,000 in d = 10, where about 10⁶ are needed
    value, log = ot.emd2(weights_x, weights_y, cost, numItermax=EMD_MAX_ITER, log=True)
    if log["result_code"] != 1:  # 1 = OPTIMAL
        raise RuntimeError(
            f"ot.emd2 did not reach the optimal transport plan between x {tuple(a.shape)} and y "
            f"{tuple(b.shape)}: {log['warning']}"
        )
    return max(float(value), 0.0) ** (1 / p)


# --- density and Fréchet -------------------------------------------------------------------------


def mean_log_density(samples: Tensor, log_prob: Callable[[Tensor], Tensor]) -> float:
    """Return (1/n) Σ_i log p(x_i), the mean log-density of samples (n, d) under a known density.

    ``log_prob`` maps points (n, d) to log-densities (n,), e.g.
    :meth:`pushforward.mixtures.GaussianMixture.log_prob`; it is called once, without gradients,
    on the samples in float64. For samples drawn from p itself this estimates −H(p), the negative
    entropy. A sample outside the support (log p = −inf) makes the mean −inf.
    """
    x = as_float64_rows(samples, "samples", min_rows=1)
    if not callable(log_prob):
        raise ConfigError(
            f"log_prob must be a callable mapping (n, d) to (n,), got {type(log_prob).__name__}"
        )
    with torch.no_grad():
        out = log_prob(x)
    if not isinstance(out, Tensor) or tuple(out.shape) != (x.shape[0],):
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise DataError(
            f"log_prob must return log-densities of shape ({x.shape[0]},) for samples of shape "
            f"{tuple(x.shape)}, got {got}; sum per-dimension terms over the last axis"
        )
    out = out.to(torch.float64)
    if bool(out.isnan().any()) or bool((out == math.inf).any()):
        bad = int((out.isnan() | (out == math.inf)).nonzero()[0])
        raise DataError(
            f"log_prob returned NaN or +inf for samples[{bad}] = {x[bad].tolist()}; a log-density "
            f"must be a number or −inf"
        )
    return float(out.mean())


def _vector(v: object, name: str, *, dim: int | None = None) -> Tensor:
    """Return ``v`` as a finite float64 (d,) tensor, else raise :class:`DataError`."""
    want = f"({dim},)" if dim is not None else "(d,)"
    if not isinstance(v, Tensor):
        raise DataError(f"{name} must be a torch.Tensor of shape {want}, got {type(v).__name__}")
    if v.ndim != 1 or v.shape[0] == 0 or (dim is not None and v.shape[0] != dim):
        raise DataError(f"{name} must have shape {want}, got {tuple(v.shape)}")
    if not bool(torch.isfinite(v).all()):
        raise DataError(f"{name} of shape {tuple(v.shape)} holds NaN or infinite values")
    return v.detach().to(torch.float64)


def _covariance(c: object, name: str, dim: int) -> tuple[Tensor, Tensor, Tensor]:
    """Return ``c`` symmetrised in float64 with its eigenvalues (d,) and eigenvectors (d, d), or
    raise :class:`DataError` if it is not a finite symmetric positive semi-definite (d, d)."""
    if not isinstance(c, Tensor):
        raise DataError(
            f"{name} must be a torch.Tensor of shape ({dim}, {dim}), got {type(c).__name__}"
        )
    if tuple(c.shape) != (dim, dim):
        raise DataError(f"{name} must have shape ({dim}, {dim}), got {tuple(c.shape)}")
    if not bool(torch.isfinite(c).all()):
        raise DataError(f"{name} of shape {tuple(c.shape)} holds NaN or infinite values")
    eps = torch.finfo(c.dtype).eps if c.is_floating_point() else 0.0
    c = c.detach().to(torch.float64)
    tol = 1e3 * eps * dim * float(c.abs().max().clamp(min=1e-300))
    asym = float((c - c.mT).abs().max())
    if asym > tol:
        raise DataError(f"{name} must be symmetric, got max |C − Cᵀ| = {asym:.3g}")
    c = (c + c.mT) / 2
    eigvals, eigvecs = torch.linalg.eigh(c)  # (d,), (d, d)
    if float(eigvals[0]) < -tol:
        raise DataError(
            f"{name} must be positive semi-definite, its smallest eigenvalue is "
            f"{float(eigvals[0]):.3g}"
        )
    return c, eigvals.clamp(min=0), eigvecs


def frechet_distance(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> float:
    """Return the squared Fréchet (2-Wasserstein) distance between N(mu1, cov1) and N(mu2, cov2).

        d² = ‖μ₁ − μ₂‖² + tr(C₁ + C₂ − 2 (C₁^{1/2} C₂ C₁^{1/2})^{1/2})

    ``mu1``, ``mu2`` have shape (d,), ``cov1``, ``cov2`` shape (d, d), symmetric positive
    semi-definite. Both square roots are of symmetric matrices, taken by eigendecomposition with
    eigenvalues clipped at 0, so singular covariances (fewer samples than dimensions) are fine;
    tr (C₁^{1/2} C₂ C₁^{1/2})^{1/2} equals the tr (C₁C₂)^{1/2} of the usual FID formula. The result
    is clipped at 0.
    """
    m1 = _vector(mu1, "mu1")
    d = m1.shape[0]
    m2 = _vector(mu2, "mu2", dim=d)
    c1, eig1, vec1 = _covariance(cov1, "cov1", d)
    c2, _, _ = _covariance(cov2, "cov2", d)
    root1 = (vec1 * eig1.sqrt()) @ vec1.mT  # (d, d), C₁^{1/2}
    inner = root1 @ c2 @ root1  # (d, d)
    tr_root = torch.linalg.eigvalsh((inner + inner.mT) / 2).clamp(min=0).sqrt().sum()
    value = (m1 - m2).square().sum() + c1.trace() + c2.trace() - 2 * tr_root
    return max(float(value), 0.0)


def frechet_distance_from_samples(x: Tensor, y: Tensor) -> float:
    """Return :func:`frechet_distance` between Gaussians fitted to x (n, d) and y (m, d), n, m ≥ 2.

    Each fit is the sample mean (d,) and the unbiased sample covariance (d, d), divided by n − 1
    as ``numpy.cov`` does; on classifier features this is the Fréchet Inception Distance recipe.
    """
    a = as_float64_rows(x, "x", min_rows=2)
    b = as_float64_rows(y, "y", dim=a.shape[1], why=" to match x", min_rows=2)
    moments = []
    for z in (a, b):
        mean = z.mean(0)  # (d,)
        centred = z - mean  # (n, d)
        moments += [mean, centred.mT @ centred / (z.shape[0] - 1)]  # (d,), (d, d)
    return frechet_distance(*moments)

"""Metrics against closed forms and independent references: scipy's KS statistic, energy and 1-D
Wasserstein distances, brute-force loops over pairs and permutations, a linear program for optimal
transport, Gaussian integrals for MMD and energy, scipy.linalg.sqrtm for the Fréchet distance, and
seeded Monte Carlo with tolerances from its own standard error."""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import linalg, optimize, stats
from scipy.spatial.distance import pdist
from torch.distributions import MultivariateNormal, Normal

from pushforward.core import ConfigError, DataError
from pushforward.data import grid25, ring8
from pushforward.metrics import (
    ModeMetrics,
    energy_distance,
    frechet_distance,
    frechet_distance_from_samples,
    ks_critical_value,
    ks_distance,
    mean_log_density,
    mmd2_unbiased,
    mode_metrics,
    wasserstein_distance,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=gen(seed), dtype=torch.float64)


def random_cov(d: int, seed: int) -> torch.Tensor:
    a = randn(d, d, seed=seed)
    return a @ a.mT + 0.1 * torch.eye(d, dtype=torch.float64)


def assert_within_se(values: list[float], want: float, *, z: float = 4.0) -> None:
    """The mean of independent replicates is within z standard errors of ``want``."""
    v = np.asarray(values)
    se = v.std(ddof=1) / math.sqrt(len(v))
    assert abs(v.mean() - want) < z * se, (v.mean(), want, se)


# --- Kolmogorov–Smirnov --------------------------------------------------------------------------


def test_ks_distance_equals_scipy_statistic():
    x = torch.randn(1000, generator=torch.Generator().manual_seed(0)).double() * 1.3 + 0.2
    want = stats.kstest(x.numpy(), stats.norm.cdf).statistic
    assert ks_distance(x, Normal(0.0, 1.0).cdf) == pytest.approx(want, abs=1e-12)


def test_ks_distance_of_a_wrong_model_is_large():
    x = torch.rand(10_000, generator=torch.Generator().manual_seed(1))
    assert ks_distance(x, lambda t: t.clamp(0, 1) ** 2) > 0.2


def test_ks_critical_value_matches_the_asymptotic_formula():
    assert ks_critical_value(100_000, 0.001) == pytest.approx(np.sqrt(np.log(2000) / 200_000))
    with pytest.raises(ConfigError, match="n ≥ 1"):
        ks_critical_value(0)
    with pytest.raises(ConfigError, match="at least one sample"):
        ks_distance(torch.tensor([]), lambda t: t)


# --- mode coverage -------------------------------------------------------------------------------


def test_mode_metrics_of_samples_at_the_means_is_perfect():
    means = ring8().means  # (8, 2)
    result = mode_metrics(means.repeat(3, 1), means, 0.01)
    assert result == ModeMetrics(
        modes_captured=8, n_modes=8, high_quality=1.0, reverse_kl=0.0, width=0.0, counts=[3] * 8
    )
    assert result.to_dict() == {
        "modes_captured": 8,
        "n_modes": 8,
        "high_quality": 1.0,
        "reverse_kl": 0.0,
        "width": 0.0,
        "counts": [3] * 8,
    }


def test_mode_metrics_of_a_collapsed_generator_has_reverse_kl_log_k():
    means = grid25().means  # (25, 2)
    samples = means[7] + 0.05 * torch.randn(100, 2, generator=gen(0), dtype=torch.float64)
    samples = samples[(samples - means[7]).norm(dim=1) <= 0.15]  # all within 3σ
    result = mode_metrics(samples, means, 0.05)
    assert result.modes_captured == 1
    assert result.high_quality == 1.0
    assert result.reverse_kl == pytest.approx(math.log(25), rel=1e-14)
    assert result.counts == [0] * 7 + [len(samples)] + [0] * 17


def test_mode_metrics_of_a_hand_built_histogram():
    means = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    samples = torch.tensor(
        [[0.1, 0.0], [0.0, -0.2], [0.2, 0.2], [9.9, 0.1], [5.0, 0.0], [3.0, 4.0]]
    )  # 3 near mode 0, 1 near mode 1, 2 low quality; none near mode 2
    result = mode_metrics(samples, means, 0.1)  # radius 0.3
    p = np.array([3 / 4, 1 / 4])
    assert result.counts == [3, 1, 0]
    assert result.modes_captured == 2
    assert result.high_quality == pytest.approx(4 / 6, rel=1e-15)
    assert result.reverse_kl == pytest.approx(float((p * np.log(3 * p)).sum()), rel=1e-14)
    two = mode_metrics(samples, means[:2], 0.1)
    assert two.reverse_kl == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5), rel=1e-14)


@pytest.mark.parametrize("dim", [2, 5])
def test_mode_width_is_one_for_gaussian_modes_and_tracks_narrower_ones(dim):
    # modes N(μ_k, (s·σ)² I): width 1 at s = 1; at s = 1/2 nothing reaches the 3σ cut, so the
    # width is √(E[s²χ²_d] / E[χ²_d | χ²_d ≤ 9]), the reference a seeded Monte Carlo of χ²_d
    means = torch.eye(dim, dtype=torch.float64) * 10.0  # (d, d), far apart
    std, n = 0.1, 200_000
    z = torch.randn(n, dim, generator=gen(3), dtype=torch.float64)
    home = means[torch.arange(n) % dim]
    assert mode_metrics(home + std * z, means, std).width == pytest.approx(1.0, rel=5e-3)
    r = torch.randn(2_000_000, dim, generator=gen(4), dtype=torch.float64).square().sum(1)
    expected = math.sqrt(0.25 * dim / float(r[r <= 9].mean()))
    assert mode_metrics(home + 0.5 * std * z, means, std).width == pytest.approx(expected, rel=5e-3)


def test_mode_width_of_one_sample_on_the_edge():
    # R = 9 (on the 3σ edge); E[χ²_2 | χ²_2 ≤ 9] = 2 − 9 e^{−4.5}/(1 − e^{−4.5}) in closed form
    samples = torch.tensor([[0.3, 0.0]], dtype=torch.float64)
    width = mode_metrics(samples, torch.zeros(1, 2, dtype=torch.float64), 0.1).width
    assert width == pytest.approx(math.sqrt(9 / (2 - 9 * math.exp(-4.5) / (1 - math.exp(-4.5)))))


def test_mode_metrics_with_no_high_quality_sample_is_inf():
    means = ring8().means
    result = mode_metrics(torch.full((50, 2), 100.0), means, 0.01)
    assert result.high_quality == 0.0
    assert result.modes_captured == 0
    assert result.reverse_kl == math.inf
    assert math.isnan(result.width)
    assert result.counts == [0] * 8


def test_mode_metrics_threshold_boundary_is_inclusive():
    means = torch.tensor([[0.0, 0.0], [4.0, 0.0]], dtype=torch.float64)
    just_out = math.nextafter(1.0, 2.0)
    samples = torch.tensor(
        [[1.0, 0.0], [0.0, -1.0], [just_out, 0.0], [0.0, just_out], [3.0, 0.0], [2.5, 0.0]],
        dtype=torch.float64,
    )  # distance exactly 2σ = 1 (in), just over (out), 1 from mode 1 (in), 1.5 from mode 1 (out)
    result = mode_metrics(samples, means, 0.5, threshold=2.0)
    assert result.counts == [2, 1]
    assert result.high_quality == pytest.approx(3 / 6, rel=1e-15)
    wide = mode_metrics(samples, means, 0.5)  # default threshold 3: radius 1.5 takes them all
    assert wide.counts == [4, 2]
    assert wide.high_quality == 1.0


@pytest.mark.parametrize("make", [ring8, grid25], ids=["ring8", "grid25"])
def test_mode_metrics_of_the_true_mixture(make):
    mixture = make()
    n = 20_000
    x, labels = mixture.sample_with_labels(n, generator=gen(3))
    std = float(mixture.stds[0])
    result = mode_metrics(x, mixture.means, std)
    k = mixture.n_components
    # P(‖N(0, σ²I₂)‖ ≤ 3σ) = P(χ²₂ ≤ 9) = 1 − e^{−4.5}; binomial tolerance of 5 standard errors
    p_hq = 1 - math.exp(-4.5)
    assert result.high_quality == pytest.approx(p_hq, abs=5 * math.sqrt(p_hq * (1 - p_hq) / n))
    assert result.modes_captured == k
    # the modes are > 15σ apart, so every high-quality sample counts for its own component
    good = (x.double() - mixture.means[labels]).norm(dim=1) <= 3 * std
    assert result.counts == torch.bincount(labels[good], minlength=k).tolist()
    # a uniform multinomial: 2·#HQ·KL ≈ χ²_{K−1} (the G-test)
    n_good = sum(result.counts)
    assert 0 < result.reverse_kl < stats.chi2.ppf(1 - 1e-6, k - 1) / (2 * n_good)


def test_mode_metrics_rejects_bad_input():
    means = ring8().means
    x = torch.zeros(4, 2)
    with pytest.raises(DataError, match=r"means must have shape \(n, 2\) to match samples"):
        mode_metrics(x, torch.zeros(8, 3), 0.01)
    with pytest.raises(DataError, match=r"samples must have shape \(n, d\)"):
        mode_metrics(torch.zeros(4), means, 0.01)
    with pytest.raises(ConfigError, match="std must be a finite number > 0, got 0"):
        mode_metrics(x, means, 0)
    with pytest.raises(ConfigError, match="threshold must be a finite number > 0"):
        mode_metrics(x, means, 0.01, threshold=-1.0)


# --- MMD -----------------------------------------------------------------------------------------


def mmd2_loop(x: np.ndarray, y: np.ndarray, sigmas: list[float]) -> float:
    """Gretton et al. (2012), eq. 3, one pair at a time."""

    def k(a, b):
        return sum(math.exp(-float(np.sum((a - b) ** 2)) / (2 * s**2)) for s in sigmas)

    n, m = len(x), len(y)
    kxx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kyy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kxy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return kxx + kyy - 2 * kxy


def test_mmd2_unbiased_equals_a_loop_over_pairs():
    x, y = randn(6, 3, seed=1), randn(5, 3, seed=2) + 0.5
    want = mmd2_loop(x.numpy(), y.numpy(), [0.5, 1.7])
    assert mmd2_unbiased(x, y, bandwidths=[0.5, 1.7]) == pytest.approx(want, rel=1e-12)
    assert mmd2_unbiased(x.float(), y.float(), bandwidths=(0.5, 1.7)) == pytest.approx(
        mmd2_loop(x.float().double().numpy(), y.float().double().numpy(), [0.5, 1.7]), rel=1e-12
    )


def test_mmd2_unbiased_default_bandwidths_follow_the_median_heuristic():
    x, y = randn(3, 2, seed=3), randn(4, 2, seed=4) + 1.0  # 7 points: 21 pairs, an odd count
    h = float(np.median(pdist(np.concatenate([x.numpy(), y.numpy()]))))
    want = mmd2_loop(x.numpy(), y.numpy(), [0.5 * h, h, 2 * h])
    assert mmd2_unbiased(x, y) == pytest.approx(want, rel=1e-12)


def mmd2_gaussians(delta: torch.Tensor, s: float, sigmas: list[float]) -> float:
    """Population MMD² between N(0, s²I) and N(δ, s²I) under Σ_σ exp(−‖a − b‖²/(2σ²)):
    E exp(−‖Z‖²/(2σ²)) = (σ²/(σ² + τ²))^{d/2} exp(−‖μ‖²/(2(σ² + τ²))) for Z ~ N(μ, τ²I)."""
    d, dist2 = delta.numel(), float(delta.square().sum())
    total = 0.0
    for sigma in sigmas:
        v = sigma**2 + 2 * s**2
        total += 2 * (sigma**2 / v) ** (d / 2) * (1 - math.exp(-dist2 / (2 * v)))
    return total


@pytest.mark.parametrize(
    ("delta", "n"), [((0.0, 0.0), 10), ((1.0, 0.5), 10), ((1.0, 0.5), 200)], ids=str
)
def test_mmd2_unbiased_is_unbiased_for_two_gaussians(delta, n):
    s, sigmas = 0.8, [0.5, 1.5]
    delta = torch.tensor(delta, dtype=torch.float64)
    want = mmd2_gaussians(delta, s, sigmas)
    g = gen(5)
    reps = 1000 if n == 10 else 20
    values = [
        mmd2_unbiased(
            s * torch.randn(n, 2, generator=g, dtype=torch.float64),
            delta + s * torch.randn(n + 1, 2, generator=g, dtype=torch.float64),
            bandwidths=sigmas,
        )
        for _ in range(reps)
    ]
    assert_within_se(values, want)
    if want == 0:
        assert min(values) < 0 < max(values)  # unbiased, so it goes negative
    else:
        # the V-statistic (i = j terms kept) would be off by about 2 Σ_σ (1 − c_σ) / n
        assert abs(np.mean(values) - want) < 0.05 * want


def test_mmd2_unbiased_rejects_bad_input():
    x = randn(5, 2)
    with pytest.raises(ConfigError, match="bandwidths must hold at least one number"):
        mmd2_unbiased(x, x, bandwidths=[])
    with pytest.raises(ConfigError, match=r"bandwidths\[1\] must be a finite number > 0"):
        mmd2_unbiased(x, x, bandwidths=[1.0, 0.0])
    with pytest.raises(ConfigError, match="bandwidths must be a sequence"):
        mmd2_unbiased(x, x, bandwidths="1.0")
    with pytest.raises(ConfigError, match="bandwidths must be a sequence"):
        mmd2_unbiased(x, x, bandwidths=1.0)
    with pytest.raises(DataError, match=r"y must have shape \(n, d\) with at least 2 rows"):
        mmd2_unbiased(x, x[:1])


# --- energy distance -----------------------------------------------------------------------------


def energy_loop(x: np.ndarray, y: np.ndarray, *, unbiased: bool) -> float:
    def mean_dist(a, b, skip_diagonal):
        d = [
            float(np.linalg.norm(a[i] - b[j]))
            for i in range(len(a))
            for j in range(len(b))
            if not (skip_diagonal and i == j)
        ]
        return sum(d) / len(d)

    return 2 * mean_dist(x, y, False) - mean_dist(x, x, unbiased) - mean_dist(y, y, unbiased)


@pytest.mark.parametrize("unbiased", [True, False])
def test_energy_distance_equals_a_loop_over_pairs(unbiased):
    x, y = randn(7, 3, seed=6), randn(5, 3, seed=7) * 2 + 0.3
    want = energy_loop(x.numpy(), y.numpy(), unbiased=unbiased)
    assert energy_distance(x, y, unbiased=unbiased) == pytest.approx(want, rel=1e-12)


def test_energy_distance_v_statistic_is_the_square_of_scipys():
    x, y = randn(50, 1, seed=8), randn(37, 1, seed=9) * 1.5 + 0.4
    want = stats.energy_distance(x[:, 0].numpy(), y[:, 0].numpy()) ** 2
    assert energy_distance(x, y, unbiased=False) == pytest.approx(want, rel=1e-12)
    # scipy's convention, 2 ∫ (F_n − G_m)², by the midpoint rule on the step functions
    t = np.sort(np.concatenate([x[:, 0].numpy(), y[:, 0].numpy()]))
    f = np.searchsorted(np.sort(x[:, 0].numpy()), t[:-1], side="right") / 50
    g = np.searchsorted(np.sort(y[:, 0].numpy()), t[:-1], side="right") / 37
    assert 2 * np.sum((f - g) ** 2 * np.diff(t)) == pytest.approx(want, rel=1e-12)


def test_energy_distance_of_single_points_is_twice_their_distance():
    x, y = torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 4.0]])
    assert energy_distance(x, y, unbiased=False) == pytest.approx(10.0, rel=1e-15)
    with pytest.raises(DataError, match=r"x must have shape \(n, d\) with at least 2 rows"):
        energy_distance(x, y)


def test_energy_distance_of_shifted_gaussians_matches_the_closed_form():
    sigma, delta, n = 1.0, 0.7, 10
    # X − Y ~ N(−δ, 2σ²): E|X − Y| = σ√2 √(2/π) e^{−δ²/(4σ²)} + δ (1 − 2Φ(−δ/(σ√2)));
    # E|X − X'| = 2σ/√π
    tau = sigma * math.sqrt(2)
    cross = tau * math.sqrt(2 / math.pi) * math.exp(-(delta**2) / (2 * tau**2)) + delta * (
        1 - 2 * stats.norm.cdf(-delta / tau)
    )
    within = 2 * sigma / math.sqrt(math.pi)
    want = 2 * cross - 2 * within
    g = gen(10)
    unbiased, v_stat = [], []
    for _ in range(1000):
        x = sigma * torch.randn(n, 1, generator=g, dtype=torch.float64)
        y = delta + sigma * torch.randn(n, 1, generator=g, dtype=torch.float64)
        unbiased.append(energy_distance(x, y))
        v_stat.append(energy_distance(x, y, unbiased=False))
    assert_within_se(unbiased, want)
    # the V-statistic keeps the n zero distances i = j: E = want + E|X − X'|/n + E|Y − Y'|/n
    assert_within_se(v_stat, want + 2 * within / n)
    assert min(unbiased) < 0  # unbiased, so it can go negative at n = 10


def test_energy_distance_of_one_distribution_is_near_zero():
    x, y = randn(400, 2, seed=11), randn(300, 2, seed=12)
    shifted = energy_distance(x, y + 0.5)
    assert abs(energy_distance(x, y)) < 0.05 * shifted


# --- Wasserstein ---------------------------------------------------------------------------------


def transport_lp(x: np.ndarray, y: np.ndarray, p: int) -> float:
    """W_p by scipy's linear-programming solver on the (n, m) transport polytope."""
    n, m = len(x), len(y)
    cost = np.linalg.norm(x[:, None] - y[None], axis=-1) ** p
    rows = np.kron(np.eye(n), np.ones((1, m)))  # Σ_j π_ij = 1/n
    cols = np.kron(np.ones((1, n)), np.eye(m))  # Σ_i π_ij = 1/m
    result = optimize.linprog(
        cost.ravel(),
        A_eq=np.vstack([rows, cols]),
        b_eq=np.concatenate([np.full(n, 1 / n), np.full(m, 1 / m)]),
        bounds=(0, None),
        method="highs",
    )
    assert result.status == 0
    return result.fun ** (1 / p)


def test_wasserstein_1d_equals_scipy():
    x, y = randn(1000, 1, seed=13), randn(777, 1, seed=14) * 0.5 + 0.3
    want = stats.wasserstein_distance(x[:, 0].numpy(), y[:, 0].numpy())
    assert wasserstein_distance(x, y) == pytest.approx(want, rel=1e-13)
    ties = torch.tensor([[0.0], [0.0], [1.0], [2.0], [2.0], [2.0]])
    want = stats.wasserstein_distance(ties[:, 0].numpy(), y[:10, 0].numpy())
    assert wasserstein_distance(ties, y[:10]) == pytest.approx(want, rel=1e-13)


def test_wasserstein_1d_has_no_size_limit_and_is_float64_exact():
    x, y = randn(6000, 1, seed=15), randn(5999, 1, seed=16) + 0.01
    want = stats.wasserstein_distance(x[:, 0].numpy(), y[:, 0].numpy())
    # breakpoints i/n and j/m as close as 1/(nm) ≈ 3e-8: float32 would get these wrong
    assert wasserstein_distance(x, y) == pytest.approx(want, rel=1e-12)


def test_wasserstein_1d_w2_equals_a_linear_program():
    x, y = randn(7, 1, seed=17), randn(5, 1, seed=18) * 2
    assert wasserstein_distance(x, y, p=2) == pytest.approx(
        transport_lp(x.numpy(), y.numpy(), 2), rel=1e-9
    )


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("d", [1, 2])
def test_wasserstein_of_a_shifted_copy_is_the_shift(d, p):
    # W_p ≥ W_1 ≥ ‖E X − E Y‖ = ‖v‖ and the translation coupling costs exactly ‖v‖
    x = randn(40, d, seed=19)
    v = torch.tensor([0.3, -0.4][:d], dtype=torch.float64)
    shifted = x[torch.randperm(40, generator=gen(20))] + v
    want = float(v.norm())
    assert wasserstein_distance(x, shifted, p=p) == pytest.approx(want, rel=1e-12)
    # n ≠ m: every point of x twice, each copy carrying half the weight
    assert wasserstein_distance(x, torch.cat([x, x]) + v, p=p) == pytest.approx(want, rel=1e-9)


def test_wasserstein_of_a_duplicated_set_is_zero():
    x = randn(30, 2, seed=21)
    assert wasserstein_distance(x, torch.cat([x, x])) == pytest.approx(0.0, abs=1e-14)
    assert wasserstein_distance(x, x.flip(0), p=2) == pytest.approx(0.0, abs=1e-14)


@pytest.mark.parametrize("p", [1, 2])
def test_wasserstein_equal_sizes_equals_the_best_permutation(p):
    x, y = randn(6, 2, seed=22), randn(6, 2, seed=23) + 0.5
    cost = np.linalg.norm(x.numpy()[:, None] - y.numpy()[None], axis=-1) ** p
    best = min(cost[range(6), list(perm)].mean() for perm in itertools.permutations(range(6)))
    assert wasserstein_distance(x, y, p=p) == pytest.approx(best ** (1 / p), rel=1e-12)


@pytest.mark.parametrize("p", [1, 2])
def test_wasserstein_unequal_sizes_equals_a_linear_program(p):
    x, y = randn(5, 3, seed=24), randn(4, 3, seed=25) * 1.5
    want = transport_lp(x.numpy(), y.numpy(), p)
    assert wasserstein_distance(x, y, p=p) == pytest.approx(want, rel=1e-9)


def test_wasserstein_refuses_more_than_5000_points_in_2d():
    x = torch.zeros(5001, 2)
    with pytest.raises(ConfigError, match=r"at most 5,000 points.*x \(5001, 2\) and y \(3, 2\)"):
        wasserstein_distance(x, x[:3])


def test_wasserstein_never_returns_a_plan_pot_did_not_finish(monkeypatch):
    import ot

    calls = []

    def stopped_early(a, b, cost, **kwargs):
        calls.append(kwargs)
        return 0.5, {"result_code": 3, "warning": "numItermax reached before optimality"}

    monkeypatch.setattr(ot, "emd2", stopped_early)
    x = randn(5, 2)
    with pytest.raises(RuntimeError, match="numItermax reached"):
        wasserstein_distance(x, x[:3])
    # POT's default of 1e5 pivots is too few at n, m ≈ 5,000 in d = 10 (about 1e6 are needed)
    assert calls[0]["numItermax"] >= 10**7


def test_wasserstein_rejects_bad_input():
    x = randn(5, 2)
    with pytest.raises(ConfigError, match="p must be an integer >= 1, got 0"):
        wasserstein_distance(x, x, p=0)
    with pytest.raises(ConfigError, match=r"p must be an integer >= 1, got 1\.5"):
        wasserstein_distance(x, x, p=1.5)


# --- mean log-density ----------------------------------------------------------------------------


def test_mean_log_density_equals_torch_distributions():
    mvn = MultivariateNormal(randn(3, seed=26), covariance_matrix=random_cov(3, seed=27))
    x = mvn.loc + randn(100, 3, seed=44) @ mvn.scale_tril.mT  # (100, 3), drawn from mvn
    want = float(mvn.log_prob(x).mean())
    assert mean_log_density(x, mvn.log_prob) == pytest.approx(want, rel=1e-14)
    mixture = ring8()
    x = mixture.sample(50, generator=gen(28))
    assert mean_log_density(x, mixture.log_prob) == pytest.approx(
        float(mixture.log_prob(x.double()).mean()), rel=1e-12
    )


def test_mean_log_density_of_a_standard_normal_is_minus_its_entropy():
    d, n = 3, 20_000
    x = torch.randn(n, d, generator=gen(29), dtype=torch.float64)
    value = mean_log_density(x, lambda z: Normal(0.0, 1.0).log_prob(z).sum(-1))
    # log p = −d/2 log 2π − ‖x‖²/2, so Var log p = Var(χ²_d)/4 = d/2
    se = math.sqrt(d / 2 / n)
    assert value == pytest.approx(-d / 2 * math.log(2 * math.pi * math.e), abs=5 * se)


def test_mean_log_density_allows_minus_inf():
    def log_prob(z):  # Uniform(0, 1)
        inside = (z[:, 0] > 0) & (z[:, 0] < 1)
        return torch.where(inside, 0.0, -math.inf).to(z.dtype)

    assert mean_log_density(torch.tensor([[0.5], [0.25]]), log_prob) == 0.0
    assert mean_log_density(torch.tensor([[0.5], [2.0]]), log_prob) == -math.inf


def test_mean_log_density_rejects_bad_output():
    x = randn(4, 2)
    with pytest.raises(DataError, match=r"log-densities of shape \(4,\).*got \(4, 2\)"):
        mean_log_density(x, lambda z: Normal(0.0, 1.0).log_prob(z))
    with pytest.raises(DataError, match="got float"):
        mean_log_density(x, lambda z: 0.0)
    nan_at_2 = torch.tensor([0.0, 0.0, math.nan, 0.0])
    with pytest.raises(DataError, match=r"NaN or \+inf for samples\[2\]"):
        mean_log_density(x, lambda z: nan_at_2)
    with pytest.raises(DataError, match=r"NaN or \+inf for samples\[1\]"):
        mean_log_density(x, lambda z: torch.tensor([0.0, math.inf, 0.0, 0.0]))
    with pytest.raises(ConfigError, match="log_prob must be a callable"):
        mean_log_density(x, "normal")
    with pytest.raises(DataError, match=r"samples must have shape \(n, d\)"):
        mean_log_density(x[0], lambda z: z.sum(-1))


# --- Fréchet distance ----------------------------------------------------------------------------


def frechet_scipy(mu1, cov1, mu2, cov2) -> float:
    """The FID formula with scipy.linalg.sqrtm of the (non-symmetric) product C₁C₂."""
    root = linalg.sqrtm(cov1.numpy() @ cov2.numpy()).real
    return float(
        np.sum((mu1.numpy() - mu2.numpy()) ** 2) + np.trace(cov1.numpy() + cov2.numpy() - 2 * root)
    )


def test_frechet_distance_of_identical_gaussians_is_zero():
    mu, cov = randn(4, seed=30), random_cov(4, seed=31)
    assert frechet_distance(mu, cov, mu.clone(), cov.clone()) == pytest.approx(0.0, abs=1e-12)


def test_frechet_distance_of_shifted_gaussians_is_the_squared_shift():
    mu, cov, delta = randn(4, seed=32), random_cov(4, seed=33), randn(4, seed=34)
    want = float(delta.square().sum())
    assert frechet_distance(mu, cov, mu + delta, cov) == pytest.approx(want, rel=1e-10)


def test_frechet_distance_of_diagonal_covariances():
    a = torch.tensor([1.0, 4.0, 0.25], dtype=torch.float64)
    b = torch.tensor([9.0, 1.0, 0.25], dtype=torch.float64)
    mu1, mu2 = torch.zeros(3, dtype=torch.float64), torch.tensor([1.0, 2.0, 0.0])
    want = 1 + 4 + float((a.sqrt() - b.sqrt()).square().sum())  # ‖δ‖² = 5, Σ(√a − √b)² = 4 + 1
    assert want == 10.0
    assert frechet_distance(mu1, a.diag(), mu2, b.diag()) == pytest.approx(want, rel=1e-14)


def test_frechet_distance_in_1d_is_the_w2_of_two_normals():
    m1, s1, m2, s2 = 0.3, 1.5, -1.1, 0.4
    want = (m1 - m2) ** 2 + (s1 - s2) ** 2
    got = frechet_distance(
        torch.tensor([m1]), torch.tensor([[s1**2]]), torch.tensor([m2]), torch.tensor([[s2**2]])
    )
    assert got == pytest.approx(want, rel=1e-6)  # float32 input


def test_frechet_distance_of_non_commuting_covariances_equals_scipy_sqrtm():
    mu1, mu2 = randn(5, seed=35), randn(5, seed=36)
    cov1, cov2 = random_cov(5, seed=37), random_cov(5, seed=38)
    assert not torch.allclose(cov1 @ cov2, cov2 @ cov1)
    want = frechet_scipy(mu1, cov1, mu2, cov2)
    assert frechet_distance(mu1, cov1, mu2, cov2) == pytest.approx(want, rel=1e-10)
    assert frechet_distance(mu2, cov2, mu1, cov1) == pytest.approx(want, rel=1e-10)


def test_frechet_distance_allows_singular_covariances():
    v = randn(3, 1, seed=39)
    cov1 = v @ v.mT  # rank 1
    cov2 = random_cov(3, seed=40)
    mu = torch.zeros(3, dtype=torch.float64)
    # C₂^{1/2} C₁ C₂^{1/2} = (C₂^{1/2} v)(C₂^{1/2} v)ᵀ has the single eigenvalue vᵀC₂v
    want = float(cov1.trace() + cov2.trace() - 2 * (v.mT @ cov2 @ v).sqrt())
    # the zero eigenvalues come out of eigh as ±1e-16; their square roots, ~1e-8, are the error
    assert frechet_distance(mu, cov1, mu, cov2) == pytest.approx(want, abs=1e-6)
    assert frechet_distance(mu, cov2, mu, cov1) == pytest.approx(want, abs=1e-6)
    zeros = torch.zeros(3, 3, dtype=torch.float64)
    assert frechet_distance(mu, zeros, mu, cov2) == pytest.approx(float(cov2.trace()), rel=1e-14)


def test_frechet_distance_rejects_bad_input():
    mu, cov = torch.zeros(3), torch.eye(3)
    asym = torch.eye(3)
    asym[0, 1] = 0.5
    not_psd = torch.diag(torch.tensor([1.0, -0.5, 1.0]))
    nan_cov = torch.eye(3)
    nan_cov[1, 1] = math.nan
    cases = [
        ((mu, asym, mu, cov), r"cov1 must be symmetric, got max \|C − Cᵀ\| = 0.5"),
        ((mu, cov, mu, not_psd), "cov2 must be positive semi-definite.* -0.5"),
        ((mu, torch.eye(3)[:, :2], mu, cov), r"cov1 must have shape \(3, 3\), got \(3, 2\)"),
        ((mu, cov, torch.zeros(2), cov), r"mu2 must have shape \(3,\), got \(2,\)"),
        ((torch.zeros(3, 1), cov, mu, cov), r"mu1 must have shape \(d,\), got \(3, 1\)"),
        ((torch.tensor([0.0, math.nan, 0.0]), cov, mu, cov), "mu1 of shape .* NaN"),
        ((mu, cov, mu, nan_cov), "cov2 of shape .* NaN"),
        ((mu, np.eye(3), mu, cov), "cov1 must be a torch.Tensor"),
        (([0.0, 0.0, 0.0], cov, mu, cov), "mu1 must be a torch.Tensor"),
    ]
    for args, message in cases:
        with pytest.raises(DataError, match=message):
            frechet_distance(*args)


def test_frechet_distance_from_samples_equals_numpy_cov():
    x, y = randn(50, 3, seed=41), randn(40, 3, seed=42) @ random_cov(3, seed=43) + 1.0
    xn, yn = x.numpy(), y.numpy()
    want = frechet_scipy(
        torch.from_numpy(xn.mean(0)),
        torch.from_numpy(np.cov(xn, rowvar=False)),
        torch.from_numpy(yn.mean(0)),
        torch.from_numpy(np.cov(yn, rowvar=False)),
    )
    assert frechet_distance_from_samples(x, y) == pytest.approx(want, rel=1e-10)
    # two points: the covariance (rank 1, d = 3) is singular, the distance still defined
    assert frechet_distance_from_samples(x[:2], x[:2]) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(DataError, match=r"y must have shape \(n, d\) with at least 2 rows"):
        frechet_distance_from_samples(x, y[:1])


# --- bad sample sets, one table for every two-sample metric --------------------------------------

TWO_SAMPLE = {
    "mode_metrics": (lambda a, b: mode_metrics(a, b, 0.1), "samples", "means"),
    "mmd2_unbiased": (mmd2_unbiased, "x", "y"),
    "energy_distance": (energy_distance, "x", "y"),
    "wasserstein_distance": (wasserstein_distance, "x", "y"),
    "frechet_distance_from_samples": (frechet_distance_from_samples, "x", "y"),
}


@pytest.mark.parametrize("name", sorted(TWO_SAMPLE))
def test_two_sample_metrics_reject_bad_sample_sets(name):
    fn, first, second = TWO_SAMPLE[name]
    good = randn(6, 2)
    nan = good.clone()
    nan[3, 1] = math.nan
    with pytest.raises(DataError, match=rf"{first} must have shape \(n, d\)"):
        fn(good[:, 0], good)
    with pytest.raises(DataError, match=rf"{second} must have shape \(n, 2\) to match"):
        fn(good, randn(6, 3))
    with pytest.raises(DataError, match=rf"{second} of shape \(6, 2\) holds 1 NaN.*row 3"):
        fn(good, nan)
    with pytest.raises(DataError, match=rf"{first} must have shape .* got \(0, 2\)"):
        fn(good[:0], good)
    with pytest.raises(DataError, match=f"{first} must be a floating-point tensor"):
        fn(good.long(), good)
    with pytest.raises(DataError, match=f"{second} must be a torch.Tensor"):
        fn(good, good.numpy())

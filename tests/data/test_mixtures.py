"""Gaussian mixtures and moons: exact densities against independent references, seeded sampling,
spec files, and one clear error per kind of bad parameter."""

import json
import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal
from torch.distributions import Categorical, MixtureSameFamily, MultivariateNormal

from pushforward.core import ConfigError, DataError
from pushforward.data import GaussianMixture, grid25, load_data, mixture_from_spec, moons, ring8


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def torch_mixture(m: GaussianMixture) -> MixtureSameFamily:
    """The same mixture built by torch.distributions, an independent reference."""
    return MixtureSameFamily(
        Categorical(probs=m.weights), MultivariateNormal(m.means, covariance_matrix=m.covariances)
    )


def random_mixture(k: int = 3, d: int = 4, seed: int = 0) -> GaussianMixture:
    g = gen(seed)
    a = torch.randn(k, d, d, generator=g, dtype=torch.float64)
    cov = a @ a.mT + 0.5 * torch.eye(d, dtype=torch.float64)
    weights = torch.rand(k, generator=g, dtype=torch.float64) + 0.1
    return GaussianMixture(weights, 3 * torch.randn(k, d, generator=g, dtype=torch.float64), cov)


def grid_mass(m: GaussianMixture, half_width: float, step: float) -> float:
    """∫ p over the square [−half_width, half_width]² by the midpoint rule."""
    ticks = torch.arange(-half_width + step / 2, half_width, step, dtype=torch.float64)
    points = torch.cartesian_prod(ticks, ticks)  # (m², 2)
    return (m.log_prob(points).exp().sum() * step**2).item()


# --- mixtures -------------------------------------------------------------------------------------


def test_ring8_modes_are_on_the_circle_at_angles_2πk_over_8():
    m = ring8()
    angles = 2 * math.pi * torch.arange(8, dtype=torch.float64) / 8
    expected = torch.stack([angles.cos(), angles.sin()], dim=1)
    torch.testing.assert_close(m.means, expected, rtol=0, atol=1e-15)
    torch.testing.assert_close(m.weights, torch.full((8,), 1 / 8, dtype=torch.float64))
    torch.testing.assert_close(m.stds, torch.full((8,), 0.01, dtype=torch.float64))
    torch.testing.assert_close(
        ring8(radius=2.0, n_modes=5).means.norm(dim=1), 2 * torch.ones(5, dtype=torch.float64)
    )


def test_grid25_modes_are_spacing_times_minus2_to_2_squared():
    m = grid25()
    assert {tuple(p) for p in m.means.tolist()} == {
        (float(a), float(b)) for a in (-4, -2, 0, 2, 4) for b in (-4, -2, 0, 2, 4)
    }
    torch.testing.assert_close(m.stds, torch.full((25,), 0.05, dtype=torch.float64))
    assert grid25(spacing=1.0).means.abs().max().item() == 2.0


@pytest.mark.parametrize(
    ("mixture", "half_width"),
    [(ring8(std=0.1), 1.8), (ring8(std=0.3), 3.0), (grid25(std=0.3), 6.5)],
    ids=["ring8-std0.1", "ring8-std0.3", "grid25-std0.3"],
)
def test_log_prob_integrates_to_one(mixture, half_width):
    step = mixture.stds[0].item() / 6
    assert grid_mass(mixture, half_width, step) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("make", [ring8, grid25])
def test_default_log_prob_matches_torch_distributions_near_the_modes(make):
    m = make()
    k = torch.randint(0, m.n_components, (500,), generator=gen(1))
    x = m.means[k] + 2 * m.stds[0] * torch.randn(500, 2, generator=gen(2), dtype=torch.float64)
    torch.testing.assert_close(m.log_prob(x), torch_mixture(m).log_prob(x), rtol=1e-10, atol=1e-10)


def test_full_covariance_log_prob_matches_torch_and_scipy():
    m = random_mixture()
    x = 3 * torch.randn(200, 4, generator=gen(5), dtype=torch.float64)
    torch.testing.assert_close(m.log_prob(x), torch_mixture(m).log_prob(x), rtol=1e-10, atol=1e-10)
    per_component = np.stack(
        [
            np.log(w) + multivariate_normal(mu, c).logpdf(x.numpy())
            for w, mu, c in zip(
                m.weights.numpy(), m.means.numpy(), m.covariances.numpy(), strict=True
            )
        ]
    )
    reference = np.logaddexp.reduce(per_component, axis=0)
    np.testing.assert_allclose(m.log_prob(x).numpy(), reference, rtol=1e-10)
    assert m.log_prob(x.float()).dtype == torch.float32


def test_weights_are_normalised():
    m = GaussianMixture([2.0, 6.0], [[0.0], [1.0]], [[[1.0]], [[1.0]]])
    torch.testing.assert_close(m.weights, torch.tensor([0.25, 0.75], dtype=torch.float64))


@pytest.mark.parametrize("make", [ring8, grid25])
def test_samples_land_on_their_modes_and_visit_all(make):
    m = make()
    x, k = m.sample_with_labels(2_500, generator=gen(0))
    assert x.shape == (2_500, 2) and x.dtype == torch.float32 and k.dtype == torch.int64
    dist = torch.cdist(x.double(), m.means)  # (n, K)
    nearest = dist.argmin(dim=1)
    std = m.stds[0].item()
    assert torch.equal(nearest, k)
    # in 2-D the radius is Rayleigh: P(r > 4σ) = e⁻⁸ ≈ 3e-4, so 2,500 draws may hold one; 5σ: e⁻¹²·⁵
    assert (dist.min(dim=1).values < 5 * std).all()
    assert (dist.min(dim=1).values < 4 * std).float().mean() > 0.998
    counts = torch.bincount(k, minlength=m.n_components)
    assert (counts > 0).all()
    expected = 2_500 / m.n_components
    assert ((counts - expected).abs() < 5 * math.sqrt(expected)).all()


def test_samples_have_the_mixture_moments():
    m = random_mixture(k=2, d=3, seed=3)
    x, k = m.sample_with_labels(40_000, generator=gen(4), dtype=torch.float64)
    assert x.shape == (40_000, 3) and x.dtype == torch.float64
    for j in range(2):
        xj = x[k == j]
        se = (m.covariances[j].diagonal() / len(xj)).sqrt()
        assert ((xj.mean(0) - m.means[j]).abs() < 5 * se).all()
        torch.testing.assert_close(xj.T.cov(), m.covariances[j], rtol=0.05, atol=0.05)
    assert (k == 0).double().mean().item() == pytest.approx(m.weights[0].item(), abs=0.01)


def test_sample_gives_exactly_n_rows_and_follows_the_generator():
    m = ring8()
    assert m.sample(0).shape == (0, 2)
    assert m.sample(7, generator=gen(1)).shape == (7, 2)
    assert torch.equal(m.sample(100, generator=gen(3)), m.sample(100, generator=gen(3)))
    assert not torch.equal(m.sample(100, generator=gen(3)), m.sample(100, generator=gen(4)))
    with pytest.raises(ConfigError, match=r"n must be an integer >= 0, got -1"):
        m.sample(-1)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ([1.0, -1.0], [[0.0], [1.0]], [[[1.0]], [[1.0]]]),
            r"weights must be > 0, got weights\[1\] = -1",
        ),
        (
            ([1.0], [[0.0, 1.0]], [[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]]]),
            r"covariances must have shape \(K, d, d\) = \(1, 2, 2\), got \(2, 2, 2\)",
        ),
        (
            ([1.0, 1.0], [0.0, 1.0], [[[1.0]], [[1.0]]]),
            r"means must have shape \(K, d\) = \(2, d\) to match weights, got \(2,\)",
        ),
        (
            ([1.0], [[0.0, 0.0]], [[[1.0, 2.0], [2.0, 1.0]]]),
            r"covariances\[0\] must be positive-definite, its smallest eigenvalue is -1",
        ),
        (([1.0], [[0.0, 0.0]], [[[1.0, 0.5], [0.0, 1.0]]]), r"covariances\[0\] must be symmetric"),
        (
            ([1.0], [[0.0, float("nan")]], [[[1.0, 0.0], [0.0, 1.0]]]),
            r"means must be finite, got means\[0, 1\] = nan",
        ),
        (([1.0], [["a"]], [[[1.0]]]), r"means must be an array of numbers"),
    ],
)
def test_bad_mixture_parameters_name_the_parameter(args, message):
    with pytest.raises(ConfigError, match=message):
        GaussianMixture(*args)


def test_stds_refuses_full_covariances_and_builtins_check_their_options():
    with pytest.raises(ConfigError, match=r"covariances\[0\] is not isotropic"):
        _ = random_mixture().stds
    with pytest.raises(ConfigError, match=r"std must be a finite number > 0, got 0"):
        ring8(std=0)
    with pytest.raises(ConfigError, match=r"n_modes must be an integer >= 1, got 0"):
        ring8(n_modes=0)
    with pytest.raises(ConfigError, match=r"spacing must be a finite number > 0"):
        grid25(spacing=-1.0)


def test_moons_lie_on_two_half_circles():
    x, y = moons(1_001, noise=0.0, generator=gen(0))
    assert x.shape == (1_001, 2) and torch.equal(torch.bincount(y), torch.tensor([500, 501]))
    upper, lower = x[y == 0].double(), x[y == 1].double()
    torch.testing.assert_close(upper.norm(dim=1), torch.ones(500, dtype=torch.float64))
    assert (upper[:, 1] >= -1e-6).all()
    centre = torch.tensor([1.0, 0.5], dtype=torch.float64)
    torch.testing.assert_close((lower - centre).norm(dim=1), torch.ones(501, dtype=torch.float64))
    assert (lower[:, 1] <= 0.5 + 1e-6).all()
    noisy, labels = moons(1_001, noise=0.1, generator=gen(0))
    assert torch.equal(labels, y)  # same generator → same shuffle
    assert (noisy - x).std().item() == pytest.approx(0.1, rel=0.1)


# --- mixture spec files ---------------------------------------------------------------------------


def toml_text(spec: dict) -> str:
    # JSON arrays of numbers are valid TOML arrays
    return "".join(f"{key} = {json.dumps(value)}\n" for key, value in spec.items())


@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_mixture_spec_round_trips(tmp_path, suffix):
    m = random_mixture()
    path = tmp_path / f"mix{suffix}"
    spec = m.to_spec()
    path.write_text(json.dumps(spec) if suffix == ".json" else toml_text(spec))
    back = mixture_from_spec(path)
    torch.testing.assert_close(back.weights, m.weights)
    torch.testing.assert_close(back.means, m.means)
    torch.testing.assert_close(back.covariances, m.covariances)
    ds = load_data(f"mixture:{path}", n=50, generator=gen(1))
    assert ds.x.shape == (50, 4) and ds.distribution is not None and ds.labels is not None
    torch.testing.assert_close(ds.x, m.sample(50, generator=gen(1)))


def test_mixture_spec_stds_shortcut_and_default_weights(tmp_path):
    path = tmp_path / "ring.toml"
    path.write_text("means = [[1.0, 0.0], [0.0, 1.0]]\nstds = [0.1, 0.2]\n")
    m = mixture_from_spec(path)
    torch.testing.assert_close(m.stds, torch.tensor([0.1, 0.2], dtype=torch.float64))
    torch.testing.assert_close(m.weights, torch.tensor([0.5, 0.5], dtype=torch.float64))
    path.write_text(
        '{"means": [[1, 0], [0, 1]], "covariances": [[[1, 0], [0, 1]], [[2, 0], [0, 2]]]}'
    )
    path = path.rename(tmp_path / "full.json")
    torch.testing.assert_close(
        mixture_from_spec(path).weights, torch.tensor([0.5, 0.5], dtype=torch.float64)
    )


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("a.json", '{"stds": 0.1}', r"is missing key 'means'"),
        ("a.json", '{"means": [[0, 0]]}', r"needs exactly one of 'covariances' .* got neither"),
        (
            "a.json",
            '{"means": [[0, 0]], "stds": 1, "covariances": [[[1, 0], [0, 1]]]}',
            r"got both",
        ),
        ("a.json", '{"means": [[0, 0]], "std": 1}', r"unknown key 'std'; allowed: weights, means"),
        ("a.json", '{"means": [[0, 0]],\n "stds": 1,,}', r"is not valid JSON: line 2, column"),
        ("a.toml", "means = [[0, 0]]\nstds = = 1\n", r"is not valid TOML: .*line 2"),
        (
            "a.json",
            '{"weights": [1, 1], "means": [[0, 0]], "stds": 1}',
            r"means must have shape \(K, d\) = \(2, d\)",
        ),
        (
            "a.json",
            '{"means": [[0, 0]], "covariances": [[[1, 2], [2, 1]]]}',
            r"covariances\[0\] must be positive-definite",
        ),
        ("a.json", '{"means": [[0, 0], [1]], "stds": 1}', r"means must be an array of numbers"),
        ("a.json", "[1, 2]", r"must hold a table of keys"),
        ("a.yaml", "means: []", r"must be a .json or .toml file"),
    ],
)
def test_bad_mixture_specs_name_the_file_and_the_problem(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DataError, match=message) as info:
        mixture_from_spec(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_mixture_spec(tmp_path):
    with pytest.raises(DataError, match=r"mixture spec '.*nope.json' not found"):
        load_data(f"mixture:{tmp_path / 'nope.json'}")

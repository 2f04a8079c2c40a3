"""Fidelity against the truth: the exact KL estimate against closed forms (zero for the truth
itself, torch's Gaussian KL), the k-nearest-neighbour estimator within its stated bias, and the
errors at the door."""

import math

import pytest
import torch
from torch.distributions import MultivariateNormal, kl_divergence

from pushforward.core import ConfigError, DataError, Model
from pushforward.data import datasets
from pushforward.metrics import (
    BOUND_KL_SAMPLES,
    EXACT,
    IWAE_UPPER,
    KL_SAMPLES,
    KLEstimate,
    kl_to_truth,
    knn_kl,
    truth_fidelity,
)

P_MEAN, P_COV = torch.tensor([0.5, -1.0]), torch.tensor([[1.0, 0.3], [0.3, 0.5]])


def gaussian_truth() -> datasets.GaussianMixture:
    return datasets.GaussianMixture([1.0], P_MEAN[None], P_COV[None])


@pytest.mark.parametrize("truth", [datasets.ring8(), datasets.grid25()], ids=["ring8", "grid25"])
def test_kl_of_the_truth_to_itself_is_zero(truth):
    gen = torch.Generator().manual_seed(0)
    # log q in float64 at the same points: every difference is exactly 0
    est = kl_to_truth(truth, lambda x: truth.log_prob(x.double()), 2000, generator=gen)
    assert (est.value, est.stderr, est.n, est.kind) == (0.0, 0.0, 2000, EXACT)
    # log q rounded to float32, as a model gives it: 0 within rounding and 3 s.e.
    est = kl_to_truth(truth, truth.log_prob, 2000, generator=gen)
    assert abs(est.value) <= 3 * est.stderr + 1e-12 and est.stderr < 1e-6


@pytest.mark.parametrize(
    ("mean", "cov"),
    [([0.5, -1.0], [[1.0, 0.3], [0.3, 0.5]]), ([1.5, 0.0], [[2.0, -0.4], [-0.4, 0.8]])],
)
def test_kl_between_gaussians_matches_the_closed_form_within_three_standard_errors(mean, cov):
    q = MultivariateNormal(torch.tensor(mean), torch.tensor(cov))
    exact = float(kl_divergence(MultivariateNormal(P_MEAN, P_COV), q))
    gen = torch.Generator().manual_seed(1)
    est = kl_to_truth(gaussian_truth(), q.log_prob, 10_000, generator=gen)
    assert abs(est.value - exact) <= 3 * est.stderr + 1e-6, (est, exact)
    assert est.stderr < 0.02 + 0.02 * exact  # 10,000 draws pin it down
    assert str(est).startswith(f"{est.value:.4g} ± ")


def test_kl_is_labelled_an_upper_bound_for_a_lower_bound_of_log_q():
    truth = gaussian_truth()
    q = MultivariateNormal(P_MEAN, P_COV)
    est = kl_to_truth(truth, lambda x: q.log_prob(x) - 0.25, 500, kind=IWAE_UPPER)
    assert est.kind == IWAE_UPPER and est.value == pytest.approx(0.25, abs=1e-5)
    assert KLEstimate(**est.to_dict()) == est


def test_iwae_kl_of_a_vae_is_an_upper_bound_that_tightens_with_k():
    from pushforward.models.vae import VAE, VAEConfig
    from pushforward.train import seeded

    with seeded(0):
        vae = VAE(
            VAEConfig(dim=2, latent=2, loss="gaussian", sigma=0.3, hidden=[16], activation="relu")
        )
    truth = datasets.ring8()

    def kl(k: int) -> KLEstimate:
        h = torch.Generator().manual_seed(1)
        log_q = lambda x: vae.log_likelihood(x, k=k, generator=h).log_px  # noqa: E731
        return kl_to_truth(
            truth, log_q, 500, generator=torch.Generator().manual_seed(0), kind=IWAE_UPPER
        )

    one, many = kl(1), kl(64)
    assert one.kind == many.kind == IWAE_UPPER
    assert many.value < one.value - 3 * one.stderr  # log q rises towards the truth with k


def test_kl_is_infinite_where_q_has_no_mass_and_bad_log_q_is_refused():
    truth = gaussian_truth()
    gen = torch.Generator().manual_seed(0)
    assert kl_to_truth(truth, lambda x: torch.full((x.shape[0],), -math.inf), 10).value == math.inf
    with pytest.raises(DataError, match=r"shape \(10,\) for \(10, d\), got \(10, 1\)"):
        kl_to_truth(truth, lambda x: torch.zeros(x.shape[0], 1), 10, generator=gen)
    with pytest.raises(DataError, match=r"log_q returned nan at x\[0\]"):
        kl_to_truth(truth, lambda x: torch.full((x.shape[0],), math.nan), 10, generator=gen)
    with pytest.raises(ConfigError, match="truth must be a GaussianMixture"):
        kl_to_truth(MultivariateNormal(P_MEAN, P_COV), lambda x: x[:, 0], 10)
    with pytest.raises(ConfigError, match="n must be an integer >= 2"):
        kl_to_truth(truth, truth.log_prob, 1)


# --- the k-nearest-neighbour estimator -----------------------------------------------------------

# the bias knn_kl's docstring states for n = m = 2,500 in 2-D, k = 1, when KL(p ‖ q) ≤ 0.2
KNN_TOLERANCE = 0.15


@pytest.mark.parametrize(("shift", "seed"), [(0.0, 0), (0.5, 1)])
def test_knn_kl_is_within_its_stated_bias_of_the_exact_value(shift, seed):
    p = MultivariateNormal(torch.zeros(2), torch.eye(2))
    q = MultivariateNormal(torch.tensor([shift, 0.0]), torch.eye(2))
    exact = float(kl_divergence(p, q))  # shift² / 2
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2500, 2, generator=gen)
    y = torch.tensor([shift, 0.0]) + torch.randn(2500, 2, generator=gen)
    assert abs(knn_kl(x, y) - exact) <= KNN_TOLERANCE


def test_knn_kl_by_hand_on_four_points():
    # 1-D: x = 0, 1, 3; y = 0.5, 10. ρ = 1, 1, 2; ν = 0.5, 0.5, 2.5
    x = torch.tensor([[0.0], [1.0], [3.0]])
    y = torch.tensor([[0.5], [10.0]])
    hand = (math.log(0.5 / 1) + math.log(0.5 / 1) + math.log(2.5 / 2)) / 3 + math.log(2 / 2)
    assert knn_kl(x, y) == pytest.approx(hand)
    # k = 2: ρ₂ = 3, 2, 3; ν₂ = 10, 9, 7
    hand2 = (math.log(10 / 3) + math.log(9 / 2) + math.log(7 / 3)) / 3 + math.log(2 / 2)
    assert knn_kl(x, y, k=2) == pytest.approx(hand2)


def test_knn_kl_works_in_blocks_like_one_block(monkeypatch):
    from pushforward.metrics import distances as metrics

    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(300, 3, generator=gen), torch.randn(200, 3, generator=gen) + 0.3
    whole = knn_kl(x, y, k=3)
    monkeypatch.setattr(metrics, "BLOCK_ELEMENTS", 1000)  # blocks of 3 to 5 rows
    assert knn_kl(x, y, k=3) == pytest.approx(whole, abs=1e-12)


def test_knn_kl_refuses_repeats_bad_k_and_mismatched_dimensions():
    x = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    y = torch.tensor([[5.0, 5.0], [6.0, 6.0]])
    with pytest.raises(DataError, match="row 0 of p_samples coincides with another row"):
        knn_kl(x, y)
    with pytest.raises(DataError, match="row 1 of p_samples coincides with a row of q_samples"):
        knn_kl(torch.tensor([[0.0, 0.0], [5.0, 5.0]]), y)
    with pytest.raises(ConfigError, match=r"k = 3 is not allowed .* use 1 ≤ k ≤ 2"):
        knn_kl(x + torch.arange(3.0)[:, None], y, k=3)
    with pytest.raises(DataError, match=r"q_samples must have shape \(n, 2\) to match p_samples"):
        knn_kl(x, torch.zeros(4, 3))


class MixtureModel(Model):
    """A model of the contract whose g#μ is a known Gaussian mixture: exact draws and density."""

    has_exact_density = True

    def __init__(self, mixture: datasets.GaussianMixture):
        self.mixture, self.dim, self.latent = mixture, mixture.dim, mixture.dim

    def sample(self, n, *, generator=None):
        return self.mixture.sample(n, generator=generator)

    def log_prob(self, x):
        return self.mixture.log_prob(x)


class Sampler(MixtureModel):
    """The same draws with no density: only the k-NN estimate applies (as for a GAN)."""

    has_exact_density = False


def test_truth_fidelity_of_the_truth_is_zero_and_of_a_shifted_truth_the_closed_form():
    truth = gaussian_truth()
    gen = torch.Generator().manual_seed(3)
    out = truth_fidelity(MixtureModel(truth), truth, generator=gen)
    assert out["kl_to_truth_kind"] == EXACT and out["kl_to_truth_samples"] == KL_SAMPLES
    assert abs(out["kl_to_truth"]) < 1e-5 and out["kl_to_truth_stderr"] < 1e-6
    assert abs(out["knn_kl"]) < 0.15 and abs(out["knn_kl_floor"]) < 0.15  # its stated bias
    # q = p shifted by v: KL = ½ vᵀ Σ⁻¹ v, from the exact density and (within bias) from samples
    v = torch.tensor([0.5, 0.3])  # KL 0.152
    shifted = datasets.GaussianMixture([1.0], (P_MEAN + v)[None], P_COV[None])
    exact = 0.5 * float(v @ torch.linalg.solve(P_COV, v))
    out = truth_fidelity(MixtureModel(shifted), truth, generator=gen)
    assert abs(out["kl_to_truth"] - exact) < 3 * out["kl_to_truth_stderr"]
    assert abs(out["knn_kl"] - exact) < 0.15


def test_truth_fidelity_without_a_density_has_only_the_knn_estimate():
    truth = gaussian_truth()
    out = truth_fidelity(Sampler(truth), truth, generator=torch.Generator().manual_seed(4))
    assert "kl_to_truth" not in out and abs(out["knn_kl"]) < 0.15 and out["knn_samples"] == 2500


def test_truth_fidelity_of_a_vae_is_labelled_an_iwae_upper_bound():
    from pushforward.models.vae import VAE, VAEConfig
    from pushforward.train import seeded

    with seeded(0):
        vae = VAE(
            VAEConfig(dim=2, latent=2, loss="gaussian", sigma=0.3, hidden=[8], activation="relu")
        )
    truth = gaussian_truth()
    gen = torch.Generator().manual_seed(5)
    out = truth_fidelity(vae, truth, generator=gen, iwae_k=4)
    assert out["kl_to_truth_kind"] == IWAE_UPPER
    assert out["kl_to_truth_samples"] == BOUND_KL_SAMPLES
    # an untrained VAE is far from p: every estimate says so
    assert out["kl_to_truth"] > 0.5 and out["knn_kl"] > 0.5

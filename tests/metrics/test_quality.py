"""Sample quality with floors: a perfect sampler scores like real data, a collapsed one does not."""

import math

import pytest
import torch

from pushforward.core import ConfigError
from pushforward.data import datasets
from pushforward.metrics import MODE_SAMPLES, image_quality, point_quality, sample_quality


def mixture_data(name: str = "ring8") -> datasets.Dataset:
    return datasets.load_data(name, n=2000, generator=torch.Generator().manual_seed(0))


def test_a_sampler_of_the_true_mixture_scores_like_real_data():
    ds = mixture_data()
    out = point_quality(
        lambda n, g: ds.distribution.sample(n, generator=g), ds, seed=1, points=1000
    )
    assert out["modes_captured"] == out["n_modes"] == 8
    # 3σ in 2-D: P(χ²₂ ≤ 9) = 1 − e^{−4.5}; binomial tolerance of 5 standard errors
    p = 1 - math.exp(-4.5)
    assert abs(out["high_quality"] - p) < 5 * math.sqrt(p * (1 - p) / MODE_SAMPLES)
    assert out["reverse_kl"] < 0.01
    # the truth's own draws, scored beside the model: the same binomial band, width 1 within
    # its sampling error (a mean of 2,500 χ²-like radii: about ±1.5% at 5 standard errors)
    assert abs(out["high_quality_ceiling"] - p) < 5 * math.sqrt(p * (1 - p) / MODE_SAMPLES)
    assert out["mode_width"] == pytest.approx(1.0, abs=0.03)
    assert out["mode_width_truth"] == pytest.approx(1.0, abs=0.03)
    assert out["reverse_kl_floor"] < 0.01
    assert out["mean_log_density"] == pytest.approx(out["mean_log_density_floor"], abs=0.1)
    assert abs(out["mmd2"]) < 3e-3 and abs(out["energy"]) < 3e-3  # unbiased: about 0
    assert out["wasserstein1"] < 2 * out["wasserstein1_floor"]


def test_a_collapsed_sampler_covers_one_mode_with_reverse_kl_log_k():
    ds = mixture_data()
    mode = ds.distribution.means[3]

    def collapsed(n, g):
        return mode + 0.005 * torch.randn(n, 2, generator=g)

    out = point_quality(collapsed, ds, points=500)
    assert out["modes_captured"] == 1
    # a mode of σ = 0.005 where the truth's is 0.01 (ring8): half as wide
    assert out["mode_width"] == pytest.approx(0.5, abs=0.03)
    assert out["reverse_kl"] == pytest.approx(math.log(8))
    assert out["mmd2"] > 100 * abs(out["mmd2_floor"])
    assert out["wasserstein1"] > 10 * out["wasserstein1_floor"]
    assert out["energy"] > 100 * abs(out["energy_floor"])


def test_leaving_out_distances_or_floors_changes_no_score_that_is_computed():
    """The same draws either way: the mode scores and the model's distances are those of the
    full call, bit for bit, and only what was left out is missing."""
    ds = mixture_data()

    def noisy(n, g):
        return ds.distribution.sample(n, generator=g) * 1.3

    full = point_quality(noisy, ds, seed=2, points=300)
    modes = point_quality(noisy, ds, seed=2, points=300, distances=False)
    model = point_quality(noisy, ds, seed=2, points=300, floors=False)
    assert "mmd2" not in modes and "wasserstein1_floor" not in modes
    assert {k: v for k, v in full.items() if k in modes} == modes
    assert {"mmd2", "energy", "wasserstein1"} <= set(model)
    assert not {"mmd2_floor", "energy_floor", "wasserstein1_floor"} & set(model)
    assert {k: v for k, v in full.items() if k in model} == model
    assert modes["high_quality"] < full["high_quality_ceiling"]  # the wider modes do show


def test_data_without_a_known_density_gets_the_two_sample_distances_only():
    ds = datasets.load_data("moons", n=600, generator=torch.Generator().manual_seed(0))
    rows = ds.x

    def resample(n, g):
        return rows[torch.randint(len(rows), (n,), generator=g)]

    out = point_quality(resample, ds)
    assert "modes_captured" not in out and out["quality_samples"] == 300
    assert out["wasserstein1"] < 3 * out["wasserstein1_floor"]
    shifted = point_quality(lambda n, g: resample(n, g) + 1.0, ds)
    assert shifted["wasserstein1"] == pytest.approx(math.sqrt(2), rel=0.1)


def test_too_little_data_is_refused():
    ds = datasets.Dataset(x=torch.zeros(3, 2), name="tiny")
    with pytest.raises(ConfigError, match="'tiny' has 3 rows"):
        point_quality(lambda n, g: torch.zeros(n, 2), ds)


def test_frechet_distance_of_real_images_sits_at_the_floor_and_noise_far_above():
    full = datasets.load_data("digits")
    ds = datasets.select_rows(full, "1000:")
    pool = full.x[:1000]

    def real(n, g):
        return pool[torch.randperm(len(pool), generator=g)[:n]]

    out = image_quality(real, ds, full)
    assert out["frechet_samples"] == ds.n // 2
    assert out["feature_accuracy"] > 0.85
    assert out["frechet_distance"] < 4 * out["frechet_distance_floor"]  # writers differ by rows
    noise = image_quality(lambda n, g: torch.rand(n, 64, generator=g), ds, full)
    assert noise["frechet_distance"] > 30 * out["frechet_distance"]
    assert noise["frechet_distance_floor"] == out["frechet_distance_floor"]


def test_unlabelled_images_get_no_frechet_distance():
    full = datasets.load_data("digits")
    bare = datasets.Dataset(x=full.x, name="bare", image_shape=full.image_shape)
    assert sample_quality(lambda n, g: full.x[:n], bare, bare) == {}


def test_fit_vae_defaults_do_not_collapse_on_the_ring(tmp_path):
    from pushforward.runs import RunConfig, evaluate_run, fit_run

    rc = RunConfig.from_flat({"model": "vae", "data": "ring8", "n": 2000, "epochs": 30})
    folder = fit_run(rc, out=tmp_path / "run", figures=False)
    out = evaluate_run(folder, "ring8", n=2000, iwae_k=10, quality=False)
    # collapsed onto the prior, the model is one Gaussian blob: −log p(x) ≈ 2.15 nats; these
    # defaults reach about −1.3 on 2,000 points (−1.7 on 4,000, at twice the time)
    assert out["active_units"] == 2 and out["nll"] < 1.5

"""Goodness-of-fit helpers against scipy's independent implementation."""

import numpy as np
import pytest
import torch
from scipy import stats
from torch.distributions import Normal

from pushforward.errors import ConfigError
from pushforward.metrics import ks_critical_value, ks_distance


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

"""The shared preprocessing: each transform against its inverse, its log-Jacobian against
autograd's, and the 8-bit conventions against their definitions."""

import math

import pytest
import torch

from pushforward.core import DataError
from pushforward.data.preprocess import (
    LOG_BINS,
    Dequantize,
    Logit,
    Standardize,
    check_pixels_or_rows,
    discrete_log_likelihood,
    fit_standardize,
)


def _autograd_log_det(t, x):
    """log |det ∂t/∂x| of one row x (d,), from the full Jacobian."""
    jac = torch.autograd.functional.jacobian(lambda v: t(v[None])[0], x)
    return torch.linalg.slogdet(jac).logabsdet


def test_standardize_inverts_and_its_log_jacobian_is_autograds():
    g = torch.Generator().manual_seed(0)
    loc, scale = (
        torch.randn(3, generator=g, dtype=torch.float64),
        torch.rand(3, generator=g, dtype=torch.float64) + 0.1,
    )
    t = Standardize(loc, scale)
    x = torch.randn(5, 3, generator=g, dtype=torch.float64)
    torch.testing.assert_close(t.inv(t(x)), x)
    ladj = t.log_abs_det_jacobian(x, t(x))
    assert ladj.shape == (5,)
    torch.testing.assert_close(ladj[0], _autograd_log_det(t, x[0]))


def test_logit_inverts_and_its_log_jacobian_is_autograds():
    g = torch.Generator().manual_seed(1)
    y = torch.rand(4, 6, generator=g, dtype=torch.float64)
    t = Logit(0.05)
    torch.testing.assert_close(t.inv(t(y)), y)
    for row in range(4):
        torch.testing.assert_close(
            t.log_abs_det_jacobian(y, t(y))[row], _autograd_log_det(t, y[row])
        )


def test_dequantize_stays_in_each_pixels_bin_and_rounds_back():
    x = torch.arange(256, dtype=torch.float64).repeat(3, 1) / 255
    y = Dequantize()(x, generator=torch.Generator().manual_seed(0))
    k = torch.arange(256, dtype=torch.float64)
    assert bool(((y >= k / 256) & (y < (k + 1) / 256)).all())
    torch.testing.assert_close(Dequantize().inverse(y), x)


def test_the_discrete_likelihood_subtracts_one_bins_log_volume_per_dimension():
    assert LOG_BINS == math.log(256)
    lp = torch.tensor([0.0, -1.0])
    torch.testing.assert_close(discrete_log_likelihood(lp, 10), lp - 10 * math.log(256))


def _seeded_rows(dtype=torch.float32) -> torch.Tensor:
    """Rows (n, 4) of very different spreads, one coordinate constant, one heavy-tailed."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1000, 4, generator=g, dtype=dtype) * torch.tensor([1.0, 50.0, 0.0, 1.0])
    x[:, 3] = torch.distributions.StudentT(1.5).sample((1000,)).to(dtype)  # far tails
    return x + torch.tensor([3.0, -1.0, 7.0, 0.0], dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fit_standardize_gives_the_models_own_formulas_bit_for_bit(dtype):
    torch.manual_seed(0)  # the Student t draws
    x = _seeded_rows(dtype)
    # the formula the flow matching model and the GAN wrote out: mean and standard deviation, a
    # coordinate that does not vary at scale 1
    std = x.std(0)
    plain = torch.where(std > 1e-8 * std.max().clamp_min(1e-30), std, 1.0)
    fitted = fit_standardize(x)
    assert torch.equal(fitted.loc, x.mean(0)) and torch.equal(fitted.scale, plain)
    assert fitted.scale[2] == 1.0
    # the flow's: spread 3, and at least the 99.9th percentile of |x − m| over 4.5
    k = max(1, math.ceil(0.999 * x.shape[0]))
    far = (x - x.mean(0)).abs().kthvalue(k, dim=0).values
    robust = fit_standardize(x, spread=3.0, reach=4.5)
    assert torch.equal(robust.loc, x.mean(0))
    assert torch.equal(robust.scale, torch.maximum(plain / 3.0, far / 4.5))
    assert robust.scale[3] > plain[3] / 3.0  # the heavy tail sets that coordinate's scale
    one = fit_standardize(x[:1])
    assert torch.equal(one.scale, torch.ones(4, dtype=dtype)) and torch.equal(one.loc, x[0])


def test_fit_standardize_sends_the_data_to_zero_mean_and_the_asked_spread():
    x = _seeded_rows(torch.float64)[:, :3]
    u = fit_standardize(x, spread=3.0)(x)
    torch.testing.assert_close(u.mean(0), torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close(u.std(0)[:2], torch.full((2,), 3.0, dtype=torch.float64))


def test_pixels_outside_the_unit_interval_are_refused_by_row_and_column():
    x = torch.tensor([[0.0, 0.5], [0.2, 1.5]])
    assert torch.equal(check_pixels_or_rows(x, "x", dim=2, pixels=False, what="flow"), x)
    with pytest.raises(DataError, match=r"outside \[0, 1\].*row 1, column 1 \(1.5\)"):
        check_pixels_or_rows(x, "x", dim=2, pixels=True, what="flow")

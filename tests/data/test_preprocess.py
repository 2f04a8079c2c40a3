"""The shared preprocessing: each transform against its inverse, its log-Jacobian against
autograd's, and the 8-bit conventions against their definitions."""

import math

import torch

from pushforward.data.preprocess import (
    LOG_BINS,
    Dequantize,
    Logit,
    Standardize,
    discrete_log_likelihood,
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

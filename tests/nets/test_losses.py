"""Reconstruction terms as likelihoods, and the closed-form KL, against torch.distributions."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Bernoulli, Laplace, Normal, kl_divergence

from pushforward.core import ConfigError
from pushforward.nets import (
    gaussian_kl,
    negative_log_likelihood,
    output_mean,
    reconstruction,
    reconstruction_grad,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_gaussian_kl_equals_torch_distributions():
    mu = torch.randn(7, 5, generator=gen(1), dtype=torch.float64)
    logvar = torch.randn(7, 5, generator=gen(2), dtype=torch.float64)
    want = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(1)
    torch.testing.assert_close(gaussian_kl(mu, logvar), want)


def test_gaussian_kl_matches_seeded_monte_carlo():
    mu = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64)
    logvar = torch.tensor([[-1.0, 0.3, 0.0]], dtype=torch.float64)
    q = Normal(mu, (0.5 * logvar).exp())
    z = mu + (0.5 * logvar).exp() * torch.randn(400_000, 3, generator=gen(3), dtype=torch.float64)
    mc = (q.log_prob(z) - Normal(0.0, 1.0).log_prob(z)).sum(-1).mean()
    assert float(mc) == pytest.approx(float(gaussian_kl(mu, logvar)), abs=0.01)


def test_kl_is_zero_only_at_the_prior():
    assert float(gaussian_kl(torch.zeros(1, 4), torch.zeros(1, 4))) == 0.0
    assert float(gaussian_kl(torch.full((1, 4), 0.1), torch.zeros(1, 4))) > 0


def test_reconstructions_sum_over_dimensions_per_example():
    x = torch.rand(6, 10, generator=gen(4))
    out = torch.randn(6, 10, generator=gen(5))
    torch.testing.assert_close(reconstruction("l2", x, out), ((x - out) ** 2).sum(1))
    torch.testing.assert_close(reconstruction("l1", x, out), (x - out).abs().sum(1))
    bce = F.binary_cross_entropy(torch.sigmoid(out), x, reduction="none").sum(1)
    torch.testing.assert_close(reconstruction("bce", x, out), bce, rtol=1e-5, atol=1e-5)


def test_bce_from_logits_is_stable_for_large_logits():
    x = torch.tensor([[1.0, 0.0]])
    out = torch.tensor([[200.0, -200.0]])
    assert float(reconstruction("bce", x, out)) == pytest.approx(0.0, abs=1e-6)
    assert torch.isfinite(reconstruction("bce", 1 - x, out)).all()


def test_negative_log_likelihoods_are_the_named_densities():
    x = torch.rand(5, 8, generator=gen(6), dtype=torch.float64)
    out = torch.rand(5, 8, generator=gen(7), dtype=torch.float64)
    log_s = torch.linspace(-1, 1, 8, dtype=torch.float64)
    want = -Normal(out, log_s.exp()).log_prob(x).sum(1)
    torch.testing.assert_close(negative_log_likelihood("l2", x, out, log_s), want)
    want = -Laplace(out, math.exp(0.3)).log_prob(x).sum(1)
    torch.testing.assert_close(negative_log_likelihood("l1", x, out, 0.3), want)
    xb = (x > 0.5).double()
    want = -Bernoulli(logits=out).log_prob(xb).sum(1)
    torch.testing.assert_close(negative_log_likelihood("bce", xb, out), want)


def test_l2_is_gaussian_nll_up_to_a_constant_at_sigma_squared_half():
    x, out = torch.rand(4, 3, generator=gen(8)), torch.rand(4, 3, generator=gen(9))
    nll = negative_log_likelihood("l2", x, out, 0.5 * math.log(0.5))
    torch.testing.assert_close(
        nll - reconstruction("l2", x, out), torch.full((4,), 1.5 * math.log(math.pi))
    )


def test_output_mean_and_errors():
    out = torch.zeros(2, 3)
    torch.testing.assert_close(output_mean("bce", out), torch.full((2, 3), 0.5))
    torch.testing.assert_close(output_mean("l2", out), out)
    with pytest.raises(ConfigError, match="unknown reconstruction loss 'l3'; known: bce, l1, l2"):
        reconstruction("l3", out, out)
    with pytest.raises(ConfigError, match=r"x has shape \(2, 3\), the decoder output \(2, 4\)"):
        reconstruction("l2", out, torch.zeros(2, 4))


@pytest.mark.parametrize("name", ["l2", "l1", "bce"])
def test_reconstruction_grad_is_autograds_gradient_of_the_summed_loss(name):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 5, generator=g)
    out = torch.randn(6, 5, generator=g) * 3
    out[0, :2] = x[0, :2]  # ties: l1's derivative is 0 there, as autograd's
    if name == "bce":
        x = x.round()
    o = out.clone().requires_grad_(True)
    reconstruction(name, x, o).sum().backward()
    torch.testing.assert_close(reconstruction_grad(name, x, out), o.grad)

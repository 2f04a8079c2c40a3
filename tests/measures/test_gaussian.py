"""The one N(0, I) log-density and the one likelihood summary, against torch.distributions and
their definitions."""

import math

import torch

from pushforward.measures.gaussian import likelihood_summary, standard_normal_log_prob


def test_the_standard_normal_log_density_is_torch_distributions():
    z = torch.randn(7, 3, generator=torch.Generator().manual_seed(0))
    ref = torch.distributions.MultivariateNormal(torch.zeros(3), torch.eye(3)).log_prob(z)
    torch.testing.assert_close(standard_normal_log_prob(z), ref)


def test_the_summary_gives_mean_standard_error_and_bits():
    lp = torch.tensor([-1.0, -2.0, -3.0, -4.0])
    out = likelihood_summary(lp, dim=2, exact=True)
    assert out["log_likelihood"] == -2.5 and out["nll"] == 2.5 and out["rows"] == 4
    assert math.isclose(out["log_likelihood_stderr"], math.sqrt(5 / 3) / 2)  # s = √(5/3), n = 4
    assert math.isclose(out["bits_per_dim"], 2.5 / (2 * math.log(2)))


def test_one_rows_standard_error_is_undefined_not_zero():
    out = likelihood_summary(torch.tensor([-1.0]), dim=1, exact=False)
    assert math.isnan(out["log_likelihood_stderr"])

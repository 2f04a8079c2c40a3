"""Pushforward sampling and exact densities against closed forms and torch.distributions."""

import math

import pytest
import torch
from scipy import integrate
from torch import nn
from torch.distributions import Cauchy, Chi2, Exponential, LogNormal, Normal, transforms

from pushforward.core import ConfigError, NoDensityError
from pushforward.measures import (
    EXAMPLES,
    BaseMeasure,
    DistributionMeasure,
    Map1D,
    Pushforward,
    Restricted,
    StandardNormal,
    Uniform,
    draw,
    empirical_quantile,
    example,
    inverse_cdf,
)
from pushforward.metrics import ks_critical_value, ks_distance

N = 100_000


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_samples_match_exact_cdf(name):
    ex = EXAMPLES[name]
    y = example(name).sample(N, generator=gen(1))
    assert y.shape == (N, 1)
    assert ks_distance(y, ex.cdf) < ks_critical_value(N, alpha=0.001)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_log_prob_matches_closed_form(name):
    ex = EXAMPLES[name]
    lo, hi = ex.support
    y = torch.linspace(lo, hi, 203, dtype=torch.float64)[1:-1]
    got = example(name).log_prob(y.reshape(-1, 1))
    torch.testing.assert_close(got, ex.log_density(y), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_density_integrates_to_one(name):
    p = example(name)

    def density(t: float) -> float:
        return float(p.prob(torch.tensor([[t]], dtype=torch.float64)))

    lo, hi = {"gaussian-icdf": (-12, 12), "square-normal": (0, 60)}.get(name, (0, 1))
    total, _ = integrate.quad(density, lo, hi, limit=200, points=None)
    assert total == pytest.approx(1.0, abs=1e-6)


def test_square_density_is_one_over_two_sqrt_y():
    y = torch.tensor([[0.01], [0.25], [0.81], [1.0]], dtype=torch.float64)
    torch.testing.assert_close(example("square").prob(y), 1 / (2 * y.sqrt().reshape(-1)))
    outside = torch.tensor([[-0.5], [1.5]], dtype=torch.float64)
    assert torch.all(example("square").prob(outside) == 0)


def test_square_of_gaussian_is_chi2_1():
    y = torch.linspace(0.05, 8, 50, dtype=torch.float64)
    got = example("square-normal").log_prob(y.reshape(-1, 1))
    torch.testing.assert_close(got, Chi2(torch.tensor(1.0, dtype=torch.float64)).log_prob(y))


def test_gaussian_icdf_is_standard_normal():
    y = torch.linspace(-5, 5, 41)
    got = example("gaussian-icdf").log_prob(y.reshape(-1, 1))
    torch.testing.assert_close(got, Normal(0.0, 1.0).log_prob(y))


def test_map1d_sums_over_both_preimages_giving_arcsine():
    # cos on Uniform([0, 2π]) has two preimages for each y and the arcsine density 1/(π√(1−y²)).
    g = Map1D(torch.cos, [torch.acos, lambda y: 2 * math.pi - torch.acos(y)])
    p = Pushforward(g, Uniform(0.0, 2 * math.pi))
    y = torch.linspace(-0.95, 0.95, 39, dtype=torch.float64)
    torch.testing.assert_close(p.prob(y.reshape(-1, 1)), 1 / (math.pi * torch.sqrt(1 - y**2)))
    draws = p.sample(N, generator=gen(2))

    def arcsine_cdf(t):
        return 0.5 + torch.asin(t.clamp(-1, 1)) / math.pi

    assert ks_distance(draws, arcsine_cdf) < ks_critical_value(N)


def test_map1d_with_given_derivatives_equals_autograd():
    auto = Map1D(lambda x: x**2, [torch.sqrt, lambda y: -torch.sqrt(y)])
    given = Map1D(
        lambda x: x**2,
        [torch.sqrt, lambda y: -torch.sqrt(y)],
        [lambda y: 0.5 / torch.sqrt(y), lambda y: -0.5 / torch.sqrt(y)],
    )
    y = torch.rand(100, 1, generator=gen(3)) * 4 + 0.01
    base = StandardNormal(1)
    torch.testing.assert_close(
        Pushforward(auto, base).log_prob(y), Pushforward(given, base).log_prob(y)
    )


def test_bijection_chain_matches_torch_lognormal():
    chain = [transforms.AffineTransform(0.5, 2.0), transforms.ExpTransform()]
    p = Pushforward(chain, StandardNormal(1))
    y = torch.linspace(0.01, 30, 100).reshape(-1, 1)
    torch.testing.assert_close(p.log_prob(y), LogNormal(0.5, 2.0).log_prob(y).reshape(-1))
    draws = p.sample(N, generator=gen(4))
    assert ks_distance(draws, LogNormal(0.5, 2.0).cdf) < ks_critical_value(N)


def test_bijection_in_two_dimensions_sums_the_log_jacobian():
    loc, scale = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 3.0])
    p = Pushforward(transforms.AffineTransform(loc, scale), StandardNormal(2))
    y = torch.randn(64, 2, generator=gen(5)) * 3
    want = Normal(loc, scale).log_prob(y).sum(dim=1)
    torch.testing.assert_close(p.log_prob(y), want)
    assert p.event_shape == (2,)
    assert p.has_density


def test_general_network_has_no_density_and_says_why():
    p = Pushforward(nn.Linear(2, 3), StandardNormal(2))
    assert not p.has_density
    with pytest.raises(NoDensityError, match="no tractable density"):
        p.log_prob(torch.zeros(4, 3))


def test_rsample_is_differentiable_through_g_and_sample_is_not():
    torch.manual_seed(0)
    g = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 3))
    p = Pushforward(g, StandardNormal(2))
    y = p.rsample(16, generator=gen(6))
    y.pow(2).sum().backward()
    assert all(q.grad is not None and q.grad.abs().sum() > 0 for q in g.parameters())
    assert not p.sample(16, generator=gen(6)).requires_grad
    assert p.sample(7, generator=gen(6)).shape == (7, 3)
    assert p.event_shape == (3,)


def test_sampling_is_reproducible_from_the_generator_alone():
    p = example("gaussian-icdf")
    torch.testing.assert_close(p.sample(100, generator=gen(7)), p.sample(100, generator=gen(7)))
    assert not torch.equal(p.sample(100, generator=gen(7)), p.sample(100, generator=gen(8)))


def test_torch_distribution_base_is_seeded_by_generator_and_leaves_global_rng_alone():
    base = DistributionMeasure(Cauchy(0.0, 1.0))
    state = torch.get_rng_state()
    a = base.sample(50, generator=gen(9))
    assert torch.equal(torch.get_rng_state(), state)
    torch.testing.assert_close(a, base.sample(50, generator=gen(9)))
    p = Pushforward(torch.tanh, Normal(0.0, 1.0))
    assert p.sample(10, generator=gen(1)).shape == (10,)


@pytest.mark.parametrize(
    "dist", [Exponential(torch.tensor(2.0)), Cauchy(1.0, 0.5), Normal(3.0, 0.2)], ids=repr
)
def test_inverse_cdf_reproduces_the_distribution(dist):
    p = inverse_cdf(dist)
    draws = p.sample(N, generator=gen(10))
    assert draws.shape == (N, 1)
    assert ks_distance(draws, dist.cdf) < ks_critical_value(N)
    y = dist.sample((20,)).reshape(-1, 1)
    torch.testing.assert_close(p.log_prob(y), dist.log_prob(y).reshape(-1))


def test_inverse_cdf_without_quantile_is_refused():
    from torch.distributions import Gamma

    with pytest.raises(ConfigError, match="no quantile function"):
        inverse_cdf(Gamma(2.0, 1.0))


def test_empirical_quantile_pushforward_reproduces_the_empirical_distribution():
    data = torch.tensor([0.3, -1.0, 2.5, 2.5, 7.0])
    p = inverse_cdf(empirical_quantile(data))
    draws = p.sample(N, generator=gen(11)).reshape(-1)
    values, counts = torch.unique(draws, return_counts=True)
    torch.testing.assert_close(values, torch.tensor([-1.0, 0.3, 2.5, 7.0]))
    freq = counts.double() / N
    torch.testing.assert_close(
        freq, torch.tensor([0.2, 0.2, 0.4, 0.2], dtype=torch.float64), atol=0.01, rtol=0
    )
    with pytest.raises(NoDensityError):
        p.log_prob(draws[:3].reshape(-1, 1))


def test_uniform_box_and_standard_normal_log_prob():
    box = Uniform(torch.tensor([0.0, -1.0]), torch.tensor([2.0, 1.0]))
    x = torch.tensor([[1.0, 0.0], [3.0, 0.0]])
    torch.testing.assert_close(box.log_prob(x), torch.tensor([-math.log(4.0), -math.inf]))
    z = torch.randn(10, 3, generator=gen(12))
    torch.testing.assert_close(StandardNormal(3).log_prob(z), Normal(0.0, 1.0).log_prob(z).sum(1))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: Uniform(1.0, 0.0), "low < high"),
        (lambda: StandardNormal(0), "dim must be an integer ≥ 1"),
        (lambda: StandardNormal(2).sample(-1), "n must be an integer >= 0, got -1"),
        (lambda: Map1D(torch.exp, []), "at least one inverse branch"),
        (lambda: Pushforward(torch.exp, "gaussian"), "base must be"),
        (lambda: example("cube"), "unknown example 'cube'; known: gaussian-icdf, identity"),
        (lambda: empirical_quantile(torch.tensor([])), "at least one sample"),
    ],
)
def test_bad_arguments_name_the_problem(call, match):
    with pytest.raises(ConfigError, match=match):
        call()


# --- restricted measures -------------------------------------------------------------------------


def inside_unit(z: torch.Tensor) -> torch.Tensor:
    return z.abs().squeeze(1) <= 1.0


def test_restricted_normal_is_the_truncated_normal():
    # N(0, 1) on [−1, 1]: CDF (Φ(z) − Φ(−1)) / (Φ(1) − Φ(−1)), variance 1 − 2φ(1)/(Φ(1) − Φ(−1))
    mu = Restricted(StandardNormal(1), inside_unit)
    z = mu.sample(N, generator=gen(0))
    assert z.shape == (N, 1) and bool(inside_unit(z).all())
    normal = Normal(0.0, 1.0)
    mass = float(normal.cdf(torch.tensor(1.0)) - normal.cdf(torch.tensor(-1.0)))
    variance = 1 - 2 * math.exp(-0.5) / math.sqrt(2 * math.pi) / mass
    assert float(z.var()) == pytest.approx(variance, abs=4 * math.sqrt(2 / N) * variance)
    cdf = lambda t: (normal.cdf(t) - normal.cdf(torch.tensor(-1.0))) / mass  # noqa: E731
    assert ks_distance(z.squeeze(1), cdf) < ks_critical_value(N, alpha=1e-3)


def test_restricted_draws_are_exactly_n_in_draw_order_and_seeded():
    mu = Restricted(StandardNormal(1), inside_unit)
    a = mu.sample(1000, generator=gen(5))
    assert torch.equal(a, mu.sample(1000, generator=gen(5)))
    base = StandardNormal(1).sample(4000, generator=gen(5))  # starts with the first round's 2,216
    assert torch.equal(a[:500], base[inside_unit(base)][:500])
    assert mu.sample(0, generator=gen(5)).shape == (0, 1)


def test_restricted_density_with_a_known_mass_and_without():
    mass = 0.5
    mu = Restricted(Uniform(0.0, 1.0), lambda z: z.squeeze(1) < 0.5, mass=mass)
    lp = mu.log_prob(torch.tensor([[0.25], [0.75]]))
    assert lp[0] == pytest.approx(math.log(2.0)) and lp[1] == -math.inf
    y = Pushforward(lambda z: 2 * z, mu).sample(10_000, generator=gen(1))
    assert float(y.max()) < 1.0
    with pytest.raises(NoDensityError, match="mass"):
        Restricted(Uniform(0.0, 1.0), lambda z: z.squeeze(1) < 0.5).log_prob(torch.zeros(1, 1))


def test_restricted_refuses_a_set_it_cannot_reach_and_bad_settings():
    never = Restricted(StandardNormal(1), lambda z: z.squeeze(1) > 50, max_draws=10)
    with pytest.raises(ConfigError, match=r"only 0 of .* base draws fell in the set"):
        never.sample(100, generator=gen(0))
    wrong = Restricted(StandardNormal(2), lambda z: z[:, 0] > 0.5)
    assert wrong.sample(5, generator=gen(0)).shape == (5, 2)
    with pytest.raises(ConfigError, match="bool tensor"):
        Restricted(StandardNormal(2), lambda z: z > 0).sample(5, generator=gen(0))
    with pytest.raises(ConfigError, match="mass"):
        Restricted(StandardNormal(1), inside_unit, mass=1.5)
    with pytest.raises(ConfigError, match="max_draws"):
        Restricted(StandardNormal(1), inside_unit, max_draws=0)


def test_product_measures_invert_their_cdf_coordinate_by_coordinate():
    u = torch.tensor([[0.1, 0.5], [0.975, 0.3]])
    z = StandardNormal(2).quantile(u)
    torch.testing.assert_close(z, torch.distributions.Normal(0.0, 1.0).icdf(u))
    box = Uniform(torch.tensor([-1.0, 2.0]), torch.tensor([1.0, 6.0]))
    x = box.quantile(u)
    torch.testing.assert_close(x, torch.tensor([[-0.8, 4.0], [0.95, 3.2]]))
    # each coordinate's CDF at F⁻¹(u) is u: the product CDF is their product
    torch.testing.assert_close(box.cdf(x), u.prod(dim=-1))
    assert StandardNormal.product and Uniform.product and not BaseMeasure.product
    with pytest.raises(NotImplementedError, match="has no quantile function"):
        BaseMeasure().quantile(u)


def test_rsample_draws_on_the_device_of_g_and_the_numbers_depend_on_the_generator_alone():
    with torch.device("meta"):
        g = torch.nn.Linear(3, 2)
    pf = Pushforward(g, StandardNormal(3))
    for gen in (None, torch.Generator().manual_seed(0)):  # a CPU generator: drawn there, moved
        y = pf.rsample(5, generator=gen)
        assert y.device.type == "meta" and y.shape == (5, 2)
    seen = {}

    def record(z):
        seen["z"] = z
        return z

    # on the CPU the draws are those of the generator, whatever device they end up on
    Pushforward(record, Uniform(-1.0, 1.0, 3)).sample(4, generator=torch.Generator().manual_seed(1))
    u = torch.rand(4, 3, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(seen["z"], 2 * u - 1)
    moved = Uniform(-1.0, 1.0, 3).sample(4, generator=torch.Generator().manual_seed(1),
                                         device="meta")  # fmt: skip
    assert moved.device.type == "meta" and moved.shape == (4, 3)


def small_mixture():
    from pushforward.data import GaussianMixture

    covs = torch.tensor(
        [[[1.0, 0.3], [0.3, 0.5]], [[0.2, 0.0], [0.0, 2.0]], [[0.6, -0.2], [-0.2, 0.4]]]
    )
    means = torch.tensor([[-2.0, 0.5], [1.0, -1.0], [3.0, 2.0]])
    return GaussianMixture([0.5, 0.3, 0.2], means, covs)


def test_mixture_measure_density_draws_and_marginal_quantiles():
    from torch.distributions import Categorical, MixtureSameFamily, MultivariateNormal

    from pushforward.measures import MixtureMeasure

    mix = small_mixture()
    measure = MixtureMeasure(mix)
    reference = MixtureSameFamily(
        Categorical(mix.weights), MultivariateNormal(mix.means, covariance_matrix=mix.covariances)
    )
    x = torch.randn(50, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2
    torch.testing.assert_close(measure.log_prob(x), reference.log_prob(x))
    a = measure.sample(40_000, generator=torch.Generator().manual_seed(1))
    b = measure.sample(40_000, generator=torch.Generator().manual_seed(1))
    assert a.dtype == torch.float32 and a.shape == (40_000, 2) and torch.equal(a, b)
    torch.testing.assert_close(a.double().mean(0), reference.mean, atol=0.03, rtol=0)
    # quantiles are the marginals': each coordinate's share of draws below F_j⁻¹(u_j) is u_j
    u = torch.tensor([[0.05, 0.5], [0.3, 0.9], [0.99, 0.01]], dtype=torch.float64)
    q = measure.quantile(u)
    torch.testing.assert_close(measure.cdf_marginal(q), u, atol=1e-10, rtol=0)
    share = (a.double().unsqueeze(0) <= q.unsqueeze(1)).double().mean(1)  # (3, 2)
    torch.testing.assert_close(share, u, atol=0.01, rtol=0)  # binomial s.e. ≤ 0.0025
    # one component: the Gaussian's own quantile function, m + σ·Φ⁻¹(u)
    from pushforward.data import GaussianMixture

    one = MixtureMeasure(GaussianMixture([1.0], [[0.5, -1.0]], [[[4.0, 0.5], [0.5, 0.25]]]))
    expected = torch.tensor([0.5, -1.0]) + torch.tensor([2.0, 0.5]) * Normal(0, 1).icdf(u.float())
    torch.testing.assert_close(one.quantile(u.float()), expected, atol=1e-5, rtol=0)
    assert MixtureMeasure.has_quantile and not MixtureMeasure.product


# --- the device of the draws --------------------------------------------------------------------


def test_draw_depends_on_the_generator_alone_and_lands_on_the_device(device):
    here = draw(torch.randn, 4, 3, generator=gen(5), device=device, dtype=torch.float64)
    assert here.device.type == device.type and here.dtype == torch.float64
    expected = torch.randn(4, 3, generator=gen(5), dtype=torch.float64)
    torch.testing.assert_close(here.cpu(), expected, rtol=0, atol=0)


def test_a_pushforward_through_a_modules_method_samples_on_the_modules_device(meta_guard):
    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(2, 3)

        def decode(self, z):
            return self.layer(z)

    net = Decoder().to("meta")
    with meta_guard:
        y = Pushforward(net.decode, StandardNormal(2)).sample(5, generator=gen(0))
    assert y.device.type == "meta" and y.shape == (5, 3)

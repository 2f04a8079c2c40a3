"""The latent measure in pieces, μ = (1/K) Σ_j N(c_j, σ² I), against torch.distributions."""

import pytest
import torch
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

from device_guard import META
from pushforward.core import ConfigError
from pushforward.measures import GaussianPieces, piece_centres


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def reference(m: GaussianPieces) -> MixtureSameFamily:
    """The same measure built by torch.distributions from the centres."""
    pieces = Independent(Normal(m.centres, torch.full_like(m.centres, m.std)), 1)
    return MixtureSameFamily(Categorical(torch.ones(m.pieces, dtype=torch.float64)), pieces)


def test_the_centres_are_a_fixed_function_of_their_number_and_dimension():
    """A stored model rebuilds its μ from (K, k) alone: these digits move only if torch's CPU
    generator does, and then stored GANs would sample from another latent measure."""
    c = piece_centres(200, 8)
    assert c.shape == (200, 8) and c.dtype == torch.float64
    torch.testing.assert_close(c, piece_centres(200, 8), rtol=0, atol=0)
    expected = torch.tensor([[0.1329, -2.3467, -0.6297], [-1.9563, -0.1640, 1.3398]])
    torch.testing.assert_close(c[:2, :3].float(), expected, rtol=0, atol=1e-4)
    # fewer pieces are the first rows of more (one stream of draws, row by row)
    torch.testing.assert_close(piece_centres(50, 8), c[:50], rtol=0, atol=0)


def test_log_prob_is_the_mixtures_and_draws_have_its_moments():
    m = GaussianPieces(3, pieces=7, std=0.3)
    ref = reference(m)
    x = torch.randn(100, 3, generator=gen(1), dtype=torch.float64) * 2
    torch.testing.assert_close(m.log_prob(x), ref.log_prob(x))
    torch.testing.assert_close(m.log_prob(x.float()), ref.log_prob(x).float())
    n = 200_000
    z = m.sample(n, generator=gen(2))
    assert z.shape == (n, 3) and z.dtype == torch.float32
    torch.testing.assert_close(z, m.sample(n, generator=gen(2)), rtol=0, atol=0)
    # mean Σ c_j / K and covariance Cov(c) + σ² I; the draws' standard errors are < 0.005
    zd = z.double()
    torch.testing.assert_close(zd.mean(0), ref.mean, atol=0.01, rtol=0)
    torch.testing.assert_close(torch.cov(zd.T), ref_cov(m), atol=0.02, rtol=0)
    # equal weights: with pieces far narrower than their spacing, each nearest centre holds 1/7
    # of the draws (binomial s.e. 0.0008)
    thin = GaussianPieces(3, pieces=7, std=0.01)
    zt = thin.sample(n, generator=gen(4)).double()
    share = torch.bincount(torch.cdist(zt, thin.centres).argmin(1), minlength=7) / n
    torch.testing.assert_close(share, torch.full((7,), 1 / 7, dtype=share.dtype), atol=0.004,
                               rtol=0)  # fmt: skip
    assert (zt - thin.centres[torch.cdist(zt, thin.centres).argmin(1)]).std() < 0.011


def ref_cov(m: GaussianPieces) -> torch.Tensor:
    """Cov(c) over the pieces (population) + σ² I."""
    c = m.centres - m.centres.mean(0)
    return c.T @ c / m.pieces + m.std**2 * torch.eye(c.shape[1], dtype=torch.float64)


def test_draws_depend_on_the_generator_alone_and_make_nothing_on_the_cpu(device, meta_guard):
    m = GaussianPieces(4, pieces=10, std=0.2)
    here = m.sample(6, generator=gen(3), device=device)
    assert here.device.type == device.type
    torch.testing.assert_close(here.cpu(), m.sample(6, generator=gen(3)))
    assert m.sample(0).shape == (0, 4)
    with meta_guard:  # no generator: drawn on the device itself; log_prob there too
        z = m.sample(5, device=META)
        assert z.device == META and m.log_prob(z).device == META


@pytest.mark.parametrize(
    ("args", "word"), [((0, 3, 0.1), "dim"), ((2, 0, 0.1), "pieces"), ((2, 3, 0.0), "std"),
                       ((2, 3, float("nan")), "std")],
)  # fmt: skip
def test_bad_arguments_are_refused(args, word):
    with pytest.raises(ConfigError, match=word):
        GaussianPieces(*args)


def test_the_centres_are_made_on_the_cpu_under_a_default_device():
    """A model's size check builds it on the meta device: the centres are still the CPU's numbers
    (there ``randn`` would take torch's Python decomposition, which loads the compiler)."""
    with torch.device("meta"):
        mu = GaussianPieces(8, 20, 0.15)
    assert mu.centres.device.type == "cpu"
    assert torch.equal(mu.centres, piece_centres(20, 8))

"""The flow's learned base measure: the mixture's density against torch.distributions and the
GaussianMixture it exports, its draws against the closed-form moments and weights, k-means
placement on separated clusters, N(0, I) by default and for runs stored before the setting, and
a fit in which the base's parameters learn."""

import json
import math

import pytest
import torch

from pushforward.core import ConfigError
from pushforward.data import datasets
from pushforward.models.flow import PIECES, Flow, FlowConfig, MixtureBase
from pushforward.models.flow.base import PIECE_SCALE
from pushforward.train import TrainConfig, fit, seeded


def random_base(dim: int = 2, pieces: int = 3, seed: int = 0) -> MixtureBase:
    """A mixture base with unequal weights, spread means and unequal scales per coordinate."""
    b = MixtureBase(dim, pieces).double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        b.logits.copy_(torch.randn(pieces, generator=g, dtype=torch.float64))
        b.loc.copy_(3 * torch.randn(pieces, dim, generator=g, dtype=torch.float64))
        b.log_scale.copy_(0.5 * torch.randn(pieces, dim, generator=g, dtype=torch.float64))
    return b


def reference(b: MixtureBase) -> torch.distributions.Distribution:
    pieces = torch.distributions.Independent(
        torch.distributions.Normal(b.loc, b.log_scale.exp()), 1
    )
    return torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(logits=b.logits), pieces
    )


def test_log_prob_matches_torch_distributions_and_the_exported_gaussian_mixture():
    b = random_base(dim=3, pieces=4)
    z = 2 * torch.randn(50, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    lp = b.log_prob(z)
    assert lp.shape == (50,)
    torch.testing.assert_close(lp, reference(b).log_prob(z), atol=1e-10, rtol=0)
    torch.testing.assert_close(b.measure().log_prob(z), lp.detach(), atol=1e-10, rtol=0)
    torch.testing.assert_close(b.distribution().log_prob(z), lp, atol=1e-10, rtol=0)
    # one piece at 0 with unit scales is N(0, I)
    one = MixtureBase(3, 1).double()
    with torch.no_grad():
        one.log_scale.zero_()
    closed = -0.5 * ((z * z).sum(1) + 3 * math.log(2 * math.pi))
    torch.testing.assert_close(one.log_prob(z), closed, atol=1e-12, rtol=0)


def test_draws_have_the_mixtures_weights_mean_and_covariance():
    b = random_base(dim=2, pieces=3, seed=2)
    n = 200_000
    z = b.sample(n, generator=torch.Generator().manual_seed(3))
    assert z.shape == (n, 2) and not z.requires_grad
    assert torch.equal(z, b.sample(n, generator=torch.Generator().manual_seed(3)))
    w = torch.softmax(b.logits.detach(), 0)
    m, s2 = b.loc.detach(), torch.exp(2 * b.log_scale.detach())
    mean = (w[:, None] * m).sum(0)
    second = (w[:, None, None] * (torch.diag_embed(s2) + m[:, :, None] * m[:, None, :])).sum(0)
    cov = second - mean[:, None] * mean[None, :]
    se = (torch.diagonal(cov) / n).sqrt()
    assert ((z.mean(0) - mean).abs() < 5 * se).all()
    torch.testing.assert_close(torch.cov(z.T), cov, atol=0.05 * float(cov.abs().max()), rtol=0)
    # with the means 20 scales apart, each draw's nearest mean is its piece: the shares are w
    with torch.no_grad():
        b.loc.copy_(torch.tensor([[-20.0, 0.0], [0.0, 0.0], [20.0, 0.0]]))
        b.log_scale.zero_()
    nearest = torch.cdist(b.sample(n, generator=torch.Generator().manual_seed(4)), b.loc).argmin(1)
    share = torch.bincount(nearest, minlength=3).double() / n
    se = (w * (1 - w) / n).sqrt()
    assert ((share - w).abs() < 5 * se).all(), (share, w)


def test_k_means_places_one_piece_on_each_separated_cluster():
    centres = torch.tensor([[-4.0, 0.0], [4.0, 0.0], [0.0, 4.0], [0.0, -4.0]])
    g = torch.Generator().manual_seed(0)
    z = centres[torch.arange(2000) % 4] + 0.1 * torch.randn(2000, 2, generator=g)
    b = MixtureBase(2, 4)
    b.place(z)
    # every cluster has exactly one mean within 0.05 of its centre
    dist = torch.cdist(centres, b.loc.detach())  # (4 clusters, 4 pieces)
    assert (dist.min(1).values < 0.05).all(), b.loc
    assert sorted(dist.argmin(1).tolist()) == [0, 1, 2, 3]
    # a function of the codes alone: the same means again
    b2 = MixtureBase(2, 4)
    b2.place(z)
    assert torch.equal(b.loc, b2.loc)


def test_the_default_is_n01_and_runs_stored_before_the_setting_load_as_built():
    for config in (FlowConfig(dim=2), FlowConfig(dim=64, image_shape=(8, 8))):
        m = Flow(config)
        assert m.config.base == "normal" and m.base is None
        assert not any(k.startswith("base.") for k in m.state_dict())
    mixed = Flow(FlowConfig(dim=2, base="mixture"))
    assert mixed.config.pieces == PIECES and mixed.base.loc.shape == (PIECES, 2)
    assert torch.allclose(mixed.base.log_scale.exp(), torch.tensor(PIECE_SCALE))
    assert {"base.logits", "base.loc", "base.log_scale"} <= set(mixed.state_dict())
    # a config written before the setting existed was built on N(0, I)
    stored = json.loads(json.dumps(mixed.get_config()))
    assert stored["base"] == "mixture"
    del stored["base"], stored["pieces"]
    assert FlowConfig.from_stored(stored).base == "normal"
    with pytest.raises(ConfigError, match=r"base measure.*'cauchy'"):
        FlowConfig(dim=2, base="cauchy")
    with pytest.raises(ConfigError, match="pieces"):
        FlowConfig(dim=2, pieces=0)


def test_prepare_places_the_means_on_the_codes_and_fit_trains_the_base():
    x = datasets.ring8().sample(1024, generator=torch.Generator().manual_seed(0))
    with seeded(0):
        m = Flow(FlowConfig(dim=2, layers=2, hidden=[16], bins=8, base="mixture", pieces=8))
    m.prepare(x)
    with torch.no_grad():
        codes = m.encode(x)  # g⁻¹(x) under the initial layers, as prepare saw them
    # the 8 means sit on the ring's 8 modes as the initial layers encode them
    nearest = torch.cdist(m.base.loc.detach(), codes).min(1).values
    assert (nearest < 0.3).all(), nearest
    before = {k: v.clone() for k, v in m.base.state_dict().items()}
    loss0 = float(m.loss(x)["loss"].detach())
    fit(m, x, TrainConfig(epochs=3, batch_size=128, lr=5e-3, seed=0))
    assert float(m.loss(x)["loss"].detach()) < loss0 - 0.5
    moved = {k: float((v - before[k]).abs().max()) for k, v in m.base.state_dict().items()}
    assert all(d > 1e-3 for d in moved.values()), moved  # weights, means and scales all learn


def test_the_cli_fits_samples_and_reloads_a_flow_on_a_mixture_base(tmp_path, capsys):
    import numpy as np

    from pushforward.cli import main
    from pushforward.runs import load_model

    run, out = tmp_path / "run", tmp_path / "x.npy"
    fit_args = ["fit", "flow", "--data", "ring8", "-n", "512", "--layers", "2", "--hidden", "16"]
    train = ["--bins", "8", "--epochs", "2", "--batch-size", "128", "--base", "mixture"]
    assert main([*fit_args, *train, "--pieces", "8", "--out", str(run)]) == 0
    assert json.loads((run / "config.json").read_text())["model"]["config"]["base"] == "mixture"
    m = load_model(run)
    assert m.config.base == "mixture" and m.base.loc.shape == (8, 2)
    capsys.readouterr()
    assert main(["sample", str(run), "-n", "300", "--seed", "5", "--out", str(out)]) == 0
    x = torch.from_numpy(np.load(out))
    assert x.shape == (300, 2) and torch.isfinite(m.log_prob(x)).all()
    # the CLI's draws are the model's own seeded draws
    torch.testing.assert_close(x, m.sample(300, generator=torch.Generator().manual_seed(5)))

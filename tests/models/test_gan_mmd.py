"""The generator's kernel two-sample term (``mmd_weight``): its value and gradient against the
unbiased MMD² written out with autograd, what it measures (seeded Monte Carlo: zero in
expectation for samples of the data's own law, positive for narrower ones), the direction it
moves a too-narrow mode, and its place in the GAN's step, settings, flags and stored runs."""

import json
import math

import pytest
import torch

from pushforward.cli.flags import flag_type
from pushforward.core import ConfigError
from pushforward.data import datasets
from pushforward.models.gan import GAN, RECOMMENDED, GANConfig
from pushforward.models.gan.mmd import MMD_BANDWIDTHS, generator_mmd
from pushforward.train import TrainConfig, fit, seeded
from pushforward.train.trainable import Shard


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def kernel(x: torch.Tensor, y: torch.Tensor, bandwidths) -> torch.Tensor:
    """Σ_h exp(−|xᵢ − yⱼ|² / 2h²) (n, m), by broadcasting (no matrix-product shortcut)."""
    d2 = (x[:, None, :] - y[None, :, :]).square().sum(-1)
    return sum(torch.exp(-d2 / (2 * h * h)) for h in bandwidths)


def unbiased_mmd2(a, b, bandwidths) -> torch.Tensor:
    """Gretton et al.'s unbiased MMD²: the off-diagonal means of k(a, a) and k(b, b), minus
    twice the mean of k(a, b)."""
    n, m = a.shape[0], b.shape[0]
    off = lambda k, p: (k.sum() - k.diagonal().sum()) / (p * (p - 1))  # noqa: E731
    return (
        off(kernel(a, a, bandwidths), n)
        + off(kernel(b, b, bandwidths), m)
        - 2 * kernel(a, b, bandwidths).mean()
    )


@pytest.mark.parametrize("bandwidths", [MMD_BANDWIDTHS, (0.05,), (0.2, 1.5)])
def test_the_term_is_mmd2_less_the_datas_own_sum_with_autograds_gradient(bandwidths):
    a = (0.1 * torch.randn(40, 3, generator=gen(0), dtype=torch.float64)).requires_grad_()
    b = 0.1 * torch.randn(55, 3, generator=gen(1), dtype=torch.float64)
    n_b = b.shape[0]
    k_bb = kernel(b, b, bandwidths)
    bb = (k_bb.sum() - k_bb.diagonal().sum()) / (n_b * (n_b - 1))
    want = unbiased_mmd2(a, b, bandwidths) - bb
    got = generator_mmd(a, b, bandwidths)
    torch.testing.assert_close(got, want)
    (g_want,) = torch.autograd.grad(want, a)
    (g_got,) = torch.autograd.grad(generator_mmd(a, b, bandwidths), a)
    torch.testing.assert_close(g_got, g_want)
    assert float(g_want.abs().max()) > 1e-3  # a gradient worth comparing


def test_a_batch_of_one_sample_adds_nothing_and_trains_on():
    """An epoch's last batch may hold one row: no unbiased estimate, so the term is 0 there
    (with a gradient of 0), and a fit whose row count leaves such a batch runs to the end."""
    a = torch.ones(1, 2, requires_grad=True)
    term = generator_mmd(a, torch.zeros(1, 2))
    (g,) = torch.autograd.grad(term, a)
    assert float(term) == 0.0 and float(g.abs().sum()) == 0.0
    x = datasets.ring8().sample(65, generator=gen(8))  # batches of 64 and 1
    with seeded(0):
        m = GAN(GANConfig(dim=2, latent=2, hidden=[8], mmd_weight=0.3).resolve("points"))
    fit(m, x, TrainConfig(epochs=2, batch_size=64, seed=0))


def test_far_apart_points_add_nothing_and_keep_the_gradient_exact():
    """The exponents' clamp: points 100 bandwidths apart contribute e⁻⁵⁰ ≈ 0, as they should."""
    a = torch.tensor([[0.0, 0.0], [0.005, 0.0], [5.0, 5.0]], dtype=torch.float64)
    a.requires_grad_()
    b = torch.tensor([[0.0, 0.01], [-7.0, 3.0]], dtype=torch.float64)
    want = unbiased_mmd2(a, b, (0.01,)) - 0.0  # the two data points are far apart: k(b, b) ≈ 0
    torch.testing.assert_close(generator_mmd(a, b, (0.01,)), want)
    (g,) = torch.autograd.grad(generator_mmd(a, b, (0.01,)), a)
    (g_want,) = torch.autograd.grad(want, a)
    torch.testing.assert_close(g, g_want)
    assert float(g[2].abs().max()) == 0.0


def test_mmd2_is_zero_for_the_datas_own_law_and_positive_for_narrower_modes():
    """Seeded Monte Carlo over 40 batches of ring8 (standardised like the game): with the
    data's own law the full unbiased MMD² averages to 0 within its standard error; samples of
    the modes shrunk to 0.75 of their width (the GAN's old state) score clearly above."""
    ring = datasets.ring8()
    loc, scale = torch.zeros(2), torch.full((2,), math.sqrt(0.5))
    own, narrow = [], []
    for i in range(40):
        b = (ring.sample(256, generator=gen(2 * i)) - loc) / scale
        a = (ring.sample(256, generator=gen(2 * i + 1)) - loc) / scale
        centre = torch.round(torch.atan2(a[:, 1], a[:, 0]) / (math.pi / 4)) * (math.pi / 4)
        c = torch.stack([centre.cos(), centre.sin()], 1) / scale
        shrunk = c + 0.75 * (a - c)
        k_bb = kernel(b, b, MMD_BANDWIDTHS)
        bb = (k_bb.sum() - k_bb.diagonal().sum()) / (256 * 255)
        own.append(float(generator_mmd(a, b) + bb))
        narrow.append(float(generator_mmd(shrunk, b) + bb))
    own_t, gap = torch.tensor(own), torch.tensor(narrow) - torch.tensor(own)  # paired by batch
    assert abs(float(own_t.mean())) < 3 * float(own_t.std()) / math.sqrt(len(own))
    assert float(gap.mean()) > 10 * float(gap.std()) / math.sqrt(len(own))


def test_a_gradient_step_widens_a_mode_that_is_too_narrow():
    """One mode N(0, 0.02²) as data and samples at half its spread: a small step down the term's
    gradient spreads the samples (the push outwards that the critic, flat at the modes' scale,
    does not give); samples at twice the spread are drawn in."""
    b = 0.02 * torch.randn(512, 2, generator=gen(3))
    for start, wider in ((0.01, True), (0.04, False)):
        a = (start * torch.randn(256, 2, generator=gen(4))).requires_grad_()
        (g,) = torch.autograd.grad(generator_mmd(a, b), a)
        after = a.detach() - 1e-3 * start * g / g.norm(dim=1).max()  # at most 0.1% of the spread
        ratio = float(after.std() / a.detach().std())
        assert (ratio > 1) == wider and abs(ratio - 1) > 1e-4


@pytest.mark.parametrize("every", [1, 3])
def test_the_generator_step_descends_the_weighted_term_and_logs_it(every):
    """With mmd_weight w (every K-th step) the generator's first update is Adam's on the
    gradient of loss + K·w·term, reconstructed by hand from the step's own draws; the term is
    reported as 'mmd_term', times K."""
    x = datasets.ring8().sample(64, generator=gen(5))
    settings = {"dim": 2, "latent": 2, "hidden": [16], "gp_weight": 0.0, "mmd_weight": 0.5,
                "mmd_bandwidths": [0.05, 0.5], "mmd_every": every}  # fmt: skip
    with seeded(0):
        m = GAN(GANConfig(**settings).resolve("points"))
    m.prepare(x)
    cfg = TrainConfig(lr=1e-3)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    terms = m.training_step(x, m.configure_optimizers(cfg), cfg, generator=gen(6))
    # the same step by hand: the critic's update, then g's gradient of loss + w·term
    m2 = GAN(m.config)
    m2.load_state_dict(before)
    opts = m2.configure_optimizers(cfg)
    g = gen(6)
    packs = m2._packs(x, g)
    with torch.no_grad():
        fake = m2._fakes(packs.shape[0], g, x.device)
    opts["critic"].zero_grad()
    m2._critic_terms(packs, fake, g, lazy=None)["critic_loss"].backward()
    opts["critic"].step()
    fake = m2._fakes(packs.shape[0], g, x.device)
    loss = m2.objective.generator(m2._score(fake))
    term = generator_mmd(fake, packs, [0.05, 0.5])
    params = list(m2.generator_net.parameters())
    grads = torch.autograd.grad(loss + 0.5 * every * term, params, retain_graph=True)
    plain = torch.autograd.grad(loss, params)
    assert not torch.allclose(grads[0], plain[0], atol=1e-6)  # the term changes the step
    opts["generator"].zero_grad()
    for p, gr in zip(params, grads, strict=True):
        p.grad = gr
    opts["generator"].step()
    torch.testing.assert_close(terms["mmd_term"], every * term.detach())
    for a, b in zip(m.generator_net.parameters(), params, strict=True):
        torch.testing.assert_close(a, b)


def test_the_lazy_term_is_due_every_kth_generator_step_and_resumes_in_rhythm(tmp_path):
    """mmd_every = 3: the term shapes the steps 0, 3, 6, … only (reported there, times 3; 0 on
    the others), and a run resumed after 4 steps takes it again on its 3rd step (step 6 counted
    from 0), as the run that was not stopped does."""
    x = datasets.ring8().sample(64, generator=gen(5))
    settings = {"dim": 2, "latent": 2, "hidden": [16], "mmd_weight": 0.5, "mmd_every": 3}

    def steps(m: GAN, n: int, g: torch.Generator, opts) -> list[float]:
        cfg = TrainConfig(lr=1e-3)
        return [float(m.training_step(x, opts, cfg, generator=g)["mmd_term"]) for _ in range(n)]

    with seeded(0):
        m = GAN(GANConfig(**settings).resolve("points"))
    m.prepare(x)
    terms = steps(m, 7, gen(6), m.configure_optimizers(TrainConfig(lr=1e-3)))
    assert [t != 0 for t in terms] == [True, False, False, True, False, False, True]
    # a step without the term is the plain game's: the same update as mmd_weight = 0 from there
    with seeded(0):
        a = GAN(GANConfig(**settings).resolve("points"))
        b = GAN(GANConfig(**{**settings, "mmd_weight": 0.0}).resolve("points"))
    for model in (a, b):
        model.prepare(x)
        model.load_state_dict(m.state_dict())
        model.ema_updates.fill_(4)  # as a checkpoint after 4 steps; step 5 is not due
    oa = a.configure_optimizers(TrainConfig(lr=1e-3))
    ob = b.configure_optimizers(TrainConfig(lr=1e-3))
    steps(a, 1, gen(7), oa)
    b.training_step(x, ob, TrainConfig(lr=1e-3), generator=gen(7))
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q)
    assert [t != 0 for t in steps(a, 2, gen(8), oa)] == [False, True]  # steps 5 and 6 (from 0)


def test_validation_reports_the_term_on_the_same_samples_as_a_step_would():
    """GAN.loss (validation) gives 'mmd_term' with mmd_weight > 0, the term of its own draws;
    without the setting it gives none."""
    x = datasets.ring8().sample(64, generator=gen(5))
    settings = {"dim": 2, "latent": 2, "hidden": [16], "pack": 2, "mmd_weight": 0.5,
                "mmd_bandwidths": [0.05, 0.5]}  # fmt: skip
    with seeded(0):
        m = GAN(GANConfig(**settings).resolve("points"))
    m.prepare(x)
    with torch.no_grad():
        terms = m.loss(x, generator=gen(6))
        g = gen(6)  # the same draws by hand: the packs' order, then g's noise
        packs = m._packs(x, g)
        fake = m._fakes(packs.shape[0], g, x.device)
        want = generator_mmd(fake.reshape(-1, 2), packs.reshape(-1, 2), [0.05, 0.5])
    torch.testing.assert_close(terms["mmd_term"], want)
    assert float(want) != 0.0
    with seeded(0):
        plain = GAN(GANConfig(**{**settings, "mmd_weight": 0.0}).resolve("points"))
    plain.prepare(x)
    assert "mmd_term" not in plain.loss(x, generator=gen(6))


def test_the_term_is_on_for_points_off_for_images_refused_in_processes_and_read_from_stored():
    assert RECOMMENDED["model"]["mmd_weight"] == 0.3
    on_points = GANConfig().resolve("points")
    assert (on_points.mmd_weight, on_points.mmd_every) == (0.3, 2)
    assert GANConfig(mmd_weight=0.3).resolve("images").mmd_weight == 0.3
    on_images = GANConfig().resolve("images")
    assert (on_images.mmd_weight, on_images.mmd_every) == (0.0, 1)
    with pytest.raises(ConfigError, match="mmd_weight"):
        GANConfig(mmd_weight=-1.0).resolve("points")
    with pytest.raises(ConfigError, match="mmd_bandwidths"):
        GANConfig(mmd_bandwidths=[0.1, 0.0]).resolve("points")
    stored = GANConfig(dim=2, hidden=[8]).resolve("points").to_dict()
    del stored["mmd_weight"], stored["mmd_every"]  # a run stored before the settings existed
    assert GAN(GANConfig.from_stored(stored)).config.mmd_weight == 0.0  # trains without it
    # what a stored run folder gets
    assert (
        GANConfig.stored_defaults()["mmd_weight"],
        GANConfig.stored_defaults()["mmd_every"],
    ) == (0.0, 1)
    again = GANConfig.from_dict(json.loads(json.dumps(GANConfig(mmd_weight=0.3).to_dict())))
    assert again.mmd_weight == 0.3 and again.mmd_bandwidths == list(MMD_BANDWIDTHS)
    with seeded(0):
        m = GAN(GANConfig(dim=2, latent=2, hidden=[8], mmd_weight=0.3, pack=2).resolve("points"))
    cfg = TrainConfig()
    with pytest.raises(ConfigError, match="several processes"):  # packing, not the term
        m.training_step(torch.zeros(4, 2), m.configure_optimizers(cfg), cfg,
                        shard=Shard(rank=0, world=2, rows=4))  # fmt: skip


def test_a_shard_of_a_one_process_world_takes_the_step_one_process_takes():
    """Under torchrun the term is the whole batch's, gathered from the processes (two processes
    against one: tests/train/test_distributed.py); with a world of one process the shard is the
    whole batch, and the step is the one taken without it (through autograd there, written out
    here: the same to rounding)."""
    x = datasets.ring8().sample(64, generator=gen(3))
    after = []
    for shard in (None, Shard(rank=0, world=1, rows=64)):
        with seeded(0):
            m = GAN(GANConfig(dim=2, hidden=[16, 16], mmd_weight=0.3, mmd_every=1,
                              gp_weight=0.0).resolve("points"))  # fmt: skip
        m.prepare(x)
        cfg = TrainConfig(lr=1e-2)
        terms = m.training_step(x, m.configure_optimizers(cfg), cfg, generator=gen(4),
                                shard=shard)  # fmt: skip
        assert float(terms["mmd_term"]) != 0.0
        after.append((terms, m.state_dict()))
    (t0, w0), (t1, w1) = after
    torch.testing.assert_close(t1["mmd_term"], t0["mmd_term"], rtol=1e-5, atol=1e-7)
    for k in w0:
        torch.testing.assert_close(w1[k], w0[k], rtol=1e-5, atol=1e-6)


def test_the_bandwidths_flag_reads_numbers_and_refuses_text():
    import argparse
    import typing

    parse = flag_type(typing.get_type_hints(GANConfig)["mmd_bandwidths"])
    assert parse("0.01,0.1,1") == [0.01, 0.1, 1.0]
    with pytest.raises(argparse.ArgumentTypeError, match="numbers separated by commas"):
        parse("0.1,wide")
    assert flag_type(typing.get_type_hints(GANConfig)["hidden"])("8,4") == [8, 4]


def test_a_short_fit_records_the_term_every_epoch_and_runs_on_the_models_device(meta_guard):
    x = datasets.ring8().sample(128, generator=gen(7))
    for weight in (0.3, 0.0):
        with seeded(0):
            m = GAN(GANConfig(dim=2, latent=2, hidden=[16], mmd_weight=weight).resolve("points"))
        history = fit(m, x, TrainConfig(epochs=2, batch_size=64, seed=0))
        assert len(history) == 2
        recorded = ["mmd_term" in row for row in history]
        assert recorded == [weight > 0] * 2  # logged when on, absent when off
        assert all(math.isfinite(row.get("mmd_term", 0.0)) for row in history)
    with torch.device("meta"):
        meta = GAN(GANConfig(dim=2, latent=2, hidden=[8], mmd_weight=0.3,
                             mmd_every=1).resolve("points"))  # fmt: skip
    opts = meta.configure_optimizers(TrainConfig())
    xm = torch.empty(8, 2, device="meta")
    with meta_guard:
        terms = meta.training_step(xm, opts, TrainConfig())
        # a process's share under torchrun (the term due on this 2nd step too: mmd_every 1): the
        # batch gathered on the model's device
        shard = Shard(rank=0, world=1, rows=8)
        sharded = meta.training_step(xm, opts, TrainConfig(), shard=shard)
    assert terms["mmd_term"].device.type == "meta" == sharded["mmd_term"].device.type

"""The GAN's step written out (:mod:`pushforward.models.gan.fused`): each player's loss and
every gradient equal autograd's, for every objective, R1 (lazily weighted) or a penalty taken
by autograd, packing and the kernel term; the same training run; autograd wherever it does not
apply."""

import copy
import dataclasses

import pytest
import torch

from pushforward.core import TrainingError
from pushforward.data import datasets
from pushforward.models.gan import GAN, GAN_LOSSES, GANConfig
from pushforward.models.gan import fused as gan_fused
from pushforward.models.gan.objectives import GANLoss
from pushforward.train import Shard, TrainConfig, fit, seeded


def config(**settings) -> GANConfig:
    """2-D data, 2-D Gaussian noise, 16-16 MLPs for both players (the critic as g unless
    ``critic_hidden`` is given), no kernel term; ``settings`` change any setting."""
    plain = {
        "noise": "gaussian",
        "mmd_weight": 0.0,
        "critic_hidden": settings.get("hidden", [16, 16]),
    }
    return GANConfig(**{"dim": 2, "latent": 2, "hidden": [16, 16], **plain, **settings})


def ring(n: int, seed: int = 0) -> torch.Tensor:
    return datasets.ring8().sample(n, generator=torch.Generator().manual_seed(seed))


def _pair(**settings) -> tuple[GAN, GAN]:
    """Two copies of one GAN on ring8's scale: the first written out, the second autograd's."""
    with seeded(4):
        a = GAN(config(**settings))
    a.prepare(ring(512))
    b = copy.deepcopy(a)
    b.fused_step = False
    return a, b


def _grads(module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


def _assert_same(g1: dict, g2: dict) -> None:
    assert set(g1) == set(g2) and g2
    for name in g2:
        torch.testing.assert_close(g1[name], g2[name], rtol=1e-4, atol=1e-6, msg=name)


# fmt: off
CASES = [
    dict(loss="nonsaturating", penalty="r1", gp_weight=0.1, hidden=[16, 16]),
    dict(loss="minimax", penalty="r1", gp_weight=0.5, critic_activation="leaky_relu_0.2"),
    dict(loss="hinge", penalty="r1", gp_weight=1.0, activation="leaky_relu"),
    dict(loss="wgan-gp", penalty="gp", gp_weight=10.0),           # its penalty: autograd
    dict(loss="nonsaturating", penalty="r1", gp_weight=0.1, activation="tanh"),  # R1: autograd
    dict(loss="nonsaturating", gp_weight=0.0, pack=3),
    dict(loss="nonsaturating", penalty="r1", gp_weight=0.2, pack=2),
    dict(loss="nonsaturating", penalty="r1", gp_weight=0.2, hidden=[]),  # one linear layer each
    dict(loss="nonsaturating", penalty="r1", gp_weight=0.1, mmd_weight=0.3),
    # the shape of the defaults on points: pieces, a narrower critic, the kernel term lazily
    dict(noise="pieces", gp_weight=0.01, critic_hidden=[8, 8, 8], mmd_weight=0.3, mmd_every=2),
]
# fmt: on


@pytest.mark.parametrize("kw", CASES, ids=lambda kw: "-".join(f"{v}" for v in kw.values()))
@pytest.mark.parametrize("lazy", [None, 1.0, 4.0])
def test_the_critics_loss_and_gradients_equal_autograds(kw, lazy):
    a, b = _pair(**kw)
    x = ring(64, seed=5)
    assert gan_fused.fusable(a, x, None, base=GAN)
    if lazy is not None and not gan_fused.penalty_fusable(a):
        assert kw["penalty"] == "gp" or kw.get("activation") == "tanh"
        return  # that step takes autograd (checked in the training test below)
    g = torch.Generator().manual_seed(1)
    real = a._packs(x, g)
    with torch.no_grad():
        fake = a._fakes(real.shape[0], g, x.device)
    terms, pairs = gan_fused.critic_gradients(a, real, fake, lazy)
    gan_fused.set_gradients(terms, pairs)
    ref = b._critic_terms(real, fake, None, lazy=lazy)
    ref["critic_loss"].backward()
    assert set(terms) == set(ref)
    for k in ref:
        torch.testing.assert_close(terms[k], ref[k].detach(), rtol=1e-5, atol=1e-6, msg=k)
    _assert_same(_grads(a.critic), _grads(b.critic))
    assert not _grads(a.generator_net)


@pytest.mark.parametrize("kw", CASES, ids=lambda kw: "-".join(f"{v}" for v in kw.values()))
def test_the_generators_loss_and_gradients_equal_autograds(kw):
    a, b = _pair(**kw)
    x = ring(64, seed=6)
    packs = a._packs(x, torch.Generator().manual_seed(2))
    z = a._latent(packs.shape[0], torch.Generator().manual_seed(3), x.device)
    terms, pairs = gan_fused.generator_gradients(a, z, packs, a._mmd_due())
    gan_fused.set_gradients(terms, pairs)
    gen, extra = b._generator_backward(packs, torch.Generator().manual_seed(3), None, 1.0)
    torch.testing.assert_close(terms.pop("gen_loss"), gen.detach(), rtol=1e-5, atol=1e-6)
    assert set(terms) == set(extra) == ({"mmd_term"} if kw.get("mmd_weight") else set())
    for k in extra:
        torch.testing.assert_close(terms[k], extra[k], rtol=1e-5, atol=1e-6)
    _assert_same(_grads(a.generator_net), _grads(b.generator_net))
    assert not _grads(a.critic) and not _grads(b.critic)  # the critic held fixed


@pytest.mark.parametrize(
    "kw",
    [
        dict(
            loss="nonsaturating",
            penalty="r1",
            gp_weight=0.5,
            penalty_every=2,
            critic_steps=2,
            ema=0.9,
        ),
        dict(loss="wgan-gp", penalty="gp", gp_weight=10.0, penalty_every=3),
        dict(loss="nonsaturating", penalty="r1", gp_weight=0.1, activation="tanh"),
    ],
    ids=["r1-lazy-ema", "gp-by-autograd", "tanh-r1-by-autograd"],
)
def test_a_training_run_written_out_is_autograds_run(kw, monkeypatch):
    """Three epochs of the whole game (lazy penalties on their steps, the running average),
    written out and through autograd from the same start and seed: the same logged terms and
    weights, to rounding; the written-out steps were taken."""
    taken = []
    for fn in ("critic_gradients", "generator_gradients"):
        real = getattr(gan_fused, fn)
        monkeypatch.setattr(
            gan_fused, fn, lambda *a, _f=real, _n=fn, **k: taken.append(_n) or _f(*a, **k)
        )
    a, b = _pair(**kw)
    x = ring(384, seed=7)
    cfg = TrainConfig(epochs=3, batch_size=64, lr=1e-3, seed=0)
    ha = fit(a, x, cfg)
    assert {"critic_gradients", "generator_gradients"} <= set(taken)
    hb = fit(b, x, cfg)
    assert len(ha) == 3
    for ea, eb in zip(ha, hb, strict=True):
        assert ea.keys() == eb.keys()
        for k in ("critic_loss", "gen_loss", "gradient_penalty"):
            assert ea[k] == pytest.approx(eb[k], rel=1e-3, abs=1e-5), k
    for (n, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-4, msg=n)


def test_the_written_out_step_is_taken_where_it_applies_and_not_elsewhere(monkeypatch):
    calls = {"critic": 0, "generator": 0, "r1": 0}

    def counting(name, fn):
        def wrapped(*args, **kw):
            calls[name] += 1
            return fn(*args, **kw)

        return wrapped

    for name, fn in (("critic", "critic_gradients"), ("generator", "generator_gradients"),
                     ("r1", "input_gradient_backward")):  # fmt: skip
        monkeypatch.setattr(gan_fused, fn, counting(name, getattr(gan_fused, fn)))
    a, b = _pair(loss="nonsaturating", penalty="r1", gp_weight=0.1, penalty_every=2)
    cfg = TrainConfig(epochs=2, batch_size=64, seed=0)
    fit(b, ring(128), cfg)
    assert calls == {"critic": 0, "generator": 0, "r1": 0}  # fused_step = False
    fit(a, ring(128), cfg)
    assert calls == {"critic": 4, "generator": 4, "r1": 2}  # R1 on every 2nd critic step


def test_fusable_declines_what_the_written_out_step_does_not_compute():
    x = ring(64)
    a, _ = _pair(penalty="r1", gp_weight=0.1)
    assert gan_fused.fusable(a, x, None, base=GAN)
    assert not gan_fused.fusable(a, x.double(), None, base=GAN)
    assert not gan_fused.fusable(a, x, Shard(0, 2, 64), base=GAN)  # torchrun: autograd + DDP
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not gan_fused.fusable(a, x, None, base=GAN)
    std, _ = _pair(minibatch_std=True)
    assert not gan_fused.fusable(std, x, None, base=GAN)
    images_config = {"dim": 64, "image_shape": (8, 8), "gp_weight": 0.0}
    with seeded(0):
        images = GAN(GANConfig(**images_config, net="mlp", hidden=[8]))  # sigmoid output
        conv = GAN(GANConfig(**images_config, net="conv", hidden=[4, 8]))
    pixels = torch.rand(4, 64)
    assert not gan_fused.fusable(images, pixels, None, base=GAN)
    assert not gan_fused.fusable(conv, pixels, None, base=GAN)
    hooked, _ = _pair()
    hooked.critic.register_forward_hook(lambda *args: None)
    assert not gan_fused.fusable(hooked, x, None, base=GAN)
    custom, _ = _pair()
    custom.objective = GANLoss(GAN_LOSSES["hinge"].critic, GAN_LOSSES["hinge"].generator)
    assert not gan_fused.fusable(custom, x, None, base=GAN)
    mine, _ = _pair(loss="hinge")  # a user's own loss that kept hinge's written-out gradients
    mine.objective = dataclasses.replace(GAN_LOSSES["hinge"], critic=lambda r, f: r.mean())
    assert not gan_fused.fusable(mine, x, None, base=GAN)

    class Scored(GAN):
        def _score(self, packs):
            return super()._score(packs) * 2

    with seeded(0):
        assert not gan_fused.fusable(Scored(config()), x, None, base=GAN)
    counted, _ = _pair(penalty="r1", gp_weight=0.1)
    counted.penalty_fn = lambda *args, **kw: 0 * args[1].sum()  # a user's own penalty
    assert not gan_fused.penalty_fusable(counted)


def test_a_nonfinite_term_of_the_written_out_step_stops_training():
    a, _ = _pair(penalty="r1", gp_weight=0.1)
    with torch.no_grad():
        a.critic.linears[-1].bias.fill_(float("nan"))
    with pytest.raises(TrainingError, match="critic_loss term became nan"):
        fit(a, ring(128), TrainConfig(epochs=1, batch_size=64, seed=0))


@pytest.mark.parametrize("name", sorted(GAN_LOSSES))
def test_each_objectives_written_out_gradients_are_autograds_at_kinks_and_far_out(name):
    obj = GAN_LOSSES[name]
    real = torch.tensor([-40.0, -1.0, 0.0, 1.0, 0.3, 40.0])
    fake = torch.tensor([-40.0, -1.0, 0.0, 1.0, -0.7, 40.0])
    r, f = real.clone().requires_grad_(True), fake.clone().requires_grad_(True)
    obj.critic(r, f).backward()
    dr, df = obj.critic_grad(real, fake)
    torch.testing.assert_close(dr, r.grad, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(df, f.grad, rtol=1e-6, atol=1e-9)
    f = fake.clone().requires_grad_(True)
    obj.generator(f).backward()
    torch.testing.assert_close(obj.generator_grad(fake), f.grad, rtol=1e-6, atol=1e-9)

"""The GAN: its objectives and penalties against hand computations, the game's training steps,
sampling, save/load/resume, a clean stop on NaN, and a short run that finds every ring mode."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pushforward.cli import main
from pushforward.core import ConfigError, TrainingError, load_tensors
from pushforward.data import datasets
from pushforward.measures import Pushforward, StandardNormal
from pushforward.metrics import mode_metrics
from pushforward.models.gan import (
    GAN,
    GAN_LOSSES,
    RECOMMENDED,
    RECOMMENDED_IMAGES,
    TRUNCATION,
    GANConfig,
    gradient_penalty,
    r1_penalty,
)
from pushforward.nets import CONV_WIDTHS
from pushforward.runs import RunConfig, evaluate_run, fit_run, load_model
from pushforward.train import TrainConfig, fit, read_metrics, seeded


def config(**settings) -> GANConfig:
    """Return a GANConfig for 2-D data and 2-D Gaussian noise with 16-16 MLPs (the critic as wide
    as g), the Gulrajani penalty at its objective's own weight (on for wgan-gp only) on every
    critic step and no kernel term; ``settings`` change any of these."""
    loss = settings.get("loss", "nonsaturating")
    base = {"dim": 2, "latent": 2, "hidden": [16, 16], "penalty": "gp", "penalty_every": 1,
            "gp_weight": GAN_LOSSES[loss].default_gp_weight, "noise": "gaussian",
            "mmd_weight": 0.0, "critic_hidden": settings.get("hidden", [16, 16])}  # fmt: skip
    return GANConfig(**{**base, **settings})


def image_config(**settings) -> GANConfig:
    """Return a GANConfig for 8×8 images with a plain ReLU critic, no penalty and no running
    average of g's weights; ``settings`` change any of these."""
    base = {"dim": 64, "image_shape": (8, 8), "critic_activation": "relu", "gp_weight": 0.0,
            "penalty_every": 1, "ema": 0.0}  # fmt: skip
    return GANConfig(**{**base, **settings})


def make_gan(seed: int = 0, **settings) -> GAN:
    with seeded(seed):
        return GAN(config(**settings))


def ring(n: int = 512, seed: int = 0) -> torch.Tensor:
    return datasets.ring8().sample(n, generator=torch.Generator().manual_seed(seed))


def states_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --- penalties against hand computations ---------------------------------------------------------


def test_gradient_penalty_equals_the_hand_computed_value_on_a_quadratic_critic():
    # D(x) = ½‖x‖², so ∇D(x̂) = x̂ and the penalty is mean (‖x̂‖ − 1)² at x̂ = εx + (1 − ε)x̃
    real = torch.tensor([[1.0, 2.0], [0.0, -1.0], [3.0, 0.5]])
    fake = torch.tensor([[0.5, 0.5], [2.0, 2.0], [-1.0, 0.0]])

    def critic(x):
        return 0.5 * x.pow(2).sum(1)

    gp = gradient_penalty(critic, real, fake, generator=torch.Generator().manual_seed(7))
    eps = torch.rand(3, 1, generator=torch.Generator().manual_seed(7))
    hand = 0.0
    for i in range(3):
        e = float(eps[i])
        x_hat = [e * float(real[i, j]) + (1 - e) * float(fake[i, j]) for j in range(2)]
        hand += (math.hypot(*x_hat) - 1) ** 2 / 3
    assert float(gp.detach()) == pytest.approx(hand, rel=1e-6)


def test_gradient_penalty_of_a_tiny_tanh_critic_matches_its_closed_form_gradient():
    # D(x) = vᵀ tanh(Wx): ∇D(x) = Wᵀ (v ⊙ (1 − tanh²(Wx)))
    w = torch.tensor([[1.0, -2.0], [0.5, 0.3], [-1.0, 1.0]], dtype=torch.float64)
    v = torch.tensor([0.7, -1.2, 2.0], dtype=torch.float64)

    def critic(x):
        return torch.tanh(x @ w.T) @ v

    real = torch.tensor([[0.2, -0.4], [1.0, 0.1]], dtype=torch.float64)
    fake = torch.tensor([[-0.3, 0.9], [0.0, 0.0]], dtype=torch.float64)
    gp = gradient_penalty(critic, real, fake, generator=torch.Generator().manual_seed(3))
    eps = torch.rand(2, 1, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    x_hat = eps * real + (1 - eps) * fake
    grad = (v * (1 - torch.tanh(x_hat @ w.T) ** 2)) @ w  # (2, 2)
    want = float((grad.norm(dim=1) - 1).pow(2).mean())
    assert float(gp.detach()) == pytest.approx(want, rel=1e-12)


def test_gradient_penalty_is_differentiable_in_the_critic_weights():
    lin = nn.Linear(2, 1)
    gp = gradient_penalty(lambda x: lin(x).squeeze(1), ring(8), ring(8, seed=1))
    gp.backward()
    # ∇ₓ(wᵀx + b) = w, so GP = (‖w‖ − 1)² and ∂GP/∂w = 2(‖w‖ − 1) w/‖w‖
    w = lin.weight.detach()[0]
    assert float(gp.detach()) == pytest.approx(float((w.norm() - 1) ** 2), rel=1e-5)
    assert torch.allclose(lin.weight.grad[0], 2 * (w.norm() - 1) * w / w.norm(), atol=1e-6)
    assert lin.bias.grad is None or float(lin.bias.grad.abs().sum()) == 0


def test_r1_penalty_is_half_the_mean_squared_gradient_at_the_data():
    real = torch.tensor([[1.0, 2.0], [0.0, -1.0]])

    def critic(x):
        return 0.5 * x.pow(2).sum(1)  # ∇D(x) = x

    r1 = r1_penalty(critic, real, real.flip(0))
    assert float(r1.detach()) == pytest.approx(0.5 * (5.0 + 1.0) / 2)


# --- objectives and their documented gradients ---------------------------------------------------


def test_critic_loss_of_the_minimax_game_is_binary_cross_entropy_on_logits():
    real, fake = torch.tensor([2.0, -1.0, 0.3]), torch.tensor([0.5, -3.0])
    reference = F.binary_cross_entropy_with_logits(
        real, torch.ones(3)
    ) + F.binary_cross_entropy_with_logits(fake, torch.zeros(2))
    for name in ("minimax", "nonsaturating"):
        assert float(GAN_LOSSES[name].critic(real, fake)) == pytest.approx(float(reference))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("minimax", lambda s: -s),  # ∂/∂l log(1 − σ(l)) = −σ(l)
        ("nonsaturating", lambda s: -(1 - s)),  # ∂/∂l (−log σ(l)) = −(1 − σ(l))
        ("wgan-gp", lambda s: -torch.ones_like(s)),  # ∂/∂l (−l) = −1
        ("hinge", lambda s: -torch.ones_like(s)),
    ],
)
def test_generator_losses_have_the_documented_gradients(name, expected):
    logits = torch.tensor([-6.0, -1.0, 0.0, 2.0, 8.0], requires_grad=True)
    GAN_LOSSES[name].generator(logits).backward()
    want = expected(torch.sigmoid(logits.detach())) / logits.numel()
    assert torch.allclose(logits.grad, want, atol=1e-7)


def test_minimax_gradient_vanishes_where_the_nonsaturating_one_is_strong():
    # a confident critic rejects the fakes (l ≪ 0): the minimax signal dies, the other does not
    rejected = torch.tensor([-10.0])
    grads = {}
    for name in ("minimax", "nonsaturating"):
        lg = rejected.clone().requires_grad_(True)
        GAN_LOSSES[name].generator(lg).backward()
        grads[name] = abs(float(lg.grad))
    assert grads["minimax"] < 1e-4 < 0.99 < grads["nonsaturating"]


def test_hinge_and_wasserstein_critic_losses_by_hand():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    # hinge: mean relu(1 − l_real) + mean relu(1 + l_fake) = (0 + 0.5)/2 + (0 + 1)/2
    assert float(GAN_LOSSES["hinge"].critic(real, fake)) == pytest.approx(0.75)
    # Wasserstein: mean l_fake − mean l_real = −1 − 1.25
    assert float(GAN_LOSSES["wgan-gp"].critic(real, fake)) == pytest.approx(-2.25)


# --- packing, sampling, training steps -----------------------------------------------------------


def test_packs_are_rows_of_m_samples_each_used_once_before_any_repeats():
    m = make_gan(pack=4)
    x = torch.arange(20.0).reshape(10, 2)  # 10 rows: 3 packs, the last completed from the start
    packs = m._packs(x, torch.Generator().manual_seed(0))
    assert packs.shape == (3, 8)
    rows = packs.reshape(12, 2)
    assert torch.equal(rows[:10].sort(0).values, x)  # a permutation first
    assert m.critic(packs).shape == (3, 1)


def test_sample_is_a_seeded_pushforward_of_exactly_n_rows():
    m = make_gan()
    a = m.sample(1001, generator=torch.Generator().manual_seed(5))
    b = m.sample(1001, generator=torch.Generator().manual_seed(5))
    assert a.shape == (1001, 2) and torch.equal(a, b)
    pf = m.as_pushforward()
    assert isinstance(pf, Pushforward)
    z = torch.randn(7, 2, generator=torch.Generator().manual_seed(1))
    assert torch.equal(m.decode(z), m.generator_net(z))


def test_uniform_noise_lies_in_the_box_and_sigmoid_output_in_the_unit_interval():
    m = make_gan(noise="uniform", output="sigmoid")
    z = m.base.sample(4000, generator=torch.Generator().manual_seed(0))
    assert float(z.min()) >= -1 and float(z.max()) <= 1 and float(z.min()) < -0.99
    y = m.sample(100, generator=torch.Generator().manual_seed(0))
    assert float(y.min()) >= 0 and float(y.max()) <= 1


def test_standardised_game_samples_in_data_units_and_judges_standardised_data(tmp_path):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(400, 2, generator=gen) * torch.tensor([3.0, 0.5]) + torch.tensor([10.0, -2.0])
    m = make_gan(ema=0.9)
    assert m.standardize and torch.equal(m.data_scale, torch.ones(2))
    fit(m, x, TrainConfig(epochs=1, batch_size=100), run_dir=tmp_path)  # prepare() sets m, s
    assert torch.allclose(m.data_loc, x.mean(0)) and torch.allclose(m.data_scale, x.std(0))
    z = torch.randn(9, 2, generator=gen)
    u = m.generator_ema(z)  # the network's output, in standardised units
    assert torch.allclose(m.decode(z), x.mean(0) + x.std(0) * u)
    assert torch.equal(
        m.sample(9, generator=torch.Generator().manual_seed(3), jacobian_truncation=0),
        m.decode(torch.randn(9, 2, generator=torch.Generator().manual_seed(3))),
    )
    packs = m._packs(x, None)  # what the critic judges: the standardised data
    assert torch.allclose(packs.mean(0), torch.zeros(2), atol=1e-5)
    assert torch.allclose(packs.std(0), torch.ones(2), atol=1e-5)
    saved = load_tensors(tmp_path / "checkpoint.safetensors")  # the checkpoint carries m, s
    assert torch.equal(saved["model.data_loc"], m.data_loc)
    assert torch.equal(saved["model.data_scale"], m.data_scale)


def test_standardising_is_off_for_images_and_a_constant_coordinate_keeps_scale_one():
    assert not make_gan(output="sigmoid").standardize
    with seeded(0):
        img = GAN(image_config(latent=2, net="mlp", hidden=[16]))
    assert not img.standardize
    img.prepare(torch.rand(10, 64))
    assert torch.equal(img.data_loc, torch.zeros(64))  # off: nothing recorded
    m = make_gan()
    m.prepare(torch.tensor([[1.0, 5.0], [3.0, 5.0], [5.0, 5.0]]))
    assert torch.equal(m.data_loc, torch.tensor([3.0, 5.0]))
    assert torch.equal(m.data_scale, torch.tensor([2.0, 1.0]))


@pytest.mark.parametrize("loss", ["nonsaturating", "minimax", "wgan-gp", "hinge"])
def test_a_training_step_moves_both_players_and_reports_its_terms(loss):
    m = make_gan(loss=loss, critic_steps=2)
    cfg = TrainConfig(lr=1e-2, betas=(0.5, 0.999))
    opts = m.configure_optimizers(cfg)
    critic0 = [p.clone() for p in m.critic.parameters()]
    gen0 = [p.clone() for p in m.generator_net.parameters()]
    terms = m.training_step(ring(64), opts, cfg, generator=torch.Generator().manual_seed(0))
    # every weight matrix moves (a Wasserstein critic's last bias has no gradient: it cancels)
    for before, module in ((critic0, m.critic), (gen0, m.generator_net)):
        pairs = zip(before, module.parameters(), strict=True)
        assert all(not torch.equal(a, b) for a, b in pairs if a.ndim == 2)
    want = {"loss", "gen_loss", "critic_loss", "critic_grad_norm", "gen_grad_norm"}
    assert want <= set(terms) and all(math.isfinite(float(v)) for v in terms.values())
    assert ("gradient_penalty" in terms) == (loss == "wgan-gp")
    assert all(p.requires_grad for p in m.critic.parameters())  # restored after g's step


def test_lazy_regularisation_takes_the_penalty_every_kth_critic_step_weighted_k_times():
    """penalty_every = K: the double backward runs on critic steps 0, K, 2K, … (counted across
    training steps), with the penalty weighted K·λ; the steps between carry no penalty at all,
    and the reported penalty (K·gp or 0) averages to the penalty's mean."""
    k, steps = 3, 2
    lazy = make_gan(penalty="r1", gp_weight=0.5, penalty_every=k, critic_steps=steps)
    eager = make_gan(penalty="r1", gp_weight=0.5, critic_steps=steps)
    calls: list[int] = []
    inner = lazy.penalty_fn

    def counting(*args, **kw):
        calls.append(1)
        return inner(*args, **kw)

    lazy.penalty_fn = counting
    cfg = TrainConfig(lr=1e-3)
    opts = lazy.configure_optimizers(cfg)
    penalised = []
    for _ in range(6):  # critic steps 0-11 (2 per training step): penalties on 0, 3, 6, 9
        terms = lazy.training_step(ring(64), opts, cfg, generator=torch.Generator().manual_seed(0))
        penalised.append(float(terms["gradient_penalty"]) > 0)
    assert len(calls) == 4
    assert penalised == [True, True, False, True, True, False]
    # one critic step's loss: without the penalty on a skipped step, with K·λ·gp on a due one
    x, g = ring(64), torch.Generator().manual_seed(1)
    real = lazy._packs(x, g)
    fake = lazy._fakes(real.shape[0], g, x.device).detach()
    plain = lazy._critic_terms(real, fake, g, lazy=None)
    due = lazy._critic_terms(real, fake, g, lazy=float(k))
    full = eager._critic_terms(real, fake, g)
    gp = r1_penalty(lazy._score, real, fake)
    assert float(plain["gradient_penalty"]) == 0.0
    torch.testing.assert_close(due["critic_loss"], plain["critic_loss"] + k * 0.5 * gp)
    torch.testing.assert_close(due["gradient_penalty"], k * gp)
    assert full["critic_loss"].requires_grad and float(full["gradient_penalty"].detach()) > 0
    with pytest.raises(ConfigError, match="penalty_every"):
        make_gan(penalty_every=0)


def test_lazy_regularisation_resumes_in_rhythm(tmp_path):
    x = ring(384)
    kw = {"penalty": "r1", "gp_weight": 1.0, "penalty_every": 3, "ema": 0.9}
    cfg = TrainConfig(epochs=4, batch_size=64, seed=3)  # 6 steps an epoch: K does not divide
    full = make_gan(**kw)
    fit(full, x, cfg, run_dir=tmp_path / "a")
    part = make_gan(**kw)
    fit(part, x, TrainConfig(**{**cfg.to_dict(), "epochs": 1}), run_dir=tmp_path / "b")
    resumed = make_gan(seed=9, **kw)
    fit(resumed, x, cfg, run_dir=tmp_path / "b", resume=True)
    assert states_equal(full, resumed)


def test_conv_networks_keep_channels_last_weights_and_give_the_nchw_result():
    """The conv pair runs on channels-last tensors (faster on CPU); the result must not depend
    on the layout: the same weights in the standard layout give the same samples and scores."""
    with seeded(0):
        m = GAN(image_config(latent=4, net="conv", hidden=[8, 16]))
    convs = [p for p in m.parameters() if p.ndim == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    z = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    x = m.generator_net(z)
    score = m.critic(x)
    m.to(memory_format=torch.contiguous_format)
    assert all(p.is_contiguous() for p in m.parameters())
    torch.testing.assert_close(m.generator_net(z), x)
    torch.testing.assert_close(m.critic(x), score)


def test_the_generator_step_leaves_the_critic_alone():
    m = make_gan()
    cfg = TrainConfig(lr=1e-2)
    opts = m.configure_optimizers(cfg)
    assert set(opts) == {"critic", "generator"}
    ids = {id(p) for p in opts["critic"].param_groups[0]["params"]}
    assert ids == {id(p) for p in m.critic.parameters()}
    ids = {id(p) for p in opts["generator"].param_groups[0]["params"]}
    assert ids == {id(p) for p in m.generator_net.parameters()}


def test_critic_lr_applies_to_the_critic_only():
    m = make_gan(critic_lr=4e-3)
    opts = m.configure_optimizers(TrainConfig(lr=1e-3))
    assert opts["critic"].param_groups[0]["lr"] == 4e-3
    assert opts["generator"].param_groups[0]["lr"] == 1e-3


def test_ema_generator_is_the_running_average_that_sampling_uses():
    m = make_gan(ema=0.5)
    cfg = TrainConfig(lr=1e-2)
    opts = m.configure_optimizers(cfg)
    before = [p.clone() for p in m.generator_ema.parameters()]
    m.training_step(ring(64), opts, cfg, generator=torch.Generator().manual_seed(0))
    # the first update's decay is min(ema, (1 + 0)/(10 + 0)) = 0.1: the average follows g
    for old, avg, new in zip(
        before, m.generator_ema.parameters(), m.generator_net.parameters(), strict=True
    ):
        assert torch.allclose(avg, 0.1 * old + 0.9 * new)
    # past the warm-up, the decay is ema itself (the count set as a checkpoint sets it: the host
    # keeps its own copy, read again after load_state_dict)
    m.load_state_dict({**m.state_dict(), "ema_updates": torch.tensor(1000)})
    before = [p.clone() for p in m.generator_ema.parameters()]
    m.training_step(ring(64), opts, cfg, generator=torch.Generator().manual_seed(1))
    for old, avg, new in zip(
        before, m.generator_ema.parameters(), m.generator_net.parameters(), strict=True
    ):
        assert torch.allclose(avg, 0.5 * old + 0.5 * new)
    assert int(m.ema_updates) == 1001
    z = torch.randn(5, 2)
    assert torch.equal(m.decode(z), m.generator_ema(z))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"loss": "wasserstein"}, "GAN loss"),
        ({"noise": "cauchy"}, "noise"),
        ({"penalty": "r3"}, "penalty"),
        ({"critic_steps": 0}, "critic_steps"),
        ({"pack": 0}, "pack"),
        ({"gp_weight": -1.0}, "gp_weight"),
        ({"gp_weight": float("nan")}, "gp_weight"),
        ({"ema": 1.0}, "ema"),
        ({"critic_lr": 0.0}, "critic_lr"),
        ({"output": "tanh"}, "output"),
        ({"jacobian_truncation": 1.0}, "jacobian_truncation"),
        ({"jacobian_truncation": -0.1}, "jacobian_truncation"),
        ({"jacobian_truncation": float("nan")}, "jacobian_truncation"),
        ({"noise": "pieces", "pieces": 0}, "pieces"),
        ({"noise": "pieces", "piece_std": 0.0}, "piece_std"),
        ({"noise": "pieces", "piece_std": float("inf")}, "piece_std"),
    ],
)
def test_bad_settings_are_refused_by_name(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        GAN(GANConfig(dim=2, latent=2, **kwargs))


def test_packing_needs_an_mlp_critic():
    with pytest.raises(ConfigError, match="pack = 4 needs an MLP critic"):
        GANConfig(pack=4, net="conv")
    with pytest.raises(ConfigError, match="pack = 4 needs an MLP critic"):
        GAN(GANConfig(dim=64, latent=2, pack=4, image_shape=(8, 8)))  # conv by default


# --- the config the model keeps ------------------------------------------------------------------

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "runs"


def test_a_gan_keeps_its_filled_in_config_and_rebuilds_from_its_dict():
    bare = GAN(GANConfig(dim=2))  # settings left None take the defaults of points
    assert (bare.config.latent, bare.config.hidden) == (8, RECOMMENDED["model"]["hidden"])
    assert (bare.config.output, bare.config.standardize, bare.latent) == ("linear", True, 8)
    assert bare.get_config() == bare.config.to_dict()
    m = make_gan(pack=2, ema=0.5, critic_hidden=[8])
    again = GAN.from_config(json.loads(json.dumps(m.get_config())))
    assert again.config == m.config and again.config.pack == 2
    shapes = {k: v.shape for k, v in m.state_dict().items()}
    assert {k: v.shape for k, v in again.state_dict().items()} == shapes
    with pytest.raises(ConfigError, match=r"dimension: GANConfig\(dim=d"):
        GAN(GANConfig())
    with pytest.raises(ConfigError, match="a GAN is built from a GANConfig, got a dict"):
        GAN({"dim": 2})


def test_the_sampling_setting_is_checked_and_recorded_in_the_config():
    m = make_gan()
    m.set_sampling(jacobian_truncation=0.1)
    assert m.jacobian_truncation == m.get_config()["jacobian_truncation"] == 0.1
    with pytest.raises(ConfigError, match=r"jacobian_truncation = 1\.5 is not allowed"):
        m.set_sampling(jacobian_truncation=1.5)
    assert m.config.jacobian_truncation == 0.1


@pytest.mark.parametrize(("fmt", "ema", "every"), [("format1", 0.999, 1), ("format2", 0.0, 4)])
def test_model_configs_stored_by_formats_1_and_2_translate_to_the_settings(fmt, ema, every):
    record = json.loads((FIXTURES / fmt / "gan" / "config.json").read_text())
    stored = record["model"]["config"]
    cfg = GANConfig.from_stored(stored)
    assert (cfg.net, cfg.hidden, cfg.activation) == ("mlp", [8], "relu")
    assert (cfg.critic_hidden, cfg.critic_activation) == ([8], "relu")
    assert (cfg.dim, cfg.image_shape, cfg.latent, cfg.output, cfg.standardize) == (
        2, None, 8, "linear", True,
    )  # fmt: skip
    assert (cfg.penalty, cfg.gp_weight, cfg.ema) == ("r1", 0.1, ema)
    assert (cfg.penalty_every, cfg.augment, cfg.jacobian_truncation) == (every, "none", 0.03)
    # a run stored before Jacobian truncation samples without it
    older = {k: v for k, v in stored.items() if k != "jacobian_truncation"}
    assert GANConfig.from_stored(older).jacobian_truncation == 0.0
    # an unset penalty weight was the objective's own
    wgan = {**stored, "loss": "wgan-gp", "gp_weight": None}
    assert GANConfig.from_stored(wgan).gp_weight == GAN_LOSSES["wgan-gp"].default_gp_weight
    with pytest.raises(ConfigError, match="unknown stored GAN argument 'widths'"):
        GANConfig.from_stored({**stored, "widths": [8]})
    conv = {**stored, "net": {"kind": "conv"}, "image_shape": [8, 8], "dim": 64}
    with pytest.raises(ConfigError, match="a conv generator and a mlp critic"):
        GANConfig.from_stored(conv)


def test_a_stored_conv_gan_keeps_its_leaky_critic_and_sigmoid_images():
    stored = {
        "dim": 64, "latent": 4, "noise": "gaussian", "loss": "nonsaturating",
        "net": {"kind": "conv", "hidden": [8, 16], "activation": "relu"},
        "critic_net": {"kind": "conv", "hidden": [8, 16], "activation": "leaky_relu_0.2"},
        "critic_steps": 1, "gp_weight": 1.0, "penalty": "r1", "pack": 1, "critic_lr": None,
        "ema": 0.999, "output": "sigmoid", "image_shape": [8, 8], "standardize": False,
        "jacobian_truncation": 0.0,
    }  # fmt: skip
    m = GAN.from_config(stored)
    assert (m.config.net, m.config.image_shape, m.config.critic_activation) == (
        "conv", (8, 8), "leaky_relu_0.2",
    )  # fmt: skip
    assert (m.config.penalty_every, m.config.augment) == (1, "none")  # built before both
    assert any(isinstance(layer, nn.LeakyReLU) for layer in m.critic.modules())
    assert not any(isinstance(layer, nn.LeakyReLU) for layer in m.generator_net.modules())
    y = m.sample(3, generator=torch.Generator().manual_seed(0))
    assert y.shape == (3, 64) and float(y.min()) >= 0 and float(y.max()) <= 1


# --- training through the shared loop ------------------------------------------------------------


# the first three weights of g's and the critic's first layers and four sample values after a
# tiny seeded fit, as the code computed them before the model took its config: a refactor that
# changes the order of any random draw or any arithmetic of the game changes them
PINNED = {
    "points": (
        [0.0032931966707110405, 0.3153441548347473, -0.48214519023895264],
        [-0.3608514368534088, 0.33795180916786194, -0.6622995734214783],
        [0.07874751091003418, 0.059781186282634735, 0.060930248349905014, 0.08201029896736145],
    ),
    "packed": (
        [0.37194961309432983, -0.31955623626708984, -0.14505915343761444],
        [0.3673003613948822, -0.0013136272318661213, -0.26930612325668335],
        [0.3786110281944275, -0.36839979887008667, 0.3313405513763428, -0.2766112983226776],
    ),
    "images": (
        [0.11642599105834961, -0.12069285660982132, 0.1389872133731842],
        [0.3038942813873291, -0.16263940930366516, 0.12095289677381516],
        [0.4871097803115845, 0.48866742849349976, 0.49034565687179565, 0.48430532217025757],
    ),
}


def pinned_fit(case: str) -> GAN:
    """Return the GAN of ``case`` in :data:`PINNED` after its tiny seeded fit."""
    if case == "points":  # lazy R1, a running average, two critic steps, truncated sampling
        with seeded(0):
            m = GAN(config(latent=3, hidden=[8, 8], penalty="r1", gp_weight=0.5,
                           penalty_every=2, ema=0.9, critic_steps=2))  # fmt: skip
        fit(m, ring(256), TrainConfig(epochs=2, batch_size=64, seed=0))
    elif case == "packed":  # PacGAN pairs, the Wasserstein game with its penalty, uniform noise
        with seeded(1):
            m = GAN(config(hidden=[8], loss="wgan-gp", pack=2, noise="uniform",
                           critic_lr=1e-3))  # fmt: skip
        fit(m, ring(256), TrainConfig(epochs=2, batch_size=64, seed=1, betas=(0.5, 0.9)))
    else:  # conv nets on digits through DiffAugment, R1 every step, a running average
        with seeded(2):
            m = GAN(image_config(latent=4, net="conv", hidden=[4, 8],
                                 augment="translation,cutout", penalty="r1", gp_weight=1.0,
                                 ema=0.99))  # fmt: skip
        x = datasets.load_data("digits").x[:128]
        fit(m, x, TrainConfig(epochs=1, batch_size=64, seed=2))
    return m


@pytest.mark.parametrize("case", sorted(PINNED))
def test_a_tiny_seeded_fit_gives_the_pinned_weights_and_samples(case):
    m = pinned_fit(case)
    gen, critic, sample = PINNED[case]
    first = next(m.generator_net.parameters()).detach().flatten()[:3]
    torch.testing.assert_close(first, torch.tensor(gen), rtol=1e-6, atol=1e-7)
    first = next(m.critic.parameters()).detach().flatten()[:3]
    torch.testing.assert_close(first, torch.tensor(critic), rtol=1e-6, atol=1e-7)
    y = m.sample(2, generator=torch.Generator().manual_seed(0)).flatten()[:4]
    torch.testing.assert_close(y, torch.tensor(sample), rtol=1e-6, atol=1e-7)


def test_nonfinite_critic_loss_stops_cleanly_with_the_last_checkpoint_intact(tmp_path):
    class Exploding(GAN):
        calls = 0

        def _score(self, packs):
            Exploding.calls += 1
            out = super()._score(packs)
            return out * float("nan") if Exploding.calls > 40 else out

    with seeded(0):
        m = Exploding(config(hidden=[8]))
    cfg = TrainConfig(epochs=5, batch_size=64, seed=0)
    with pytest.raises(TrainingError, match=r"critic_loss term became nan at epoch 2") as e:
        fit(m, ring(512), cfg, run_dir=tmp_path)
    assert "last good checkpoint: epoch 1" in str(e.value)
    assert [r["epoch"] for r in read_metrics(tmp_path)] == [1]
    assert all(torch.isfinite(p).all() for p in m.parameters())  # the bad step was not taken


def test_resumed_gan_ends_bit_exactly_like_an_uninterrupted_one(tmp_path):
    x = ring(384)
    kw = {"pack": 2, "ema": 0.9, "loss": "wgan-gp", "critic_steps": 2}
    full = make_gan(**kw)
    cfg = TrainConfig(epochs=4, batch_size=64, seed=3, betas=(0.5, 0.9))
    h_full = fit(full, x, cfg, run_dir=tmp_path / "a")
    part = make_gan(**kw)
    fit(part, x, TrainConfig(**{**cfg.to_dict(), "epochs": 2}), run_dir=tmp_path / "b")
    resumed = make_gan(seed=9, **kw)
    h_res = fit(resumed, x, cfg, run_dir=tmp_path / "b", resume=True)
    assert states_equal(full, resumed)
    assert [r["critic_loss"] for r in h_full] == [r["critic_loss"] for r in h_res]


def test_a_resumed_run_of_the_defaults_on_points_ends_bit_exactly_like_an_uninterrupted_one(
    tmp_path,
):
    """The defaults on points (the pieces, the kernel term on every 2nd generator step, the
    lazy R1, a critic of its own widths) through a run folder, resumed after one epoch of 3 steps,
    so that the kernel term's rhythm (every 2nd step) and the penalty's (every 4th) are mid-way
    at the resume; the same weights and logged terms."""
    flat = {
        "model": "gan",
        "data": "ring8",
        "n": 384,
        "epochs": 4,
        "batch_size": 128,
        "hidden": [8, 8],
        "critic_hidden": [8],
        "seed": 3,
        "lr_schedule": "constant",
    }  # fmt: skip (a cosine would span each run's own epochs)
    rc = RunConfig.from_flat(flat)
    assert (rc.settings.noise, rc.settings.mmd_every, rc.settings.mmd_weight) == ("pieces", 2, 0.3)
    full = fit_run(rc, out=tmp_path / "a", figures=False)
    part = fit_run(RunConfig.from_flat({**flat, "epochs": 1}), out=tmp_path / "b", figures=False)
    rc_resume = RunConfig.from_dict(json.loads((part / "config.json").read_text())["run"])
    rc_resume.train.epochs = 4
    fit_run(rc_resume, out=part, resume=True, figures=False)
    assert states_equal(load_model(full), load_model(part))
    a, b = read_metrics(full), read_metrics(part)
    assert [r["mmd_term"] for r in a] == [r["mmd_term"] for r in b] and a[3]["mmd_term"] != 0


def test_run_folder_round_trip_samples_identically(tmp_path):
    rc = RunConfig.from_flat(
        {"model": "gan", "data": "ring8", "n": 256, "epochs": 2, "hidden": [16], "pack": 2}
    )
    folder = fit_run(rc, out=tmp_path / "run")
    assert {p.name for p in (folder / "figures").iterdir()} == {"samples.png", "loss.png"}
    config = json.loads((folder / "config.json").read_text())
    assert config["model"]["kind"] == "gan" and config["model"]["config"]["pack"] == 2
    a, b = load_model(folder), load_model(folder)
    g = torch.Generator().manual_seed(1)
    assert torch.equal(a.sample(50, generator=g), b.sample(50, generator=g.manual_seed(1)))


def test_a_gan_with_noise_in_pieces_pushes_them_forward_and_rebuilds_them_from_its_run(tmp_path):
    """``noise = pieces``: μ is the measure of K pieces of σ, g pushes its draws, and a stored run
    samples from the same μ (the centres are rebuilt from its config)."""
    from pushforward.measures import GaussianPieces

    rc = RunConfig.from_flat({"model": "gan", "data": "ring8", "n": 256, "epochs": 1,
                              "hidden": [16], "noise": "pieces", "pieces": 12,
                              "piece_std": 0.05})  # fmt: skip
    folder = fit_run(rc, out=tmp_path / "run")
    m = load_model(folder)
    assert isinstance(m.base, GaussianPieces) and (m.base.pieces, m.base.std) == (12, 0.05)
    assert m.latent_measure is m.base and m.base.centres.shape == (12, m.latent)
    g = torch.Generator().manual_seed(3)
    z = GaussianPieces(m.latent, 12, 0.05).sample(40, generator=g)
    m.jacobian_truncation = 0.0
    torch.testing.assert_close(m.sample(40, generator=g.manual_seed(3)), m.decode(z))
    # each draw lies within 6σ·√k of its nearest centre: the pieces are what g is fed
    near = torch.cdist(z.double(), m.base.centres).amin(1)
    assert float(near.max()) < 6 * 0.05 * m.latent**0.5


def test_recommended_setting_is_the_default_of_fit_gan():
    rc = RunConfig.from_flat({"model": "gan", "data": "ring8"})
    model = RECOMMENDED["model"]
    for key in ("pack", "critic_steps", "ema", "gp_weight", "penalty", "noise", "critic_lr"):
        if key in model:
            assert getattr(rc.settings, key) == model[key]
    for key, value in RECOMMENDED["train"].items():
        got = getattr(rc.train, key)
        assert (list(got) if isinstance(got, tuple) else got) == value


@pytest.mark.slow
def test_a_short_seeded_run_on_ring8_captures_every_mode():
    mix = datasets.ring8()
    x = mix.sample(4096, generator=torch.Generator().manual_seed(0))
    with seeded(0):  # the recommended game, on a smaller net for a shorter time
        m = GAN(config(latent=8, penalty="r1", gp_weight=0.1, ema=0.999, hidden=[128] * 3))
    cfg = TrainConfig(
        epochs=60, batch_size=128, lr=1e-3, betas=(0.5, 0.999), seed=0, lr_schedule="cosine"
    )
    fit(m, x, cfg)
    s = m.sample(2500, generator=torch.Generator().manual_seed(0), jacobian_truncation=0)
    r = mode_metrics(s, mix.means, 0.01)
    assert r.modes_captured == 8, r
    assert r.reverse_kl < 0.05, r  # a generator on half the modes scores log 2 = 0.69
    assert r.high_quality > 0.3, r  # within 3σ = 0.03 of a mode; the full benchmark gets > 0.9
    # Jacobian truncation drops between-mode samples first: fewer low-quality samples, modes kept
    t = m.sample(2500, generator=torch.Generator().manual_seed(0), jacobian_truncation=0.1)
    rt = mode_metrics(t, mix.means, 0.01)
    assert rt.modes_captured == 8 and rt.reverse_kl < 0.05, rt
    # rejecting 10% at random would leave the share unchanged (± 1 point); here it rises 5 points
    assert rt.high_quality > r.high_quality + 0.03, (rt, r)


# --- Jacobian truncation -------------------------------------------------------------------------


def frobenius_by_autograd(g: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """‖J(z)‖_F row by row with torch.autograd.functional.jacobian: the independent reference."""
    rows = [torch.autograd.functional.jacobian(lambda v: g(v[None])[0], zi) for zi in z]
    return torch.stack([j.flatten().norm() for j in rows])


@pytest.mark.parametrize(("dim", "latent"), [(2, 5), (6, 3)])  # reverse mode, forward mode
def test_stretch_is_the_frobenius_norm_of_the_jacobian(dim, latent):
    with seeded(0):
        m = GAN(config(dim=dim, latent=latent, hidden=[12, 12], activation="tanh", ema=0.5))
    m.prepare(torch.randn(64, dim, generator=torch.Generator().manual_seed(1)) * 3 + 1)
    with torch.no_grad():  # the running average now differs from the raw generator
        for p in m.generator_net.parameters():
            p.mul_(1.5)
    z = torch.randn(9, latent, generator=torch.Generator().manual_seed(2))
    expected = frobenius_by_autograd(m.generator_ema, z)  # the net samples come from, in u units
    raw = frobenius_by_autograd(m.generator_net, z)
    assert not torch.allclose(expected, raw, rtol=0.05)
    torch.testing.assert_close(m.stretch(z), expected, rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # sampling runs under no_grad
        torch.testing.assert_close(m.stretch(z, chunk=4), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match=rf"z must have shape \(n, {latent}\)"):
        m.stretch(torch.zeros(3, latent + 1))
    with pytest.raises(ConfigError, match="chunk"):
        m.stretch(z, chunk=0)


def test_stretch_of_a_convolutional_generator_on_images():
    with seeded(0):
        m = GAN(image_config(latent=3, net="conv", hidden=CONV_WIDTHS, jacobian_truncation=0.1))
    z = torch.randn(4, 3, generator=torch.Generator().manual_seed(2))
    expected = frobenius_by_autograd(m.generator_net, z)
    torch.testing.assert_close(m.stretch(z), expected, rtol=1e-4, atol=1e-6)
    y = m.sample(5, generator=torch.Generator().manual_seed(0))
    assert y.shape == (5, 64) and float(y.min()) >= 0 and float(y.max()) <= 1


def test_truncated_sampling_rejects_the_share_q_where_g_stretches_most():
    with seeded(0):
        m = GAN(config(latent=3, jacobian_truncation=0.2))
    tau = m.truncation_threshold()
    z = m.base.sample(20_000, generator=torch.Generator().manual_seed(7))  # fresh draws
    kept = float((m.stretch(z) <= tau).double().mean())
    assert kept == pytest.approx(0.8, abs=0.015)  # τ is the 0.8-quantile under μ
    # the sampler is g#μ_A: g of latent draws inside A, in draw order, exactly n of them
    accepted = m.as_pushforward().base.sample(300, generator=torch.Generator().manual_seed(3))
    assert accepted.shape == (300, 3) and bool((m.stretch(accepted) <= tau).all())
    y = m.sample(300, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(y, m.g(accepted))
    again = m.sample(300, generator=torch.Generator().manual_seed(3))
    assert torch.equal(y, again)
    plain = m.sample(300, generator=torch.Generator().manual_seed(3), jacobian_truncation=0)
    with torch.no_grad():
        first = m.g(m.base.sample(300, generator=torch.Generator().manual_seed(3)))
    assert torch.equal(plain, first)


def test_jacobian_truncation_is_on_by_default_for_points_and_off_for_images():
    assert make_gan().jacobian_truncation == TRUNCATION == 0.03
    assert GAN(GANConfig(dim=64, latent=2, image_shape=(8, 8))).jacobian_truncation == 0.0
    assert make_gan(jacobian_truncation=0.0).get_config()["jacobian_truncation"] == 0.0
    # the run's settings record the value used, by the kind of data
    points = RunConfig.from_flat({"model": "gan", "data": "ring8"}).settings
    images = RunConfig.from_flat({"model": "gan", "data": "digits"}).settings
    assert (points.jacobian_truncation, images.jacobian_truncation) == (TRUNCATION, 0.0)


def test_truncation_threshold_follows_the_weights():
    m = make_gan(jacobian_truncation=0.1)
    tau = m.truncation_threshold()
    assert m.truncation_threshold(0.5) < tau  # a lower quantile
    assert m.truncation_threshold() == tau and m._threshold[0][0] == 0.1  # kept
    fit(m, ring(256), TrainConfig(epochs=1, batch_size=128, seed=0))  # steps change g in place
    trained = m.truncation_threshold()
    assert trained != tau
    fresh = make_gan(jacobian_truncation=0.1)
    fresh.load_state_dict(m.state_dict())
    assert fresh.truncation_threshold() == trained
    other = make_gan(seed=1, jacobian_truncation=0.1)
    other.ema_updates.copy_(m.ema_updates)  # the same step count, other weights
    m.load_state_dict(other.state_dict())
    assert (
        m.truncation_threshold() == make_gan(seed=1, jacobian_truncation=0.1).truncation_threshold()
    )
    with pytest.raises(ConfigError, match=r"jacobian_truncation = 1\.5"):
        m.truncation_threshold(1.5)


def test_jacobian_truncation_round_trips_and_is_a_sample_option(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["fit", "gan", "--data", "ring8", "-n", "256", "--epochs", "2", "--hidden", "16"]
    assert main([*argv, "--jacobian-truncation", "0.05", "--no-figures", "--out", str(run)]) == 0
    model = load_model(run)
    assert model.jacobian_truncation == 0.05
    for q in ("0", "0.3"):
        out = tmp_path / f"s{q}.npy"
        argv = ["sample", str(run), "-n", "20", "--jacobian-truncation", q, "--out", str(out)]
        assert main(argv) == 0
        g = torch.Generator().manual_seed(0)
        expected = model.sample(20, generator=g, jacobian_truncation=float(q))
        torch.testing.assert_close(torch.from_numpy(np.load(out)), expected)
    capsys.readouterr()
    assert main(["evaluate", str(run), "--data", "ring8", "-n", "256", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["jacobian_truncation"] == 0.05
    argv = ["evaluate", str(run), "--data", "ring8", "-n", "256", "--jacobian-truncation", "0"]
    assert main([*argv, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["jacobian_truncation"] == 0.0
    config = json.loads((run / "config.json").read_text())  # a run from before truncation
    del config["model"]["config"]["jacobian_truncation"]
    (run / "config.json").write_text(json.dumps(config))
    assert load_model(run).jacobian_truncation == 0.0
    capsys.readouterr()
    bad = ["sample", str(run), "--jacobian-truncation", "1.5", "--out", str(tmp_path / "x.npy")]
    assert main(bad) != 0
    assert "jacobian_truncation = 1.5" in capsys.readouterr().err
    assert not (tmp_path / "x.npy").exists()
    vae = tmp_path / "vae"
    argv = ["fit", "vae", "--data", "ring8", "-n", "64", "--epochs", "1", "--no-figures"]
    assert main([*argv, "--out", str(vae)]) == 0
    capsys.readouterr()
    argv = ["sample", str(vae), "--jacobian-truncation", "0.1", "--out", str(tmp_path / "y.npy")]
    assert main(argv) != 0
    assert "jacobian_truncation is not a sampling setting of a VAE" in capsys.readouterr().err


def test_cli_fits_samples_and_evaluates_a_gan(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["fit", "gan", "--data", "ring8", "-n", "256", "--epochs", "2", "--hidden", "16"]
    assert main([*argv, "--pack", "2", "--betas", "0.5,0.99", "--out", str(run)]) == 0
    assert load_model(run).config.pack == 2
    assert main(["sample", str(run), "-n", "10", "--out", str(tmp_path / "s.csv")]) == 0
    assert len((tmp_path / "s.csv").read_text().strip().splitlines()) == 10
    capsys.readouterr()
    assert main(["evaluate", str(run), "--data", "ring8", "-n", "256", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == "GAN" and result["n_modes"] == 8
    assert "squared_error" not in result and result["mmd2"] > result["mmd2_floor"]
    # no density: the fidelity to the truth is the k-NN estimate alone, far above the truth's
    assert "kl_to_truth" not in result and result["knn_kl"] > result["knn_kl_floor"] + 1


def test_cli_refuses_a_bad_betas_pair(capsys):
    with pytest.raises(SystemExit) as e:
        main(["fit", "gan", "--data", "ring8", "--betas", "0.5"])
    assert e.value.code == 2
    assert "0.5" in capsys.readouterr().err


def test_evaluate_run_reports_the_quality_of_a_gan_on_digits(tmp_path):
    rc = RunConfig.from_flat(
        {"model": "gan", "data": "digits", "epochs": 1, "hidden": [32], "latent": 4}
    )
    folder = fit_run(rc, out=tmp_path / "run", figures=False)
    out = evaluate_run(folder, "digits")
    assert out["frechet_distance"] > out["frechet_distance_floor"] >= 0
    assert 0.8 < out["feature_accuracy"] <= 1


def test_a_gan_samples_on_its_own_device_without_being_moved():
    # the meta device stands in for a GPU: tensors with a device and a shape, and no values
    with torch.device("meta"):
        m = GANConfig().build(datasets.load_data("digits"))
    for gen in (None, torch.Generator().manual_seed(0)):
        y = m.sample(7, generator=gen)
        assert y.device.type == "meta" and y.shape == (7, 64)
    z = m._latent(5, None, torch.device("meta"))
    assert z.device.type == "meta" and z.shape == (5, m.latent)


def test_defaults_follow_the_kind_of_data_and_are_recorded_in_config_json(tmp_path):
    points = RunConfig.from_flat({"model": "gan", "data": "ring8"})
    images = RunConfig.from_flat({"model": "gan", "data": "digits"})
    assert (points.settings.net, points.settings.hidden) == ("mlp", [128, 128, 128])
    assert (images.settings.net, images.settings.hidden) == ("conv", [32, 64])
    # the GAN's conv widths are its own; other models keep the shared conv default
    vae = RunConfig.from_flat({"model": "vae", "data": "digits", "net": "conv"})
    assert vae.settings.hidden == CONV_WIDTHS == [64, 128]
    assert (points.settings.latent, images.settings.latent) == (8, 64)
    assert images.settings.critic_activation == "leaky_relu_0.2"
    assert images.settings.gp_weight == RECOMMENDED_IMAGES["model"]["gp_weight"]
    assert (points.settings.penalty_every, images.settings.penalty_every) == (4, 4)
    assert (points.settings.ema, images.settings.ema) == (0.0, 0.999)
    assert points.train.epochs == RECOMMENDED["train"]["epochs"]
    assert images.train.to_dict()["lr"] == RECOMMENDED_IMAGES["train"]["lr"]
    # a setting given by the user is kept
    given = RunConfig.from_flat({"model": "gan", "data": "digits", "hidden": [8], "lr": 1e-3})
    assert given.settings.hidden == [8] and given.train.lr == 1e-3
    # the networks built: DCGAN's shapes, the widths of their own (not the MLP's)
    run = tmp_path / "run"
    argv = ["fit", "gan", "--data", "digits", "--rows", ":256", "--epochs", "1"]
    assert main([*argv, "--hidden", "8,16", "--out", str(run)]) == 0
    record = json.loads((run / "config.json").read_text())
    assert record["run"]["settings"]["net"] == "conv"
    assert record["run"]["train"]["batch_size"] == RECOMMENDED_IMAGES["train"]["batch_size"]
    stored = record["model"]["config"]
    assert (stored["net"], stored["hidden"], stored["activation"]) == ("conv", [8, 16], "relu")
    assert stored["critic_activation"] == "leaky_relu_0.2"
    assert stored["latent"] == 64 and stored["output"] == "sigmoid"
    assert stored["penalty_every"] == RECOMMENDED_IMAGES["model"]["penalty_every"]
    assert (stored["dim"], stored["image_shape"]) == (64, [8, 8])


def test_a_conv_gan_trains_and_samples_digits_through_the_command_line(tmp_path):
    run = tmp_path / "run"
    argv = ["fit", "gan", "--data", "digits", "--hidden", "8,16", "--batch-size", "64"]
    assert main([*argv, "--epochs", "2", "--out", str(run)]) == 0
    model = load_model(run)
    assert isinstance(model.critic, nn.Module) and model.net.kind == "conv"
    history = read_metrics(run)
    assert [r["epoch"] for r in history] == [1, 2]
    assert all(math.isfinite(r["critic_loss"]) for r in history)
    assert main(["sample", str(run), "-n", "12", "--out", str(tmp_path / "s.npy")]) == 0
    y = np.load(tmp_path / "s.npy")
    assert y.shape == (12, 64) and y.min() >= 0 and y.max() <= 1  # sigmoid images
    assert (run / "figures" / "samples.png").exists()


# --- the minibatch-standard-deviation feature ----------------------------------------------------


def test_the_minibatch_std_feature_is_the_batchs_mean_feature_std_computed_independently():
    from pushforward.models.gan.minibatch_std import EPS, minibatch_std

    h = torch.randn(9, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a = h.numpy()
    expected = np.mean(np.sqrt(a.var(axis=0, ddof=0) + EPS))  # numpy: population variance
    s = minibatch_std(h)
    assert s.shape == (9, 1)
    np.testing.assert_allclose(s.numpy(), np.full((9, 1), expected), rtol=1e-12)
    # identical rows: only ε is left, and the gradient stays finite
    flat = torch.ones(4, 3, requires_grad=True)
    minibatch_std(flat).sum().backward()
    assert float(minibatch_std(flat.detach())[0, 0]) == pytest.approx(math.sqrt(EPS))
    assert torch.isfinite(flat.grad).all()
    with pytest.raises(ConfigError, match="at least 2 rows"):
        minibatch_std(torch.zeros(1, 3))


def test_the_minibatch_std_critic_scores_its_last_features_with_the_batchs_spread():
    with seeded(0):
        m = GAN(config(minibatch_std=True, critic_hidden=[16, 8]))
    critic = m.critic
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(1))
    h = critic.body(x)
    assert h.shape == (6, 8) and critic.head.in_features == 9
    s = h.detach().numpy().std(axis=0).mean()  # ddof 0; ε is far below the spread
    w, b = critic.head.weight.detach(), critic.head.bias.detach()
    expected = h.detach() @ w[0, :8] + w[0, 8] * s + b
    torch.testing.assert_close(
        critic(x).squeeze(1).detach(), expected.float(), rtol=1e-4, atol=1e-5
    )
    # a row's score depends on the rest of its batch: the same row in a wider batch scores
    # differently by exactly w·Δs
    wide = torch.cat([x[:1], 10 * x[1:]])
    hw = critic.body(wide).detach().numpy()
    delta = float(w[0, 8]) * (hw.std(axis=0).mean() - s)
    assert float((critic(wide)[0] - critic(x)[0]).detach()) == pytest.approx(
        delta, rel=1e-3, abs=1e-5
    )
    assert abs(delta) > 1e-3


def test_the_minibatch_std_feature_trains_and_round_trips_and_refuses_a_conv_critic(tmp_path):
    assert GANConfig().minibatch_std is False  # off unless asked for
    x = datasets.ring8().sample(64, generator=torch.Generator().manual_seed(0))
    with seeded(0):
        m = GAN(config(minibatch_std=True, penalty="r1", gp_weight=0.1))
    fit(m, x, TrainConfig(epochs=2, batch_size=32, seed=0))
    clone = GAN(GANConfig.from_dict(json.loads(json.dumps(m.config.to_dict()))))
    clone.load_state_dict(m.state_dict())
    assert clone.config.minibatch_std is True
    z = torch.randn(5, 2, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(clone.critic(z), m.critic(z))
    with pytest.raises(ConfigError, match="minibatch_std = True needs an MLP critic"):
        image_config(minibatch_std=True).resolve("images")


def test_the_minibatch_std_critic_runs_on_the_models_device(meta_guard):
    with torch.device("meta"):
        m = GAN(config(minibatch_std=True, penalty="r1", gp_weight=0.1))
    x = torch.empty(8, 2, device="meta")
    with meta_guard:
        terms = m.loss(x)
    assert all(v.device.type == "meta" and v.shape == () for v in terms.values())


def test_the_defaults_on_points_and_runs_stored_before_them():
    """On points: the pieces, a critic of its own widths, R1 at 0.01, the kernel term on every 2nd
    step. A run stored before these (the critic as wide as g, stored as None; no noise or lazy
    kernel term recorded) reads back as it was built, in its run settings and its model."""
    c = GANConfig(dim=2).resolve("points")
    assert (c.noise, c.critic_hidden, c.gp_weight) == ("pieces", [64, 64, 64], 0.01)
    assert (c.mmd_weight, c.mmd_every, c.piece_std) == (0.3, 2, 0.15)
    m = GAN(GANConfig(dim=2))
    assert [lin.out_features for lin in m.critic.modules() if isinstance(lin, nn.Linear)] == [
        64, 64, 64, 1,
    ]  # fmt: skip
    images = GANConfig(dim=64, image_shape=(8, 8), net="conv").resolve("images")
    assert (images.noise, images.critic_hidden, images.mmd_weight) == ("gaussian", [32, 64], 0.0)

    old = RunConfig.from_flat({"model": "gan", "data": "ring8", "hidden": [16, 16]}).to_dict()
    old["settings"].update(critic_hidden=None, gp_weight=0.1, mmd_weight=0.0)
    del old["settings"]["noise"], old["settings"]["mmd_every"]
    rc = RunConfig.from_dict(json.loads(json.dumps(old)))
    s = rc.settings
    assert (s.critic_hidden, s.noise, s.gp_weight, s.mmd_weight, s.mmd_every) == (
        [16, 16], "gaussian", 0.1, 0.0, 1,
    )  # fmt: skip
    stored = GANConfig(dim=2, hidden=[16, 16]).resolve("points").to_dict()
    stored.update(critic_hidden=None, mmd_weight=0.0)
    del stored["noise"], stored["mmd_every"]
    m = GAN(GANConfig.from_stored(json.loads(json.dumps(stored))))
    assert (m.config.critic_hidden, m.config.noise, m.config.mmd_every) == ([16, 16], "gaussian", 1)
    assert isinstance(m.base, StandardNormal)

"""The VAE's hand-written gradients: the same loss and gradients as autograd through
:meth:`VAE.loss`, for every likelihood and activation they take, under N(0, I) and a VampPrior;
the same training run, resumed exactly; autograd wherever they do not apply."""

import math

import pytest
import torch

import pushforward.models.vae.model as vae_model
from pushforward.models.vae import FUSED_ACTIVATIONS, VAE, VAEConfig, fusable
from pushforward.models.vae.trained_prior import floored_logsumexp, mixture_logsumexp_
from pushforward.train import TrainConfig, fit, seeded


def _pair(**kw):
    """Two copies of one VAE: the first with hand-written gradients, the second autograd's."""
    config = VAEConfig.from_stored(kw)  # the network as a dict, as stored
    with seeded(3):
        a = VAE(config)
    b = VAE(config)
    b.load_state_dict(a.state_dict())
    b.fused_step = False
    return a, b


def _manual(vae, x, epoch=2.0):
    terms, pairs = vae.manual_gradients(x, generator=torch.Generator().manual_seed(7), epoch=epoch)
    names = {id(p): n for n, p in vae.named_parameters()}
    return terms, {names[id(p)]: g.clone() for p, g in pairs}


def _assert_same_gradients(g1, g2):
    """Every parameter's hand-written gradient equals autograd's to rounding."""
    assert set(g1) == set(g2)
    for name in g2:
        torch.testing.assert_close(g1[name], g2[name], rtol=1e-4, atol=1e-6, msg=name)


def _autograd(vae, x, epoch=2.0):
    vae.zero_grad(set_to_none=True)
    terms = vae.loss(x, generator=torch.Generator().manual_seed(7), epoch=epoch)
    terms["loss"].backward()
    return terms, {n: p.grad.clone() for n, p in vae.named_parameters()}


# fmt: off
CASES = [
    dict(dim=12, latent=3, loss="bce", net={"hidden": [16, 8]}),
    dict(dim=12, latent=3, loss="l2", net={"hidden": [16], "activation": "tanh"}),
    dict(dim=12, latent=2, loss="l1", net={"hidden": [16], "activation": "elu"}),
    dict(dim=5, latent=2, loss="gaussian", learn_sigma=True, sigma=0.3,
         net={"hidden": [16, 16], "activation": "silu"}),
    dict(dim=5, latent=2, loss="gaussian", sigma=0.5, net={"hidden": [8], "activation": "gelu"}),
    dict(dim=5, latent=2, loss="laplace", learn_sigma=True,
         net={"hidden": [8], "activation": "leaky_relu"}),
    dict(dim=5, latent=4, loss="bce", kl_weight=0.3, kl_schedule="linear", kl_warmup=5,
         net={"hidden": [], "activation": "sigmoid"}),
]
# fmt: on


@pytest.mark.parametrize("kw", CASES, ids=lambda kw: f"{kw['loss']}-{kw['net']}")
def test_loss_and_every_gradient_equal_autograds(kw):
    fused, plain = _pair(**kw)
    x = torch.rand(33, kw["dim"], generator=torch.Generator().manual_seed(1))
    if kw["loss"] == "bce":
        x = x.round()
    assert fusable(fused, x)
    t1, g1 = _manual(fused, x)
    t2, g2 = _autograd(plain, x)
    for k in ("loss", "reconstruction", "kl"):
        torch.testing.assert_close(t1[k], t2[k].detach(), rtol=1e-5, atol=1e-5)
    assert set(g1) == set(g2) and len(g1) >= 4  # every parameter, the learned scale included
    for name in g2:
        torch.testing.assert_close(g1[name], g2[name], rtol=1e-4, atol=1e-6, msg=name)


def test_every_activation_of_the_table_matches_autograd():
    for act in FUSED_ACTIVATIONS:
        fused, plain = _pair(dim=6, latent=2, loss="l2", net={"hidden": [10], "activation": act})
        x = torch.randn(9, 6, generator=torch.Generator().manual_seed(2))
        _, g1 = _manual(fused, x)
        _, g2 = _autograd(plain, x)
        for name in g2:
            torch.testing.assert_close(g1[name], g2[name], rtol=1e-4, atol=1e-6, msg=(act, name))


def test_a_clamped_log_variance_gets_no_gradient_as_in_autograd():
    fused, plain = _pair(dim=4, latent=2, loss="l2", net={"hidden": [8]})
    for vae in (fused, plain):  # push ξ of the second latent far below the clamp at −30
        with torch.no_grad():
            vae.encoder.linears[-1].bias[3] = -80.0
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    _, g1 = _manual(fused, x)
    _, g2 = _autograd(plain, x)
    head = "encoder.2.bias"
    assert g2[head][3] == 0 and g1[head][3] == 0
    _assert_same_gradients(g1, g2)


def test_a_training_run_follows_the_same_path_and_resumes_exactly(tmp_path, monkeypatch):
    """The hand-written step draws the same noise from the run's generator: 3 epochs give the
    autograd run's weights to rounding, and a resumed run continues bit for bit."""
    kw = dict(dim=20, latent=3, loss="bce", net={"hidden": [32]})
    x = torch.rand(200, 20, generator=torch.Generator().manual_seed(4)).round()
    cfg = TrainConfig(epochs=3, batch_size=50, lr=1e-3, seed=5)
    fused, plain = _pair(**kw)
    calls = []
    real = vae_model.vae_loss_and_gradients

    def counted(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(vae_model, "vae_loss_and_gradients", counted)
    h1 = fit(fused, x, cfg)
    assert len(calls) == 12  # every step of 3 epochs of 4 batches
    h2 = fit(plain, x, cfg)
    assert len(calls) == 12  # and none with fused_step off
    for (n, p), q in zip(fused.named_parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=n)
    assert h1[-1]["loss"] == pytest.approx(h2[-1]["loss"], rel=1e-5)

    once, _ = _pair(**kw)
    fit(once, x, cfg, run_dir=tmp_path / "once")
    split, _ = _pair(**kw)
    fit(split, x, TrainConfig(**{**cfg.__dict__, "epochs": 2}), run_dir=tmp_path / "split")
    resumed, _ = _pair(**kw)
    fit(resumed, x, cfg, run_dir=tmp_path / "split", resume=True)
    for p, q in zip(once.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q)


def test_gradient_clipping_applies_to_the_hand_written_gradients():
    kw = dict(dim=20, latent=3, loss="bce", net={"hidden": [32]})
    x = torch.rand(100, 20, generator=torch.Generator().manual_seed(4)).round()
    cfg = TrainConfig(epochs=2, batch_size=50, lr=1e-2, seed=5, grad_clip=0.01)
    fused, plain = _pair(**kw)
    fit(fused, x, cfg)
    fit(plain, x, cfg)
    for p, q in zip(fused.parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)


class _Penalised(VAE):
    """A subclass that adds a term to the loss: the hand-written gradients do not know it."""

    def loss(self, x, *, generator=None, epoch=None):
        terms = super().loss(x, generator=generator, epoch=epoch)
        penalty = sum(lin.weight.pow(2).sum() for lin in self.decoder.linears)
        return {**terms, "loss": terms["loss"] + 100 * penalty}


def test_a_subclass_that_changes_the_loss_trains_on_it_through_autograd():
    x = torch.rand(40, 6, generator=torch.Generator().manual_seed(0)).round()
    vae = _Penalised(VAEConfig(dim=6, latent=2, hidden=[8], activation="relu"))
    assert fusable(vae, x) and vae.manual_gradients(x) is None
    history = fit(vae, x, TrainConfig(epochs=1, batch_size=20, seed=0))
    plain = VAE(VAEConfig(dim=6, latent=2, hidden=[8], activation="relu"))
    plain.load_state_dict(vae.state_dict())
    assert history[-1]["loss"] > plain.loss(x, epoch=None)["loss"].item() + 1  # the penalty


def test_hooks_on_the_nets_or_their_weights_send_the_step_through_autograd():
    x = torch.rand(4, 6)
    vae = VAE(VAEConfig(dim=6, latent=2, hidden=[8], activation="relu"))
    assert fusable(vae, x)
    handle = vae.encoder.register_forward_hook(lambda *a: None)
    assert not fusable(vae, x)
    handle.remove()
    handle = vae.decoder.linears[0].weight.register_hook(lambda g: g * 2)
    assert not fusable(vae, x)
    handle.remove()
    assert fusable(vae, x)


def test_conv_nets_free_bits_and_autocast_take_autograd():
    x = torch.rand(4, 64)
    conv = VAE(
        VAEConfig(
            dim=64, latent=2, image_shape=(8, 8), net="conv", hidden=[4, 8], activation="relu"
        )
    )
    assert not fusable(conv, x) and conv.manual_gradients(x) is None
    assert not fusable(
        VAE(VAEConfig(dim=64, latent=2, free_bits=0.1, hidden=[8], activation="relu")), x
    )
    mlp = VAE(VAEConfig(dim=64, latent=2, hidden=[8], activation="relu"))
    assert fusable(mlp, x) and not fusable(mlp, x.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not fusable(mlp, x)
    mlp.fused_step = False
    assert mlp.manual_gradients(x) is None
    frozen = VAE(VAEConfig(dim=64, latent=2, hidden=[8], activation="relu"))
    frozen.decoder.linears[0].weight.requires_grad_(False)  # autograd leaves it alone
    assert not fusable(frozen, x)
    extra = VAE(VAEConfig(dim=64, latent=2, hidden=[8], activation="relu"))
    extra.temperature = torch.nn.Parameter(torch.ones(()))  # a parameter the step cannot see
    assert not fusable(extra, x)


# fmt: off
VAMP_CASES = [
    dict(dim=2, latent=2, loss="gaussian", learn_sigma=True, sigma=0.3, prior="vamp",
         prior_components=7, net={"hidden": [16, 16], "activation": "silu"}),
    dict(dim=12, latent=3, loss="bce", prior="vamp", prior_components=5, kl_weight=0.3,
         kl_schedule="linear", kl_warmup=5, net={"hidden": [16], "activation": "relu"}),
]
# fmt: on


def _spread(vae, x):
    """Start the pseudo-inputs at rows of x and push them apart, so that the components differ
    and some are far from the batch's codes (responsibilities near 0 and 1)."""
    vae.prepare(x)
    with torch.no_grad():
        u = vae.prior_net.pseudo_inputs
        u.add_(3 * torch.randn(u.shape, generator=torch.Generator().manual_seed(9)))


@pytest.mark.parametrize("kw", VAMP_CASES, ids=lambda kw: kw["loss"])
def test_the_vamp_prior_step_equals_autograds_with_the_pseudo_inputs_gradient(kw):
    fused, plain = _pair(**kw)
    x = torch.rand(33, kw["dim"], generator=torch.Generator().manual_seed(1))
    if kw["loss"] == "bce":
        x = x.round()
    _spread(fused, x)
    plain.load_state_dict(fused.state_dict())
    assert fusable(fused, x)
    t1, g1 = _manual(fused, x)
    t2, g2 = _autograd(plain, x)
    for k in ("loss", "reconstruction", "kl"):
        torch.testing.assert_close(t1[k], t2[k].detach(), rtol=1e-5, atol=1e-5)
    assert "prior_net.pseudo_inputs" in g1
    assert all(g.abs().max() > 0 for g in g2.values())  # every gradient is there to compare
    _assert_same_gradients(g1, g2)


def test_the_vamp_prior_step_zeroes_clamped_log_variances_as_autograd_does():
    kw = VAMP_CASES[0]
    fused, plain = _pair(**kw)
    x = torch.rand(20, 2, generator=torch.Generator().manual_seed(2))
    _spread(fused, x)
    with torch.no_grad():  # ξ of the second latent above 20 at every row and pseudo-input
        fused.encoder.linears[-1].bias[3] = 80.0
    plain.load_state_dict(fused.state_dict())
    _, g1 = _manual(fused, x)
    _, g2 = _autograd(plain, x)
    head = "encoder.4.bias"
    assert g2[head][3] == 0 and g1[head][3] == 0
    _assert_same_gradients(g1, g2)


def test_a_vamp_prior_run_follows_autograds_path(monkeypatch):
    """Two epochs with the hand-written step reach autograd's weights to rounding, and every
    step took it."""
    kw = VAMP_CASES[0]
    x = torch.rand(120, 2, generator=torch.Generator().manual_seed(4))
    cfg = TrainConfig(epochs=2, batch_size=40, lr=1e-3, seed=5)
    fused, plain = _pair(**kw)
    fused.prepare(x)
    plain.load_state_dict(fused.state_dict())
    calls = []
    real = vae_model.vae_loss_and_gradients
    monkeypatch.setattr(vae_model, "vae_loss_and_gradients",
                        lambda *a, **k: calls.append(1) or real(*a, **k))  # fmt: skip
    fit(fused, x, cfg)
    fit(plain, x, cfg)
    assert len(calls) == 6
    for (n, p), q in zip(fused.named_parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=n)


def test_the_flow_prior_frozen_pseudo_inputs_and_subclasses_take_autograd():
    """The hand-written step knows the VampPrior's mixture and VAE._sampled_kl: a prior or a
    VAE that changes either, or pseudo-inputs that do not train, send the step to autograd."""
    from pushforward.models.vae.trained_prior import VampPrior

    x = torch.rand(8, 2)
    flow = VAE(VAEConfig(dim=2, latent=2, loss="gaussian", prior="flow", hidden=[8]))
    assert not fusable(flow, x) and flow.manual_gradients(x) is None
    config = VAEConfig(dim=2, latent=2, loss="gaussian", prior="vamp", prior_components=3,
                       hidden=[8])  # fmt: skip
    vamp = VAE(config)
    assert fusable(vamp, x) and vamp.manual_gradients(x) is not None
    vamp.prior_net.pseudo_inputs.requires_grad_(False)
    assert not fusable(vamp, x)

    class TemperedPrior(VampPrior):
        def log_prob(self, z, posterior):
            return 0.5 * super().log_prob(z, posterior)

    tempered = VAE(config)
    tempered.prior_net = TemperedPrior(3, 2, 2)
    assert not fusable(tempered, x) and tempered.manual_gradients(x) is None

    class OwnKL(VAE):
        @staticmethod
        def _sampled_kl(z, mu, logvar, prior):
            return 2 * VAE._sampled_kl(z, mu, logvar, prior)

    own = OwnKL(config)
    assert fusable(own, x) and own.manual_gradients(x) is None  # the subclass, not the nets


def test_the_mixtures_logsumexp_is_torchs_and_leaves_the_responsibilities():
    """Exponents far below the floor (components far from z) change nothing: the value is
    torch.logsumexp's and the weights are the softmax, in float32 and float64."""
    for dtype in (torch.float32, torch.float64):
        a = torch.randn(40, 30, generator=torch.Generator().manual_seed(0), dtype=dtype) * 5
        a[:, ::3] -= 1e4  # a third of the components far away
        a[0, :] = -7.0  # a row of equal terms: log 30 − 7
        want, soft = torch.logsumexp(a, 1), torch.softmax(a, 1)
        buf = a.clone()
        got = mixture_logsumexp_(buf, weights=True)
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(buf, soft)
        assert float(got[0]) == pytest.approx(math.log(30) - 7.0)
        assert torch.equal(mixture_logsumexp_(a.clone()), got)


def test_the_floored_logsumexp_of_training_is_torchs_in_value_and_gradient():
    """The differentiable sum the autograd paths take (fit --seeds, torchrun): the value and the
    gradient (the softmax) of torch.logsumexp, with a third of the terms far below the floor."""
    a = torch.randn(40, 30, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 5
    a[:, ::3] -= 1e4
    a1, a2 = a.clone().requires_grad_(True), a.clone().requires_grad_(True)
    got, want = floored_logsumexp(a1), torch.logsumexp(a2, 1)
    torch.testing.assert_close(got, want)
    (got * torch.arange(40.0, dtype=a.dtype)).sum().backward()
    (want * torch.arange(40.0, dtype=a.dtype)).sum().backward()
    torch.testing.assert_close(a1.grad, a2.grad)
    assert torch.func.grad(lambda t: floored_logsumexp(t).sum())(a).shape == a.shape  # (--seeds)

"""Capturing the step: the loss through torch.compile (the same terms and gradients as eager, a
fall-back when compiling fails), and finite checks that keep the host from waiting on the device
(read once an epoch, naming the same term and step as a check at every step)."""

import logging
import re

import pytest
import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode

from pushforward.core import ConfigError
from pushforward.data import load_data
from pushforward.models.autoencoder import Autoencoder, AutoencoderConfig
from pushforward.models.registry import MODELS
from pushforward.models.vae import VAE, VAEConfig
from pushforward.train import (
    CompiledLoss,
    DeferredChecks,
    Trainable,
    TrainConfig,
    compile_mode,
    defers_finite_checks,
    fit,
    seeded,
)

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def data(n=96, d=12, seed=0):
    return torch.rand(n, d, generator=torch.Generator().manual_seed(seed))


# --- the settings -------------------------------------------------------------------------------


def test_auto_compiles_with_cuda_graphs_on_cuda_only_and_defers_checks_off_the_cpu():
    assert compile_mode("auto", CUDA) == "reduce-overhead"
    assert compile_mode("auto", CPU) is None
    assert compile_mode("off", CUDA) is None
    assert compile_mode("default", CPU) == "default"
    assert defers_finite_checks("auto", CUDA) and not defers_finite_checks("auto", CPU)
    assert defers_finite_checks("epoch", CPU) and not defers_finite_checks("step", CUDA)


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("compile", "fast", "unknown compile mode 'fast'; known: auto, default, off, "
         "reduce-overhead"),
        ("compile", "max-autotune", "unknown compile mode 'max-autotune'; known: auto,"),
        ("finite_checks", "", "unknown finite check ''; known: auto, epoch, step"),
    ],
)  # fmt: skip
def test_unknown_capture_settings_are_refused_naming_the_choices(setting, value, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        TrainConfig(**{setting: value})


# --- host synchronisations ----------------------------------------------------------------------


class ValueReads(TorchDispatchMode):
    """Counts the reads of a tensor's value by the host (``.item()``, ``bool``, ``float``): on a
    GPU each one waits for the device to finish."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.count += 1
        return func(*args, **(kwargs or {}))


def reads_in_fit(finite_checks: str, batch_size: int, epochs: int = 2) -> int:
    with seeded(0):
        model = Autoencoder(AutoencoderConfig(dim=12, latent=2, hidden=[16]))
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, seed=0, finite_checks=finite_checks)
    with ValueReads() as reads:
        fit(model, data(), cfg)
    return reads.count


def test_deferred_checks_read_the_device_a_fixed_number_of_times_an_epoch_whatever_its_steps():
    """With checks once an epoch the host reads as many values for 3 steps an epoch as for 12;
    checking at every step, it reads more with more steps (so the count can tell them apart)."""
    few, many = reads_in_fit("epoch", 32), reads_in_fit("epoch", 8)
    assert few == many
    assert reads_in_fit("step", 8) > reads_in_fit("step", 32)
    assert reads_in_fit("epoch", 8, epochs=3) > many  # a fixed count an epoch, not none


def test_deferred_checks_keep_each_terms_first_bad_step_and_prefer_a_named_term():
    checks = DeferredChecks()
    finite = {"loss": torch.tensor(1.0), "kl": torch.tensor(0.5)}
    bad = {"loss": torch.tensor(float("inf")), "kl": torch.tensor(float("nan"))}
    for step, terms in enumerate([finite, finite, bad, finite]):
        checks.step = step
        checks.record(terms)
    assert checks.failure() == ("kl", 2)
    checks.step = 3
    checks.record({"loss": torch.tensor(float("nan")), "kl": torch.tensor(0.0)})
    assert checks.failure() == ("kl", 2)  # the first one stays
    checks.step = 1  # another set of terms (the GAN's generator step) failed earlier
    checks.record({"gen_loss": torch.tensor(float("nan")), "gen_grad_norm": torch.tensor(1.0)})
    assert checks.failure() == ("gen_loss", 1)
    checks.reset()
    assert checks.failure() is None


# --- compiling the loss -------------------------------------------------------------------------


def one_step_gradients(model: Trainable, compiled: bool, x: Tensor):
    """The terms and the gradients of one loss on x, eager or through CompiledLoss."""
    loss = CompiledLoss(model.loss, "default") if compiled else model.loss
    extra = {}
    if model.prepares_batches:
        extra["prepared"] = model.prepare_batch(x, generator=torch.Generator().manual_seed(1))
    model.zero_grad(set_to_none=True)
    terms = loss(x, generator=torch.Generator().manual_seed(5), epoch=0.25, **extra)
    terms["loss"].backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return {k: v.detach() for k, v in terms.items()}, grads


COMPILED = {
    "ae": ("ring8", {"hidden": [16]}),
    "vae-warm-up": ("ring8", {"hidden": [16], "prior": "normal", "kl_schedule": "linear"}),
    "vae-vamp": ("ring8", {"hidden": [16], "prior": "vamp"}),
    "vae-digits": ("digits", {"hidden": [32]}),
    "fm": ("ring8", {"hidden": [32, 32]}),
}
"""Small models whose loss is compiled; the slower to compile are in the slow tests."""


SLOW_TO_COMPILE = ("vae-vamp", "vae-digits", "fm")


@pytest.mark.parametrize(
    "case",
    [pytest.param(k, marks=[pytest.mark.slow] if k in SLOW_TO_COMPILE else []) for k in COMPILED],
)
def test_the_compiled_loss_gives_the_eager_terms_gradients_and_draws(case):
    """torch.compile's fused kernels round differently, so terms and gradients agree to float
    tolerance; the noise is drawn from the same generator, so a wrong draw would differ by far
    more (the VAE's reconstruction moves by O(1) with its ε)."""
    data_name, settings = COMPILED[case]
    ds = load_data(data_name, n=200)
    with seeded(0):
        model = MODELS[case.split("-")[0]].config(**settings).build(ds)
    model.prepare(ds.x)
    assert model.compiles
    x = ds.x[:64]
    eager_terms, eager_grads = one_step_gradients(model, False, x)
    terms, grads = one_step_gradients(model, True, x)
    torch.testing.assert_close(terms, eager_terms, rtol=1e-5, atol=1e-6)
    assert grads.keys() == eager_grads.keys()
    torch.testing.assert_close(grads, eager_grads, rtol=1e-4, atol=1e-5)


def test_a_model_whose_loss_the_compiler_gets_wrong_trains_op_by_op(monkeypatch):
    """The flow's gradients through zuko's splines come out wrong from inductor (torch 2.13):
    asked to compile, it is not compiled and trains as eagerly."""
    monkeypatch.setattr(torch, "compile", lambda *a, **k: pytest.fail("the flow was compiled"))
    ds = load_data("ring8", n=64)
    with seeded(0):
        model = MODELS["flow"].config(layers=1, hidden=[8], bins=4).build(ds)
    model.prepare(ds.x)
    fit(model, ds.x, TrainConfig(epochs=1, batch_size=32, compile="default"))


def test_a_compiled_run_trains_like_an_eager_one_and_compiles_once_per_batch_shape():
    """A VAE whose KL weight warms up at every step, compiled: the losses follow the eager
    run's, and three epochs compile no more than one does (the first batch and the shorter last
    one): a loss that recompiled whenever its epoch changed would compile at every step and,
    past torch's limit, fall back to eager."""
    import torch._dynamo.utils as dynamo_utils

    def run(compile_: str, epochs: int):
        torch._dynamo.reset()
        dynamo_utils.counters.clear()
        with seeded(0):
            model = VAE(VAEConfig(dim=12, latent=2, hidden=[16], prior="normal",
                                  kl_schedule="linear", kl_warmup=3.0))  # fmt: skip
        history = fit(model, data(n=90), TrainConfig(epochs=epochs, batch_size=32, seed=0,
                                                    compile=compile_))  # fmt: skip
        counts = dynamo_utils.counters
        return [r["loss"] for r in history], counts["frames"]["total"], counts["stats"]

    eager, _, _ = run("off", 3)
    compiled, compiles, stats = run("default", 3)
    assert compiled == pytest.approx(eager, rel=1e-4)
    _, compiles_in_one_epoch, _ = run("default", 1)
    assert 0 < compiles == compiles_in_one_epoch
    # the noise is drawn and λ looked up before the first weight is read, so the step is one
    # graph per batch shape (two: 32 rows and the last 26), not a graph on each side of a draw
    assert stats["unique_graphs"] == 2


@pytest.mark.slow
@pytest.mark.parametrize("prior", ["vamp", "gmm"])
def test_a_compiled_vae_step_is_one_graph_with_a_trained_prior_too(prior):
    """The VampPrior's and the mixture's KL are sampled from the same ε: still one graph."""
    import torch._dynamo.utils as dynamo_utils

    torch._dynamo.reset()
    dynamo_utils.counters.clear()
    with seeded(0):
        model = VAE(VAEConfig(dim=12, latent=2, hidden=[16], prior=prior))
    fit(model, data(n=64), TrainConfig(epochs=2, batch_size=32, seed=0, compile="default"))
    assert dynamo_utils.counters["stats"]["unique_graphs"] == 1


def test_a_loss_that_fails_to_compile_trains_eagerly_with_a_warning(monkeypatch, caplog):
    """Compiling fails on the first call (no C++ compiler, an operation the compiler lacks): the
    run says so and goes on op by op from the same draws, ending where an eager run ends."""

    def broken(fn, **kwargs):
        def call(*args, **kw):
            torch.randn(3, generator=kw.get("generator"))  # it drew before it failed
            raise RuntimeError("no C++ compiler")

        return call

    def run(compile_: str):
        with seeded(0):
            model = VAE(VAEConfig(dim=12, latent=2, hidden=[16], prior="normal"))
        fit(model, data(), TrainConfig(epochs=2, batch_size=32, seed=0, compile=compile_))
        return model

    eager = run("off")
    monkeypatch.setattr(torch, "compile", broken)
    with caplog.at_level(logging.WARNING, logger="pushforward"):
        fallen_back = run("default")
    assert "no C++ compiler" in caplog.text and "op by op" in caplog.text
    # (the eager run may take the model's hand-written gradients, the fallen-back one autograd's)
    torch.testing.assert_close(fallen_back.state_dict(), eager.state_dict(), rtol=1e-5, atol=1e-6)

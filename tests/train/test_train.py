"""The shared training loop: exact resume, clean stops on NaN, metrics, checkpoints, settings."""

import json
import math
import os
import signal

import pytest
import torch
from torch import Tensor, nn

from pushforward.core import CheckpointError, ConfigError, Interrupted, TrainingError, load_tensors
from pushforward.models.autoencoder import Autoencoder, AutoencoderConfig
from pushforward.train import (
    CHECKPOINT,
    METRICS,
    Optimization,
    Trainable,
    TrainConfig,
    fit,
    flatten_state,
    load_checkpoint,
    read_metrics,
    seeded,
    unflatten_state,
)


def data(n=96, d=12, seed=0):
    return torch.rand(n, d, generator=torch.Generator().manual_seed(seed))


def make_ae(seed=0):
    with seeded(seed):
        return Autoencoder(AutoencoderConfig(dim=12, latent=2, hidden=[16]))


def states_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_resumed_run_ends_bit_exactly_like_an_uninterrupted_one(tmp_path):
    x = data()
    full = make_ae()
    h_full = fit(full, x, TrainConfig(epochs=6, batch_size=32, seed=3), run_dir=tmp_path / "a")

    part = make_ae()
    fit(part, x, TrainConfig(epochs=3, batch_size=32, seed=3), run_dir=tmp_path / "b")
    resumed = make_ae(seed=99)  # different init: everything must come from the checkpoint
    h_res = fit(
        resumed,
        x,
        TrainConfig(epochs=6, batch_size=32, seed=3),
        run_dir=tmp_path / "b",
        resume=True,
    )
    assert states_equal(full, resumed)
    assert [r["loss"] for r in h_full] == [r["loss"] for r in h_res]
    assert [r["epoch"] for r in read_metrics(tmp_path / "b")] == [1, 2, 3, 4, 5, 6]


def test_seeded_runs_are_reproducible_and_seeds_matter():
    x = data()
    a, b, c = make_ae(), make_ae(), make_ae()
    fit(a, x, TrainConfig(epochs=2, batch_size=32, seed=1))
    fit(b, x, TrainConfig(epochs=2, batch_size=32, seed=1))
    fit(c, x, TrainConfig(epochs=2, batch_size=32, seed=2))
    assert states_equal(a, b)
    assert not states_equal(a, c)


def test_seeded_leaves_the_global_rng_as_it_was():
    state = torch.get_rng_state()
    with seeded(5):
        torch.rand(3)
    assert torch.equal(torch.get_rng_state(), state)


def test_metrics_and_checkpoint_files(tmp_path):
    x = data()
    hist = fit(
        make_ae(), x, TrainConfig(epochs=4, batch_size=0, checkpoint_every=3), run_dir=tmp_path
    )
    lines = (tmp_path / METRICS).read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4]
    assert hist[-1]["loss"] < hist[0]["loss"]
    assert {"loss", "seconds", "samples_per_s"} <= set(hist[0])
    tensors = load_tensors(tmp_path / CHECKPOINT)
    assert "rng.generator" in tensors and any(k.startswith("optim.model") for k in tensors)
    assert not list(tmp_path.glob(".*.tmp"))


def test_full_batch_takes_one_step_per_epoch():
    class Counter(Autoencoder):
        steps = 0

        def training_step(self, x, optimizers, cfg, *, generator=None, epoch=0.0):
            Counter.steps += 1
            assert x.shape[0] == 96
            assert epoch == Counter.steps - 1
            return super().training_step(x, optimizers, cfg, generator=generator, epoch=epoch)

    with seeded(0):
        m = Counter(AutoencoderConfig(dim=12, latent=2))
    fit(m, data(), TrainConfig(epochs=3, batch_size=0))
    assert Counter.steps == 3


class Exploding(Trainable):
    """A model whose KL term becomes NaN at a chosen global step."""

    def __init__(self, bad_step: int):
        super().__init__()
        self.w = nn.Parameter(torch.ones(3))
        self.bad_step, self.calls = bad_step, 0

    def get_config(self):
        return {"bad_step": self.bad_step}

    def loss(self, x: Tensor, *, generator=None, epoch=None):
        self.calls += 1
        rec = (x[:, :3] - self.w).pow(2).sum(1).mean()
        kl = self.w.sum() * (float("nan") if self.calls == self.bad_step else 0.0)
        return {"loss": rec + kl, "reconstruction": rec, "kl": kl}


@pytest.mark.parametrize("finite_checks", ["step", "epoch"])
def test_nan_in_training_stops_cleanly_naming_term_epoch_step(tmp_path, finite_checks):
    """Checked once an epoch (on the device), the NaN is reported as a check at every step
    reports it, although the weights took it and every later term is NaN too; either way the
    epoch is neither recorded nor saved."""
    x = data(n=40)
    model = Exploding(bad_step=7)  # batch 10 → 4 steps per epoch → epoch 2, step 3
    cfg = TrainConfig(epochs=5, batch_size=10, finite_checks=finite_checks)
    with pytest.raises(TrainingError, match=r"the kl term became n.* at epoch 2, step 3") as e:
        fit(model, x, cfg, run_dir=tmp_path)
    assert "last good checkpoint: epoch 1" in str(e.value)
    good = Exploding(bad_step=-1)
    info, _ = load_checkpoint(
        tmp_path / CHECKPOINT, good, good.configure_optimizers(TrainConfig()), torch.Generator()
    )
    assert info["epoch"] == 1
    assert torch.isfinite(good.w).all()
    assert [r["epoch"] for r in read_metrics(tmp_path)] == [1]


class Unchecked(Exploding):
    """A model with its own training step that forgets to check its terms (the contract asks
    it to): the end of the epoch still refuses to record or checkpoint a non-finite sum."""

    optimization = Optimization.OWN_STEP

    def training_step(self, x, optimizers, cfg, *, generator=None, epoch=0.0, shard=None):
        terms = self.loss(x)
        (opt,) = optimizers.values()
        opt.zero_grad(set_to_none=True)
        terms["reconstruction"].backward()  # the weights stay finite; a reported term does not
        opt.step()
        return {k: v.detach() for k, v in terms.items()}


def test_a_non_finite_term_a_training_step_let_through_stops_at_the_end_of_its_epoch(tmp_path):
    model = Unchecked(bad_step=7)  # epoch 2
    with pytest.raises(TrainingError, match=r"the loss term became non-finite in epoch 2") as e:
        fit(model, data(n=40), TrainConfig(epochs=5, batch_size=10), run_dir=tmp_path)
    assert "last good checkpoint: epoch 1" in str(e.value)
    assert [r["epoch"] for r in read_metrics(tmp_path)] == [1]
    good = Unchecked(bad_step=-1)
    info, _ = load_checkpoint(
        tmp_path / CHECKPOINT, good, good.configure_optimizers(TrainConfig()), torch.Generator()
    )
    assert info["epoch"] == 1


def test_resume_without_checkpoint_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match=r"cannot resume: no checkpoint\.safetensors"):
        fit(make_ae(), data(), TrainConfig(epochs=1, batch_size=32), run_dir=tmp_path, resume=True)


def test_optimizer_state_round_trips_through_tensors_and_json():
    m = make_ae()
    opt = m.configure_optimizers(TrainConfig())["model"]
    m.loss(data())["loss"].backward()
    opt.step()
    tensors = {}
    skeleton = json.loads(json.dumps(flatten_state(opt.state_dict(), "o", tensors)))
    back = unflatten_state(skeleton, tensors)
    orig = opt.state_dict()
    assert back["param_groups"] == [dict(g, betas=tuple(g["betas"])) for g in orig["param_groups"]]
    for pid, st in orig["state"].items():
        for k, v in st.items():
            assert torch.equal(back["state"][pid][k], v)


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"epochs": -1}, "epochs = -1 is not allowed; use an integer ≥ 0"),
        ({"batch_size": -5}, "batch_size = -5 is not allowed"),
        ({"lr": 0.0}, "lr = 0.0 is not allowed; use a finite number > 0"),
        ({"lr": float("nan")}, "lr = nan is not allowed; use a finite number > 0"),
        ({"weight_decay": float("inf")}, "weight_decay = inf is not allowed; use a finite number"),
        ({"grad_clip": float("nan")}, "grad_clip = nan is not allowed; use a finite number ≥ 0"),
        ({"grad_clip": float("inf")}, "grad_clip = inf is not allowed; use a finite number ≥ 0"),
        ({"betas": (0.9, float("nan"))}, r"betas = \[0.9, nan\] is not allowed; use 2 finite"),
        ({"optimizer": "lbfgs"}, "unknown optimizer 'lbfgs'; known: adam, adamw, sgd"),
        ({"device": "tpu"}, "unknown device 'tpu'; known: auto, cpu, cuda"),
        ({"epochz": 3}, "unknown setting 'epochz'; known: epochs, batch_size"),
    ],
)
def test_bad_training_settings_name_the_problem(settings, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig.from_dict(settings)


def test_a_batch_larger_than_the_data_is_refused():
    with pytest.raises(ConfigError, match=r"batch_size 200 is larger than the data \(96 rows\)"):
        fit(make_ae(), data(), TrainConfig(epochs=1, batch_size=200))


def test_bad_training_data_is_refused():
    with pytest.raises(ConfigError, match=r"shape \(n, d\) with n ≥ 1, got \(0, 12\)"):
        fit(make_ae(), torch.zeros(0, 12), TrainConfig(epochs=1))


class SelfInterrupting(Autoencoder):
    """Sends itself a signal during a chosen global step, as a user's Ctrl-C would."""

    def __init__(self, *args, at_step=-1, signum=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.at_step, self.signum, self.calls = at_step, signum, 0

    def training_step(self, x, optimizers, cfg, *, generator=None, epoch=0.0):
        self.calls += 1
        if self.calls == self.at_step:
            os.kill(os.getpid(), self.signum)
        return super().training_step(x, optimizers, cfg, generator=generator, epoch=epoch)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_between_steps_writes_a_checkpoint_and_resumes_exactly(tmp_path, signum):
    # the handlers found are put back (not the defaults: a shell's background job ignores SIGINT)
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    x = data()
    cfg = TrainConfig(epochs=4, batch_size=32, seed=5)  # 3 steps per epoch
    full = make_ae()
    h_full = fit(full, x, cfg)
    with seeded(0):
        stopped = SelfInterrupting(
            AutoencoderConfig(dim=12, latent=2, hidden=[16]), at_step=8, signum=signum
        )
    with pytest.raises(Interrupted, match=r"at epoch 3, step 2 of 3; checkpoint written"):
        fit(stopped, x, cfg, run_dir=tmp_path)
    assert [r["epoch"] for r in read_metrics(tmp_path)] == [1, 2]
    resumed = make_ae(seed=42)
    h_res = fit(resumed, x, cfg, run_dir=tmp_path, resume=True)
    assert states_equal(full, resumed)
    assert [r["loss"] for r in h_full] == [r["loss"] for r in h_res]  # the split epoch too
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_a_signal_without_a_run_folder_says_nothing_was_saved():
    with seeded(0):
        m = SelfInterrupting(
            AutoencoderConfig(dim=12, latent=2, hidden=[16]), at_step=2, signum=signal.SIGINT
        )
    with pytest.raises(Interrupted, match="nothing saved"):
        fit(m, data(), TrainConfig(epochs=2, batch_size=32))


def test_auto_precision_takes_bfloat16_only_with_amx_tiles():
    from pushforward.train.device import fast_bf16_flags

    head = "processor\t: 0\nmodel name\t: Xeon\nflags\t\t: fpu sse2 avx2 avx512f"
    assert not fast_bf16_flags(head)
    # AVX512-BF16 without AMX multiplied bfloat16 at half the float32 rate (BENCHMARKS.md)
    assert not fast_bf16_flags(head + " avx512_bf16 avx512_fp16")
    assert fast_bf16_flags(head + " avx512_bf16 amx_bf16 amx_tile amx_int8")
    assert not fast_bf16_flags("model name\t: amx_bf16 lookalike\nflags\t\t: fpu")
    assert not fast_bf16_flags("")


def test_precision_names_the_autocast_dtype_and_refuses_unknown_names(monkeypatch):
    from pushforward.train import autocast_dtype

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert autocast_dtype("float32", cpu) is None
    assert autocast_dtype("bfloat16", cpu) is torch.bfloat16
    for native in (False, True):  # a GPU with bfloat16 tensor cores takes it for images only
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda **_: native)  # noqa: B023
        assert autocast_dtype("auto", cuda, dim=784) is (torch.bfloat16 if native else None)
        assert autocast_dtype("auto", cuda, dim=2) is None
        assert autocast_dtype("float32", cuda, dim=784) is None
    monkeypatch.undo()
    assert autocast_dtype("auto", cpu) in (None, torch.bfloat16)
    assert autocast_dtype("auto", cpu, dim=784) is autocast_dtype("auto", cpu)
    assert autocast_dtype("auto", cpu, dim=2) is None  # 2-D mixtures stay float32
    assert autocast_dtype("bfloat16", cpu, dim=2) is torch.bfloat16  # asked for by name
    with pytest.raises(ConfigError, match="precision"):
        TrainConfig(precision="float16")


def test_bfloat16_training_multiplies_in_bfloat16_keeps_float32_weights_and_resumes(tmp_path):
    from pushforward.models.vae import VAE, VAEConfig

    seen = []
    x = data()

    def make():
        with seeded(0):
            m = VAE(VAEConfig(dim=x.shape[1], latent=2, loss="l2", hidden=[16], activation="relu"))
        m.decoder.register_forward_hook(lambda mod, args, out: seen.append(out.dtype))
        return m

    cfg = TrainConfig(epochs=4, batch_size=32, seed=1, precision="bfloat16")
    full = make()
    h = fit(full, x, cfg, run_dir=tmp_path / "a")
    assert torch.bfloat16 in seen and all(p.dtype == torch.float32 for p in full.parameters())
    assert all(math.isfinite(r["loss"]) for r in h)
    part = make()
    fit(part, x, TrainConfig(**{**cfg.to_dict(), "epochs": 2}), run_dir=tmp_path / "b")
    resumed = make()
    fit(resumed, x, cfg, run_dir=tmp_path / "b", resume=True)
    assert states_equal(full, resumed)


class LrRecorder(Autoencoder):
    """Records the learning rate each step is taken with."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.lrs: list[float] = []

    def training_step(self, x, optimizers, cfg, *, generator=None, epoch=0.0):
        (opt,) = optimizers.values()
        self.lrs.append(opt.param_groups[0]["lr"])
        return super().training_step(x, optimizers, cfg, generator=generator, epoch=epoch)


def test_cosine_schedule_takes_step_t_of_T_at_half_of_one_plus_cos_pi_t_over_T():
    x = data()  # 96 rows, batch 32: 3 steps per epoch, T = 12 steps
    with seeded(0):
        model = LrRecorder(AutoencoderConfig(dim=12, latent=2, hidden=[16]))
    fit(model, x, TrainConfig(epochs=4, batch_size=32, lr=0.01, lr_schedule="cosine"))
    expected = [0.01 * 0.5 * (1 + math.cos(math.pi * t / 12)) for t in range(12)]
    assert model.lrs == pytest.approx(expected, rel=1e-12)
    with seeded(0):
        constant = LrRecorder(AutoencoderConfig(dim=12, latent=2, hidden=[16]))
    fit(constant, x, TrainConfig(epochs=4, batch_size=32, lr=0.01))
    assert constant.lrs == [0.01] * 12
    with pytest.raises(ConfigError, match="unknown learning-rate schedule 'step'; known: "):
        TrainConfig(lr_schedule="step")


def test_a_cosine_run_resumed_mid_schedule_ends_exactly_like_an_uninterrupted_one(tmp_path):
    x = data()
    cfg = TrainConfig(epochs=6, batch_size=32, seed=3, lr=0.01, lr_schedule="cosine")
    full = make_ae()
    h_full = fit(full, x, cfg)
    with seeded(0):  # stopped by Ctrl-C in the middle of epoch 3 (step 8 of 18)
        stopper = SelfInterrupting(
            AutoencoderConfig(dim=12, latent=2, hidden=[16]), at_step=8, signum=signal.SIGINT
        )
    with pytest.raises(Interrupted):
        fit(stopper, x, cfg, run_dir=tmp_path)
    half = make_ae(seed=7)
    h_res = fit(half, x, cfg, run_dir=tmp_path, resume=True)
    assert states_equal(full, half)
    assert [r["loss"] for r in h_full] == [r["loss"] for r in h_res]


class Preparing(Autoencoder):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.prepared: list[Tensor] = []

    def prepare(self, x):
        self.prepared.append(x)


def test_prepare_sees_the_training_data_on_a_fresh_run_only(tmp_path):
    x = data()
    cfg = TrainConfig(epochs=2, batch_size=32)
    with seeded(0):
        model = Preparing(AutoencoderConfig(dim=12, latent=2, hidden=[16]))
    fit(model, x, cfg, run_dir=tmp_path)
    assert len(model.prepared) == 1 and torch.equal(model.prepared[0], x)
    fit(model, x, TrainConfig(epochs=3, batch_size=32), run_dir=tmp_path, resume=True)
    assert len(model.prepared) == 1


@pytest.mark.parametrize("rows,world", [(64, 2), (5, 2), (7, 3), (1797 % 64, 4)])
def test_shards_cover_the_batch_and_their_weights_make_the_whole_batch_mean(rows, world):
    from pushforward.train import Shard, draw_rows

    losses = torch.randn(rows, generator=torch.Generator().manual_seed(rows))
    shards = [Shard(r, world, rows) for r in range(world)]
    assert torch.equal(torch.cat([s.take(losses) for s in shards]), losses)
    # the processes' mean losses times their weights average to the whole batch's mean
    weighted = [s.take(losses).mean() * s.weight for s in shards if s.take(losses).numel()]
    torch.testing.assert_close(sum(weighted) / world, losses.mean())
    # each process draws the whole batch from a shared generator and keeps its rows
    parts = [
        draw_rows(lambda m: torch.randn(m, 3, generator=torch.Generator().manual_seed(1)),
                  s.take(losses).shape[0], s)
        for s in shards
    ]  # fmt: skip
    alone = torch.randn(rows, 3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(torch.cat(parts), alone)

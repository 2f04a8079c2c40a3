"""fit keeps the optimisers' state out of the subnormal range, where x86 CPUs compute slowly."""

import math

import pytest
import torch
from torch import nn

import pushforward.train.loop as loop
from pushforward.train import (
    FLUSH_EVERY,
    Trainable,
    TrainConfig,
    fit,
    flush_subnormal_state_,
    flush_threshold,
)


def subnormal(t: torch.Tensor) -> int:
    """How many entries of t are subnormal (non-zero, below the smallest normal number)."""
    return int(((t != 0) & (t.abs() < torch.finfo(t.dtype).tiny)).sum())


class Fading(Trainable):
    """One weight vector whose gradient is 10⁻³⁶ at the steps in ``kicks`` and exactly zero at
    every other: Adam's m then decays by β₁ a step into the subnormal range, as it does for the
    weights of a pixel that stays blank."""

    def __init__(self, steps_per_epoch: int, kicks: tuple[int, ...] = (0,)):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1000))
        self.steps_per_epoch, self.kicks = steps_per_epoch, kicks

    def loss(self, x, *, generator=None, epoch=None):
        step = round((epoch or 0.0) * self.steps_per_epoch)
        scale = 1e-36 if step in self.kicks else 0.0
        loss = (self.w * scale).sum() + 0.0 * x.sum()
        return {"loss": loss}

    def get_config(self):
        return {"steps_per_epoch": self.steps_per_epoch, "kicks": list(self.kicks)}


def _m(model: Trainable, optimizers) -> torch.Tensor:
    (opt,) = optimizers.values()
    return opt.state[model.w]["exp_avg"]


def _stepped(opt_class, **kwargs) -> tuple[nn.Parameter, torch.optim.Optimizer]:
    """A parameter of 8 entries and its optimiser after one step, so that its state exists."""
    w = nn.Parameter(torch.zeros(8))
    opt = opt_class([w], **kwargs)
    w.grad = torch.ones(8)
    opt.step()
    return w, opt


VALUES = [0.0, 1e-39, -1e-39, 1e-31, -1e-31, 1e-30, 1.0, math.nan]  # 5 below the threshold


def _set(t: torch.Tensor) -> torch.Tensor:
    return t.copy_(torch.tensor(VALUES, dtype=t.dtype))


def _flushed(t: torch.Tensor) -> bool:
    """Whether t holds VALUES with the five below the threshold set to zero, the rest kept."""
    return bool(t[:5].eq(0).all() and t[5] == 1e-30 and t[6] == 1.0 and t[7].isnan())


@pytest.mark.parametrize("opt_class", [torch.optim.Adam, torch.optim.AdamW])
def test_flush_sets_only_the_small_entries_of_adams_first_moment_to_zero(opt_class):
    thr = flush_threshold(torch.float32)
    assert 1e-31 < thr < 1e-30
    w, opt = _stepped(opt_class)
    state = opt.state[w]
    m, v = _set(state["exp_avg"]), state["exp_avg_sq"].fill_(1e-40)
    assert subnormal(m) == 2 and subnormal(v) == 8
    step = state["step"].clone()
    scalar = nn.Parameter(torch.tensor(0.0))  # a 0-d weight: its m is flushed too
    scalar_opt = opt_class([scalar])
    scalar.grad = torch.tensor(1.0)
    scalar_opt.step()
    scalar_opt.state[scalar]["exp_avg"].fill_(1e-35)

    flush_subnormal_state_({"model": opt, "scalar": scalar_opt})

    assert _flushed(m) and subnormal(m) == 0
    assert subnormal(v) == 8  # v is not a first moment: left alone
    assert torch.equal(state["step"], step)
    assert scalar_opt.state[scalar]["exp_avg"] == 0


def test_float16_first_moments_are_left_alone():
    """2²⁴ × float16's smallest normal number is 1,024: its threshold would erase m."""
    w, opt = _stepped(torch.optim.Adam)
    opt.state[w]["exp_avg"] = torch.full((8,), 1e-3, dtype=torch.float16)
    flush_subnormal_state_({"model": opt})
    assert torch.equal(opt.state[w]["exp_avg"], torch.full((8,), 1e-3, dtype=torch.float16))


def test_sgd_momentum_is_flushed_and_other_optimisers_are_left_alone():
    w, sgd = _stepped(torch.optim.SGD, lr=0.1, momentum=0.9)
    buf = _set(sgd.state[w]["momentum_buffer"])
    w2, small_eps = _stepped(torch.optim.Adam, eps=1e-12)  # m / ε could move a weight
    m = _set(small_eps.state[w2]["exp_avg"])
    w3, rprop = _stepped(torch.optim.Rprop)  # the sign of `prev` matters, however small
    prev = _set(rprop.state[w3]["prev"])

    flush_subnormal_state_({"sgd": sgd, "adam": small_eps, "rprop": rprop})

    assert _flushed(buf)
    for kept in (m, prev):
        assert subnormal(kept) == 2 and kept[3] == 1e-31


def _trained_m(monkeypatch, every: int) -> torch.Tensor:
    """Adam's m after fit trains Fading for 100 steps (one kick at the first), flushing every
    ``every`` steps."""
    n = 100
    model = Fading(steps_per_epoch=n)
    optimizers = {}
    configure = Fading.configure_optimizers

    def keep(self, cfg):  # fit's own optimisers, to look at their state afterwards
        optimizers.update(configure(self, cfg))
        return optimizers

    monkeypatch.setattr(Fading, "configure_optimizers", keep)
    cfg = TrainConfig(epochs=1, batch_size=1, lr=1e-3, seed=0, flush_every=every)
    fit(model, torch.zeros(n, 1), cfg)
    return _m(model, optimizers)


def test_fit_keeps_adams_moving_average_out_of_the_subnormal_range(monkeypatch):
    """After one kick, m = 10⁻³⁷ is subnormal from about step 22 on and stays so: fit's flush at
    step 64 sets it to zero."""
    assert TrainConfig().flush_every == FLUSH_EVERY <= 100
    m = _trained_m(monkeypatch, FLUSH_EVERY)
    assert subnormal(m) == 0 and m.eq(0).all()


def test_without_the_flush_m_is_subnormal_at_the_end(monkeypatch):
    """The other side of the test above: the same run without the flush ends with every entry
    of m subnormal, so the test above fails if fit does not flush."""
    assert subnormal(_trained_m(monkeypatch, 0)) == 1000


def test_the_flush_falls_on_the_runs_own_steps_across_a_resume(tmp_path, monkeypatch):
    """fit flushes after every flush_every-th step of the whole run, counted from its start, so
    a resumed run flushes where the uninterrupted one does (Adam's step count at each call)."""
    calls = []
    real = loop.flush_subnormal_state_

    def spy(optimizers):
        (opt,) = optimizers.values()
        calls.append(int(next(iter(opt.state.values()))["step"]))
        real(optimizers)

    monkeypatch.setattr(loop, "flush_subnormal_state_", spy)
    x = torch.zeros(3, 1)
    cfg = TrainConfig(epochs=6, batch_size=1, seed=0, flush_every=5)  # 3 steps an epoch, 18 in all
    fit(Fading(3), x, cfg, run_dir=tmp_path / "once")
    assert calls == [5, 10, 15]
    calls.clear()
    fit(Fading(3), x, TrainConfig(**{**cfg.__dict__, "epochs": 3}), run_dir=tmp_path / "split")
    fit(Fading(3), x, cfg, run_dir=tmp_path / "split", resume=True)
    assert calls == [5, 10, 15]

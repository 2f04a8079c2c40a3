"""Flow matching: the ODE's density against closed forms, the trace estimator, the OT coupling,
solver failures, the motion in time, and the command line."""

import functools
import itertools
import json
import math
import os
import signal

import numpy as np
import ot
import pytest
import torch
from torch import nn

from pushforward.cli import main
from pushforward.core import ConfigError, DataError, Interrupted, SolverError
from pushforward.models.fm import (
    EXACT_TRACE_MAX_DIM,
    HUTCHINSON_ESTIMATE,
    OT_BLOCK,
    RECOMMENDED,
    RECOMMENDED_IMAGES,
    FlowMatching,
    FlowMatchingConfig,
    UNetField,
    ot_pairing,
    stable_target,
)
from pushforward.models.fm.ode import Solver, fixed_step_solve
from pushforward.runs import load_run_config
from pushforward.train import TrainConfig, fit, prefetch, seeded


class LinearField(nn.Module):
    """The field whose flow carries N(0, I) to N(m, diag(s)²) along straight lines: each x₀ moves
    as x_t = (1 − t + t·s)·x₀ + t·m, so v(t, x) = (s − 1)(x − t·m)/(1 − t + t·s) + m."""

    def __init__(self, m: torch.Tensor, s: torch.Tensor):
        super().__init__()
        self.m, self.s = m, s

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        t = t.to(x.dtype)
        t = t[:, None] if t.dim() == 1 else t
        return (self.s - 1) * (x - t * self.m) / (1 - t + t * self.s) + self.m


def fm(dim: int, **settings) -> FlowMatching:
    """A FlowMatching model of ``settings`` on data of dimension ``dim``."""
    return FlowMatching(FlowMatchingConfig(dim=dim, **settings))


def linear_model(m, s, **kwargs) -> FlowMatching:
    model = fm(len(m), rtol=1e-7, atol=1e-7, **kwargs)
    model.field = LinearField(torch.tensor(m), torch.tensor(s))
    return model


def random_model(dim: int, seed: int = 0, **kwargs) -> FlowMatching:
    """An untrained model whose last layer is random (the default starts at the zero field)."""
    with seeded(seed):
        model = fm(dim, hidden=[32, 32], **kwargs)
        last = model.field.net.linears[-1]
        nn.init.normal_(last.weight, std=0.3)
        nn.init.normal_(last.bias, std=0.3)
    return model


def test_linear_field_density_equals_the_closed_form():
    m, s = [1.5, -0.5], [0.3, 2.0]
    model = linear_model(m, s)
    truth = torch.distributions.Independent(
        torch.distributions.Normal(torch.tensor(m), torch.tensor(s)), 1
    )
    x = truth.sample((50,)) + torch.tensor([0.5, 0.0])  # inside and beside the mass
    torch.testing.assert_close(model.log_prob(x), truth.log_prob(x), atol=1e-3, rtol=0)
    # and the samples are that Gaussian: decode is the exact map (1 − t + t·s)·z + t·m at t = 1
    z = torch.randn(20, 2, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(
        model.decode(z), z * torch.tensor(s) + torch.tensor(m), atol=1e-4, rtol=0
    )


def test_standardised_data_keep_densities_in_the_datas_units():
    # the same field acting on standardised units: the log-Jacobian of the scaling is counted
    model = linear_model([0.0, 0.0], [1.0, 1.0])
    model.data_loc.copy_(torch.tensor([3.0, -1.0]))
    model.data_scale.copy_(torch.tensor([2.0, 0.5]))
    truth = torch.distributions.Independent(
        torch.distributions.Normal(torch.tensor([3.0, -1.0]), torch.tensor([2.0, 0.5])), 1
    )
    x = truth.sample((10,))
    torch.testing.assert_close(model.log_prob(x), truth.log_prob(x), atol=1e-4, rtol=0)


def test_exact_trace_equals_hutchinsons_estimate_within_its_standard_error():
    model = random_model(3, trace="hutchinson", rtol=1e-6, atol=1e-6)
    x = torch.tensor([[0.3, -0.2, 0.8]])
    exact = float(model.log_prob(x)[0])
    probes = 2000
    est = model.log_likelihood_rows(x.expand(probes, 3), generator=torch.Generator().manual_seed(2))
    mean, se = float(est.mean()), float(est.std() / math.sqrt(probes))
    assert se > 1e-4  # the probes do vary: a test that could not fail would see se = 0
    assert abs(mean - exact) < 4 * se, (mean, se, exact)
    assert model.likelihood_kind == HUTCHINSON_ESTIMATE


def test_auto_trace_is_exact_for_small_dimensions_only():
    assert fm(EXACT_TRACE_MAX_DIM).likelihood_kind == "exact"
    assert fm(EXACT_TRACE_MAX_DIM + 1).likelihood_kind == HUTCHINSON_ESTIMATE
    assert fm(64, trace="exact").likelihood_kind == "exact"


def test_encode_inverts_decode_to_solver_tolerance():
    model = random_model(2, rtol=1e-7, atol=1e-7)
    z = torch.randn(50, 2, generator=torch.Generator().manual_seed(0))
    x = model.decode(z)
    assert float((x - z).abs().max()) > 0.1  # the field moves the points
    torch.testing.assert_close(model.encode(x), z, atol=1e-4, rtol=0)


@pytest.mark.parametrize("n", [0, 1, 7, 100])
def test_sample_has_exactly_n_rows(n):
    model = random_model(2)
    y = model.sample(n, generator=torch.Generator().manual_seed(0))
    assert y.shape == (n, 2) and bool(torch.isfinite(y).all())
    assert model.sampling_cost()["nfe"] >= (6 if n else 0)


def test_fixed_step_solvers_take_their_steps_and_agree_with_the_adaptive_one():
    model = random_model(2, rtol=1e-7, atol=1e-7)
    z = torch.randn(30, 2, generator=torch.Generator().manual_seed(0))
    ref = model.decode(z)
    errors = {}
    for solver, per_step in (("euler", 1), ("midpoint", 2), ("rk4", 4)):
        model.set_sampling(solver=solver, steps=200)
        x = model.decode(z)
        assert model.last_nfe == per_step * 200
        errors[solver] = float((x - ref).abs().max())
    # each close to the adaptive solve; the log-time feature changes the field within 10⁻³ of
    # t = 1, inside the last fixed step, so the orders do not separate cleanly here
    assert max(errors.values()) < 1e-3 and errors["rk4"] <= errors["euler"], errors


@pytest.mark.parametrize("batch", [2, 5, 7])
def test_ot_pairing_is_the_exact_optimal_permutation(batch):
    g = torch.Generator().manual_seed(batch)
    x0, x1 = torch.randn(batch, 2, generator=g), torch.randn(batch, 2, generator=g) * 2 + 1
    perm = ot_pairing(x0, x1)
    assert sorted(perm.tolist()) == list(range(batch))  # a permutation
    cost = lambda p: float((x0.double()[list(p)] - x1.double()).square().sum())  # noqa: E731
    best = min(itertools.permutations(range(batch)), key=cost)
    assert cost(perm.tolist()) == pytest.approx(cost(best), rel=1e-9)
    # POT's exact transport cost of the uniform measures is the same optimum (divided by B)
    c = ot.dist(x1.double().numpy(), x0.double().numpy())
    w = np.full(batch, 1 / batch)
    assert cost(perm.tolist()) / batch == pytest.approx(ot.emd2(w, w, c), rel=1e-9)
    assert cost(perm.tolist()) <= cost(range(batch)) + 1e-12


def test_ot_pairing_by_blocks_is_exact_within_each_block():
    g = torch.Generator().manual_seed(1)
    x0, x1 = torch.randn(10, 2, generator=g), torch.randn(10, 2, generator=g)
    perm = ot_pairing(x0, x1, block=4)  # blocks of rows 0–3, 4–7, 8–9
    for lo, hi in ((0, 4), (4, 8), (8, 10)):
        part = perm[lo:hi]
        assert sorted(part.tolist()) == list(range(lo, hi))
        torch.testing.assert_close(part - lo, ot_pairing(x0[lo:hi], x1[lo:hi]))


def test_ot_pairing_lowers_the_batch_cost_against_independent_pairs():
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(256, 2, generator=g), torch.randn(256, 2, generator=g)
    perm = ot_pairing(x0, x1)
    # independent pairs of two N(0, I) batches cost about 2·d per pair; matched ones far less
    assert float((x0[perm] - x1).square().sum()) < 0.2 * float((x0 - x1).square().sum())


def test_training_with_the_ot_coupling_pairs_each_batch_by_blocks():
    # 200 rows: three full blocks of OT_BLOCK and a shorter last one
    x = 3 * torch.randn(200, 2, generator=torch.Generator().manual_seed(0))
    independent = fm(2, hidden=[8], reference=0)
    coupled = fm(2, hidden=[8], coupling="ot")
    for model in (independent, coupled):
        model.prepare(x)
    x1, x0, t, _ = independent.prepare_batch(x, generator=torch.Generator().manual_seed(5))
    y1, y0, u, _ = coupled.prepare_batch(x, generator=torch.Generator().manual_seed(5))
    # the same draws, x₀ re-assigned to the rows by the exact pairing within each block
    assert torch.equal(x1, y1) and torch.equal(t, u)
    perm = ot_pairing(x0, x1, block=OT_BLOCK)
    assert torch.equal(y0, x0[perm]) and not torch.equal(y0, x0)
    for lo in range(0, 200, OT_BLOCK):
        assert sorted(perm[lo : lo + OT_BLOCK].tolist()) == list(range(lo, min(lo + OT_BLOCK, 200)))
    gen = torch.Generator().manual_seed(5)
    paired = coupled.loss(x, generator=gen)["path_length"]
    gen = torch.Generator().manual_seed(5)
    assert paired < 0.5 * independent.loss(x, generator=gen)["path_length"]


def _path(b: int, d: int, sigma: float, seed: int = 0):
    """x₁ (b, d) from two clusters, x₀ ~ N(0, I), t ∈ (0, 1) weighted to 1 as training draws it,
    and x_t = t·x₁ + (1 − (1 − σ)t)·x₀."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[-1.0] * d, [1.0] * d])
    x1 = centres[torch.randint(0, 2, (b,), generator=g)] + 0.1 * torch.randn(b, d, generator=g)
    x0 = torch.randn(b, d, generator=g)
    t = (1 - (1 - torch.rand(b, generator=g)) ** 3).clamp(max=1 - 1e-4)
    xt = t[:, None] * x1 + (1 - (1 - sigma) * t[:, None]) * x0
    return x1, x0, t, xt


@pytest.mark.parametrize("sigma", [0.0, 0.1])
def test_stable_target_is_the_posterior_mean_of_u_over_its_reference_set(sigma):
    b, d, reference = 96, 3, 32
    x1, x0, t, xt = _path(b, d, sigma)
    got = stable_target(x1, x0, t, sigma, reference).double()
    # independently: weights ∝ N(x_t,i; t_i·x₁ⱼ, s_i² I) over the block, in float64
    x1d, xtd, td = x1.double(), xt.double(), t.double()
    s = 1 - (1 - sigma) * td
    for i in range(0, b, reference):
        rows = slice(i, i + reference)
        log_w = (
            torch.distributions.Normal(td[rows, None, None] * x1d[None, rows], s[rows, None, None])
            .log_prob(xtd[rows, None])
            .sum(-1)
        )  # (R, R): row i, reference j
        w = torch.softmax(log_w, dim=1)
        truth = (w @ x1d[rows] - (1 - sigma) * xtd[rows]) / s[rows, None]
        torch.testing.assert_close(got[rows], truth, atol=1e-3, rtol=1e-3)  # float32 ÷ s
    # it is not the conditional target: several rows share their posterior with others
    assert float((got - (x1 - (1 - sigma) * x0)).abs().max()) > 0.1


def test_stable_target_is_the_conditional_target_where_the_posterior_is_the_row():
    x1, x0, t, _ = _path(64, 2, 0.0, seed=1)
    t = torch.where(torch.arange(64) % 2 == 0, torch.ones(64), t)  # t = 1 on even rows
    got = stable_target(x1, x0, t, 0.0, 64)
    assert torch.equal(got[::2], (x1 - x0)[::2])  # exactly, with no 0/0 at s = 0
    assert torch.isfinite(got).all()


def test_stable_target_is_closer_to_the_marginal_field_than_the_conditional_one():
    # data N(m, c²I): the marginal field is m + (t·c² − s)/(t²c² + s²)·(x − t·m) with s = 1 − t
    g = torch.Generator().manual_seed(3)
    b, m, c = 4096, torch.tensor([2.0, -1.0]), 0.5
    x1 = m + c * torch.randn(b, 2, generator=g)
    x0 = torch.randn(b, 2, generator=g)
    t = torch.rand(b, generator=g) * 0.98
    s = 1 - t
    xt = t[:, None] * x1 + s[:, None] * x0
    field = m + ((t * c**2 - s) / (t**2 * c**2 + s**2))[:, None] * (xt - t[:, None] * m)
    conditional = (x1 - x0 - field).square().mean()
    stable = (stable_target(x1, x0, t, 0.0, 512) - field).square().mean()
    assert float(stable) < 0.05 * float(conditional), (float(stable), float(conditional))


def test_defaults_follow_the_kind_of_data():
    points, images = fm(2), fm(64, image_shape=(8, 8))
    for model, rec in ((points, RECOMMENDED), (images, RECOMMENDED_IMAGES)):
        config = model.get_config()
        for key in ("hidden", "frequencies", "reference"):
            assert config[key] == rec["model"][key], key
    assert fm(2, frequencies=0, reference=0, hidden=[16]).get_config()["reference"] == 0
    # a model stored before these settings existed loads as it was built: neither lever
    stored = {k: v for k, v in points.get_config().items()
              if k not in ("net", "frequencies", "reference")}  # fmt: skip
    old = FlowMatching.from_config(stored)
    assert (old.config.net, old.config.frequencies, old.config.reference) == ("mlp", 0, 0)
    assert old.field.net.linears[0].in_features == 2 + 2 + 4 * 8
    # the stable target is a posterior under independent pairs: not with the OT coupling
    assert fm(2, coupling="ot").get_config()["reference"] == 0
    with pytest.raises(ConfigError, match="reference = 64 needs coupling = independent"):
        fm(2, coupling="ot", reference=64)


class InterruptedFM(FlowMatching):
    """Sends itself SIGINT during a chosen global step, as a user's Ctrl-C would."""

    def __init__(self, config, at_step=-1):
        super().__init__(config)
        self.at_step, self.calls, self.seen, self.used = at_step, 0, [], 0

    def loss(self, x, *, prepared=None, **kwargs):
        self.used += prepared is not None  # training steps that took the prepared batch
        return super().loss(x, prepared=prepared, **kwargs)

    def prepare_batch(self, x, *, generator):
        self.seen.append(x[0].tolist())  # which batches were prepared, in order
        return super().prepare_batch(x, generator=generator)

    def training_step(self, x, optimizers, cfg, **kwargs):
        self.calls += 1
        self.threads = torch.get_num_threads()
        if self.calls == self.at_step:
            os.kill(os.getpid(), signal.SIGINT)
        return super().training_step(x, optimizers, cfg, **kwargs)


def _prefetching_model(coupling="ot", **kwargs) -> InterruptedFM:
    with seeded(0):
        reference = {"reference": 32} if coupling == "independent" else {}
        config = FlowMatchingConfig(dim=2, hidden=[16, 16], coupling=coupling, frequencies=2,
                                    **reference)  # fmt: skip
        return InterruptedFM(config, **kwargs)


@pytest.mark.parametrize("coupling", ["ot", "independent"], ids=["ot", "stable-target"])
@pytest.mark.parametrize("forked", [True, False], ids=["process", "thread"])
def test_batches_prepared_ahead_change_nothing_and_resume_exactly(
    tmp_path, monkeypatch, forked, coupling
):
    monkeypatch.setattr(prefetch, "can_fork", lambda device: forked)
    make = functools.partial(_prefetching_model, coupling)
    x = torch.randn(300, 2, generator=torch.Generator().manual_seed(0))
    cfg = TrainConfig(epochs=3, batch_size=64, seed=4)  # 5 steps an epoch, the last of 44 rows
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # so that one fewer is visible on any host
    try:
        ahead = make()
        h_ahead = fit(ahead, x, cfg)
        # one intra-op thread fewer while training, the preparing process's core; then restored
        assert ahead.threads == 1 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    # every step trained on a prepared batch; a forked child prepared them out of sight
    assert ahead.calls == 15 and ahead.used == 15
    inline = make()
    h_inline = fit(inline, x, TrainConfig(**{**cfg.to_dict(), "prefetch": False}))
    assert len(inline.seen) == 15 and inline.used == 15
    # each batch prepared once, in training order, here only on the thread
    assert ahead.seen == ([] if forked else inline.seen)
    assert [r["loss"] for r in h_ahead] == [r["loss"] for r in h_inline]
    for a, b in zip(ahead.state_dict().values(), inline.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    stopped = make(at_step=8)  # epoch 2, step 3 of 5
    with pytest.raises(Interrupted, match=r"at epoch 2, step 3 of 5"):
        fit(stopped, x, cfg, run_dir=tmp_path)
    resumed = make()
    h_resumed = fit(resumed, x, cfg, run_dir=tmp_path, resume=True)
    assert [r["loss"] for r in h_resumed] == [r["loss"] for r in h_ahead]
    for a, b in zip(ahead.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_the_ot_pairing_and_the_stable_target_are_prepared_ahead():
    assert fm(2, coupling="ot").prepares_batches
    assert fm(2).prepares_batches  # the stable target
    assert not fm(2, reference=0).prepares_batches
    assert not fm(64, image_shape=(8, 8)).prepares_batches  # neither, on images
    # the draws prepare_batch makes are those loss makes from the same generator
    model = fm(2, hidden=[8], reference=64)
    x = torch.randn(128, 2, generator=torch.Generator().manual_seed(0))
    model.prepare(x)
    a = model.prepare_batch(x, generator=torch.Generator().manual_seed(3))
    b = model.loss(x, generator=torch.Generator().manual_seed(99), prepared=a)  # not drawn from
    c = model.loss(x, generator=torch.Generator().manual_seed(3))
    assert torch.equal(b["loss"], c["loss"]) and torch.equal(b["path_length"], c["path_length"])
    d = model.loss(x, generator=torch.Generator().manual_seed(99))
    assert not torch.equal(b["loss"], d["loss"])


def test_a_run_stored_before_the_new_settings_resumes_and_samples_as_it_was_built(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["fit", "fm", "--data", "ring8", "-n", "300", "--epochs", "1", "--hidden", "16",
                 "--frequencies", "0", "--reference", "0", "--out", str(run)]) == 0  # fmt: skip
    # what such a run's config.json held: no net, frequencies or reference, in either section
    path = run / "config.json"
    stored = json.loads(path.read_text())
    for section in (stored["run"]["settings"], stored["model"]["config"]):
        for key in ("net", "frequencies", "reference"):
            del section[key]
    # a resume whose settings cannot hold the checkpoint is refused and leaves the run as it was
    wrong = json.loads(json.dumps(stored))
    wrong["run"]["settings"]["frequencies"] = 3
    path.write_text(json.dumps(wrong))
    before = path.read_bytes()
    capsys.readouterr()
    assert main(["fit", "--resume", str(run), "--epochs", "2"]) != 0
    assert "'field.net.0.weight' has shape" in capsys.readouterr().err
    assert path.read_bytes() == before
    path.write_text(json.dumps(stored))
    assert main(["fit", "--resume", str(run), "--epochs", "2"]) == 0
    assert load_run_config(run)["run"]["settings"]["frequencies"] == 0
    assert main(["sample", str(run), "-n", "3", "--out", str(tmp_path / "s.npy")]) == 0


def test_motion_carries_mu_to_the_samples():
    model = random_model(2)
    times = torch.linspace(0, 1, 5)
    path = model.motion(64, times, generator=torch.Generator().manual_seed(4))
    assert path.shape == (5, 64, 2)
    z = torch.randn(64, 2, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(path[0], z)
    torch.testing.assert_close(
        path[-1], model.sample(64, generator=torch.Generator().manual_seed(4)), atol=1e-4, rtol=0
    )
    with pytest.raises(ConfigError, match="increasing times in"):
        model.motion(3, torch.tensor([0.5, 0.2]))


def test_a_solver_over_its_budget_names_t_and_the_step_size():
    model = random_model(2, max_nfe=20)
    with pytest.raises(SolverError, match=r"budget of 20 evaluations and stopped at t = 0\.\d+ "
                                          r"with a step size of about"):  # fmt: skip
        model.sample(10, generator=torch.Generator().manual_seed(0))


class StiffField(nn.Module):
    """v(t, x) = −λ(x − cos 10t): explicit solvers need steps of about 1/λ to stay stable."""

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return -1e6 * (x - torch.cos(10 * t))


def test_a_stiff_field_stops_at_the_budget_instead_of_hanging():
    model = fm(2, max_nfe=500)
    model.field = StiffField()
    with pytest.raises(SolverError, match="the field is stiff there"):
        model.decode(torch.randn(4, 2, generator=torch.Generator().manual_seed(0)))


def test_non_finite_weights_stop_the_solve_with_t():
    model = random_model(2)
    with torch.no_grad():
        model.field.net.linears[0].weight[0, 0] = float("nan")
    with pytest.raises(SolverError, match=r"not finite at t = 0 "):
        model.sample(4, generator=torch.Generator().manual_seed(0))


def test_bad_settings_and_data_are_refused_by_name():
    with pytest.raises(ConfigError, match="unknown coupling 'sinkhorn'; known: independent, ot"):
        FlowMatchingConfig(coupling="sinkhorn")
    with pytest.raises(ConfigError, match=r"sigma = -0\.1 is not allowed"):
        fm(2, sigma=-0.1)
    with pytest.raises(ConfigError, match="unknown ODE solver"):
        fm(2).set_sampling(solver="bogus")
    with pytest.raises(DataError, match="NaN"):
        fm(2).log_prob(torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(DataError, match=r"must have shape \(n, 2\)"):
        fm(2).encode(torch.zeros(3, 5))
    with pytest.raises(ConfigError, match=r"frequencies = 40 is not allowed"):
        fm(2, frequencies=40)
    with pytest.raises(ConfigError, match=r"reference = -1 is not allowed"):
        fm(2, reference=-1)


@pytest.mark.parametrize("coupling", ["independent", "ot"])
def test_training_lowers_the_loss_and_fits_a_gaussian(coupling):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4000, 2, generator=g) * torch.tensor([0.5, 2.0]) + torch.tensor([1.0, -1.0])
    with seeded(0):
        model = fm(2, hidden=[64, 64], coupling=coupling)
    model.prepare(x)  # the loss is in standardised units, as training sees it
    with torch.no_grad():
        zero = float(model.loss(x, generator=torch.Generator().manual_seed(1))["loss"])
    cfg = TrainConfig(epochs=100, batch_size=1000, lr=1e-2, lr_schedule="cosine", seed=0)
    history = fit(model, x, cfg)
    assert history[-1]["loss"] < zero  # below the zero field's loss
    truth = torch.distributions.Independent(
        torch.distributions.Normal(torch.tensor([1.0, -1.0]), torch.tensor([0.5, 2.0])), 1
    )
    # seeded draws: the estimate's standard error is about 0.004 nats here. Measured (seed 3,
    # 4,000 draws): independent 0.021, OT 0.044 with the even features (isotropic: 0.022, 0.029)
    xt = torch.randn(4000, 2, generator=torch.Generator().manual_seed(3))
    xt = xt * torch.tensor([0.5, 2.0]) + torch.tensor([1.0, -1.0])
    with torch.no_grad():
        kl = float((truth.log_prob(xt) - model.log_prob(xt)).mean())
    assert abs(kl) < 0.05, kl


def test_fit_sample_and_evaluate_through_the_command_line(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["fit", "fm", "--data", "ring8", "-n", "600", "--epochs", "2", "--hidden", "32",
                 "--coupling", "ot", "--out", str(run)]) == 0  # fmt: skip
    code = main(["sample", str(run), "-n", "9", "--out", str(tmp_path / "s.npy"),
                 "--solver", "rk4", "--steps", "10"])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0 and "nfe 40" in out + err
    assert np.load(tmp_path / "s.npy").shape == (9, 2)
    assert main(["evaluate", str(run), "--data", "ring8", "-n", "400", "--json"]) == 0
    out, _ = capsys.readouterr()
    assert '"kl_to_truth_kind": "exact"' in out and '"sampling_nfe"' in out
    code = main(["sample", str(run), "-n", "9", "--out", str(tmp_path / "t.npy"),
                 "--max-nfe", "3"])  # fmt: skip
    _, err = capsys.readouterr()
    assert code != 0 and "budget of 3 evaluations" in err and not (tmp_path / "t.npy").exists()


def test_dequantised_digits_report_bits_per_dim_as_an_estimate(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["fit", "fm", "--data", "digits", "--epochs", "1", "--hidden", "64",
                 "--out", str(run)]) == 0  # fmt: skip
    # images take the image defaults, recorded in config.json: batches of 128, no features of x
    stored = load_run_config(run)
    assert stored["run"]["train"]["batch_size"] == RECOMMENDED_IMAGES["train"]["batch_size"]
    assert stored["run"]["settings"]["frequencies"] == 0
    assert stored["run"]["settings"]["reference"] == 0
    assert main(["evaluate", str(run), "--data", "digits", "--rows", "1700:", "--json"]) == 0
    out, _ = capsys.readouterr()
    assert f'"likelihood": "{HUTCHINSON_ESTIMATE}"' in out and '"bits_per_dim"' in out


@pytest.mark.parametrize("side", [8, 7])
def test_unet_field_maps_images_to_images_and_starts_at_zero(side):
    with seeded(0):
        field = UNetField(side, [8, 16])
    x, t = torch.randn(5, side * side), torch.rand(5)
    assert torch.equal(field(t, x), torch.zeros(5, side * side))  # the identity flow
    with torch.no_grad():
        field.out[-1].weight.normal_()
    v = field(t, x)
    assert v.shape == (5, side * side) and torch.isfinite(v).all()
    assert not torch.allclose(v, field(t * 0.5, x))  # it reads the time
    # a pixel's own value moves its output (GroupNorm makes every output read every pixel a
    # little, so locality is not checked)
    moved = x.clone()
    moved[:, 0] += 1.0
    changed = (field(t, moved) - v).abs().reshape(5, side, side)
    assert changed[:, 0, 0].min() > 0


def test_unet_trains_samples_and_scores_digits_through_the_command_line(tmp_path, capsys):
    run = tmp_path / "run"
    # a fixed-step solver for the run's figures and samples: the adaptive one's steps are many
    # on a barely trained field
    assert main(["fit", "fm", "--data", "digits", "--net", "unet", "--hidden", "8,16", "--epochs",
                 "2", "--solver", "euler", "--steps", "4", "--out", str(run)]) == 0  # fmt: skip
    stored = load_run_config(run)["run"]["settings"]
    assert stored["net"] == "unet" and stored["hidden"] == [8, 16] and stored["frequencies"] == 0
    # a bijection: its reconstruction error is the solver's, so no error-against-k figure
    figures = {p.name for p in (run / "figures").iterdir()}
    assert {"reconstructions.png", "latent.png", "samples.png", "loss.png"} <= figures
    assert "error_vs_k.png" not in figures
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert history[-1]["loss"] < min(history[0]["loss"], 1.9)  # the zero field scores about 2
    code = main(["sample", str(run), "-n", "4", "--out", str(tmp_path / "s.npy")])
    out, err = capsys.readouterr()
    assert code == 0 and "nfe 4" in out + err
    digits = np.load(tmp_path / "s.npy")
    assert digits.shape == (4, 64) and ((digits >= 0) & (digits <= 1)).all()
    assert main(["evaluate", str(run), "--data", "digits", "--rows", "1780:", "--json"]) == 0
    out, _ = capsys.readouterr()
    assert '"bits_per_dim"' in out
    with pytest.raises(ConfigError, match="needs square images"):
        fm(2, net="unet")
    with pytest.raises(ConfigError, match="use frequencies = 0 with net = unet"):
        fm(64, net="unet", frequencies=2, image_shape=(8, 8))


def test_marginal_density_at_every_time_equals_the_closed_form():
    m, s = torch.tensor([1.5, -0.5]), torch.tensor([0.3, 2.0])
    model = linear_model(m.tolist(), s.tolist())
    x = torch.randn(30, 2, generator=torch.Generator().manual_seed(5)) + m / 2
    for t in (0.0, 0.4, 1.0):
        scale = 1 - t + t * s  # x_t = (1 − t + t·s)·x₀ + t·m
        truth = torch.distributions.Independent(torch.distributions.Normal(t * m, scale), 1)
        torch.testing.assert_close(model.marginal_log_prob(x, t), truth.log_prob(x), atol=1e-3,
                                   rtol=0)  # fmt: skip
    with pytest.raises(ConfigError, match=r"t = 1\.5 is not allowed"):
        model.marginal_log_prob(x, 1.5)


def test_the_model_keeps_its_config_and_sampling_changes_it():
    model = fm(2, hidden=[8])
    assert model.config.dim == 2 and model.config.reference == RECOMMENDED["model"]["reference"]
    twin = FlowMatching.from_config(json.loads(json.dumps(model.get_config())))
    assert twin.config == model.config and model.get_config() == model.config.to_dict()
    model.set_sampling(solver="rk4", steps=7)
    assert model.config.solver == "rk4" and model.sampling_settings()["steps"] == 7
    with pytest.raises(ConfigError, match="trace is not a sampling setting"):
        model.set_sampling(trace="exact")
    with pytest.raises(ConfigError, match="dim must be set"):
        FlowMatching(FlowMatchingConfig())
    with pytest.raises(ConfigError, match=r"image_shape \(8, 8\) does not hold dim = 2 values"):
        fm(2, image_shape=(8, 8))


def nonlinear(t, y):
    """A field whose steps tell the methods apart: dy/dt = sin(3t)·y − y³/4 (a tuple state: the
    second part integrates the first's mean)."""
    if isinstance(y, tuple):
        return nonlinear(t, y[0]), y[0].mean(1)
    return torch.sin(3 * t) * y - y.pow(3) / 4


@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4"])
@pytest.mark.parametrize("state", ["tensor", "tuple"])
def test_the_host_timed_fixed_step_solve_takes_torchdiffeqs_steps(method, state):
    """The accelerator's fixed-step solve against torchdiffeq's own: the same grid, the same
    steps (RK4: the 3/8 rule), the same interpolation at times between grid points."""
    import torchdiffeq

    y = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    y0 = (y, torch.zeros(5)) if state == "tuple" else y
    times = [0.0, 0.13, 0.5, 1.0]  # 0.13 falls between the grid's points
    ours = fixed_step_solve(nonlinear, y0, times, method, 7)
    theirs = torchdiffeq.odeint(nonlinear, y0, torch.tensor(times), method=method,
                                options={"step_size": 1 / 7})  # fmt: skip
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    if method != "euler":  # and the methods differ, so the comparison can fail
        euler = fixed_step_solve(nonlinear, y0, times, "euler", 7)
        assert not torch.allclose(euler[0] if state == "tuple" else euler,
                                  theirs[0] if state == "tuple" else theirs, atol=1e-4)  # fmt: skip


def test_a_fixed_step_solve_on_an_accelerator_reads_the_device_once(meta_guard):
    """On ``meta`` (a stand-in for a GPU) the solve's only read is its finiteness check at the
    end: no step waits for the device."""
    from device_guard import META

    solver = Solver("rk4", 20, 1e-5, 1e-5, 10_000)
    with meta_guard:
        y, nfe = solver.solve(nonlinear, torch.zeros(4, 2, device=META), torch.tensor([0.0, 1.0]),
                              "test")  # fmt: skip
    assert nfe == 80 and y.shape == (2, 4, 2) and y.device == META
    assert len(meta_guard.reads) == 1, meta_guard.reads


def test_a_fixed_step_solve_over_its_budget_or_not_finite_is_a_solver_error():
    y0 = torch.ones(3, 2)
    with pytest.raises(SolverError, match=r"would take 80 evaluations, over its budget of 50"):
        Solver("rk4", 20, 1e-5, 1e-5, 50)._fixed(nonlinear, y0, torch.tensor([0.0, 1.0]), "x")
    blows_up = lambda t, y: y * float("inf")  # noqa: E731
    with pytest.raises(SolverError, match=r"x: the velocity field or the state became non-finite"):
        Solver("euler", 4, 1e-5, 1e-5, 50)._fixed(blows_up, y0, torch.tensor([0.0, 1.0]), "x")


@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4"])
def test_a_compiled_fixed_step_solve_is_the_eager_one_in_one_graph(method):
    """Each step through torch.compile (on CUDA: reduce-overhead, a CUDA graph replayed step
    after step): the same states as the eager solve at every time, and one graph for all seven
    steps, since the step's times are inputs, not constants it would recompile for."""
    import torch._dynamo.utils as dynamo_utils

    from pushforward.models.fm import ode

    y0 = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    times = [0.0, 0.13, 0.5, 1.0]
    eager = fixed_step_solve(nonlinear, y0, times, method, 7)
    torch._dynamo.reset()
    ode._CAPTURED.clear()
    dynamo_utils.counters.clear()
    compiled = fixed_step_solve(nonlinear, y0, times, method, 7, compile_mode="default")
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-6)
    assert dynamo_utils.counters["stats"]["unique_graphs"] == 1
    again = fixed_step_solve(nonlinear, -y0, times, method, 7, compile_mode="default")
    assert dynamo_utils.counters["stats"]["unique_graphs"] == 1  # and none for the next solve
    torch.testing.assert_close(again, fixed_step_solve(nonlinear, -y0, times, method, 7))


def test_a_fixed_step_solve_whose_step_fails_to_compile_goes_on_op_by_op(monkeypatch, caplog):
    import logging

    from pushforward.models.fm import ode

    def broken(fn, **kwargs):
        def call(*args, **kw):
            raise RuntimeError("no C++ compiler")

        return call

    monkeypatch.setattr(torch, "compile", broken)
    monkeypatch.setattr(ode, "_CAPTURED", {})
    y0 = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    with caplog.at_level(logging.WARNING, logger="pushforward"):
        out = fixed_step_solve(nonlinear, y0, [0.0, 1.0], "rk4", 7, compile_mode="default")
    assert "no C++ compiler" in caplog.text and "op by op" in caplog.text
    torch.testing.assert_close(out, fixed_step_solve(nonlinear, y0, [0.0, 1.0], "rk4", 7))
    caplog.clear()  # the failure is remembered: the next solve neither retries nor warns again
    with caplog.at_level(logging.WARNING, logger="pushforward"):
        fixed_step_solve(nonlinear, y0, [0.0, 1.0], "rk4", 7, compile_mode="default")
    assert caplog.text == ""


@pytest.mark.parametrize("state", ["tensor", "tuple"])
@pytest.mark.parametrize("grad", [False, True])
def test_sampling_solves_are_captured_where_the_training_step_is(monkeypatch, state, grad):
    """A fixed-step solve of a tensor without gradients (sampling) takes the device's compile
    mode (CUDA graphs on CUDA); the likelihood's augmented state, or a solve under autograd,
    runs op by op."""
    from pushforward.models.fm import ode

    asked, passed = [], []
    monkeypatch.setattr(ode, "compile_mode", lambda request, device: asked.append(device) or "x")
    monkeypatch.setattr(ode, "fixed_step_solve",
                        lambda *a, compile_mode: passed.append(compile_mode) or a[1])  # fmt: skip
    y = torch.zeros(4, 2)
    with torch.set_grad_enabled(grad):
        Solver("rk4", 5, 1e-5, 1e-5, 100)._fixed(
            nonlinear, y if state == "tensor" else (y, y[:, 0]), torch.tensor([0.0, 1.0]), "x"
        )
    captured = state == "tensor" and not grad
    assert passed == ["x" if captured else None]
    assert asked == ([y.device] if captured else [])

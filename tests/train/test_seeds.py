"""Several seeds as one stacked model (``fit_seeds``, ``fit --seeds N``): each member is the run
``fit`` makes with its seed (the same draws, the same weights to rounding), its folder resumes as
any run's does, and what cannot be stacked is refused by name."""

import dataclasses
import os
import signal

import pytest
import torch

from pushforward.cli import main
from pushforward.core import CheckpointError, ConfigError, Interrupted, TrainingError
from pushforward.data import load_data
from pushforward.models.registry import MODELS
from pushforward.runs import RunConfig, fit_run, fit_seed_runs, load_model, seed_folder
from pushforward.train import TrainConfig, fit, fit_seeds, read_metrics, seeded

STACKED = {
    "ae": ("ae", {"hidden": [16]}, 1e-6),
    # the single VAE run takes its hand-written gradients, the stack autograd's: rounding apart
    "vae-normal": ("vae", {"hidden": [16], "prior": "normal", "kl_schedule": "linear"}, 1e-4),
    "vae-vamp": ("vae", {"hidden": [16], "prior_components": 8}, 1e-6),
    "fm-prepared": ("fm", {"hidden": [16, 16]}, 1e-6),  # the stable target, prepared
    "fm-drawn": ("fm", {"hidden": [16, 16], "reference": 1}, 1e-6),  # drawn in the loss
}


def members(name: str, settings: dict, seeds: range, **train):
    """Models, data and settings of one setting with the seeds ``seeds`` (data drawn with each)."""
    data = [load_data("ring8", n=200, generator=torch.Generator().manual_seed(s)) for s in seeds]
    models = []
    for s, ds in zip(seeds, data, strict=True):
        with seeded(s):
            models.append(MODELS[name].config(**settings).build(ds))
    cfg = TrainConfig(epochs=2, batch_size=48, lr_schedule="cosine", **train)
    return models, [ds.x for ds in data], [dataclasses.replace(cfg, seed=s) for s in seeds]


@pytest.mark.parametrize("case", list(STACKED))
def test_each_member_of_a_stack_is_the_run_fit_makes_with_its_seed(case):
    """Three seeds stacked against three runs of fit: the same metrics, the same weights to the
    rounding of batched products, and generators left in the same state (the same draws: a
    shuffle or noise drawn out of turn would move every weight by O(lr))."""
    name, settings, tol = STACKED[case]
    models, xs, cfgs = members(name, settings, range(3))
    singles, _, _ = members(name, settings, range(3))
    single_histories = [fit(m, x, c) for m, x, c in zip(singles, xs, cfgs, strict=True)]
    histories = fit_seeds(models, xs, cfgs)
    for stacked, single, h, h_single in zip(models, singles, histories, single_histories,
                                             strict=True):  # fmt: skip
        torch.testing.assert_close(stacked.state_dict(), single.state_dict(), rtol=tol, atol=tol)
        for record, expected in zip(h, h_single, strict=True):
            for k, v in expected.items():
                if k not in ("seconds", "samples_per_s"):
                    assert record[k] == pytest.approx(v, rel=1e-4, abs=1e-5), k
    # the members differ from each other: a stack that trained one model N times would not
    a, b = models[0].state_dict(), models[1].state_dict()
    assert any(not torch.allclose(a[k], b[k]) for k in a)


def test_each_member_is_clipped_by_its_own_gradient_norm():
    models, xs, cfgs = members("ae", {"hidden": [16]}, range(2), grad_clip=0.05)
    singles, _, _ = members("ae", {"hidden": [16]}, range(2), grad_clip=0.05)
    for m, x, c in zip(singles, xs, cfgs, strict=True):
        fit(m, x, c)
    fit_seeds(models, xs, cfgs)
    for stacked, single in zip(models, singles, strict=True):
        torch.testing.assert_close(stacked.state_dict(), single.state_dict(), rtol=1e-5, atol=1e-6)


def test_a_seeds_folder_is_an_ordinary_run_that_resumes_as_its_own_run_would(tmp_path):
    """fit --seeds 2 for 2 epochs, then --resume of seed 1's folder to 4 epochs, against seed 1
    fitted for 4 epochs on its own: the same weights, and the same metrics for every epoch."""
    # (a constant rate: a cosine over 2 epochs is not the first half of one over 4)
    flat = {"model": "vae", "data": "ring8", "n": 300, "hidden": [16], "prior_components": 8,
            "batch_size": 64, "seed": 0, "lr_schedule": "constant"}  # fmt: skip
    two = RunConfig.from_flat({**flat, "epochs": 2})
    folders = fit_seed_runs(two, 2, out=tmp_path / "stack", figures=False)
    assert folders == [seed_folder(tmp_path / "stack", s) for s in (0, 1)]
    fit_run(RunConfig.from_flat({**flat, "epochs": 4, "seed": 1}), out=folders[1], resume=True,
            figures=False)  # fmt: skip
    alone = fit_run(RunConfig.from_flat({**flat, "epochs": 4, "seed": 1}), out=tmp_path / "alone",
                    figures=False)  # fmt: skip
    resumed, expected = load_model(folders[1]), load_model(alone)
    torch.testing.assert_close(resumed.state_dict(), expected.state_dict(), rtol=1e-5, atol=1e-6)
    for got, want in zip(read_metrics(folders[1]), read_metrics(alone), strict=True):
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-5)
    with pytest.raises(CheckpointError, match="already holds a run"):
        fit_seed_runs(two, 2, out=tmp_path / "stack", figures=False)


@pytest.mark.parametrize("finite_checks", ["step", "epoch"])
def test_a_non_finite_term_names_the_seed_the_term_and_the_step(finite_checks):
    """Checked at every step (the CPU) or kept on the device and read at the epoch's end (off
    the CPU, ``finite_checks=epoch``): the same seed, term and step either way."""
    models, xs, cfgs = members("ae", {"hidden": [16]}, range(3), finite_checks=finite_checks)
    xs[1] = xs[1].clone()
    xs[1][:, 0] = float("nan")
    with pytest.raises(TrainingError, match=r"loss term of seed 1 became (nan|non-finite) at "
                       r"epoch 1, step 1; training stopped \(nothing saved"):  # fmt: skip
        fit_seeds(models, xs, cfgs)


@pytest.mark.parametrize(
    ("name", "settings", "why"),
    [("gan", {"hidden": [16]}, "it takes its own step"),
     ("flow", {"layers": 1, "hidden": [8]}, "its loss branches on the data's values")],
)  # fmt: skip
def test_models_whose_step_or_loss_cannot_be_stacked_are_refused(name, settings, why, tmp_path):
    models, xs, cfgs = members(name, settings, range(2))
    with pytest.raises(ConfigError, match=rf"cannot be trained as a stack of seeds \({why}"):
        fit_seeds(models, xs, cfgs)
    # refused before any folder is written: nothing is left to block another try
    rc = RunConfig.from_flat({"model": name, "data": "ring8", "n": 200, "epochs": 1, **settings})
    with pytest.raises(ConfigError, match=r"cannot be trained as a stack of seeds"):
        fit_seed_runs(rc, 2, out=tmp_path / "stack", figures=False)
    assert not (tmp_path / "stack").exists() or not any((tmp_path / "stack").iterdir())


def test_conv_nets_are_refused_naming_the_reason():
    ds = load_data("digits")
    with seeded(0):
        models = [MODELS["ae"].config(net="conv").build(ds) for _ in range(2)]
    cfgs = [TrainConfig(epochs=1, seed=s) for s in range(2)]
    with pytest.raises(ConfigError, match=r"with convolutions cannot be trained as a stack"):
        fit_seeds(models, [ds.x, ds.x], cfgs)


def test_members_of_different_settings_or_the_same_seed_are_refused():
    models, xs, cfgs = members("ae", {"hidden": [16]}, range(2))
    other, _, _ = members("ae", {"hidden": [8]}, range(1))
    with pytest.raises(ConfigError, match=r"share one setting; they differ in hidden"):
        fit_seeds([models[0], other[0]], xs, cfgs)
    with pytest.raises(ConfigError, match=r"share their training settings"):
        fit_seeds(models, xs, [cfgs[0], dataclasses.replace(cfgs[1], lr=0.5)])
    with pytest.raises(ConfigError, match=r"need different seeds"):
        fit_seeds(models, xs, [cfgs[0], cfgs[0]])
    with pytest.raises(ConfigError, match=r"data of one shape"):
        fit_seeds(models, [xs[0], xs[1][:50]], cfgs)


def test_fit_seeds_on_the_command_line_writes_runs_that_sample(tmp_path, capsys):
    out = tmp_path / "ae"
    assert main(["fit", "ae", "--data", "ring8", "-n", "200", "--hidden", "16", "--epochs", "2",
                 "--seeds", "2", "--seed", "5", "--out", str(out)]) == 0  # fmt: skip
    assert "2 runs written" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["seed-5", "seed-6"]
    assert all((out / s / "figures" / "loss.png").is_file() for s in ("seed-5", "seed-6"))
    bare = tmp_path / "bare"  # --no-figures reaches every member's folder
    assert main(["fit", "ae", "--data", "ring8", "-n", "200", "--hidden", "16", "--epochs", "1",
                 "--seeds", "2", "--no-figures", "--out", str(bare)]) == 0  # fmt: skip
    assert [(p / "figures").exists() for p in sorted(bare.iterdir())] == [False, False]
    capsys.readouterr()
    assert main(["encode", str(out / "seed-6"), "--data", "ring8", "-n", "10",
                 "--out", str(tmp_path / "z.npy")]) == 0  # fmt: skip
    for args, message in [
        (["--seeds", "2", "--resume", str(out / "seed-5")], "--seeds fits new runs"),
        (["--seeds", "2", "--snapshot-every", "1"], "snapshot_every keeps samples"),
        (["--seeds", "2", "--tensorboard", str(tmp_path / "tb")], "--tensorboard logs one run"),
        (["--seeds", "0"], "must be > 0"),
        (["--seeds", "65"], "use an integer from 1 to 64"),
    ]:
        fresh = ["vae", "--data", "ring8", "--out", str(tmp_path / "x")]
        base = [] if "--resume" in args else fresh
        try:
            code = main(["fit", *base, *args])
        except SystemExit as e:  # refused by the parser
            code = e.code
        assert code == 2, args
        assert message in capsys.readouterr().err, args


class _Interrupting:
    """A progress report that sends SIGINT to this process at its n-th step."""

    def __init__(self, at_step: int):
        self.at_step, self.steps = at_step, 0

    def start(self, epochs, steps_per_epoch, first_epoch):
        pass

    def step(self, loss):
        self.steps += 1
        if self.steps == self.at_step:
            os.kill(os.getpid(), signal.SIGINT)

    def epoch(self, record):
        pass

    def close(self):
        pass


def test_a_signal_stops_the_stack_between_steps_and_each_seed_resumes_from_its_last_epoch(
    tmp_path,
):
    """Ctrl-C in the second epoch: the stack stops between two steps, says so, and leaves each
    seed's checkpoint of the first epoch, from which ``fit --resume`` ends where seed's own
    uninterrupted run ends."""
    models, xs, cfgs = members("ae", {"hidden": [16]}, range(2))  # 200 rows: 5 steps an epoch
    folders = [tmp_path / f"seed-{s}" for s in range(2)]
    with pytest.raises(Interrupted, match=r"at epoch 2, step 2; each seed's last checkpoint"):
        fit_seeds(models, xs, cfgs, run_dirs=folders, progress=_Interrupting(at_step=7))
    assert [r["epoch"] for r in read_metrics(folders[1])] == [1]
    singles, _, _ = members("ae", {"hidden": [16]}, range(2))
    fit(singles[1], xs[1], cfgs[1])
    fresh, _, _ = members("ae", {"hidden": [16]}, range(5, 7))
    fit(fresh[1], xs[1], cfgs[1], run_dir=folders[1], resume=True)
    torch.testing.assert_close(fresh[1].state_dict(), singles[1].state_dict(), rtol=1e-5,
                               atol=1e-6)  # fmt: skip

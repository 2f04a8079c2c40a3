"""One test template for every model in the registry: fit through the command line, load, sample,
evaluate, round-trip the config and the state, resume. A model added to ``MODELS`` is tested here
without a line of its own; the README's "Adding a model" example is run through it too."""

import contextlib
import json
import os
import re
import signal
from dataclasses import fields
from pathlib import Path

import pytest
import torch
from torch import Tensor

from device_guard import META
from pushforward.cli import build_parser, main
from pushforward.core import CheckpointError, ConfigError, Interrupted, Model
from pushforward.data import load_data
from pushforward.models.fm.ode import Solver
from pushforward.models.registry import MODELS
from pushforward.nets import apply_layers
from pushforward.runs import (
    RESULT_KEYS,
    RunConfig,
    codes,
    fit_run,
    load_model,
    load_run_config,
    manifold,
    sample_run,
    write_figures,
)
from pushforward.train import DeferredChecks, TrainConfig, deferring

README = Path(__file__).resolve().parents[2] / "README.md"
QUICK = ["--data", "digits"]


# flow matching's image default is a 3×1,024 field, whose exact log-density on 64-pixel digits
# takes 64 backward passes per evaluation: a small one keeps the contract checks quick
SMALL = {"fm": ["--hidden", "64,64"]}


def quick(name: str) -> list[str]:
    """Flags for a short fit of ``name``: two epochs where the model is trained."""
    if not MODELS[name].trained:
        return QUICK
    return [*QUICK, "--epochs", "2", "--batch-size", "256", *SMALL.get(name, [])]


def cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def fit_quick(capsys, name: str, folder: Path, *extra) -> Path:
    code, _, err = cli(capsys, "fit", name, *quick(name), *extra, "--out", folder)
    assert code == 0, err
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One quick run folder per registered model, fitted once for the module."""
    made: dict[str, Path] = {}

    def get(name: str, capsys) -> Path:
        if name not in made:
            made[name] = fit_quick(capsys, name, tmp_path_factory.mktemp(name) / "run")
        return made[name]

    return get


def check_contract(model: Model, folder: Path) -> None:
    """What the contract promises of a fitted model, for the capabilities it declares."""
    x = torch.rand(5, model.dim)
    z = torch.randn(5, model.latent)
    with torch.no_grad():
        assert model.decode(z).shape == (5, model.dim)
        if model.has_encoder:
            assert model.encode(x).shape == (5, model.latent)
        else:
            with pytest.raises(ConfigError, match="no encoder"):
                model.encode(x)
        if model.has_exact_density:
            lp = model.log_prob(x)
            assert lp.shape == (5,) and bool(torch.isfinite(lp).all())
        layers = model.decoder_layers()  # the portable program, where there is one, is decode
        if layers is not None:
            torch.testing.assert_close(apply_layers(layers, z), model.decode(z), atol=1e-5, rtol=0)
    if model.generative:
        for n in (1, 7, 64):
            y = sample_run(folder, n, seed=3)
            assert y.shape == (n, model.dim) and bool(torch.isfinite(y).all())
        torch.testing.assert_close(sample_run(folder, 7, seed=3), sample_run(folder, 7, seed=3))
    else:
        with pytest.raises(ConfigError, match="cannot sample; models that can: "):
            sample_run(folder, 7)


@pytest.mark.parametrize("name", list(MODELS))
def test_fit_load_sample_through_the_command_line(capsys, runs, name):
    folder = runs(name, capsys)
    model = load_model(folder)
    assert type(model) is MODELS[name].cls
    check_contract(model, folder)


@pytest.mark.parametrize("name", list(MODELS))
def test_evaluate_json_keys_are_all_documented(capsys, runs, name):
    folder = runs(name, capsys)
    code, out, err = cli(capsys, "evaluate", folder, "--data", "digits", "--rows", "1500:",
                         "--iwae-k", 8, "--json")  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    undocumented = sorted(set(result) - set(RESULT_KEYS))
    assert not undocumented, f"document these keys in evaluate_keys or RESULT_KEYS: {undocumented}"
    readme = README.read_text(encoding="utf-8")
    missing = [k for k in result if f"`{k}`" not in readme]
    assert not missing, f"the README's evaluate section lacks {missing}"
    code, text, err = cli(capsys, "evaluate", folder, "--data", "digits", "--rows", "1500:",
                          "--iwae-k", 8)  # fmt: skip
    assert code == 0, err
    for key, value in result.items():  # every number of the JSON is printed in the text too
        label = RESULT_KEYS[key].label
        if isinstance(value, float) and label:
            assert label in text, (key, text)


@pytest.mark.parametrize("name", list(MODELS))
def test_config_and_state_round_trip(capsys, runs, name):
    folder = runs(name, capsys)
    stored = load_run_config(folder)
    rc = RunConfig.from_dict(stored["run"])
    assert rc.to_dict() == stored["run"]
    assert RunConfig.from_flat(rc.to_flat()).to_dict() == stored["run"]
    model = load_model(folder)
    spec = MODELS[name]
    again = spec.cls.from_config(model.get_config())
    assert again.get_config() == model.get_config()
    again.load_state(model.get_state())
    state_a, state_b = model.get_state(), again.get_state()
    assert state_a.keys() == state_b.keys()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    shapes = spec.cls.state_shapes(model.get_config(), tuple(stored["data"]["shape"]))
    assert shapes == {k: tuple(v.shape) for k, v in state_a.items()}


class _StopInSecondEpoch:
    """Training progress that sends this process SIGINT as the first epoch ends, so that the
    run stops (with a checkpoint) one step into the second: as a user's Ctrl-C would."""

    def start(self, epochs, steps_per_epoch, first_epoch):
        pass

    def step(self, loss):
        pass

    def epoch(self, record):
        if record["epoch"] == 1:
            os.kill(os.getpid(), signal.SIGINT)

    def close(self):
        pass


@pytest.mark.parametrize("name", [n for n, spec in MODELS.items() if spec.trained])
def test_resume_ends_where_an_uninterrupted_run_ends(capsys, tmp_path, runs, name):
    straight = runs(name, capsys)
    rc = RunConfig.from_dict(load_run_config(straight)["run"])
    part = tmp_path / "part"
    with pytest.raises(Interrupted, match="stopped by SIGINT at epoch 2, step 1"):
        fit_run(rc, out=part, progress=_StopInSecondEpoch(), figures=False)
    code, _, err = cli(capsys, "fit", "--resume", part)
    assert code == 0, err
    a, b = load_model(straight).get_state(), load_model(part).get_state()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", list(MODELS))
def test_fit_logs_to_tensorboard_through_the_command_line(capsys, tmp_path, name):
    """Every epoch's scalars, and samples of image models that declare themselves generative;
    a model that cannot sample (the autoencoder) logs its scalars alone."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = tmp_path / "board"
    once = ["--epochs", "1"] if MODELS[name].trained else []  # the samples come at its end
    fit_quick(capsys, name, tmp_path / "run", *once, "--no-figures", "--tensorboard", board)
    if not MODELS[name].trained:  # fitted in closed form: no epochs to log
        return
    events = EventAccumulator(str(board))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1]
    logged_images = "samples" in events.Tags()["images"]
    assert logged_images == MODELS[name].cls.generative


@pytest.mark.parametrize("name", list(MODELS))
def test_every_setting_has_a_flag_and_help(name):
    parser = build_parser()
    fit = parser._subparsers._group_actions[0].choices["fit"]
    flags = {s: a for a in fit._actions for s in a.option_strings}
    for f in fields(MODELS[name].config):
        flag = "--" + f.name.replace("_", "-")
        if f.metadata.get("derived"):  # filled from the data when the model is built: no flag
            assert flag not in flags, flag
            continue
        assert flag in flags, flag
        assert f.metadata.get("help"), f"{name}.{f.name} has no help text"
        assert name in flags[flag].help


def test_a_setting_of_another_model_is_refused_by_name(capsys, tmp_path):
    code, _, err = cli(capsys, "fit", "vae", *QUICK, "--critic-steps", 2, "--out", tmp_path / "r")
    assert code == 2
    assert "critic_steps is not a setting of vae (it is one of gan)" in err
    code, _, err = cli(capsys, "fit", "pca", *QUICK, "--epochs", 2, "--out", tmp_path / "r")
    assert code == 2
    assert "epochs is a training setting, but pca is fitted in closed form" in err
    assert not (tmp_path / "r").exists()


# --- the README's "Adding a model" example ------------------------------------------------------


def readme_example() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Adding a model", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_model_plugs_in_with_one_registry_line(capsys, tmp_path, monkeypatch):
    namespace: dict = {}
    exec(compile(readme_example(), "README.md", "exec"), namespace)
    spec = namespace["SPEC"]
    monkeypatch.setitem(MODELS, "gauss", spec)  # the one registry line
    folder = fit_quick(capsys, "gauss", tmp_path / "run")
    model = load_model(folder)
    check_contract(model, folder)
    x = torch.randn(50, 64, dtype=torch.float64)
    reference = torch.distributions.MultivariateNormal(model.mean, model.covariance)
    torch.testing.assert_close(model.log_prob(x), reference.log_prob(x))
    code, out, err = cli(capsys, "evaluate", folder, "--data", "digits", "--json")
    assert code == 0, err
    assert json.loads(out)["exact"] is True


# --- loading checks the weights file's header before it allocates -------------------------------


def _edit_config(folder: Path, **settings) -> None:
    path = folder / "config.json"
    cfg = json.loads(path.read_text())
    cfg["model"]["config"].update(settings)
    path.write_text(json.dumps(cfg))


def test_a_config_asking_for_an_absurd_model_is_refused_before_anything_is_allocated(
    capsys, tmp_path, monkeypatch
):
    import pushforward.runs.folder as runs_module

    folder = fit_quick(capsys, "ae", tmp_path / "run", "--hidden", "8")
    _edit_config(
        folder, hidden=[65_536, 65_536]
    )  # 65,536-wide layers in the encoder and decoder: 34 GB
    monkeypatch.setattr(runs_module, "load_tensors", pytest.fail)  # no tensor may be read
    with pytest.raises(
        CheckpointError, match=r"asks for a model of 32\.0 GiB, more than the 4 GiB"
    ):
        load_model(folder)


def test_weights_that_do_not_fit_the_config_are_refused_from_the_header_alone(
    capsys, tmp_path, monkeypatch
):
    import pushforward.runs.folder as runs_module

    folder = fit_quick(capsys, "ae", tmp_path / "run", "--hidden", "8")
    _edit_config(folder, hidden=[9])
    monkeypatch.setattr(runs_module, "load_tensors", pytest.fail)
    shapes = r"'encoder.0.weight' has shape \(8, 64\), the model's \(9, 64\)"
    with pytest.raises(CheckpointError, match=shapes):
        load_model(folder)
    code, _, err = cli(capsys, "sample", folder, "-n", 4, "--out", tmp_path / "s.npy")
    assert code == 2 and err.startswith("pushforward: error: ") and len(err.splitlines()) == 1


# --- every method on the model's device ---------------------------------------------------------

DEVICE_SETTINGS: dict[str, dict] = {
    "ae": {"hidden": [16]},
    "vae": {"hidden": [16]},
    "gan": {"hidden": [16], "critic_hidden": [16]},
    "flow": {"layers": 2, "hidden": [16], "bins": 4},
    "fm": {"hidden": [16, 16]},
}
"""Small nets for the device tests."""

META_SETTINGS: dict[str, dict] = {
    "vae": {"prior": "normal"},
    "gan": {"jacobian_truncation": 0.0},
    "fm": {"solver": "euler", "steps": 2},
}
"""What changes on ``meta``, where every value reads as zero: the VAE's fitted mixture prior would
have zero weights, the GAN's truncation by rejection would accept nothing, an adaptive ODE solver
would never finish; these paths are checked on a real device (``--device cuda``)."""


def _one_step(self, rhs, y0, times, what):
    """An ODE "solve" that evaluates the field once per time, for ``meta``: torchdiffeq builds
    its grid of steps from the values of the times, which ``meta`` tensors do not have."""
    t = times.to(y0[0] if isinstance(y0, tuple) else y0)
    ys = [y0]
    for ti in t[1:]:
        dy = rhs(ti, ys[-1])
        ys.append(tuple(a + b for a, b in zip(ys[-1], dy, strict=True)) if isinstance(y0, tuple)
                  else ys[-1] + dy)  # fmt: skip
    if isinstance(y0, tuple):
        return tuple(torch.stack(parts) for parts in zip(*ys, strict=True)), len(t) - 1
    return torch.stack(ys), len(t) - 1


def device_model(name: str, data: str, *, meta: bool = False) -> tuple[Model, Tensor]:
    """A small model ``name`` built, prepared (or fitted) on CPU data ``data``, and those data;
    ``meta``: with :data:`META_SETTINGS`."""
    ds = load_data(data, n=200)
    settings = {**DEVICE_SETTINGS.get(name, {}), **(META_SETTINGS.get(name, {}) if meta else {})}
    if not MODELS[name].trained and ds.dim == 2:
        settings["latent"] = 1  # PPCA needs k < d
    model = MODELS[name].config(**settings).build(ds)
    if MODELS[name].trained:
        model.prepare(ds.x)
        model.finish(ds.x)  # e.g. the VAE's mixture prior, fitted to its codes
    else:
        model.fit(ds.x)
    model.eval()
    return model, ds.x


def on_device(model: Model, x: Tensor, device: torch.device) -> dict[str, object]:
    """Run every method ``model`` declares with inputs on ``device``; return the results."""
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731  (a CPU generator, as runs use)
    x = x[:5].to(device)
    z = torch.randn(5, model.latent, generator=gen()).to(device)
    out: dict[str, object] = {}
    with torch.no_grad():
        out["decode"] = model.decode(z)
        if model.has_encoder:
            out["encode"] = model.encode(x)
            out["codes"] = codes(model, x)
        if model.generative:
            out["sample"] = model.sample(4, generator=gen())
            out["sample without a generator"] = model.sample(4)
        if model.has_exact_density:
            out["log_prob"] = model.log_prob(x)
        if model.likelihood_kind is not None:
            out["log_likelihood_rows"] = model.log_likelihood_rows(x, generator=gen(), iwae_k=3)
        if model.has_motion:
            out["motion"] = model.motion(3, torch.tensor([0.0, 0.5, 1.0]), generator=gen())
        out["evaluate"] = model.evaluate(x, generator=gen(), iwae_k=3)
    return out


@pytest.mark.parametrize("data", ["ring8", "digits"])
@pytest.mark.parametrize("name", list(MODELS))
def test_every_method_runs_on_the_models_device(name, data, device, meta_guard, monkeypatch):
    """Every method the model declares, with inputs on the model's device, makes nothing on
    another device: on the CPU the model is moved to ``meta`` and a stray CPU tensor (noise, a
    constant, a mask) fails under the guard; with ``--device cuda`` it runs on the GPU."""
    model, x = device_model(name, data, meta=device.type == "cpu")
    if device.type == "cpu":
        device, guard = META, meta_guard
        monkeypatch.setattr(Solver, "solve", _one_step)
    else:
        guard = contextlib.nullcontext()
    model.to(device)
    with guard:
        out = on_device(model, x, device)
    for key, value in out.items():
        if isinstance(value, Tensor) and key != "codes":  # codes may come back for figures
            assert value.device.type == device.type, key
    if device.type != "meta" and model.generative:  # draws come from the CPU generator alone
        again = model.sample(4, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(out["sample"], again)


@pytest.mark.parametrize("data", ["ring8", "digits"])
@pytest.mark.parametrize("name", list(MODELS))
def test_a_training_step_and_the_figures_run_on_the_models_device(
    name, data, device, meta_guard, monkeypatch, tmp_path
):
    """The fit → figures path: one training step (the loop's optimisers, the prepared batch,
    the model's own noise) and the run folder's figures, with the model on its device and the
    data handed over on the CPU, as the runs layer hands them. On the CPU the model is on
    ``meta`` (its noise comes from the default generator there: ``meta`` has no generator of
    its own; the loop's generator lives on the run's device)."""
    model, _ = device_model(name, data, meta=device.type == "cpu")
    ds = load_data(data, n=200)
    if device.type == "cpu":
        device, guard, noise = META, meta_guard, None
        monkeypatch.setattr(Solver, "solve", _one_step)
    else:
        guard, noise = contextlib.nullcontext(), torch.Generator(device).manual_seed(0)
    model.to(device)
    with guard:
        if MODELS[name].trained:
            cfg = TrainConfig(batch_size=8, device="cpu")
            optimizers = model.configure_optimizers(cfg)
            xb = ds.x[:8].to(device)
            extra = {}
            if model.prepares_batches:
                extra["prepared"] = model.prepare_batch(
                    xb, generator=torch.Generator().manual_seed(0)
                )
            terms = model.training_step(xb, optimizers, cfg, generator=noise, epoch=0.5, **extra)
            assert terms["loss"].device.type == device.type
        drawn = write_figures(tmp_path, model, ds)
    assert drawn and all(path.is_file() for path in drawn)


@pytest.mark.parametrize("data", ["ring8", "digits"])
@pytest.mark.parametrize("name", [name for name in MODELS if MODELS[name].trained])
def test_a_training_step_reads_nothing_back_from_the_device(
    name, data, meta_guard, monkeypatch
):  # fmt: skip
    """With the finite checks deferred (as ``fit`` does on a GPU), a training step makes the host
    wait for nothing: on ``meta`` every value read back (``.item()``, ``bool``, a copy to the
    CPU) is counted, and the steps after the first read none (the first may read a count the
    model keeps on the device once)."""
    model, _ = device_model(name, data, meta=True)
    ds = load_data(data, n=200)
    monkeypatch.setattr(Solver, "solve", _one_step)
    model.to(META)
    cfg = TrainConfig(batch_size=8, device="cpu")
    optimizers = model.configure_optimizers(cfg)
    reads = []
    with meta_guard, deferring(DeferredChecks()):
        for step in range(3):
            xb = ds.x[8 * step : 8 * step + 8].to(META)
            extra = {}
            if model.prepares_batches:
                extra["prepared"] = model.prepare_batch(
                    xb, generator=torch.Generator().manual_seed(step)
                )
            before = len(meta_guard.reads)
            model.training_step(xb, optimizers, cfg, generator=None, epoch=step / 3, **extra)
            reads.append(meta_guard.reads[before:])
    assert reads[1:] == [[], []], reads
    with meta_guard:  # the same step checking on the spot reads its terms: the count can fail
        before = len(meta_guard.reads)
        model.training_step(ds.x[:8].to(META), optimizers, cfg, epoch=0.0, **extra)
        assert len(meta_guard.reads) > before


@pytest.mark.parametrize("name", list(MODELS))
def test_the_decoded_manifold_is_drawn_on_the_models_device(name, device, meta_guard):
    model, _ = device_model(name, "digits", meta=device.type == "cpu")
    measure = model.latent_measure
    if measure is None or not measure.has_quantile or model.latent != 2:
        pytest.skip(f"{name} draws no manifold (it needs a 2-D latent with quantiles)")
    device, guard = (
        (META, meta_guard) if device.type == "cpu" else (device, contextlib.nullcontext())
    )
    model.to(device)
    with guard:
        assert manifold(model, 3).shape == (9, model.dim)


@pytest.mark.cuda
@pytest.mark.parametrize("name", list(MODELS))
def test_draws_on_cuda_equal_the_cpus(name):
    """A CPU generator gives the same draws whatever the model's device (to float rounding)."""
    model, _ = device_model(name, "ring8")
    if not model.generative:
        pytest.skip(f"{name} cannot sample")
    cpu = model.sample(16, generator=torch.Generator().manual_seed(0))
    model.to("cuda")
    gpu = model.sample(16, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=1e-4)

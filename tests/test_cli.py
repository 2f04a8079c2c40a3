"""The command line end to end: run folders, resume, encode/decode, and clear errors."""

import json
import pickle

import numpy as np
import pytest
import torch

from pushforward.cli import main
from pushforward.data import find_mnist_folder
from pushforward.runs import load_model


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("pushforward: error: ")
    return lines[0]


def test_example_draws_the_histogram_and_reports_ks(capsys, tmp_path):
    code, out, _err = run(capsys, "example", "square", "-n", 20000, "--out", tmp_path / "sq.png")
    assert code == 0
    assert "KS distance" in out
    assert (tmp_path / "sq.png").stat().st_size > 1000


def test_dice_prints_the_exact_pmf(capsys):
    code, out, _ = run(capsys, "dice")
    assert code == 0
    assert "Pr[Y =  3] = 1/18" in out
    assert "Pr[Y =  7] = 1/6" in out


def test_data_describes_and_draws(capsys, tmp_path):
    code, out, _ = run(capsys, "data", "grid25", "-n", 500, "--plot", tmp_path / "g.png")
    assert code == 0
    assert "500 points × 2 dims" in out
    assert (tmp_path / "g.png").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["data", "foo"], "unknown data 'foo'; use one of"),
        (["data", "nothere.npy"], "data file 'nothere.npy' not found"),
        (["example", "cube"], "unknown example 'cube'"),
        (["data", "digits", "--plot", "x.gif"], "must end in one of .png"),
        (["fit", "vaex", "--data", "digits"], "unknown model 'vaex'; known:"),
        (["fit", "ae", "--data", "digits", "--loss", "mse"], "unknown reconstruction loss 'mse'"),
        (["fit", "ae", "--data", "digits", "--net", "conv", "--tied"], "tied weights need an MLP"),
        (["fit", "--data", "digits"], "the setting 'model' is required"),
    ],
)
def test_user_mistakes_give_one_clear_line_and_exit_2(capsys, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert message in error_line(err)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_negative_epochs_are_refused_in_one_line(capsys, tmp_path):
    code, _, err = run(capsys, "fit", "ae", "--data", "digits", "--epochs", -1,
                       "--out", tmp_path / "r")  # fmt: skip
    assert code == 2
    assert "epochs = -1 is not allowed; use an integer ≥ 0" in error_line(err)
    assert not (tmp_path / "r").exists()


def test_argument_errors_are_one_line_too(capsys):
    with pytest.raises(SystemExit) as e:
        main(["fit", "ae", "--data", "digits", "--epochs", "many"])
    assert e.value.code == 2
    line = error_line(capsys.readouterr().err)
    assert "argument --epochs: expected an integer, got 'many'" in line


def test_fit_pca_writes_a_run_that_loads_bit_exactly(capsys, tmp_path):
    folder = tmp_path / "pca"
    code, _, err = run(capsys, "fit", "pca", "--data", "digits", "--latent", 2, "--out", folder)
    assert code == 0, err
    for name in (
        "config.json",
        "model.safetensors",
        "figures/latent.png",
        "figures/reconstructions.png",
    ):
        assert (folder / name).exists(), name
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["model"]["kind"] == "pca" and cfg["data"]["shape"] == [1797, 64]
    pca = load_model(folder)
    from pushforward.data import load_data
    from pushforward.models.pca import PCA, PCAConfig

    fresh = PCA(PCAConfig(latent=2)).fit(load_data("digits").x)
    for k, v in fresh.get_state().items():
        assert torch.equal(pca.get_state()[k], v), k


def test_fit_ae_encode_decode(capsys, tmp_path):
    folder = tmp_path / "ae"
    code, _, err = run(
        capsys, "fit", "ae", "--data", "digits", "--latent", 2, "--epochs", 2, "--hidden", "64",
        "--loss", "bce", "--out", folder,
    )  # fmt: skip
    assert code == 0, err
    assert (folder / "figures" / "loss.png").exists()
    assert len((folder / "metrics.jsonl").read_text().splitlines()) == 2
    code, _, err = run(capsys, "encode", folder, "--data", "digits", "--out", tmp_path / "z.npy")
    assert code == 0, err
    z = np.load(tmp_path / "z.npy")
    assert z.shape == (1797, 2)
    code, _, err = run(
        capsys, "decode", folder, "--latents", tmp_path / "z.npy", "--out", tmp_path / "x.csv"
    )
    assert code == 0, err
    x = np.loadtxt(tmp_path / "x.csv", delimiter=",")
    assert x.shape == (1797, 64) and 0 <= x.min() and x.max() <= 1
    model = load_model(folder)
    with torch.no_grad():
        np.testing.assert_allclose(
            model.decode(torch.from_numpy(z)).numpy(), x, rtol=1e-5, atol=1e-6
        )
    np.save(tmp_path / "bad.npy", np.zeros((3, 5), dtype=np.float32))
    code, _, err = run(capsys, "decode", folder, "--latents", tmp_path / "bad.npy")
    assert code == 2 and r"latents must have shape (n, 2)" in error_line(err)


def test_resume_from_the_cli_equals_an_uninterrupted_run(capsys, tmp_path):
    """Also ``--no-figures``: the same weights without the figures folder, and a resumed run's
    figures, which showed the model before the resume, are removed rather than left stale."""
    common = ["fit", "ae", "--data", "digits", "--hidden", "32", "--batch-size", "256"]
    full, part = tmp_path / "full", tmp_path / "part"
    assert run(capsys, *common, "--epochs", 4, "--no-figures", "--out", full)[0] == 0
    assert not (full / "figures").exists()
    assert run(capsys, *common, "--epochs", 2, "--out", part)[0] == 0
    assert (part / "figures" / "loss.png").is_file()
    code, _, err = run(capsys, "fit", "--resume", part, "--epochs", 4, "--no-figures")
    assert code == 0, err
    assert not (part / "figures").exists()
    a, b = load_model(full).state_dict(), load_model(part).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert len((part / "metrics.jsonl").read_text().splitlines()) == 4


def test_an_existing_run_is_never_overwritten(capsys, tmp_path):
    folder = tmp_path / "run"
    assert run(capsys, "fit", "pca", "--data", "digits", "--out", folder)[0] == 0
    before = (folder / "model.safetensors").read_bytes()
    code, _, err = run(capsys, "fit", "pca", "--data", "digits", "--latent", 3, "--out", folder)
    assert code == 2 and "already holds a run" in error_line(err)
    assert (folder / "model.safetensors").read_bytes() == before


def test_config_file_values_are_overridden_by_flags(capsys, tmp_path):
    cfg = tmp_path / "cfg.toml"
    cfg.write_text('model = "ae"\ndata = "digits"\nepochs = 1\nlr = 0.002\nhidden = [16]\n')
    code, _, err = run(capsys, "fit", "--config", cfg, "--epochs", 2, "--out", tmp_path / "r")
    assert code == 0, err
    stored = json.loads((tmp_path / "r" / "config.json").read_text())["run"]
    assert stored["train"]["epochs"] == 2 and stored["train"]["lr"] == 0.002
    assert stored["settings"]["hidden"] == [16]
    bad = tmp_path / "bad.toml"
    bad.write_text('model = "ae"\nepochs = \n')
    code, _, err = run(capsys, "fit", "--config", bad)
    assert code == 2 and "cannot be parsed" in error_line(err)
    bad.write_text('model = "ae"\ndata = "digits"\nepoch = 3\n')
    code, _, err = run(capsys, "fit", "--config", bad)
    assert code == 2 and "unknown setting 'epoch'" in error_line(err)


class _Boom:
    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.target),))


def test_corrupt_or_foreign_runs_are_refused_without_unpickling(capsys, tmp_path):
    folder = tmp_path / "ae"
    run(capsys, "fit", "ae", "--data", "digits", "--epochs", 1, "--hidden", "16", "--out", folder)
    # a pickle that would create a file if anything unpickled it
    boom = _Boom()
    boom.target = str(tmp_path / "pwned")
    (folder / "model.safetensors").write_bytes(pickle.dumps({"w": boom}))
    code, _, err = run(capsys, "encode", folder, "--data", "digits")
    assert code == 2 and "not a valid safetensors file" in error_line(err)
    assert not (tmp_path / "pwned").exists()

    from pushforward.core import save_tensors

    state = load_model_state_from_checkpoint(folder)
    state["encoder.0.weight"] = torch.zeros(3, 3)
    save_tensors(folder / "model.safetensors", state)
    code, _, err = run(capsys, "encode", folder, "--data", "digits")
    line = error_line(err)
    assert code == 2 and "'encoder.0.weight' has shape (3, 3)" in line and "(16, 64)" in line

    cfg = json.loads((folder / "config.json").read_text())
    cfg["format"] = 99
    (folder / "config.json").write_text(json.dumps(cfg))
    code, _, err = run(capsys, "encode", folder, "--data", "digits")
    assert code == 2 and "not a pushforward run of format 1 or 2" in error_line(err)
    (folder / "config.json").write_text("{ not json")
    code, _, err = run(capsys, "encode", folder, "--data", "digits")
    assert code == 2 and "not valid JSON" in error_line(err)


def load_model_state_from_checkpoint(folder):
    from pushforward.core import load_tensors

    full = load_tensors(folder / "checkpoint.safetensors")
    return {k[6:]: v for k, v in full.items() if k.startswith("model.")}


@pytest.mark.skipif(find_mnist_folder() is None, reason="MNIST files not found")
@pytest.mark.parametrize("model", ["pca", "ae"])
def test_fit_on_mnist_with_two_latents(capsys, tmp_path, model):
    folder = tmp_path / model
    trained = ["--epochs", 1, "--loss", "bce"] if model == "ae" else []
    code, _, err = run(
        capsys, "fit", model, "--data", f"mnist:{find_mnist_folder()}", "--latent", 2,
        *trained, "--out", folder,
    )  # fmt: skip
    assert code == 0, err
    assert (folder / "figures" / "latent.png").exists()
    assert (folder / "figures" / "reconstructions.png").exists()
    assert json.loads((folder / "config.json").read_text())["data"]["shape"] == [10000, 784]


def test_vae_fit_sample_evaluate(capsys, tmp_path):
    folder = tmp_path / "vae"
    code, _, err = run(
        capsys, "fit", "vae", "--data", "digits", "--rows", ":1500", "--latent", 2, "--epochs", 3,
        "--hidden", "64", "--kl-schedule", "linear", "--kl-warmup", 2, "--out", folder,
    )  # fmt: skip
    assert code == 0, err
    names = ("samples.png", "manifold.png", "latent.png", "loss.png", "reconstructions.png",
             "error_vs_k.png")  # fmt: skip
    for name in names:
        assert (folder / "figures" / name).exists(), name
    stored = json.loads((folder / "config.json").read_text())
    assert stored["model"]["config"]["loss"] == "bce"  # digits lie in [0, 1]
    assert stored["data"]["shape"] == [1500, 64]
    record = json.loads((folder / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"reconstruction", "kl", "active_units", "kl_per_dim"} <= set(record)

    code, _, err = run(capsys, "sample", folder, "-n", 37, "--out", tmp_path / "s.npy")
    assert code == 0, err
    s = np.load(tmp_path / "s.npy")
    assert s.shape == (37, 64) and 0 <= s.min() and s.max() <= 1
    assert run(capsys, "sample", folder, "-n", 16, "--out", tmp_path / "s.png")[0] == 0

    code, out, err = run(capsys, "evaluate", folder, "--data", "digits", "--rows", "1500:",
                         "--iwae-k", 50, "--json")  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    assert result["n"] == 297 and result["iwae_k"] == 50
    assert result["elbo"] <= result["log_likelihood"] + 3 * result["log_likelihood_stderr"]
    assert result["bits_per_dim"] == pytest.approx(result["nll"] / (64 * np.log(2)))
    code, out, _ = run(capsys, "evaluate", folder, "--data", "digits", "--iwae-k", 5)
    assert code == 0 and "−ELBO" in out and "bits per dimension" in out


def test_nan_in_training_data_is_refused_before_anything_is_written(capsys, tmp_path):
    x = np.random.default_rng(0).random((50, 3)).astype(np.float32)
    x[7, 1] = np.nan
    np.save(tmp_path / "x.npy", x)
    code, _, err = run(capsys, "fit", "vae", "--data", tmp_path / "x.npy", "--out", tmp_path / "r")
    assert code == 2 and "row 7, column 1" in error_line(err)
    assert not (tmp_path / "r").exists()


def test_models_without_a_sampler_say_so(capsys, tmp_path):
    run(capsys, "fit", "pca", "--data", "digits", "--out", tmp_path / "p")
    code, _, err = run(capsys, "sample", tmp_path / "p", "--out", tmp_path / "s.npy")
    line = error_line(err)
    assert code == 2 and "holds a PCA, which cannot sample; models that can: ppca, vae, gan" in line


def test_vae_gets_its_benchmarked_defaults_and_flags_override_them(capsys, tmp_path):
    code, _, err = run(capsys, "fit", "vae", "--data", "digits", "--epochs", 1, "--lr", "0.001",
                       "--out", tmp_path / "v")  # fmt: skip
    assert code == 0, err
    stored = json.loads((tmp_path / "v" / "config.json").read_text())
    settings = stored["run"]["settings"]
    assert settings["hidden"] == [512] and settings["activation"] == "silu"
    assert stored["run"]["train"]["batch_size"] == 64
    assert stored["run"]["train"]["lr"] == 0.001
    # on images the prior is the mixture fitted to the codes, and the run folder carries it
    assert settings["prior"] == "gmm" and settings["prior_components"] == 50
    model = load_model(tmp_path / "v")
    assert model.config.prior == "gmm" and not torch.equal(
        model.prior_means, torch.zeros(50, 2).double()
    )
    code, _, err = run(capsys, "sample", tmp_path / "v", "-n", 8, "--seed", 3,
                       "--out", tmp_path / "s.npy")  # fmt: skip
    assert code == 0, err
    z = model.latent_measure.sample(8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        np.testing.assert_allclose(np.load(tmp_path / "s.npy"), model.decode(z).numpy(), atol=1e-6)


def test_tensorboard_gets_the_same_scalars_and_sample_grids(capsys, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    code, _, err = run(capsys, "fit", "vae", "--data", "digits", "--epochs", 2, "--hidden", "32",
                       "--out", tmp_path / "v", "--tensorboard", tmp_path / "tb")  # fmt: skip
    assert code == 0, err
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0})
    events.Reload()
    assert {"train/loss", "train/reconstruction", "train/kl"} <= set(events.Tags()["scalars"])
    losses = [e.value for e in events.Scalars("train/kl")]
    records = [
        json.loads(line) for line in (tmp_path / "v" / "metrics.jsonl").read_text().splitlines()
    ]
    assert losses == pytest.approx([r["kl"] for r in records])
    assert len(events.Images("samples")) == 2


@pytest.mark.slow
def test_ctrl_c_stops_the_cli_cleanly_and_resume_finishes_the_run(tmp_path):
    import signal
    import subprocess
    import sys

    folder = tmp_path / "run"
    cmd = [sys.executable, "-m", "pushforward", "fit", "ae", "--data", "digits", "--hidden", "16",
           "--epochs", "100", "--batch-size", "64", "--out", str(folder)]  # fmt: skip
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()  # the first progress line: training is under way
    assert line.startswith("epoch"), line
    proc.send_signal(signal.SIGINT)
    err = line + proc.stderr.read()
    assert proc.wait(timeout=60) == 130, err
    assert "stopped by SIGINT" in err and "checkpoint written" in err and "Traceback" not in err
    done = len((folder / "metrics.jsonl").read_text().splitlines())
    assert 1 <= done < 100
    code = subprocess.run([sys.executable, "-m", "pushforward", "fit", "--resume", str(folder)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert code.returncode == 0, code.stderr
    epochs = [json.loads(r)["epoch"] for r in (folder / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, 101))

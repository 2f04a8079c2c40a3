"""Faults lose nothing: SIGKILL at random moments, full disks, and untrusted or broken input."""

import errno
import gzip
import os
import random
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pushforward.cli import main
from pushforward.core import CheckpointError
from pushforward.core import io as ckpt
from pushforward.models.autoencoder import Autoencoder, AutoencoderConfig
from pushforward.models.registry import MODELS
from pushforward.runs import load_model, load_run_config
from pushforward.train import CHECKPOINT, TrainConfig, fit, load_checkpoint, read_metrics, seeded

FIT = ["fit", "ae", "--data", "digits", "--hidden", "32", "--batch-size", "32", "--epochs", "12"]


def cli(*args, cwd):
    return [sys.executable, "-m", "pushforward", *map(str, args)]


def start_and_kill(args, cwd, rng) -> bool:
    """Start a training run and SIGKILL it at a random moment of its training: a little after
    a random one of its first six epochs' progress lines (one line an epoch). Return whether it
    was killed; False when it finished first (a resumed run with fewer epochs left), which is
    no fault. (A kill at a random time after the first line, as this once did, missed the
    training altogether on a fast idle host, where the 12 epochs take a third of a second.)"""
    proc = subprocess.Popen(cli(*args, cwd=cwd), cwd=cwd, stderr=subprocess.PIPE, text=True)
    line = ""
    for _ in range(rng.randint(1, 6)):
        line = proc.stderr.readline()
        if not line.startswith("epoch"):
            break
    time.sleep(rng.uniform(0.0, 0.03))
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    if proc.returncode == 0:  # it ended before the kill: its last words say it wrote the run
        rest = line + proc.stderr.read()
        assert "run written to" in rest, rest
        return False
    return True


def messages(stderr: str) -> str:
    """A failed run's messages without its progress lines, so the launcher's summary at the end
    does not push a process's own last words (a traceback, an abort) out of the report."""
    return "\n".join(x for x in stderr.splitlines() if not x.startswith("epoch"))[-8000:]


def check_consistent(folder) -> int:
    """The folder holds a loadable checkpoint and whole metric records 1..k; return k."""
    epochs = [r["epoch"] for r in read_metrics(folder)]
    lines = (folder / "metrics.jsonl").read_text().splitlines() if epochs else []
    assert len(lines) == len(epochs)  # no torn line
    assert epochs == list(range(1, len(epochs) + 1))
    if (folder / CHECKPOINT).exists():
        record = load_run_config(folder)  # written before training starts
        model = MODELS[record["model"]["kind"]].cls.from_config(record["model"]["config"])
        opts = model.configure_optimizers(TrainConfig.from_dict(record["run"]["train"]))
        info, _ = load_checkpoint(folder / CHECKPOINT, model, opts, torch.Generator())
        assert info["epoch"] <= len(epochs) + 1
    return len(epochs)


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_reaches_the_uninterrupted_weights(
    tmp_path, reliability
):
    done = subprocess.run(cli(*FIT, "--out", "straight", cwd=tmp_path), cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    rng = random.Random(7)
    folder = tmp_path / "killed"
    # the first run has 12 epochs to go and is killed after at most 6: always a fault
    assert start_and_kill([*FIT, "--out", "killed"], tmp_path, rng)
    reliability["faults injected (SIGKILL, one process)"] += 1
    for _ in range(2):
        check_consistent(folder)
        killed = start_and_kill(["fit", "--resume", "killed"], tmp_path, rng)
        reliability["faults injected (SIGKILL, one process)"] += killed
        reliability["runs resumed"] += 1
    check_consistent(folder)
    done = subprocess.run(cli("fit", "--resume", "killed", cwd=tmp_path), cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    reliability["runs resumed"] += 1
    assert check_consistent(folder) == 12
    a, b = load_model(tmp_path / "straight").state_dict(), load_model(folder).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


GAN_FIT = ["fit", "gan", "--data", "digits", "--hidden", "8,16", "--latent", "8",
           "--batch-size", "32", "--epochs", "12"]  # fmt: skip

DDP_EPOCHS = 6
"""Epochs of the two-process runs: the kill comes after the first, so five are left to resume
(each epoch of two processes costs about twice one process's, in three launches)."""


@pytest.mark.slow
@pytest.mark.parametrize("fit_args", [FIT, GAN_FIT], ids=["ae", "gan"])
def test_one_killed_rank_of_two_loses_nothing(tmp_path, reliability, fit_args):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    fit_args = [*fit_args[: fit_args.index("--epochs")], "--epochs", str(DDP_EPOCHS)]
    args = ["-m", "pushforward", *fit_args, "--out", "ddp"]
    proc = subprocess.Popen([*launcher, *args], cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:  # rank 0 prints the first epoch: training is under way
        if line.startswith("epoch"):
            break
    ranks = subprocess.run(["pgrep", "-f", "-P", str(proc.pid), "pushforward"],
                           capture_output=True, text=True).stdout.split()  # fmt: skip
    assert len(ranks) == 2, ranks
    os.kill(int(ranks[-1]), signal.SIGKILL)
    reliability["faults injected (SIGKILL, one rank of two)"] += 1
    proc.stderr.read()
    assert proc.wait(timeout=120) != 0
    check_consistent(tmp_path / "ddp")
    done = subprocess.run([*launcher, "-m", "pushforward", "fit", "--resume", "ddp"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, messages(done.stderr)
    reliability["runs resumed"] += 1
    assert check_consistent(tmp_path / "ddp") == DDP_EPOCHS
    straight = subprocess.run([*launcher, *args[:-1], "straight"], cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)  # fmt: skip
    assert straight.returncode == 0, messages(straight.stderr)
    a, b = load_model(tmp_path / "straight").state_dict(), load_model(tmp_path / "ddp").state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EACCES])
def test_a_full_disk_or_unwritable_folder_is_a_clear_error_and_the_last_checkpoint_survives(
    tmp_path, monkeypatch, err, reliability
):
    x = torch.rand(64, 12, generator=torch.Generator().manual_seed(0))
    with seeded(0):
        model = Autoencoder(AutoencoderConfig(dim=12, latent=2, hidden=[16]))
    fit(model, x, TrainConfig(epochs=2, batch_size=32), run_dir=tmp_path)
    before = (tmp_path / CHECKPOINT).read_bytes()
    real_replace = os.replace

    def failing_replace(src, dst):
        if str(dst).endswith(CHECKPOINT):
            raise OSError(err, os.strerror(err))
        return real_replace(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", failing_replace)
    with pytest.raises(CheckpointError, match=f"cannot write '.*{CHECKPOINT}': {os.strerror(err)}"):
        fit(model, x, TrainConfig(epochs=4, batch_size=32), run_dir=tmp_path, resume=True)
    reliability["faults injected (disk full / unwritable)"] += 1
    assert (tmp_path / CHECKPOINT).read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# --- property-based: bad input always ends in one clear line and exit status 2 -----------------


def idx_bytes(images: np.ndarray) -> bytes:
    n, h, w = images.shape
    return struct.pack(">IIII", 0x00000803, n, h, w) + images.astype(np.uint8).tobytes()


def label_bytes(labels: np.ndarray) -> bytes:
    return struct.pack(">II", 0x00000801, labels.size) + labels.astype(np.uint8).tobytes()


def run_cli(capsys, *argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def assert_clean(code: int, err: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    if code == 0:
        return
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("pushforward: error: "), err
    assert "Traceback" not in err


GOOD_IMAGES = np.arange(5 * 4 * 4).reshape(5, 4, 4) % 256
GOOD_LABELS = np.arange(5) % 10


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    cut=st.integers(min_value=0, max_value=16 + 5 * 16),
    flips=st.lists(st.tuples(st.integers(0, 16 + 5 * 16 - 1), st.integers(1, 255)), max_size=4),
    gz=st.booleans(),
)
def test_any_truncated_or_flipped_idx_file_is_loaded_or_refused_cleanly(
    tmp_path_factory, capsys, reliability, cut, flips, gz
):
    folder = tmp_path_factory.mktemp("idx")
    raw = bytearray(idx_bytes(GOOD_IMAGES))
    for pos, xor in flips:
        raw[pos] ^= xor
    raw = bytes(raw[: len(raw) - cut]) if cut else bytes(raw)
    suffix = ".gz" if gz else ""
    (folder / f"t10k-images-idx3-ubyte{suffix}").write_bytes(gzip.compress(raw) if gz else raw)
    (folder / f"t10k-labels-idx1-ubyte{suffix}").write_bytes(
        gzip.compress(label_bytes(GOOD_LABELS)) if gz else label_bytes(GOOD_LABELS)
    )
    code, err = run_cli(capsys, "data", f"mnist:{folder}")
    reliability["bad inputs tried (IDX truncations and byte flips)"] += 1
    assert_clean(code, err)
    if cut == 0 and not flips:
        assert code == 0


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    text=st.text(alphabet="0123456789.,-eE naNinf\n#x", max_size=60),
)
def test_any_malformed_csv_is_loaded_or_refused_cleanly(
    tmp_path_factory, capsys, reliability, text
):
    path = tmp_path_factory.mktemp("csv") / "data.csv"
    path.write_text(text)
    code, err = run_cli(capsys, "data", path)
    reliability["bad inputs tried (CSV text)"] += 1
    assert_clean(code, err)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    shape=st.lists(st.integers(0, 4), min_size=0, max_size=4),
    dtype=st.sampled_from(["float32", "float64", "int16", "uint8", "bool", "complex64", "U3"]),
    poison=st.sampled_from([None, np.nan, np.inf, -np.inf]),
    chop=st.integers(0, 40),
)
def test_any_npy_array_is_loaded_or_refused_cleanly(
    tmp_path_factory, capsys, reliability, shape, dtype, poison, chop
):
    path = tmp_path_factory.mktemp("npy") / "x.npy"
    arr = np.ones(shape, dtype=dtype)
    if poison is not None and arr.size and arr.dtype.kind == "f":
        arr.flat[arr.size // 2] = poison
    np.save(path, arr)
    if chop:
        data = path.read_bytes()
        path.write_bytes(data[: max(0, len(data) - chop)])
    code, err = run_cli(capsys, "data", path)
    reliability["bad inputs tried (.npy arrays)"] += 1
    assert_clean(code, err)


ABSURD = ["0", "-1", "-0.5", "nan", "inf", "1e400", "abc", "", "99999999"]

# Every (model, flag, value) of ABSURD that is a valid setting, with the reason; every other pair
# must be refused with exit 2 and one error line. "*" stands for every model that has the flag.
VALID: dict[tuple[str, str, str], str] = {
    **{
        ("*", "--epochs", v): "0 epochs writes an untrained run; 99999999 is a long run that "
        "Ctrl-C stops with a checkpoint"
        for v in ("0", "99999999")
    },
    ("*", "--batch-size", "0"): "0 means full batch",
    ("fm", "--sigma", "0"): "flow matching's σ = 0 is the straight conditional path (its default)",
    ("fm", "--frequencies", "0"): "no Fourier features of x (the default on images)",
    ("fm", "--reference", "0"): "0 is the conditional target x₁ − x₀ (the default on images)",
    **{("*", "--seed", v): "any integer seeds a generator" for v in ("0", "-1", "99999999")},
    **{
        ("*", flag, "0"): "0 turns it off"
        for flag in (
            "--weight-decay",
            "--grad-clip",
            "--free-bits",
            "--gp-weight",
            "--ema",
            "--jacobian-truncation",
            "--mmd-weight",
            "--snapshot-every",
            "--flush-every",
        )
    },
    **{
        ("*", flag, "99999999"): "any finite value ≥ 0 is a valid (if extreme) setting"
        for flag in (
            "--lr",
            "--weight-decay",
            "--grad-clip",
            "--kl-weight",
            "--kl-warmup",
            "--free-bits",
            "--critic-lr",
            "--gp-weight",
            "--mmd-weight",
            "--mmd-bandwidths",
        )
    },
    ("*", "--checkpoint-every", "99999999"): "then only the last epoch is checkpointed",
    ("*", "--flush-every", "99999999"): "then a run of fewer steps never flushes",
    ("*", "--kl-weight", "0"): "λ = 0: the reconstruction alone (an autoencoder with noise)",
}


def _absurd_cases():
    """Each model's own flags with every absurd value; the training flags once, with the
    autoencoder; the training flags given to a model fitted in closed form; -n."""
    from dataclasses import fields

    from pushforward.models.registry import MODELS
    from pushforward.train import TrainConfig

    def flag(name: str) -> str:
        return "--" + name.replace("_", "-")

    cases = [(m, flag(f.name)) for m, spec in MODELS.items() for f in fields(spec.config)]
    # device names are tested in test_device and tests/cli; seed and device are the training
    # settings PCA takes
    train = [flag(f.name) for f in fields(TrainConfig) if f.name != "device"]
    cases += [("ae", f) for f in [*train, "-n"]]
    cases += [(m, "--lr") for m, spec in MODELS.items() if not spec.trained]
    for model, name in cases:
        for value in ABSURD:
            yield pytest.param(model, name, value, id=f"{model}{name}={value or 'empty'}")


@pytest.mark.parametrize(("model", "flag", "value"), list(_absurd_cases()))
def test_absurd_settings_are_refused_cleanly_and_write_no_run(
    tmp_path, capsys, reliability, model, flag, value
):
    out = tmp_path / "r"
    quick = ["--epochs", "1", "--batch-size", "32"] if MODELS[model].trained else []
    argv = ["fit", model, "--data", "digits", *quick, "--dry-run", flag, value, "--out", out]
    reason = VALID.get((model, flag, value))
    if MODELS[model].trained:  # a closed-form model takes no training setting at all
        reason = reason or VALID.get(("*", flag, value))
    try:
        code, err = run_cli(capsys, *argv)
    except SystemExit as e:  # the parser's own refusal: one line, exit 2
        code, err = e.code, capsys.readouterr().err
    reliability["bad settings tried"] += 1
    assert not out.exists()
    if reason is not None:
        assert code == 0, f"{flag} {value!r} is listed as valid ({reason}) but was refused: {err}"
        return
    assert code == 2, f"{flag} {value!r} was accepted; refuse it, or list it in VALID with why"
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("pushforward: error: "), err
    assert "Traceback" not in err

"""``--device`` on every command: the default ``auto``, what config.json records, and the one
line each device failure ends in. CUDA is simulated (torch.cuda.is_available and device_count
patched): a device index that does not exist, CUDA asked for where there is none, a model too
large for the memory there is, running out of memory during training."""

import json

import pytest
import torch

import pushforward.train.device as device_policy
import pushforward.train.loop as loop
from pushforward.cli import main
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


def gpus(monkeypatch, count: int) -> None:
    """Make this torch see ``count`` CUDA devices (none: no CUDA at all)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


@pytest.fixture(scope="module")
def ppca_run(tmp_path_factory):
    """A PPCA run on digits (it encodes, decodes and samples), fitted on the CPU."""
    folder = tmp_path_factory.mktemp("runs") / "ppca"
    argv = ["fit", "ppca", "--data", "digits", "--latent", "2", "--device", "cpu"]
    assert main([*argv, "--out", str(folder)]) == 0
    return folder


def _commands(run_folder, tmp_path):
    z = tmp_path / "z.npy"
    return {
        "fit": ["fit", "ae", "--data", "digits", "--epochs", 1, "--out", tmp_path / "r"],
        "fit pca": ["fit", "pca", "--data", "digits", "--out", tmp_path / "p"],
        "sample": ["sample", run_folder, "--out", tmp_path / "s.npy"],
        "evaluate": ["evaluate", run_folder, "--data", "digits", "--iwae-k", 2],
        "encode": ["encode", run_folder, "--data", "digits", "--out", z],
        "decode": ["decode", run_folder, "--latents", z, "--out", tmp_path / "x.npy"],
        "explore": ["explore", run_folder, "--out", tmp_path / "e.html"],
        "demo": ["demo", "--quick", "--out", tmp_path / "demo"],
    }


def test_every_run_command_computes_on_the_device_asked_for(capsys, tmp_path, ppca_run):
    for name, argv in _commands(ppca_run, tmp_path).items():
        if name == "demo":  # the gallery is tested on the CPU in tests/gallery
            continue
        code, _, err = run(capsys, *argv, "--device", "cpu")
        assert code == 0, (name, err)
    z = torch.from_numpy(__import__("numpy").load(tmp_path / "z.npy"))
    assert z.shape == (1797, 2)


@pytest.mark.parametrize(
    "name", ["fit", "fit pca", "sample", "evaluate", "encode", "decode", "explore", "demo"]
)
def test_a_device_index_that_does_not_exist_is_one_line(
    capsys, tmp_path, monkeypatch, ppca_run, name
):
    np = pytest.importorskip("numpy")
    np.save(tmp_path / "z.npy", np.zeros((3, 2), dtype=np.float32))
    gpus(monkeypatch, 1)
    code, _, err = run(capsys, *_commands(ppca_run, tmp_path)[name], "--device", "cuda:3")
    assert code == 2
    assert error_line(err) == (
        "pushforward: error: device 'cuda:3' was asked for, but this torch sees 1 CUDA "
        "device: cuda:0"
    )
    assert not (tmp_path / "r").exists() and not (tmp_path / "demo").exists()


@pytest.mark.parametrize("name", ["fit", "sample", "demo"])
def test_cuda_where_there_is_none_is_one_line(capsys, tmp_path, monkeypatch, ppca_run, name):
    gpus(monkeypatch, 0)
    code, _, err = run(capsys, *_commands(ppca_run, tmp_path)[name], "--device", "cuda")
    assert code == 2
    assert error_line(err) == (
        "pushforward: error: device 'cuda' was asked for, but this torch sees no CUDA device"
    )


def test_fit_records_the_device_asked_for_and_the_one_it_ran_on(capsys, tmp_path, monkeypatch):
    gpus(monkeypatch, 0)
    folder = tmp_path / "pca"
    assert run(capsys, "fit", "pca", "--data", "digits", "--out", folder)[0] == 0
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["run"]["train"]["device"] == "auto"  # the default: the request is kept
    assert cfg["device"] == "cpu"  # where it resolved
    assert load_model(folder, device="cpu").mean_.device.type == "cpu"


def test_the_help_of_every_command_names_the_device_option(capsys):
    for command in ("fit", "sample", "evaluate", "encode", "decode", "explore", "demo"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "--device" in capsys.readouterr().out, command


def test_a_model_too_large_for_the_memory_is_refused_before_it_is_built(
    capsys, tmp_path, monkeypatch
):
    monkeypatch.setattr(device_policy, "available_memory", lambda device: 8 * 2**30)
    folder = tmp_path / "big"
    code, _, err = run(
        capsys, "fit", "vae", "--data", "ring8", "--hidden", "65536,65536", "--device", "cpu",
        "--out", folder,
    )  # fmt: skip
    assert code == 2
    line = error_line(err)
    # two 65,536² layers (encoder, decoder: 16 GiB each in float32), with their gradients and
    # Adam's two moments: 4 copies
    assert "a VAE of this size (weights and training state) needs 128.0 GiB" in line
    assert "but cpu has 8.0 GiB available" in line
    assert not folder.exists()


def test_a_model_that_fits_the_memory_is_built(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(device_policy, "available_memory", lambda device: 8 * 2**30)
    code, out, err = run(capsys, "fit", "vae", "--data", "ring8", "--dry-run")
    assert code == 0, err
    assert json.loads(out)["device"] == "cpu"


def test_out_of_memory_names_the_batch_size_and_keeps_the_checkpoint(capsys, tmp_path, monkeypatch):
    folder = tmp_path / "ae"
    argv = ["fit", "ae", "--data", "digits", "--epochs", 3, "--batch-size", 256,
            "--hidden", 32, "--device", "cpu", "--out", folder]  # fmt: skip
    real, calls = loop._step, []

    def step(*args, **kwargs):  # 8 steps an epoch: memory runs out in the second epoch
        calls.append(1)
        if len(calls) > 10:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "_step", step)
    code, _, err = run(capsys, *argv)
    assert code == 2
    *progress, line = err.strip().splitlines()  # the epoch trained before, then one line
    assert [p.startswith("epoch 1/3") for p in progress] == [True]
    assert line == (
        "pushforward: error: out of memory on cpu training with batch size 256; fit again with a "
        "smaller one (e.g. --batch-size 128); the last checkpoint is intact: --resume continues "
        f"it, on another --device ('{folder}')"
    )
    monkeypatch.setattr(loop, "_step", real)
    code, _, err = run(capsys, "fit", "--resume", folder)
    assert code == 0, err
    assert len((folder / "metrics.jsonl").read_text().splitlines()) == 3


def test_resume_on_another_kind_of_device_continues(capsys, tmp_path, monkeypatch):
    """A checkpoint whose random stream cannot continue here (written on another kind of
    device: simulated by refusing its generator state) resumes from the seed and the epoch,
    with the weights and optimiser state it holds."""
    import pushforward.train.checkpoint as checkpoint

    folder = tmp_path / "ae"
    argv = ["fit", "ae", "--data", "digits", "--epochs", 1, "--hidden", 32, "--device", "cpu"]
    assert run(capsys, *argv, "--out", folder)[0] == 0
    before = load_model(folder).state_dict()
    monkeypatch.setattr(checkpoint, "generator_fits", lambda generator, state: False)
    code, _, err = run(capsys, "fit", "--resume", folder, "--epochs", 2, "--device", "cpu")
    assert code == 0, err
    assert len((folder / "metrics.jsonl").read_text().splitlines()) == 2
    after = load_model(folder).state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # it trained on


def _cuda_oom(*args, **kwargs):
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


def _cpu_oom(*args, **kwargs):
    torch.empty(2**50, dtype=torch.uint8)  # the CPU allocator's own failure, a RuntimeError


@pytest.mark.parametrize("fail", [_cuda_oom, _cpu_oom], ids=["cuda", "cpu"])
@pytest.mark.parametrize(
    ("name", "where"),
    [
        ("sample", "pushforward.runs.sample_run"),
        ("evaluate", "pushforward.runs.evaluate_run"),
        ("encode", "pushforward.runs.encode_run"),
        ("decode", "pushforward.runs.decode_run"),
        ("explore", "pushforward.explore.explore_run"),
    ],
)
def test_running_out_of_memory_outside_training_is_one_line(
    capsys, tmp_path, monkeypatch, ppca_run, name, where, fail
):
    np = pytest.importorskip("numpy")
    np.save(tmp_path / "z.npy", np.zeros((3, 2), dtype=np.float32))
    monkeypatch.setattr(where, fail)
    code, _, err = run(capsys, *_commands(ppca_run, tmp_path)[name], "--device", "cpu")
    assert code == 2
    assert error_line(err) == (
        f"pushforward: error: out of memory in '{name}' (--device cpu): ask for less at once (a "
        "smaller -n or --batch-size) or use a device with more memory; nothing was written"
    )
    assert not any(tmp_path.glob("[sex].*")), "an output was written"


def test_other_runtime_errors_are_not_taken_for_memory(capsys, tmp_path, monkeypatch, ppca_run):
    def broken(*args, **kwargs):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr("pushforward.runs.sample_run", broken)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        main([str(a) for a in _commands(ppca_run, tmp_path)["sample"]])

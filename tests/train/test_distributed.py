"""Several processes on PyTorch's own engine (gloo, loopback), launched by torchrun."""

import json
import subprocess
import sys

import pytest
import torch

from pushforward.runs import load_model

COMMON = [
    "--data",
    "digits",
    "--hidden",
    "32",
    "--batch-size",
    "64",
]  # 1,797 rows: uneven last batch


def fit(tmp_path, nproc: int, *args: str) -> subprocess.CompletedProcess:
    launcher = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
    ]
    cmd = [*launcher, "-m", "pushforward", "fit", *args] if nproc > 1 else [
        sys.executable, "-m", "pushforward", "fit", *args]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def weights(folder):
    return load_model(folder).state_dict()


def assert_close(a, b):
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def losses(folder) -> list[float]:
    return [json.loads(r)["loss"] for r in (folder / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_two_processes_reach_the_weights_of_one_and_checkpoints_move_between_them(tmp_path):
    """The same global batch in one process and in two gives the same weights and losses; a run
    checkpointed by either resumes in the other and ends where the straight run does. (One test,
    so that each run is launched once: the launches are most of its time.)"""
    fit(tmp_path, 1, "ae", *COMMON, "--epochs", "4", "--out", "straight")
    two = fit(tmp_path, 2, "ae", *COMMON, "--epochs", "2", "--out", "two_then_one")
    fit(tmp_path, 1, "ae", *COMMON, "--epochs", "2", "--out", "one_then_two")
    assert_close(weights(tmp_path / "one_then_two"), weights(tmp_path / "two_then_one"))
    one_losses = losses(tmp_path / "one_then_two")
    assert len(one_losses) == 2
    assert losses(tmp_path / "two_then_one") == pytest.approx(one_losses, rel=1e-5)
    assert two.stderr.count("run written to") == 1  # rank 0 alone reports
    fit(tmp_path, 1, "--resume", "two_then_one", "--epochs", "4")
    fit(tmp_path, 2, "--resume", "one_then_two", "--epochs", "4")
    straight = weights(tmp_path / "straight")
    assert_close(straight, weights(tmp_path / "two_then_one"))
    assert_close(straight, weights(tmp_path / "one_then_two"))
    want = losses(tmp_path / "straight")
    assert losses(tmp_path / "one_then_two") == pytest.approx(want, rel=1e-5)


@pytest.mark.slow
def test_a_vae_trains_in_two_processes(tmp_path):
    fit(tmp_path, 2, "vae", *COMMON, "--latent", "2", "--epochs", "2", "--out", "vae")
    records = [json.loads(r) for r in (tmp_path / "vae" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert records[1]["loss"] < records[0]["loss"]
    assert (tmp_path / "vae" / "figures" / "manifold.png").exists()


LEAVE = """
import os, torch
from pushforward.train import distributed

def gloo_threads():
    tasks = f"/proc/{os.getpid()}/task"
    names = []
    for t in os.listdir(tasks):
        try:
            names.append(open(f"{tasks}/{t}/comm").read().strip())
        except FileNotFoundError:  # a thread that ended between the listing and the read
            pass
    return [n for n in names if "gloo" in n]

ctx = distributed.init()
torch.optim.Adam(torch.nn.Linear(2, 2).parameters())  # its first use imports more of torch
distributed.barrier()
assert ctx.world == 2 and gloo_threads(), gloo_threads()
distributed.shutdown()
assert not gloo_threads(), gloo_threads()  # joined now, not during interpreter finalisation
"""


@pytest.mark.slow  # 14 s: two processes form and leave a gloo group
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/PID/task")
def test_leaving_the_group_joins_its_threads_before_the_interpreter_exits(tmp_path):
    script = tmp_path / "leave.py"
    script.write_text(LEAVE)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    done = subprocess.run([*launcher, str(script)], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]


# 500 rows: a last batch of 52; the critic's augmentation draws its shifts and squares per row;
# a constant rate, since a run resumed with more --epochs stretches a cosine schedule
GAN = ["gan", "--data", "digits", "--rows", ":500", "--hidden", "8,16", "--latent", "8",
       "--augment", "translation,cutout", "--batch-size", "64",
       "--lr-schedule", "constant"]  # fmt: skip


@pytest.mark.slow
def test_a_gan_in_two_processes_reaches_the_weights_of_one_and_resumes_in_either(tmp_path):
    # both networks step on the gradients averaged over the processes, the R1 penalty's double
    # backward included, against the same noise as one process draws for the whole batch
    fit(tmp_path, 1, *GAN, "--epochs", "2", "--out", "one")
    fit(tmp_path, 2, *GAN, "--epochs", "2", "--out", "two")
    fit(tmp_path, 2, *GAN, "--epochs", "1", "--out", "two_then_one")
    fit(tmp_path, 1, "--resume", "two_then_one", "--epochs", "2")
    one = weights(tmp_path / "one")
    assert_close(one, weights(tmp_path / "two"))
    assert_close(one, weights(tmp_path / "two_then_one"))
    metrics = {
        run: [json.loads(r) for r in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        for run in ("one", "two")
    }
    for key in ("critic_loss", "gen_loss", "gradient_penalty", "critic_grad_norm"):
        a, b = ([r[key] for r in metrics[run]] for run in ("one", "two"))
        assert b == pytest.approx(a, rel=1e-5), key  # reduced over the processes


# the defaults on points, the kernel term on every step; 300 rows: a last batch of 44
POINTS = ["gan", "--data", "ring8", "-n", "300", "--hidden", "16,16", "--critic-hidden", "16",
          "--batch-size", "64", "--mmd-every", "1", "--lr-schedule", "constant"]  # fmt: skip


@pytest.mark.slow
def test_the_gans_kernel_term_in_two_processes_is_the_whole_batchs(tmp_path):
    """The kernel term compares every pair of the batch's rows: in two processes each gathers
    both halves, and the run reaches the weights and the term's values of one process (which
    takes the gradients written out, the processes autograd's)."""
    fit(tmp_path, 1, *POINTS, "--epochs", "2", "--out", "one", "--no-figures")
    fit(tmp_path, 2, *POINTS, "--epochs", "2", "--out", "two", "--no-figures")
    assert_close(weights(tmp_path / "one"), weights(tmp_path / "two"))
    terms = [
        [json.loads(r)["mmd_term"] for r in (tmp_path / run / "metrics.jsonl").open()]
        for run in ("one", "two")
    ]
    assert terms[0] and all(t != 0 for t in terms[0])
    assert terms[1] == pytest.approx(terms[0], rel=1e-5)

"""pushforward on an accelerator against plain PyTorch loops of the same networks, in one run.

Produces the "On a GPU" section of BENCHMARKS.md (the GPU's name is printed beside the table):

    .venv/bin/python benchmarks/gpu.py                      # all four parts on one GPU
    .venv/bin/python benchmarks/gpu.py --parts gan,gallery  # some of them
    .venv/bin/python benchmarks/gpu.py --device cpu --quick  # a smoke check (30 s on 2 cores)

Two parts, each alternating the contenders round by round (medians: shared machines are noisy):

* **The MNIST protocol** (784-400-20 ReLU, BCE, batch 128, Adam 10⁻³, 8,000 training digits of
  the official test set, the last 2,000 to score): the classic pytorch/examples loop on the
  device (a shuffling ``DataLoader`` on the host, each batch moved with ``.to(device)``, the
  loss read with ``.item()`` every step, as the example logs it) against ``pushforward fit vae``
  with the same network and budget on the same device (``--prior normal``, the prior the
  classic model trains with; ``--compile auto``: CUDA graphs on CUDA). The table gives each
  one's wall seconds for the whole run (pushforward's include compiling, the run folder and its
  checkpoint) and the test −ELBO of both under N(0, I), in nats (one draw per digit, seeded).
* **The mixtures** (ring8): the recommended flow and flow matching, fitted as ``pushforward fit``
  fits them, on the device and on the CPU with ``--threads`` threads; wall seconds and the exact
  KL(p ‖ q) to the truth on fresh draws (``benchmarks/fidelity.py``'s scorer).
* **The conv GAN on digits**: one epoch of ``pushforward fit gan --data mnist`` (its default
  networks, batch and R1) against ``benchmarks/dcgan.py``'s plain DCGAN loop of the same
  networks and batch on the same device, after a warm-up epoch each (cudnn's autotuning);
  seconds an epoch and samples a second.
* **The gallery**: ``pushforward demo --device <device>`` in a fresh process, into a temporary
  folder, with an empty cache folder (``XDG_CACHE_HOME``): its wall seconds.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dcgan import TRAIN as GAN_TRAIN
from dcgan import PlainDCGAN, check_same_networks, ours
from fidelity import IWAE_K, N_SAMPLES, SAMPLE_SEED, fit_as_cli, score
from pushforward.data import find_mnist_folder, load_data, load_mnist, select_rows, train_test_split
from pushforward.train import fit, resolve_device
from vae_mnist import ClassicVAE, as_pushforward, train_pushforward

PARTS = ("vae", "mixtures", "gan", "gallery")
"""The benchmark's parts, in the order they run."""

CLASSIC = {"hidden": [400], "activation": "relu", "lr": 1e-3, "batch_size": 128}
"""The classic network and budget, for pushforward's like-for-like run."""


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    for line in (
        Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    ):
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()} ({torch.get_num_threads()} threads)"
    return platform.processor() or "CPU"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_classic(
    x: torch.Tensor, seed: int, epochs: int, device: torch.device
) -> tuple[ClassicVAE, float]:
    """The pytorch/examples VAE loop on ``device``; return the model and its wall seconds."""
    torch.manual_seed(seed)
    model = ClassicVAE().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(TensorDataset(x), batch_size=128, shuffle=True)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        train_loss = 0.0
        for (data,) in loader:
            data = data.to(device)
            optimizer.zero_grad()
            recon, mu, logvar = model(data)
            bce = F.binary_cross_entropy(recon, data.view(-1, 784), reduction="sum")
            loss = bce - 0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
            loss.backward()
            train_loss += loss.item()
            optimizer.step()
    synchronize(device)
    return model.cpu(), time.perf_counter() - start


def neg_elbo(vae: nn.Module, x_test: torch.Tensor) -> float:
    """Test −ELBO under N(0, I) in nats: one seeded draw per digit, analytic KL."""
    vae = vae.cpu().eval()
    with torch.no_grad():
        e = vae.elbo(x_test, generator=torch.Generator().manual_seed(1234))
    return -float(e["elbo"].mean())


def mnist_protocol(device: torch.device, rounds: int, epochs: int) -> list[str] | None:
    folder = find_mnist_folder()
    if folder is None:
        print(
            "MNIST not found: set PUSHFORWARD_DATA or place the IDX files in ../shared/data/mnist"
        )
        return None
    train, test = train_test_split(load_mnist(folder), 8000)
    times: dict[str, list[float]] = {"classic": [], "pushforward": []}
    elbos: dict[str, list[float]] = {"classic": [], "pushforward": []}
    settings = {**CLASSIC, "prior": "normal", "device": str(device)}
    for r in range(rounds):
        order = ["classic", "pushforward"] if r % 2 == 0 else ["pushforward", "classic"]
        for who in order:
            if who == "classic":
                model, seconds = train_classic(train.x, r + 1, epochs, device)
                vae = as_pushforward(model)
            else:
                vae, seconds = train_pushforward(folder, r + 1, settings=settings, epochs=epochs)
            times[who].append(seconds)
            elbos[who].append(neg_elbo(vae, test.x))
            print(
                f"  round {r + 1} {who:<12} {seconds:7.2f} s  −ELBO {elbos[who][-1]:.2f}",
                flush=True,
            )
    t_c, t_p = statistics.median(times["classic"]), statistics.median(times["pushforward"])
    e_c, e_p = statistics.median(elbos["classic"]), statistics.median(elbos["pushforward"])
    n = 8000 * epochs
    return [
        f"| classic pytorch/examples loop | {t_c:.2f} | {n / t_c:,.0f} | {e_c:.2f} | 1.0× |",
        f"| pushforward fit vae (--prior normal) | {t_p:.2f} | {n / t_p:,.0f} | {e_p:.2f} | "
        f"{t_c / t_p:.1f}× |",
    ]


def fit_and_score(model: str, where: torch.device, epochs: int | None):
    """Fit ``model`` on ring8 (seed 1) as ``pushforward fit`` does, on ``where``; score it on the
    CPU (the run loads back there): modes, and the exact KL(p ‖ q) on fresh draws of the truth."""
    m, _, seconds, cpu_seconds = fit_as_cli(model, "ring8", 1, epochs, {"device": str(where)})
    with torch.no_grad():
        samples = m.sample(N_SAMPLES, generator=torch.Generator().manual_seed(SAMPLE_SEED + 1))
    h = torch.Generator().manual_seed(7)
    log_q = lambda x: m.log_likelihood_rows(x, generator=h, iwae_k=IWAE_K)  # noqa: E731
    return score(model, "ring8", 1, samples, log_q, seconds, cpu_seconds)


def mixtures(device: torch.device, threads: int, epochs: int | None) -> list[str]:
    rows = []
    for model in ("flow", "fm"):
        results = {}
        for where in (device, torch.device("cpu")):
            if where.type == "cpu" and device.type == "cpu" and results:
                break
            before = torch.get_num_threads()
            if where.type == "cpu":
                torch.set_num_threads(threads)
            try:
                r = fit_and_score(model, where, epochs)
            finally:
                torch.set_num_threads(before)
            results[where.type] = r
            print(f"  {model} on {where}: {r.seconds:.1f} s, KL {r.kl:.4f}", flush=True)
        on = results[device.type]
        cpu = results.get("cpu", on)
        rows.append(
            f"| {model} ring8 | {on.seconds:.1f} | {cpu.seconds:.1f} ({threads} threads) | "
            f"{cpu.seconds / on.seconds:.1f}× | {on.kl:.4f} | {cpu.kl:.4f} |"
        )
    return rows


def conv_gan(device: torch.device, rounds: int, rows: int) -> list[str] | None:
    """One epoch of the plain DCGAN loop against one of ``pushforward fit gan`` on the digits,
    alternating, after a warm-up epoch each; the table's rows (medians)."""
    if find_mnist_folder() is None:
        print("MNIST not found: the conv GAN part is skipped")
        return None
    ds = select_rows(load_data("mnist"), f":{rows}")
    model, cfg = ours(ds, 0, str(device))
    check_same_networks(model)
    plain = PlainDCGAN(ds.x, 0, device)
    x = ds.x.to(device)  # the data set on the device, as `fit` keeps it
    times: dict[str, list[float]] = {"plain": [], "pushforward": []}
    for i in range(rounds + 1):
        order = ["plain", "pushforward"] if i % 2 == 0 else ["pushforward", "plain"]
        for who in order:
            synchronize(device)
            start = time.perf_counter()
            if who == "plain":
                plain.epoch()
            else:
                fit(model, x, cfg)  # one epoch of `pushforward fit`: metrics and checks
            synchronize(device)
            seconds = time.perf_counter() - start
            if i:  # the first epoch of each warms up (autotuning, allocations)
                times[who].append(seconds)
            print(f"  epoch {i}{' (warm-up)' if not i else ''} {who:<12} {seconds:6.2f} s",
                  flush=True)  # fmt: skip
    med = {k: statistics.median(v) for k, v in times.items()}
    batch = GAN_TRAIN["batch_size"]
    return [
        f"| {k} (batch {batch}) | {med[k]:.2f} | {rows / med[k]:,.0f} | "
        f"{med[k] / med['plain']:.2f}× |"
        for k in ("plain", "pushforward")
    ]


def gallery(device: torch.device, quick: bool) -> float:
    """Wall seconds of ``pushforward demo`` on ``device`` in a fresh process, cold caches."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "XDG_CACHE_HOME": str(Path(tmp) / "cache")}
        command = [sys.executable, "-m", "pushforward", "demo", "--out", str(Path(tmp) / "demo"),
                   "--device", str(device)] + (["--quick"] if quick else [])  # fmt: skip
        start = time.perf_counter()
        subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--rounds", type=int, default=3, help="alternations of each part")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of the CPU runs")
    parser.add_argument("--quick", action="store_true", help="1 epoch each: a smoke check")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"some of {','.join(PARTS)}")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    epochs = 1 if args.quick else 10
    print(f"device: {device_name(device)}; torch {torch.__version__}", flush=True)
    parts = set(args.parts.split(","))
    if parts - set(PARTS):
        parser.error(f"--parts: unknown {sorted(parts - set(PARTS))}; choose from {PARTS}")
    vae_rows = mix_rows = gan_rows = demo_seconds = None
    if "vae" in parts:
        print("MNIST protocol", flush=True)
        vae_rows = mnist_protocol(device, 1 if args.quick else args.rounds, epochs)
    if "mixtures" in parts:
        print("mixtures", flush=True)
        mix_rows = mixtures(device, args.threads, 1 if args.quick else None)
    if "gan" in parts:
        print("conv GAN on digits", flush=True)
        rows = 1000 if args.quick else 8000
        gan_rows = conv_gan(device, 1 if args.quick else args.rounds, rows)
    if "gallery" in parts:
        print("gallery", flush=True)
        demo_seconds = gallery(device, args.quick)
    print(f"\nOn {device_name(device)}, torch {torch.__version__}\n")
    if vae_rows:
        print(f"| MNIST protocol, {epochs} epochs | seconds | samples/s | test −ELBO | speed-up |")
        print("|---|---|---|---|---|")
        print("\n".join(vae_rows))
    if mix_rows:
        print(
            f"\n| model | seconds on {device.type} | seconds on the CPU | speed-up | KL on "
            f"{device.type} | KL on the CPU |"
        )
        print("|---|---|---|---|---|---|")
        print("\n".join(mix_rows))
    if gan_rows:
        print("\n| conv GAN on digits, one epoch | seconds | samples/s | × plain |")
        print("|---|---|---|---|")
        print("\n".join(gan_rows))
    if demo_seconds is not None:
        what = "demo --quick" if args.quick else "demo"
        print(f"\n`pushforward {what} --device {device}`, cold caches: {demo_seconds:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

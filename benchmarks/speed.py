"""Training speed against the peers, the machine's ceiling, and how cost grows.

Produces the "Training speed" section of BENCHMARKS.md:

    .venv/bin/python benchmarks/speed.py            # about 5 minutes on 2 cores
    .venv/bin/python benchmarks/speed.py --pythae   # also Pythae, installed in its own venv

All on the shared MNIST protocol (first 8,000 digits, pixels in [0, 1], BCE, batch 128, Adam 1e-3,
2 threads), measured in one run, alternating A/B epoch by epoch, median of several epochs after a
warm-up:

1. classic: the pytorch/examples VAE loop (a shuffling DataLoader, zero_grad(), plain Adam);
2. pushforward on the classic architecture (784–400–20) and on Pythae's (784–512–20), through
   :func:`pushforward.train.fit`, the loop behind ``pushforward fit``;
3. (with --pythae) Pythae's VAE with its default MLP through its TrainingPipeline, in a separate
   virtual environment the script creates under benchmarks/.pythae-venv.

Then the float32 matrix-multiply rate and the ceiling it implies, cost against dataset size and
batch size, full-batch training on 2-D data, and sampling throughput.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pushforward.datasets import find_mnist_folder, load_data, load_mnist
from pushforward.train import TrainConfig, fit, seeded
from pushforward.vae import VAE
from vae_mnist import ClassicVAE, classic_loss

HERE = Path(__file__).resolve().parent


def matmul_gflops(size: int = 1024, reps: int = 30) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * size**3 * reps / (time.perf_counter() - start) / 1e9


def step_flops(hidden: int, latent: int = 20, d: int = 784) -> tuple[float, float]:
    """Matrix FLOPs per sample of one training step: (3 × forward, exact count)."""
    layers = [(d, hidden), (hidden, 2 * latent), (latent, hidden), (hidden, d)]
    forward = sum(2 * a * b for a, b in layers)
    # backward: a weight gradient for every layer, an input gradient for all but the first
    backward = sum(2 * a * b for a, b in layers) + sum(2 * a * b for a, b in layers[1:])
    return 3 * forward, forward + backward


def classic_epoch(model, optimizer, loader) -> float:
    start = time.perf_counter()
    for (data,) in loader:
        optimizer.zero_grad()
        recon, mu, logvar = model(data)
        classic_loss(recon, data, mu, logvar).backward()
        optimizer.step()
    return time.perf_counter() - start


def pushforward_epoch(model, x, batch: int, seed: int) -> float:
    start = time.perf_counter()
    fit(model, x, TrainConfig(epochs=1, batch_size=batch, lr=1e-3, seed=seed))
    return time.perf_counter() - start


def compare(x: torch.Tensor, epochs: int) -> dict[str, float]:
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    classic = ClassicVAE()
    opt = torch.optim.Adam(classic.parameters(), lr=1e-3)
    loader = DataLoader(TensorDataset(x), batch_size=128, shuffle=True)
    with seeded(0):
        pf400 = VAE(784, 20, loss="bce", net={"hidden": [400]})
        pf512 = VAE(784, 20, loss="bce", net={"hidden": [512]})
    times: dict[str, list[float]] = {"classic": [], "pushforward 400": [], "pushforward 512": []}
    for epoch in range(epochs + 1):  # epoch 0 is the warm-up
        t = {
            "classic": classic_epoch(classic, opt, loader),
            "pushforward 400": pushforward_epoch(pf400, x, 128, epoch),
            "pushforward 512": pushforward_epoch(pf512, x, 128, epoch),
        }
        if epoch:
            for k, v in t.items():
                times[k].append(v)
    return {k: x.shape[0] / statistics.median(v) for k, v in times.items()}


def pythae_rate(epochs: int) -> float | str:
    """Samples/s of Pythae's default VAE, trained in its own venv; a reason string on failure."""
    venv = HERE / ".pythae-venv"
    py = venv / "bin" / "python"
    try:
        if not py.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            pip = [str(py), "-m", "pip", "install", "-q"]
            subprocess.run([*pip, "--no-index", "--no-deps", "torch==2.13.0"], check=False,
                           capture_output=True)  # fmt: skip
            subprocess.run([*pip, "pythae"], check=True, capture_output=True, timeout=900)
    except (subprocess.SubprocessError, OSError) as e:
        return f"could not install Pythae: {e}"
    script = textwrap.dedent(f"""
        import sys, tempfile, time, torch
        sys.path.insert(0, {str(HERE.parent / "src")!r})
        torch.set_num_threads(2)
        from pushforward.datasets import find_mnist_folder, load_mnist
        from pythae.models import VAE, VAEConfig
        from pythae.trainers import BaseTrainerConfig
        from pythae.pipelines import TrainingPipeline
        x = load_mnist(find_mnist_folder()).x[:8000].reshape(-1, 1, 28, 28).numpy()
        cfg = BaseTrainerConfig(output_dir=tempfile.mkdtemp(), num_epochs={epochs},
                                learning_rate=1e-3, per_device_train_batch_size=128,
                                steps_saving=None, no_cuda=True)
        model = VAE(VAEConfig(input_dim=(1, 28, 28), latent_dim=20, reconstruction_loss="bce"))
        start = time.perf_counter()
        TrainingPipeline(training_config=cfg, model=model)(train_data=x)
        print("RATE", 8000 * {epochs} / (time.perf_counter() - start))
    """)
    done = subprocess.run([str(py), "-c", script], capture_output=True, text=True, timeout=1800)
    for line in done.stdout.splitlines():
        if line.startswith("RATE"):
            return float(line.split()[1])
    return f"Pythae run failed: {done.stderr.strip().splitlines()[-1:]}"


def scaling(rows: list[int], batches: list[int]) -> tuple[list[tuple], list[tuple]]:
    g = torch.Generator().manual_seed(0)
    by_rows = []
    for n in rows:
        x = torch.rand(n, 784, generator=g)
        with seeded(0):
            m = VAE(784, 20, net={"hidden": [400]})
        pushforward_epoch(m, x[: min(n, 2048)], 128, 0)  # warm-up
        by_rows.append((n, pushforward_epoch(m, x, 128, 1)))
    x = torch.rand(8000, 784, generator=g)
    by_batch = []
    for b in batches:
        with seeded(0):
            m = VAE(784, 20, net={"hidden": [400]})
        pushforward_epoch(m, x, b, 0)
        by_batch.append((b, pushforward_epoch(m, x, b, 1)))
    return by_rows, by_batch


def full_batch_2d(sizes: list[int]) -> list[tuple]:
    out = []
    for n in sizes:
        x = load_data("grid25", n=n).x
        with seeded(0):
            m = VAE(2, 2, loss="gaussian", learn_sigma=True, net={"hidden": [64, 64]})
        fit(m, x, TrainConfig(epochs=1, batch_size=0))
        start = time.perf_counter()
        fit(m, x, TrainConfig(epochs=5, batch_size=0))
        out.append((n, (time.perf_counter() - start) / 5))
    return out


def sampling(n: int = 100_000) -> list[tuple]:
    out = []
    for name, model in [
        ("2-D VAE (64-64)", VAE(2, 2, loss="gaussian", net={"hidden": [64, 64]})),
        ("MNIST VAE (784-400-20)", VAE(784, 20, net={"hidden": [400]})),
    ]:
        g = torch.Generator().manual_seed(0)
        model.sample(1000, generator=g)
        start = time.perf_counter()
        model.sample(n, generator=g)
        out.append((name, n / (time.perf_counter() - start)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=5, help="measured epochs per model")
    parser.add_argument("--pythae", action="store_true", help="also measure Pythae")
    parser.add_argument("--quick", action="store_true", help="smaller scaling sweeps")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    logging.getLogger("pushforward").setLevel(logging.ERROR)  # random data: collapse is expected
    folder = find_mnist_folder()
    if folder is None:
        print(
            "MNIST not found: set PUSHFORWARD_DATA or place the IDX files in ../shared/data/mnist"
        )
        return 1
    x = load_mnist(folder).x[:8000]
    gflops = matmul_gflops()
    rates = compare(x, args.epochs)
    if args.pythae:
        rates["Pythae (784-512-20)"] = pythae_rate(args.epochs)
    print(f"float32 matrix multiply: {gflops:.0f} GFLOP/s (1024×1024, 2 threads)\n")
    print("| loop | samples/s | × classic | fraction of matrix-FLOP ceiling (exact count) |")
    print("|---|---|---|---|")
    for name, rate in rates.items():
        if isinstance(rate, str):
            print(f"| {name} | {rate} | | |")
            continue
        hidden = 512 if "512" in name else 400
        three, exact = step_flops(hidden)
        ceiling = gflops * 1e9 / exact
        ratio = rate / rates["classic"]
        three_rate = gflops * 1e9 / three
        share = f"{rate / ceiling:.0%} of {ceiling:,.0f}/s ({exact / 1e6:.2f} MFLOP/sample"
        print(
            f"| {name} | {rate:,.0f} | {ratio:.2f} | {share}; {three_rate:,.0f}/s at 3× forward) |"
        )
    rows = [1000, 4000, 16000] if args.quick else [1000, 4000, 16000, 60000]
    batches = [32, 128, 1024] if args.quick else [32, 64, 128, 256, 512, 1024]
    by_rows, by_batch = scaling(rows, batches)
    print("\n| rows (784-d) | seconds per epoch | µs per row |\n|---|---|---|")
    for n, t in by_rows:
        print(f"| {n:,} | {t:.3f} | {1e6 * t / n:.1f} |")
    print("\n| batch size | seconds per epoch (8,000 rows) | samples/s |\n|---|---|---|")
    for b, t in by_batch:
        print(f"| {b} | {t:.3f} | {8000 / t:,.0f} |")
    sizes = [10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000]
    print("\n| full batch, 2-D points | seconds per epoch (= one step) |\n|---|---|")
    for n, t in full_batch_2d(sizes):
        print(f"| {n:,} | {t:.3f} |")
    print("\n| sample(n) | samples/s |\n|---|---|")
    for name, r in sampling():
        print(f"| {name} | {r:,.0f} |")
    print(f"\ntorch {torch.__version__}, 2 threads")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

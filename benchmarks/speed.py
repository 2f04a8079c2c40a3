"""Training speed against the peers, the machine's ceiling, and how cost grows.

Produces the "Training speed" section of BENCHMARKS.md:

    .venv/bin/python benchmarks/speed.py            # about 5 minutes on 2 cores
    .venv/bin/python benchmarks/speed.py --pythae   # also Pythae, installed in its own venv
    .venv/bin/python benchmarks/speed.py --all      # also the GAN, demo, `make test`: 12 minutes

All on the shared MNIST protocol (first 8,000 digits, pixels in [0, 1], BCE, batch 128, Adam 1e-3,
2 threads), measured in one run: rounds of a few epochs of each loop, the loops alternating
within a round, medians over rounds after a warm-up round:

1. classic: the pytorch/examples VAE loop (a shuffling DataLoader, zero_grad(), plain Adam);
2. the bare loop with every lever of the lever table (below), with and without bfloat16;
3. pushforward on the classic architecture (784–400–20) and on Pythae's (784–512–20), through
   :func:`pushforward.train.fit`, the loop behind ``pushforward fit``, timed as a user calls it
   (one call a round, its set-up included);
4. (with --pythae) Pythae's VAE with its default MLP through its TrainingPipeline, in a separate
   virtual environment the script creates under benchmarks/.pythae-venv.

Every loop starts each round with a fresh optimiser, as a ``fit`` call does. Then every ratio of
the speed targets, each the median of the per-round ratios (with --gan, --demo, --tests also the
mixture GAN's time to quality, the gallery's and the tests' seconds); whole training runs from a
fresh start (75 epochs, 40 with --quick), long enough for Adam's state to turn subnormal: the
classic loop against ``fit``, which flushes that state, with and without the flush;

the float32 matrix-multiply rate and the ceiling it implies; a bare loop that starts as the
classic one and adds pushforward's levers one at a time (what each gives); the test ELBO in both
precisions; cost against dataset size and batch size, full-batch training on 2-D data, and
sampling throughput.
"""

from __future__ import annotations

import argparse
import functools
import logging
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pushforward.data import find_mnist_folder, load_data, load_mnist
from pushforward.models.vae import VAE, VAEConfig
from pushforward.train import TrainConfig, autocast_dtype, fit, seeded
from vae_mnist import ClassicVAE, classic_loss

HERE = Path(__file__).resolve().parent


def matmul_gflops(size: int = 1024, reps: int = 30, dtype: torch.dtype = torch.float32) -> float:
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
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


def pushforward_fit(
    model, x, batch: int, seed: int, precision: str = "float32", epochs: int = 1, **settings
) -> float:
    """Seconds of one ``fit`` call of ``epochs`` epochs (set-up included); ``settings`` are
    further fields of TrainConfig."""
    start = time.perf_counter()
    cfg = TrainConfig(
        epochs=epochs, batch_size=batch, lr=1e-3, seed=seed, precision=precision, **settings
    )
    fit(model, x, cfg)
    return time.perf_counter() - start


FIT_LOOPS = {  # name: (hidden width, precision, hand-written gradients) of a `fit vae` run
    "pushforward 784-400-20, float32": (400, "float32", True),
    "pushforward 784-400-20, float32, autograd step": (400, "float32", False),
    "pushforward 784-400-20, auto": (400, "auto", True),
    "pushforward 784-512-20, float32": (512, "float32", True),
    "pushforward 784-512-20, auto": (512, "auto", True),
}
BARE_AUTO, BARE_FLOAT32 = "bare loop, every lever (auto)", "bare loop, every lever (float32)"


def compare(x: torch.Tensor, epochs: int, rounds: int) -> dict[str, list[float]]:
    """Samples/s of each loop in each of ``rounds`` rounds (after a warm-up round), the loops
    alternating within a round, each training ``epochs`` epochs a round: the classic loop, the
    bare loop with every lever of LEVERS (with and without bfloat16), and ``fit`` on both
    architectures in both precisions. ``fit`` is timed as a user calls it (one call of
    ``epochs`` epochs, its set-up included); it continues the same weights every round.

    Every loop starts each round with a fresh optimiser, as each ``fit`` call does: a round is
    too short (189 steps at 3 epochs) for Adam's state to turn subnormal, which slows every step
    of a loop that runs on (:func:`long_runs` measures that). Until 2026-11-30 the classic and
    bare loops kept theirs from round to round, so their later rounds ran slower and the
    ratios read high."""
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    classic = ClassicVAE()
    loader = DataLoader(TensorDataset(x), batch_size=128, shuffle=True)
    g = torch.Generator().manual_seed(0)
    bare = {}
    # the bare loop in 'auto' precision takes bfloat16 only where fit's 'auto' does (a CPU with
    # native bfloat16 matrix products); elsewhere both run float32
    native = autocast_dtype("auto", torch.device("cpu")) is not None
    top = BF16_LEVEL if native else FUSED_LEVEL
    for name, level in ((BARE_AUTO, top), (BARE_FLOAT32, FUSED_LEVEL)):
        model = _lever_model(level)
        bare[name] = (level, model)
    fits = {}
    for name, (hidden, precision, fused) in FIT_LOOPS.items():
        with seeded(0):
            fits[name] = (
                VAE(VAEConfig(dim=784, latent=20, loss="bce", hidden=[hidden], activation="relu")),
                precision,
            )
        fits[name][0].fused_step = fused
    rates: dict[str, list[float]] = {k: [] for k in ["classic", *bare, *fits]}
    for r in range(rounds + 1):  # round 0 is the warm-up
        opt = torch.optim.Adam(classic.parameters(), lr=1e-3)
        t = {"classic": sum(classic_epoch(classic, opt, loader) for _ in range(epochs))}
        for name, (level, model) in bare.items():
            opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
            t[name] = sum(lever_epoch(level, model, opt, x, loader, g) for _ in range(epochs))
        for name, (model, precision) in fits.items():
            t[name] = pushforward_fit(model, x, 128, r, precision, epochs)
        if r:
            for k, v in t.items():
                rates[k].append(epochs * x.shape[0] / v)
    return rates


LONG_LOOPS = ("classic", "pushforward, flushing subnormal state", "pushforward, not flushing")


def long_runs(
    x: torch.Tensor, test: torch.Tensor, epochs: int, rounds: int
) -> tuple[dict[str, list[float]], list[tuple[float, float, float]]]:
    """Samples/s of whole training runs of ``epochs`` epochs from a fresh start (weights and
    optimiser), ``rounds`` of each, alternating: the classic loop, and ``fit vae`` in float32
    with and without its flush of subnormal optimiser state (TrainConfig's ``flush_every``: its
    default, and 0); and for each round (the largest weight difference between the two ``fit``
    runs, their test −ELBO on ``test``). Runs longer than about 700 steps (11 epochs of 8,000
    digits) reach the subnormal range; the pytorch/examples run (10 epochs of 60,000) takes
    4,690 steps."""
    from torch.utils.data import DataLoader, TensorDataset

    loader = DataLoader(TensorDataset(x), batch_size=128, shuffle=True)
    rates: dict[str, list[float]] = {k: [] for k in LONG_LOOPS}
    same: list[tuple[float, float, float]] = []
    flush = TrainConfig().flush_every
    for r in range(rounds):
        models: dict[str, VAE] = {}
        # the loops take turns at going first, so that none always runs on a fresh host
        turn = r % len(LONG_LOOPS)
        for name in LONG_LOOPS[turn:] + LONG_LOOPS[:turn]:
            if name == "classic":
                torch.manual_seed(r)
                classic = ClassicVAE()
                opt = torch.optim.Adam(classic.parameters(), lr=1e-3)
                seconds = sum(classic_epoch(classic, opt, loader) for _ in range(epochs))
            else:
                every = flush if name == LONG_LOOPS[1] else 0
                with seeded(r):
                    models[name] = VAE(
                        VAEConfig(dim=784, latent=20, loss="bce", hidden=[400], activation="relu")
                    )
                seconds = pushforward_fit(
                    models[name], x, 128, r, "float32", epochs, flush_every=every
                )
            rates[name].append(epochs * x.shape[0] / seconds)
        flushing, not_flushing = (models[k] for k in LONG_LOOPS[1:])
        diff = max(
            float((p.detach() - q.detach()).abs().max())
            for p, q in zip(flushing.parameters(), not_flushing.parameters(), strict=True)
        )
        elbo = [
            -float(m.elbo(test, generator=torch.Generator().manual_seed(0))["elbo"].mean())
            for m in (flushing, not_flushing)
        ]
        same.append((diff, *elbo))
    return rates, same


def median_ratio(rates: dict[str, list[float]], a: str, b: str) -> float:
    """The median over rounds of rate a / rate b, each round's pair measured minutes apart."""
    return statistics.median(x / y for x, y in zip(rates[a], rates[b], strict=True))


class _LeverVAE(torch.nn.Module):
    """The classic 784–400–20 VAE, its two encoder heads optionally fused into one Linear."""

    def __init__(self, fused_head: bool):
        super().__init__()
        self.fused = fused_head
        self.fc1 = torch.nn.Linear(784, 400)
        if fused_head:
            self.head = torch.nn.Linear(400, 40)
        else:
            self.fc21, self.fc22 = torch.nn.Linear(400, 20), torch.nn.Linear(400, 20)
        self.fc3, self.fc4 = torch.nn.Linear(20, 400), torch.nn.Linear(400, 784)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return (decoder logits (B, 784), μ (B, 20), ξ (B, 20))."""
        h = torch.relu(self.fc1(x))
        mu, logvar = self.head(h).chunk(2, 1) if self.fused else (self.fc21(h), self.fc22(h))
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        return self.fc4(torch.relu(self.fc3(z))), mu.float(), logvar.float()


# each lever added on top of the ones above it, starting from the classic loop
LEVERS = (
    "classic loop (DataLoader, two heads, sigmoid + BCE, Adam, zero_grad(), .item() per step)",
    "+ tensor-resident data, index shuffling",
    "+ BCE from logits",
    "+ fused (μ, ξ) head",
    "+ zero_grad(set_to_none=True), no .item() per step",
    "+ fused Adam kernel",
    "+ hand-written gradients (pushforward.fused: no autograd graph)",
    "the levels up to fused Adam + bfloat16 autocast (hand-written gradients are float32 only)",
)
FUSED_LEVEL, BF16_LEVEL = 6, 7


def _lever_model(level: int) -> torch.nn.Module:
    """The bare loop's model at ``level``: the classic VAE, or pushforward's (its gradients)."""
    torch.manual_seed(0)
    if level == FUSED_LEVEL:
        return VAE(VAEConfig(dim=784, latent=20, loss="bce", hidden=[400], activation="relu"))
    return _LeverVAE(fused_head=level >= 3)


def lever_epoch(level: int, model, optimizer, x: torch.Tensor, loader, g) -> float:
    """One epoch of the bare loop with the first ``level`` levers of LEVERS switched on."""
    import torch.nn.functional as F

    start = time.perf_counter()
    if level >= 1:
        order = torch.randperm(x.shape[0], generator=g)
        batches = (x[order[i : i + 128]] for i in range(0, x.shape[0], 128))
    else:
        batches = (b for (b,) in loader)
    low = torch.autocast("cpu", dtype=torch.bfloat16) if level == BF16_LEVEL else None
    for xb in batches:
        optimizer.zero_grad(set_to_none=level >= 4)
        if level == FUSED_LEVEL:  # VAE.manual_gradients: no autograd graph
            for p, grad in model.manual_gradients(xb, generator=g, epoch=1.0)[1]:
                p.grad = grad
            optimizer.step()
            continue
        with low if low is not None else torch.autocast("cpu", enabled=False):
            logits, mu, logvar = model(xb)
        logits = logits.float()
        if level >= 2:
            rec = F.binary_cross_entropy_with_logits(logits, xb, reduction="sum")
        else:
            rec = F.binary_cross_entropy(torch.sigmoid(logits), xb, reduction="sum")
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        loss = rec + kl
        loss.backward()
        optimizer.step()
        if level < 4:
            loss.item()
    return time.perf_counter() - start


def levers(x: torch.Tensor, epochs: int) -> list[tuple[str, float]]:
    """Samples/s of the bare loop at each level of LEVERS, alternating epoch by epoch."""
    from torch.utils.data import DataLoader, TensorDataset

    loader = DataLoader(TensorDataset(x), batch_size=128, shuffle=True)
    g = torch.Generator().manual_seed(0)
    setups = []
    for level in range(len(LEVERS)):
        model = _lever_model(level)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True if level >= 5 else None)
        setups.append((model, opt))
    times: list[list[float]] = [[] for _ in LEVERS]
    if autocast_dtype("auto", torch.device("cpu")) is None:  # bfloat16 emulated: not a lever here
        setups, times = setups[:-1], times[:-1]
    for epoch in range(epochs + 1):  # epoch 0 is the warm-up
        for level, (model, opt) in enumerate(setups):
            t = lever_epoch(level, model, opt, x, loader, g)
            if epoch:
                times[level].append(t)
    rates = [x.shape[0] / statistics.median(t) for t in times]
    return list(zip(LEVERS, rates, strict=False))


def precision_quality(x: torch.Tensor, seeds: list[int], epochs: int = 10) -> dict[str, list]:
    """Test −ELBO (nats, last 2,000 digits) of the classic architecture after ``epochs`` epochs
    on the first 8,000, in float32 (hand-written gradients and autograd's) and in ``auto``
    precision, one value per seed."""
    train, test = x[:8000], x[8000:]
    out: dict[str, list] = {"float32": [], "float32, autograd step": [], "auto": []}
    for seed in seeds:
        for name in out:
            precision = name.split(",")[0]
            with seeded(seed):
                m = VAE(VAEConfig(dim=784, latent=20, loss="bce", hidden=[400], activation="relu"))
            m.fused_step = "autograd" not in name
            cfg = TrainConfig(epochs=epochs, batch_size=128, seed=seed, precision=precision)
            fit(m, train, cfg)
            elbo = m.elbo(test, generator=torch.Generator().manual_seed(0))["elbo"]
            out[name].append(-float(elbo.mean()))
    return out


def pythae_rate(x: torch.Tensor, epochs: int) -> float | str:
    """Samples/s of Pythae's default VAE on the digits x (n, 784), trained in its own venv; a
    reason string on failure."""
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
    import numpy as np

    # the digits go over as a .npy file: Pythae's environment has no pushforward (nor its needs)
    with tempfile.TemporaryDirectory() as tmp:
        digits = Path(tmp) / "digits.npy"
        np.save(digits, x.reshape(-1, 1, 28, 28).numpy())
        done = subprocess.run([str(py), "-c", _pythae_script(digits, x.shape[0], epochs)],
                              capture_output=True, text=True, timeout=1800)  # fmt: skip
    for line in done.stdout.splitlines():
        if line.startswith("RATE"):
            return float(line.split()[1])
    return f"Pythae run failed: {done.stderr.strip().splitlines()[-1:]}"


def _pythae_script(digits: Path, n: int, epochs: int) -> str:
    """The Python program that trains Pythae's VAE on the .npy file and prints its rate."""
    return textwrap.dedent(f"""
        import tempfile, time, numpy, torch
        torch.set_num_threads(2)
        from pythae.models import VAE, VAEConfig
        from pythae.trainers import BaseTrainerConfig
        from pythae.pipelines import TrainingPipeline
        x = numpy.load({str(digits)!r})
        cfg = BaseTrainerConfig(output_dir=tempfile.mkdtemp(), num_epochs={epochs},
                                learning_rate=1e-3, per_device_train_batch_size=128,
                                steps_saving=None, no_cuda=True)
        model = VAE(VAEConfig(input_dim=(1, 28, 28), latent_dim=20, reconstruction_loss="bce"))
        start = time.perf_counter()
        TrainingPipeline(training_config=cfg, model=model)(train_data=x)
        print("RATE", {n} * {epochs} / (time.perf_counter() - start))
    """)


def timed(command: list[str], cwd: Path | None = None) -> float:
    """Wall seconds of a command, which must succeed (its output is discarded)."""
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - start


def gan_time_to_quality() -> list[str]:
    """Table rows: the recommended mixture GAN's high-quality share, modes and training seconds
    per seed on ring8 and grid25 (2 seeds, one thread each, two at once), from gan_modes.py."""
    import json
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "modes.json"
        subprocess.run([sys.executable, str(HERE / "gan_modes.py"), "--quick", "--no-vae",
                        "--jobs", "2", "--out", str(out)], check=True,
                       capture_output=True)  # fmt: skip
        summary = json.loads(out.read_text())["summary"]
    rows = []
    for model, by_data in summary.items():
        if "truncation off" in model:
            continue
        for name, e in by_data.items():
            rows.append(
                f"| GAN on {name}: HQ {100 * e['high_quality']['mean']:.1f}%, modes "
                f"{e['modes']['min']}/{e['n_modes']} (fewest) | {e['seconds']['mean']:.0f} s of "
                f"training | ≥ 98% HQ, every mode, ≤ 60 s |"
            )
    return rows


def scaling(rows: list[int], batches: list[int]) -> tuple[list[tuple], list[tuple]]:
    g = torch.Generator().manual_seed(0)
    by_rows = []
    for n in rows:
        x = torch.rand(n, 784, generator=g)
        with seeded(0):
            m = VAE(VAEConfig(dim=784, latent=20, hidden=[400], activation="relu"))
        pushforward_fit(m, x[: min(n, 2048)], 128, 0)  # warm-up
        by_rows.append((n, pushforward_fit(m, x, 128, 1)))
    x = torch.rand(8000, 784, generator=g)
    by_batch = []
    for b in batches:
        with seeded(0):
            m = VAE(VAEConfig(dim=784, latent=20, hidden=[400], activation="relu"))
        pushforward_fit(m, x, b, 0)
        by_batch.append((b, pushforward_fit(m, x, b, 1)))
    return by_rows, by_batch


def full_batch_2d(sizes: list[int]) -> list[tuple]:
    out = []
    for n in sizes:
        x = load_data("grid25", n=n).x
        with seeded(0):
            m = VAE(
                VAEConfig(
                    dim=2,
                    latent=2,
                    loss="gaussian",
                    learn_sigma=True,
                    hidden=[64, 64],
                    activation="relu",
                )
            )
        fit(m, x, TrainConfig(epochs=1, batch_size=0))
        start = time.perf_counter()
        fit(m, x, TrainConfig(epochs=5, batch_size=0))
        out.append((n, (time.perf_counter() - start) / 5))
    return out


def sampling(n: int = 100_000) -> list[tuple]:
    out = []
    for name, model in [
        (
            "2-D VAE (64-64)",
            VAE(VAEConfig(dim=2, latent=2, loss="gaussian", hidden=[64, 64], activation="relu")),
        ),
        (
            "MNIST VAE (784-400-20)",
            VAE(VAEConfig(dim=784, latent=20, hidden=[400], activation="relu")),
        ),
    ]:
        g = torch.Generator().manual_seed(0)
        model.sample(1000, generator=g)
        start = time.perf_counter()
        model.sample(n, generator=g)
        out.append((name, n / (time.perf_counter() - start)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs of each loop a round")
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds (medians)")
    parser.add_argument(
        "--long-epochs", type=int, default=None,
        help="epochs of each whole run of the long-run comparison (75; 40 with --quick)",
    )  # fmt: skip
    parser.add_argument("--pythae", action="store_true", help="also measure Pythae")
    parser.add_argument("--quick", action="store_true", help="smaller scaling sweeps")
    parser.add_argument(
        "--gan", action="store_true",
        help="also the mixture GAN's time to quality (benchmarks/gan_modes.py, 2 seeds)",
    )  # fmt: skip
    parser.add_argument(
        "--demo", action="store_true", help="also time `pushforward demo` and `demo --quick`"
    )
    parser.add_argument("--tests", action="store_true", help="also time `make test`")
    parser.add_argument("--all", action="store_true", help="--pythae --gan --demo --tests")
    args = parser.parse_args(argv)
    if args.all:
        args.pythae = args.gan = args.demo = args.tests = True
    torch.set_num_threads(2)
    logging.getLogger("pushforward").setLevel(logging.ERROR)  # random data: collapse is expected
    folder = find_mnist_folder()
    if folder is None:
        print(
            "MNIST not found: set PUSHFORWARD_DATA or place the IDX files in ../shared/data/mnist"
        )
        return 1
    everything = load_mnist(folder).x
    x = everything[:8000]
    gflops = matmul_gflops()
    gflops_bf16 = matmul_gflops(dtype=torch.bfloat16)
    per_round = compare(x, args.epochs, args.rounds)
    rates: dict[str, float | str] = {k: statistics.median(v) for k, v in per_round.items()}
    if args.pythae:
        rates["Pythae (784-512-20)"] = pythae_rate(x, 5)
    print(f"float32 matrix multiply: {gflops:.0f} GFLOP/s (1024×1024, 2 threads)")
    print(f"bfloat16 matrix multiply: {gflops_bf16:.0f} GFLOP/s")
    auto = autocast_dtype("auto", torch.device("cpu"))
    print(f"precision 'auto' on this machine: {auto or torch.float32}\n")
    print("| loop | samples/s | × classic | fraction of matrix-FLOP ceiling (exact count) |")
    print("|---|---|---|---|")
    for name, rate in rates.items():
        if isinstance(rate, str):
            print(f"| {name} | {rate} | | |")
            continue
        hidden = 512 if "512" in name else 400  # the float32 ceiling, also for 'auto' rows
        three, exact = step_flops(hidden)
        ceiling = gflops * 1e9 / exact
        ratio = rate / float(rates["classic"])
        three_rate = gflops * 1e9 / three
        share = f"{rate / ceiling:.0%} of {ceiling:,.0f}/s ({exact / 1e6:.2f} MFLOP/sample"
        print(
            f"| {name} | {rate:,.0f} | {ratio:.2f} | {share}; {three_rate:,.0f}/s at 3× forward) |"
        )
    print(f"\n{args.rounds} rounds of {args.epochs} epochs per loop, loops alternating; ratios")
    print("are medians of the per-round ratios, against the targets of BENCHMARKS.md:\n")
    print("| ratio | measured | target |\n|---|---|---|")
    auto4, f32 = "pushforward 784-400-20, auto", "pushforward 784-400-20, float32"
    auto5 = "pushforward 784-512-20, auto"
    r = functools.partial(median_ratio, per_round)
    targets = [
        ("fit vae (auto) × classic, 784-400-20", r(auto4, "classic"), "≥ 2.5"),
        ("fit vae (float32) × classic, 784-400-20", r(f32, "classic"), "≥ 1.6"),
        ("fit vae (auto) × bare loop (auto), 784-400-20", r(auto4, BARE_AUTO), "≥ 0.9"),
        ("fit vae (float32) × bare loop (float32)", r(f32, BARE_FLOAT32), "≥ 0.9"),
        (
            "fit vae (float32): hand-written × autograd gradients",
            r(f32, f32 + ", autograd step"),
            "",
        ),
    ]
    pythae = rates.get("Pythae (784-512-20)")
    if isinstance(pythae, float):
        targets.append(("fit vae (auto) × Pythae, 784-512-20", rates[auto5] / pythae, "≥ 3"))
    for name, value, target in targets:
        print(f"| {name} | {value:.2f}× | {target} |")
    if args.gan:
        for line in gan_time_to_quality():
            print(line)
    if args.demo:
        for quick, target in ((False, 180), (True, 45)):
            demo = [sys.executable, "-m", "pushforward", "demo", "--out", str(HERE / ".speed-demo")]
            seconds = timed(demo + (["--quick"] if quick else []))
            print(
                f"| pushforward demo{' --quick' if quick else ''} | {seconds:.0f} s | "
                f"≤ {target} s |"
            )
    if args.tests:
        seconds = timed(["make", "test"], cwd=HERE.parent)
        print(f"| make test | {seconds:.0f} s | ≤ 240 s |")
    long_epochs = args.long_epochs or (40 if args.quick else 75)
    long_rounds = 2 if args.quick else 3
    long, same = long_runs(x, everything[8000:10000], long_epochs, long_rounds)
    steps = long_epochs * -(-x.shape[0] // 128)
    print(f"\nWhole runs of {long_epochs} epochs ({steps:,} steps) from a fresh start, ")
    print(f"{long_rounds} of each, alternating (samples/s over the whole run):\n")
    print("| loop | samples/s, per run | × classic (median of per-run ratios) |\n|---|---|---|")
    for name, values in long.items():
        per = ", ".join(f"{v:,.0f}" for v in values)
        print(f"| {name} | {per} | {median_ratio(long, name, 'classic'):.2f}× |")
    flush_gain = median_ratio(long, LONG_LOOPS[1], LONG_LOOPS[2])
    print(f"\nflushing × not flushing, whole runs: {flush_gain:.2f}×")
    print("\n| run | largest weight difference, flushing − not | test −ELBO, flushing / not |")
    print("|---|---|---|")
    for r, (diff, a, b) in enumerate(same):
        print(f"| {r} | {diff:.2g} | {a:.3f} / {b:.3f} |")
    print("\n| bare loop, levers added one at a time | samples/s | × the level it adds to |")
    print("|---|---|---|")
    rows = levers(x, args.epochs)
    for level, (name, rate) in enumerate(rows):
        # bfloat16 is added to the fused-Adam level, not to the hand-written gradients
        above = rows[FUSED_LEVEL - 1 if level == BF16_LEVEL else level - 1][1] if level else None
        step = f"{rate / above:.2f}" if above else ""
        print(f"| {name} | {rate:,.0f} | {step} |")
    seeds = [1, 2] if args.quick else [1, 2, 3, 4]
    quality = precision_quality(everything, seeds)
    print("\n| precision | test −ELBO after 10 epochs, per seed | mean ± s.e. |\n|---|---|---|")
    for precision, values in quality.items():
        se = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else float("nan")
        per = ", ".join(f"{v:.2f}" for v in values)
        print(f"| {precision} | {per} | {statistics.mean(values):.2f} ± {se:.2f} |")
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

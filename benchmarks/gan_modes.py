"""Mode coverage on the PacGAN mixtures: the recommended GAN and the VAE against PacGAN's Table 1.

Protocol (Lin et al., 2018, "PacGAN", Table 1), for each data set and seed s = 0, 1, …:

1. draw the training data, n = 10,000 points (``TRAINING_POINTS``), from the mixture with a
   ``torch.Generator`` seeded s: ``ring8`` (8 modes on the unit circle, std 0.01) or ``grid25``
   (25 modes at spacing 2 on {−4, …, 4}², std 0.05);
2. GAN: build ``GAN(GANConfig(dim=2, **RECOMMENDED["model"]))`` with the global RNG seeded s
   and train it with :func:`pushforward.train.fit` under
   ``TrainConfig(**RECOMMENDED["train"], seed=s)``;
   VAE: ``pushforward fit vae`` with its recommended defaults (``runs.MODEL_DEFAULTS["vae"]``),
   through :func:`pushforward.runs.fit_run` on the same data (same n, same seed, the same number
   of epochs as the GAN), then :func:`pushforward.runs.load_model`;
3. draw 2,500 samples with a generator seeded 1,000,000 + s and score them with
   :func:`pushforward.metrics.mode_metrics`: a sample is *high quality* (HQ) when it lies within
   3 std of its nearest mode, a mode is *captured* when at least one HQ sample lands on it, and the
   reverse KL is KL(HQ mode histogram ‖ uniform). Beside the paper's columns, the modes' *width*
   (the HQ samples' RMS distance to their mode over a true mode's; 1 is right, below 1 too
   narrow) shows what a sampler gives up in spread. Each trained GAN is scored twice: as
   recommended (its Jacobian truncation on) and with plain g#μ sampling (truncation off).

The table gives mean ± standard error over seeds (and the fewest modes any seed captured), with
the training seconds per seed and data set (wall time of ``fit``, or of ``fit_run`` for the VAE,
with ``--threads`` torch threads). The paper rows are PacGAN's Table 1 as printed (10 trials).
Everything is seeded: the same command on the same machine and thread count gives the same table
apart from the seconds. Command (about 12 minutes on 2 cores: 20 GAN runs of about a minute, two
at a time, and 20 short VAE runs):

    .venv/bin/python benchmarks/gan_modes.py --seeds 10 --jobs 2 --vae-epochs 60 --out modes.json
    .venv/bin/python benchmarks/gan_modes.py --quick            # 2 seeds, a smoke check
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pushforward.data import datasets
from pushforward.metrics import mode_metrics
from pushforward.models.gan import GAN, RECOMMENDED, TRUNCATION, GANConfig
from pushforward.runs import RunConfig, fit_run, load_model
from pushforward.train import TrainConfig, fit, seeded

MIXTURES: dict[str, Callable[[], datasets.GaussianMixture]] = {
    "ring8": datasets.ring8,
    "grid25": datasets.grid25,
}
N_SAMPLES = 2500  # the PacGAN protocol
SAMPLE_SEED = 1_000_000  # samples of seed s are drawn with a generator seeded SAMPLE_SEED + s
TRAINING_POINTS = 10_000  # per data set and seed

# PacGAN (Lin et al., 2018), Table 1, as printed: mean ± standard error over 10 trials of
# (modes, high-quality %, reverse KL).
PAPER: dict[str, dict[str, tuple[tuple[float, float], ...]]] = {
    "GAN (PacGAN paper)": {
        "ring8": ((6.3, 0.5), (98.2, 0.2), (0.45, 0.09)),
        "grid25": ((17.3, 0.8), (94.8, 0.7), (0.70, 0.07)),
    },
    "PacGAN4 (paper)": {
        "ring8": ((7.8, 0.1), (95.9, 2.2), (0.07, 0.02)),
        "grid25": ((24.8, 0.2), (93.6, 0.6), (0.04, 0.01)),
    },
}
GAN_ROW = f"pushforward GAN (recommended; Jacobian truncation q = {TRUNCATION:g})"
PLAIN_ROW = "pushforward GAN (the same models, truncation off)"
VAE_ROW = "pushforward VAE (fit vae defaults)"


@dataclass
class Result:
    """One trained model's scores on one data set and seed."""

    model: str
    data: str
    seed: int
    modes: int
    n_modes: int
    high_quality: float
    reverse_kl: float
    width: float
    seconds: float
    counts: list[int]


def training_data(name: str, n: int, seed: int) -> Tensor:
    """Return n points (n, 2) of the named mixture drawn with a generator seeded ``seed``."""
    return MIXTURES[name]().sample(n, generator=torch.Generator().manual_seed(seed))


def draw(model: Any, seed: int, **options: Any) -> Tensor:
    """Return the N_SAMPLES samples (N_SAMPLES, 2) of a trained model scored for ``seed``."""
    gen = torch.Generator().manual_seed(SAMPLE_SEED + seed)
    with torch.no_grad():
        return model.sample(N_SAMPLES, generator=gen, **options)


def score(model: str, name: str, seed: int, samples: Tensor, seconds: float) -> Result:
    """Return the PacGAN scores of ``samples`` (N_SAMPLES, 2) against the named mixture."""
    mix = MIXTURES[name]()
    m = mode_metrics(samples.double(), mix.means, float(mix.stds[0]))
    return Result(
        model, name, seed, m.modes_captured, m.n_modes, m.high_quality, m.reverse_kl, m.width,
        seconds, m.counts,
    )  # fmt: skip


def run_gan(
    name: str, seed: int, model_set: dict | None = None, train_set: dict | None = None
) -> list[Result]:
    """Train the recommended GAN (its settings changed by ``model_set`` and ``train_set``) on
    one data set and seed; score its samples as recommended and with Jacobian truncation off."""
    x = training_data(name, TRAINING_POINTS, seed)
    cfg = TrainConfig(**{**RECOMMENDED["train"], **(train_set or {}), "seed": seed})
    with seeded(seed):
        model = GAN(GANConfig(dim=x.shape[1], **{**RECOMMENDED["model"], **(model_set or {})}))
    start = time.perf_counter()
    fit(model, x, cfg)
    seconds = time.perf_counter() - start
    return [
        score(GAN_ROW, name, seed, draw(model, seed), seconds),
        score(PLAIN_ROW, name, seed, draw(model, seed, jacobian_truncation=0.0), seconds),
    ]


def run_vae(name: str, seed: int, epochs: int) -> list[Result]:
    """Fit ``pushforward fit vae`` with its defaults on one data set and seed; score it."""
    n = TRAINING_POINTS
    flat = {"model": "vae", "data": name, "n": n, "seed": seed, "epochs": epochs,
            "checkpoint_every": max(epochs, 1)}  # fmt: skip
    rc = RunConfig.from_flat(flat)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        folder = fit_run(rc, out=Path(tmp) / "run", figures=False)
        seconds = time.perf_counter() - start
        model = load_model(folder)
    return [score(VAE_ROW, name, seed, draw(model, seed), seconds)]


def run_task(task: tuple) -> list[Result]:
    """Run one (data, seed, 'gan' or VAE epochs, threads, model settings, training settings)
    task; in a worker process too."""
    name, seed, what, threads, model_set, train_set = task
    torch.set_num_threads(threads)
    if what == "gan":
        return run_gan(name, seed, model_set, train_set)
    return run_vae(name, seed, int(what))


def _settings(pairs: Sequence[str]) -> dict[str, Any]:
    """Return {KEY: VALUE} from KEY=VALUE strings, each VALUE read as JSON when it is JSON."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, _, text = pair.partition("=")
        try:
            out[key] = json.loads(text)
        except json.JSONDecodeError:
            out[key] = text
    return out


def report(r: Result) -> Result:
    print(
        f"{r.data} seed {r.seed} {r.model}: {r.modes}/{r.n_modes} modes, "
        f"HQ {100 * r.high_quality:.1f}%, reverse KL {r.reverse_kl:.4f}, width {r.width:.3f}, "
        f"{r.seconds:.0f} s",
        flush=True,
    )
    return r


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """Return the mean of ``values`` and its standard error (0 for a single value)."""
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return mean, se


def summarise(results: Sequence[Result]) -> dict[str, dict[str, Any]]:
    """Return {model: {data: mean, standard error and minimum of each score}}."""
    out: dict[str, dict[str, Any]] = {}
    for r in results:
        out.setdefault(r.model, {}).setdefault(r.data, []).append(r)
    summary: dict[str, dict[str, Any]] = {}
    for model, by_data in out.items():
        summary[model] = {}
        for name, rs in by_data.items():
            entry: dict[str, Any] = {"seeds": len(rs), "n_modes": rs[0].n_modes}
            for key in ("modes", "high_quality", "reverse_kl", "width", "seconds"):
                m, se = mean_se([float(getattr(r, key)) for r in rs])
                entry[key] = {"mean": m, "se": se, "min": min(getattr(r, key) for r in rs)}
            summary[model][name] = entry
    return summary


def _pm(mean: float, se: float, digits: int) -> str:
    return f"{mean:.{digits}f} ± {se:.{digits}f}"


def table(summary: dict[str, dict[str, Any]], names: Sequence[str]) -> str:
    """Return the markdown table: the paper's rows, then ours, one column group per data set."""
    head = ["model"]
    for name in names:
        head += [f"{name} modes (min)", f"{name} HQ %", f"{name} rev-KL", f"{name} width"]
    head.append("seconds per seed")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row, by_data in PAPER.items():
        cells = [row]
        for name in names:
            (m, m_se), (hq, hq_se), (kl, kl_se) = by_data[name]
            cells += [_pm(m, m_se, 1), _pm(hq, hq_se, 1), _pm(kl, kl_se, 2), "—"]
        lines.append("| " + " | ".join([*cells, "—"]) + " |")
    for row, by_data in summary.items():
        cells = [row]
        seconds: list[float] = []
        for name in names:
            e = by_data[name]
            modes = f"{_pm(e['modes']['mean'], e['modes']['se'], 1)} ({e['modes']['min']})"
            hq = _pm(100 * e["high_quality"]["mean"], 100 * e["high_quality"]["se"], 1)
            kl = _pm(e["reverse_kl"]["mean"], e["reverse_kl"]["se"], 3)
            cells += [modes, hq, kl, _pm(e["width"]["mean"], e["width"]["se"], 2)]
            seconds.append(e["seconds"]["mean"])
        cells.append(" / ".join(f"{s:.0f}" for s in seconds))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10, help="seeds 0, …, SEEDS − 1")
    parser.add_argument("--quick", action="store_true", help="2 seeds (a smoke check)")
    parser.add_argument("--data", nargs="+", choices=sorted(MIXTURES), default=["ring8", "grid25"])
    parser.add_argument("--no-vae", action="store_true", help="skip the VAE rows")
    parser.add_argument("--no-gan", action="store_true", help="skip the GAN rows")
    parser.add_argument(
        "--vae-epochs", type=int, default=None, help="VAE epochs (default: the GAN's)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads per job (default 1)")
    parser.add_argument(
        "--jobs", type=int, default=1, help="runs at once, in separate processes (default 1)"
    )
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="change a setting (a GANConfig field) of the recommended GAN (a lever to measure)",
    )  # fmt: skip
    parser.add_argument(
        "--train", action="append", default=[], metavar="KEY=VALUE",
        help="change a training setting of the recommended GAN, e.g. batch_size=1024",
    )  # fmt: skip
    args = parser.parse_args(argv)
    model_set, train_set = _settings(args.set), _settings(args.train)
    torch.set_num_threads(args.threads)
    seeds = list(range(2 if args.quick else args.seeds))
    epochs = int({**RECOMMENDED["train"], **train_set}["epochs"])
    vae_epochs = epochs if args.vae_epochs is None else args.vae_epochs
    tasks = [
        (name, seed, "gan", args.threads, model_set, train_set)
        for name in ([] if args.no_gan else args.data)
        for seed in seeds
    ]
    if not args.no_vae:
        tasks += [(n, s, vae_epochs, args.threads, {}, {}) for n in args.data for s in seeds]
    results: list[Result] = []
    if args.jobs > 1:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
            for rs in pool.map(run_task, tasks):
                results += [report(r) for r in rs]
    else:
        for task in tasks:
            results += [report(r) for r in run_task(task)]
    order = {m: i for i, m in enumerate((GAN_ROW, PLAIN_ROW, VAE_ROW))}
    results.sort(key=lambda r: (order[r.model], args.data.index(r.data), r.seed))
    summary = summarise(results)
    print()
    if model_set or train_set:
        print(f"the recommended GAN with {model_set} {train_set}")
    print(
        f"{len(seeds)} seeds; n = {TRAINING_POINTS:,} training points, {epochs} epochs "
        f"(VAE {vae_epochs}), {N_SAMPLES:,} samples, {args.threads} thread(s) per run, "
        f"{args.jobs} run(s) at once; "
        "seconds per seed are per data set (" + " / ".join(args.data) + ")"
    )
    print()
    print(table(summary, args.data))
    if args.out is not None:
        record = {
            "setting": {
                "model": {**RECOMMENDED["model"], **model_set},
                "train": {**RECOMMENDED["train"], **train_set},
            },
            "n": TRAINING_POINTS,
            "epochs": epochs,
            "vae_epochs": vae_epochs,
            "n_samples": N_SAMPLES,
            "seeds": seeds,
            "threads": args.threads,
            "jobs": args.jobs,
            "torch": torch.__version__,
            "paper": PAPER,
            "summary": summary,
            "runs": [asdict(r) for r in results],
        }
        args.out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

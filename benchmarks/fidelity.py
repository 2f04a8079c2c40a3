"""Fidelity on the PacGAN mixtures: the recommended flow against the truth, by mode and in nats.

Protocol (that of ``benchmarks/gan_modes.py``, after Lin et al., 2018, "PacGAN", Table 1), for
each data set and seed s = 0, 1, …:

1. draw the training data, n = 10,000 points (``TRAINING_POINTS``), from the mixture with a
   ``torch.Generator`` seeded s: ``ring8`` (8 modes on the unit circle, std 0.01) or ``grid25``
   (25 modes at spacing 2 on {−4, …, 4}², std 0.05);
2. build ``Flow(FlowConfig(dim=2, **RECOMMENDED["model"]))`` with the global RNG seeded s and
   train it with :func:`pushforward.train.fit` under
   ``TrainConfig(**RECOMMENDED["train"], seed=s)``;
3. draw 2,500 samples with a generator seeded 1,000,000 + s — all of them, no rejection — and
   score them with :func:`pushforward.metrics.mode_metrics`: modes captured, the share of high
   quality samples (HQ, within 3 std of their nearest mode), the modes' width (1 is right) and the
   reverse KL of the HQ mode histogram to uniform;
4. KL(p ‖ q) in nats, exactly: the mean of log p(x) − log q(x) over 20,000 fresh draws of the
   truth p (seeded 2,000,000 + s), with its standard error
   (:func:`pushforward.fidelity.kl_to_truth`); beside it the k-nearest-neighbour estimate from the
   2,500 samples and 2,500 fresh truth draws alone (:func:`pushforward.fidelity.knn_kl`), the
   number a model without a density (the GAN) would get, to show how far it is from the exact
   one.

The "truth" row scores exact draws of the mixture itself the same way: the ceiling (its HQ share
is P(χ²₂ ≤ 9) = 98.9%, its KL 0). The table gives mean ± standard error over seeds (and the fewest
modes any seed captured) and the training seconds per seed: the wall time of ``fit`` with
``--threads`` torch threads, and the CPU seconds the process spent (the same as the wall time on
an idle machine; on a shared one the wall time is longer). Everything is seeded. Commands (the
first: 20 runs of about a minute of CPU each, two at a time; 40 minutes on 2 busy shared cores):

    .venv/bin/python benchmarks/fidelity.py --seeds 10 --jobs 2 --out fidelity.json
    .venv/bin/python benchmarks/fidelity.py --quick                 # 2 seeds, a smoke check
    .venv/bin/python benchmarks/fidelity.py --seeds 3 --model bins=16 --train epochs=100

The rows of the other models, each fitted as ``pushforward fit MODEL`` with its defaults on the
same data and scored on the same draws (the VAE's KL an IWAE upper bound on 2,000 draws, the
GAN's a k-NN estimate only; 3 seeds, the GAN's 600 epochs taking most of an hour), joined to an
earlier flow run; and the held-out NLL on moons (no known density there) of every model with one:

    .venv/bin/python benchmarks/fidelity.py --no-flow --no-truth --others gan vae ppca \\
        --seeds 3 --out others.json --merge fidelity.json
    .venv/bin/python benchmarks/fidelity.py --moons --seeds 3
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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pushforward.core import LOWER_BOUND
from pushforward.data import datasets
from pushforward.metrics import (
    BOUND_KL_SAMPLES,
    EXACT,
    IWAE_UPPER,
    kl_to_truth,
    knn_kl,
    mode_metrics,
)
from pushforward.models.flow import RECOMMENDED, Flow, FlowConfig
from pushforward.models.registry import MODELS
from pushforward.runs import RunConfig, fit_run, fit_seed_runs, load_model, load_run_config
from pushforward.train import TrainConfig, fit, seeded

MIXTURES: dict[str, Callable[[], datasets.GaussianMixture]] = {
    "ring8": datasets.ring8,
    "grid25": datasets.grid25,
}
N_SAMPLES = 2500  # the PacGAN protocol
SAMPLE_SEED = 1_000_000  # samples of seed s are drawn with a generator seeded SAMPLE_SEED + s
KL_SEED = 2_000_000  # the truth's draws for KL(p ‖ q) of seed s, seeded KL_SEED + s
KL_DRAWS = 20_000
TRAINING_POINTS = 10_000  # per data set and seed
FLOW_ROW = "pushforward flow (recommended)"
TRUTH_ROW = "truth (exact draws of the mixture)"
IWAE_K = 1000  # importance samples of the VAE's likelihood bound
# the other models, each fitted as `pushforward fit MODEL --data NAME -n 10000 --seed s` with its
# defaults (PPCA with k = 1, the most a 2-D PPCA allows): the rows they give, each with the
# sampling settings it is drawn with
OTHER_MODELS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "vae": [("VAE (fit vae defaults)", {})],
    "gan": [
        ("GAN (recommended: Jacobian truncation)", {}),
        ("GAN (recommended, plain g#μ)", {"jacobian_truncation": 0.0}),
    ],
    "ppca": [("PPCA (k = 1)", {})],
    "fm": [("flow matching (fit fm defaults)", {})],
}
OTHER_SETTINGS: dict[str, dict[str, Any]] = {"ppca": {"latent": 1}}
ROW_ORDER = [FLOW_ROW, *(row for rows in OTHER_MODELS.values() for row, _ in rows), TRUTH_ROW]


@dataclass
class Result:
    """One model's scores on one data set and seed."""

    model: str
    data: str
    seed: int
    modes: int
    n_modes: int
    high_quality: float
    reverse_kl: float
    width: float
    kl: float
    kl_se: float
    knn_kl: float
    seconds: float
    cpu_seconds: float
    counts: list[int]
    kl_kind: str = EXACT  # or IWAE_UPPER; "none" for a model without a likelihood (nan)
    kl_draws: int = KL_DRAWS
    epochs: int = 0
    settings: dict[str, Any] = field(default_factory=dict)


def training_data(name: str, n: int, seed: int) -> Tensor:
    """Return n points (n, 2) of the named mixture drawn with a generator seeded ``seed``."""
    return MIXTURES[name]().sample(n, generator=torch.Generator().manual_seed(seed))


def score(
    model: str,
    name: str,
    seed: int,
    samples: Tensor,
    log_q: Callable[[Tensor], Tensor],
    seconds: float,
    cpu_seconds: float,
    *,
    kind: str = EXACT,
    draws: int = KL_DRAWS,
) -> Result:
    """Return the mode scores of ``samples`` (N_SAMPLES, 2) and the KL of ``log_q`` (None for a
    model without a likelihood) to the named mixture, on ``draws`` fresh draws of it."""
    mix = MIXTURES[name]()
    m = mode_metrics(samples.double(), mix.means, float(mix.stds[0]))
    if log_q is None:
        value, stderr, kind = math.nan, math.nan, "none"
    else:
        gen = torch.Generator().manual_seed(KL_SEED + seed)
        kl = kl_to_truth(mix, log_q, draws, generator=gen, kind=kind)
        value, stderr = kl.value, kl.stderr
    real = mix.sample(N_SAMPLES, generator=torch.Generator().manual_seed(KL_SEED + seed + 1))
    return Result(
        model, name, seed, m.modes_captured, m.n_modes, m.high_quality, m.reverse_kl, m.width,
        value, stderr, knn_kl(real, samples), seconds, cpu_seconds, m.counts, kind, draws,
    )  # fmt: skip


def run_flow(
    name: str, seed: int, model_options: dict[str, Any], train_options: dict[str, Any]
) -> Result:
    """Train the recommended flow (with any overrides) on one data set and seed; score it."""
    x = training_data(name, TRAINING_POINTS, seed)
    cfg = TrainConfig(**{**RECOMMENDED["train"], **train_options, "seed": seed})
    with seeded(seed):
        model = Flow(FlowConfig(dim=x.shape[1], **{**RECOMMENDED["model"], **model_options}))
    start, cpu = time.perf_counter(), time.process_time()
    fit(model, x, cfg)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    with torch.no_grad():
        gen = torch.Generator().manual_seed(SAMPLE_SEED + seed)
        samples = model.sample(N_SAMPLES, generator=gen)
        return score(FLOW_ROW, name, seed, samples, model.log_prob, seconds, cpu_seconds)


def run_truth(name: str, seed: int) -> Result:
    """Score exact draws of the mixture itself: the ceiling of every score."""
    mix = MIXTURES[name]()
    samples = mix.sample(N_SAMPLES, generator=torch.Generator().manual_seed(SAMPLE_SEED + seed))
    exact = lambda x: mix.log_prob(x.double())  # noqa: E731 - float64, so each difference is 0
    return score(TRUTH_ROW, name, seed, samples, exact, 0.0, 0.0)


def cli_run_config(
    model: str, data: str, seed: int, epochs: int | None, settings: dict[str, Any] | None
) -> RunConfig:
    """Return the run config of ``pushforward fit MODEL --data DATA -n 10000 --seed s`` with the
    model's defaults (``epochs`` and ``settings`` override them), checkpointed once, at the end."""
    flat = {"model": model, "data": data, "n": TRAINING_POINTS, "seed": seed,
            **OTHER_SETTINGS.get(model, {}), **(settings or {})}  # fmt: skip
    if epochs is not None:
        flat["epochs"] = epochs
    rc = RunConfig.from_flat(flat)
    rc.train.checkpoint_every = max(rc.train.epochs, 1)
    return rc


def fit_as_cli(
    model: str,
    data: str,
    seed: int,
    epochs: int | None = None,
    settings: dict[str, Any] | None = None,
) -> tuple[Any, RunConfig, float, float]:
    """Fit ``model`` as ``pushforward fit MODEL --data DATA -n 10000 --seed s`` would, with its
    defaults (``epochs`` and the model's ``settings`` override them) and one checkpoint, at the
    end, in a temporary run folder; return the loaded model, its run config, and the wall and
    CPU seconds of fitting."""
    rc = cli_run_config(model, data, seed, epochs, settings)
    with tempfile.TemporaryDirectory() as tmp:
        start, cpu = time.perf_counter(), time.process_time()
        folder = fit_run(rc, out=Path(tmp) / "run", figures=False)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
        return load_model(folder), rc, seconds, cpu_seconds


def run_registered(
    name: str, seed: int, model: str, epochs: int | None, settings: dict[str, Any] | None = None
) -> list[Result]:
    """Fit a registered model as ``pushforward fit MODEL`` would, with its defaults (``epochs``
    and ``settings`` override them), on the seed's training data; score each of its
    :data:`OTHER_MODELS` rows.
    The KL is exact, an IWAE upper bound (the VAE: :data:`IWAE_K` importance samples on
    :data:`~pushforward.fidelity.BOUND_KL_SAMPLES` draws), or absent (the GAN)."""
    m, rc, seconds, cpu_seconds = fit_as_cli(model, name, seed, epochs, settings)
    return score_fitted(name, seed, model, m, rc, seconds, cpu_seconds)


def run_stacked(
    name: str, seeds: int, model: str, epochs: int | None, settings: dict[str, Any] | None = None
) -> list[Result]:
    """:func:`run_registered` for the seeds 0 … ``seeds`` − 1 at once, fitted as ``pushforward
    fit MODEL --seeds N`` fits them (one stacked model; each member is the run of its seed, to
    rounding); each seed's seconds are the stack's divided by N."""
    rc = cli_run_config(model, name, 0, epochs, settings)
    with tempfile.TemporaryDirectory() as tmp:
        start, cpu = time.perf_counter(), time.process_time()
        folders = fit_seed_runs(rc, seeds, out=Path(tmp) / "stack", figures=False)
        seconds = (time.perf_counter() - start) / seeds
        cpu_seconds = (time.process_time() - cpu) / seeds
        results = []
        for seed, folder in enumerate(folders):
            member = RunConfig.from_dict(load_run_config(folder)["run"])
            results += score_fitted(name, seed, model, load_model(folder), member, seconds,
                                    cpu_seconds)  # fmt: skip
        return results


def score_fitted(
    name: str, seed: int, model: str, m: Any, rc: RunConfig, seconds: float, cpu_seconds: float
) -> list[Result]:
    """Score a fitted registered model (seed ``seed`` of ``name``) in each of its
    :data:`OTHER_MODELS` rows."""
    assert rc.settings is not None
    used_epochs = rc.train.epochs if MODELS[model].trained else 0
    results = []
    for row, sampling in OTHER_MODELS[model]:
        m.set_sampling(**sampling)
        gen = torch.Generator().manual_seed(SAMPLE_SEED + seed)
        with torch.no_grad():
            samples = m.sample(N_SAMPLES, generator=gen)
        cost = m.sampling_cost()  # e.g. flow matching's field evaluations (nfe)
        log_q, kind, draws = None, EXACT, KL_DRAWS
        if m.likelihood_kind is not None:
            h = torch.Generator().manual_seed(KL_SEED + seed + 2)

            def log_q(x: Tensor, m: Any = m, h: torch.Generator = h) -> Tensor:
                return m.log_likelihood_rows(x, generator=h, iwae_k=IWAE_K)

            if m.likelihood_kind == LOWER_BOUND:
                kind, draws = IWAE_UPPER, BOUND_KL_SAMPLES
        r = score(row, name, seed, samples, log_q, seconds, cpu_seconds, kind=kind, draws=draws)
        r.epochs, r.settings = used_epochs, {**rc.settings.to_dict(), **sampling, **cost}
        results.append(r)
    return results


MOONS_MODELS = {"flow": "flow (fit flow defaults)", "vae": "VAE (fit vae defaults; IWAE)",
                "ppca": "PPCA (k = 1)"}  # fmt: skip
MOONS_TEST_SEED = 3_000_000  # the held-out moons of seed s: 2,000 fresh draws seeded this + s


def run_moons(seed: int, model: str) -> dict[str, Any]:
    """Fit ``model`` as ``pushforward fit MODEL --data moons -n 10000 --seed s`` with its
    defaults; return its mean negative log-likelihood ± s.e. on 2,000 fresh moons (nats), exact
    or (the VAE, :data:`IWAE_K` importance samples) an upper bound of the true NLL."""
    m, _, seconds, cpu_seconds = fit_as_cli(model, "moons", seed)
    test = datasets.load_data(
        "moons", n=2000, generator=torch.Generator().manual_seed(MOONS_TEST_SEED + seed)
    )
    with torch.no_grad():
        lq = m.log_likelihood_rows(
            test.x, generator=torch.Generator().manual_seed(seed), iwae_k=IWAE_K
        ).double()
    return {"model": MOONS_MODELS[model], "seed": seed, "nll": -float(lq.mean()),
            "nll_se": float(lq.std() / math.sqrt(lq.numel())),
            "bound": m.likelihood_kind == LOWER_BOUND, "seconds": seconds,
            "cpu_seconds": cpu_seconds}  # fmt: skip


def moons_main(seeds: Sequence[int], threads: int, out: str | None) -> int:
    """Held-out NLL on moons for every model with a density, mean ± s.e. over ``seeds``."""
    torch.set_num_threads(threads)
    runs = []
    for model in MOONS_MODELS:
        for seed in seeds:
            r = run_moons(seed, model)
            print(f"moons seed {seed} {r['model']}: NLL {r['nll']:.4f} ± {r['nll_se']:.4f} nats"
                  f", {r['seconds']:.0f} s ({r['cpu_seconds']:.0f} s CPU)", flush=True)  # fmt: skip
            runs.append(r)
    print()
    print("| model | held-out NLL, nats (mean ± s.e. over seeds) | train s per seed (CPU s) |")
    print("|---|---|---|")
    for label in MOONS_MODELS.values():
        rs = [r for r in runs if r["model"] == label]
        m, se = mean_se([r["nll"] for r in rs])
        sec, cpu = (
            mean_se([r["seconds"] for r in rs])[0],
            mean_se([r["cpu_seconds"] for r in rs])[0],
        )
        bound = "≥ " if rs[0]["bound"] else ""
        print(f"| {label} | {bound}{m:.4f} ± {se:.4f} | {sec:.0f} ({cpu:.0f}) |")
    if out is not None:
        with open(out, "w", encoding="utf-8") as f:
            f.write(json.dumps({"seeds": list(seeds), "runs": runs}, indent=2) + "\n")
    return 0


def run_task(task: tuple[str, int, str, int, dict[str, Any], dict[str, Any]]) -> list[Result]:
    """Run one (data, seed, 'flow', 'truth' or a registered model, threads, model and train
    overrides) task; in a worker process too."""
    name, seed, what, threads, model_options, train_options = task
    torch.set_num_threads(threads)
    if what == "truth":
        return [run_truth(name, seed)]
    if what == "flow":
        return [run_flow(name, seed, model_options, train_options)]
    if what.endswith(STACKED):  # all seeds at once: ``seed`` is their number
        model = what[: -len(STACKED)]
        return run_stacked(name, seed, model, train_options.get("epochs"), model_options)
    return run_registered(name, seed, what, train_options.get("epochs"), model_options)


STACKED = "@stack"
"""A task of :func:`run_task` for ``MODEL@stack`` fits every seed of MODEL as one stack."""


def report(r: Result) -> Result:
    print(
        f"{r.data} seed {r.seed} {r.model}: {r.modes}/{r.n_modes} modes, "
        f"HQ {100 * r.high_quality:.1f}%, width {r.width:.3f}, reverse KL {r.reverse_kl:.4f}, "
        f"KL(p‖q) {r.kl:.4f} ± {r.kl_se:.4f} (k-NN {r.knn_kl:.3f}), {r.seconds:.0f} s "
        f"({r.cpu_seconds:.0f} s CPU)",
        flush=True,
    )
    return r


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """Return the mean of ``values`` and its standard error (0 for a single value)."""
    if not all(math.isfinite(v) for v in values):  # no such score (the GAN's KL), or inf
        return statistics.fmean(values), math.nan
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return mean, se


KEYS = ("modes", "high_quality", "width", "reverse_kl", "kl", "knn_kl", "seconds", "cpu_seconds")


def summarise(results: Sequence[Result]) -> dict[str, dict[str, Any]]:
    """Return {model: {data: mean, standard error, minimum and maximum of each score}}."""
    out: dict[str, dict[str, list[Result]]] = {}
    for r in results:
        out.setdefault(r.model, {}).setdefault(r.data, []).append(r)
    summary: dict[str, dict[str, Any]] = {}
    for model, by_data in out.items():
        summary[model] = {}
        for name, rs in by_data.items():
            entry: dict[str, Any] = {"seeds": len(rs), "n_modes": rs[0].n_modes,
                                     "kl_kind": rs[0].kl_kind, "epochs": rs[0].epochs}  # fmt: skip
            for key in KEYS:
                values = [float(getattr(r, key)) for r in rs]
                m, se = mean_se(values)
                entry[key] = {"mean": m, "se": se, "min": min(values), "max": max(values)}
            summary[model][name] = entry
    return summary


def _pm(mean: float, se: float, digits: int) -> str:
    return f"{mean:.{digits}f} ± {se:.{digits}f}"


def _kl_cell(e: dict[str, Any]) -> str:
    """The KL(p ‖ q) cell: the mean ± s.e. over seeds, "≤" for an IWAE bound, "—" for none."""
    kind = e.get("kl_kind", EXACT)
    if kind == "none":
        return "— (no density)"
    cell = _pm(e["kl"]["mean"], e["kl"]["se"], 4 if e["kl"]["mean"] < 1 else 2)
    return f"≤ {cell}" if kind == IWAE_UPPER else cell


def table(summary: dict[str, dict[str, Any]], names: Sequence[str]) -> str:
    """Return the markdown table, one column group per data set."""
    head = ["model"]
    for name in names:
        head += [
            f"{name} modes (min)", f"{name} HQ %", f"{name} width", f"{name} rev-KL",
            f"{name} KL(p‖q) nats", f"{name} k-NN KL",
        ]  # fmt: skip
    head.append("train s per seed (CPU s)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row, by_data in summary.items():
        cells = [row]
        seconds = []
        for name in names:
            e = by_data[name]
            cells += [
                f"{_pm(e['modes']['mean'], e['modes']['se'], 1)} ({e['modes']['min']:.0f})",
                _pm(100 * e["high_quality"]["mean"], 100 * e["high_quality"]["se"], 1),
                _pm(e["width"]["mean"], e["width"]["se"], 3),
                _pm(e["reverse_kl"]["mean"], e["reverse_kl"]["se"], 4),
                _kl_cell(e),
                _pm(e["knn_kl"]["mean"], e["knn_kl"]["se"], 3),
            ]
            seconds.append(f"{e['seconds']['mean']:.0f} ({e['cpu_seconds']['mean']:.0f})")
        cells.append(" / ".join(seconds) if row != TRUTH_ROW else "—")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _options(pairs: Sequence[str], what: str) -> dict[str, Any]:
    """Parse KEY=VALUE overrides; VALUE is JSON (numbers, lists, strings in quotes) or a word."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise SystemExit(f"--{what} wants KEY=VALUE, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10, help="seeds 0, …, SEEDS − 1")
    parser.add_argument("--quick", action="store_true", help="2 seeds (a smoke check)")
    parser.add_argument("--data", nargs="+", choices=sorted(MIXTURES), default=["ring8", "grid25"])
    parser.add_argument("--threads", type=int, default=1, help="torch threads per job (default 1)")
    parser.add_argument(
        "--jobs", type=int, default=1, help="runs at once, in separate processes (default 1)"
    )
    parser.add_argument(
        "--model", nargs="*", default=[], metavar="KEY=VALUE", help="override a Flow setting"
    )
    parser.add_argument(
        "--train", nargs="*", default=[], metavar="KEY=VALUE", help="override a TrainConfig field"
    )
    parser.add_argument("--no-truth", action="store_true", help="skip the truth rows")
    parser.add_argument("--no-flow", action="store_true", help="skip the flow rows")
    parser.add_argument(
        "--others",
        nargs="*",
        default=[],
        choices=sorted(OTHER_MODELS),
        help="also fit these models with their `fit` defaults (rows beside the flow's)",
    )
    parser.add_argument(
        "--other-seeds", type=int, default=None, help="seeds for the --others rows (default SEEDS)"
    )
    parser.add_argument(
        "--other-epochs", type=int, default=None, help="epochs of the --others (default theirs)"
    )
    parser.add_argument(
        "--other-model", nargs="*", default=[], metavar="KEY=VALUE",
        help="override a setting of the --others (e.g. features=axes for fm)",
    )  # fmt: skip
    parser.add_argument(
        "--stack", action="store_true",
        help="fit the --others' seeds as one stacked model each (fit --seeds N: the VAE, fm)",
    )  # fmt: skip
    parser.add_argument(
        "--merge",
        nargs="*",
        default=[],
        help="JSON files of earlier runs (--out) whose rows join the table",
    )
    parser.add_argument(
        "--moons",
        action="store_true",
        help="instead: held-out NLL on moons of the flow, the VAE and PPCA",
    )
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.moons:
        return moons_main(list(range(2 if args.quick else args.seeds)), args.threads, args.out)
    torch.set_num_threads(args.threads)
    seeds = list(range(2 if args.quick else args.seeds))
    model_options, train_options = _options(args.model, "model"), _options(args.train, "train")
    tasks = [] if args.no_flow else [(n, s, "flow", args.threads, model_options, train_options)
                                     for n in args.data for s in seeds]  # fmt: skip
    other_seeds = seeds if args.other_seeds is None else list(range(args.other_seeds))
    other_train = {} if args.other_epochs is None else {"epochs": args.other_epochs}
    others = sorted(args.others, key=lambda m: m != "gan")  # the longest runs first
    other_model = _options(args.other_model, "other-model")
    if args.stack:  # one task per model and data set: its seeds as one stacked model
        tasks = [(n, len(other_seeds), m + STACKED, args.threads, other_model, other_train)
                 for m in others for n in args.data] + tasks  # fmt: skip
    else:
        tasks = [(n, s, m, args.threads, other_model, other_train)
                 for m in others for n in args.data for s in other_seeds] + tasks  # fmt: skip
    if not args.no_truth:
        tasks += [(n, s, "truth", args.threads, {}, {}) for n in args.data for s in seeds]
    results: list[Result] = []
    if args.jobs > 1:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
            results = [report(r) for rs in pool.map(run_task, tasks) for r in rs]
    else:
        results = [report(r) for task in tasks for r in run_task(task)]
    for path in args.merge:
        with open(path, encoding="utf-8") as f:
            results += [Result(**r) for r in json.load(f)["runs"]]
    results.sort(key=lambda r: (ROW_ORDER.index(r.model), args.data.index(r.data), r.seed))
    if args.out is not None:  # the runs first: an hour of training must not hang on a summary
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(json.dumps({"runs": [asdict(r) for r in results]}, indent=2) + "\n")
    summary = summarise(results)
    # the flow's setting, when it ran (the other models' settings are in each run's record)
    setting = None if args.no_flow else {
        "model": {**RECOMMENDED["model"], **model_options},
        "train": {**RECOMMENDED["train"], **train_options},
    }  # fmt: skip
    flow = f"; the flow's setting {json.dumps(setting)}" if setting is not None else ""
    print()
    print(
        f"{len(seeds)} seeds; n = {TRAINING_POINTS:,} training points, {N_SAMPLES:,} samples, "
        f"KL(p‖q) on {KL_DRAWS:,} truth draws; {args.threads} thread(s) per run, {args.jobs} "
        f"run(s) at once{flow}; seconds per seed are per data set "
        "(" + " / ".join(args.data) + ")"
    )
    print()
    print(table(summary, args.data))
    if args.out is not None:
        record = {
            "setting": setting,
            "n": TRAINING_POINTS,
            "n_samples": N_SAMPLES,
            "kl_draws": KL_DRAWS,
            "seeds": seeds,
            "threads": args.threads,
            "jobs": args.jobs,
            "torch": torch.__version__,
            "summary": summary,
            "runs": [asdict(r) for r in results],
        }
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Fréchet distance of the image defaults on MNIST after a fixed training budget.

Produces the "Images: quality" table of BENCHMARKS.md:

    .venv/bin/python benchmarks/gan_mnist.py --model gan --budget 1200 --seeds 0 1 2
    .venv/bin/python benchmarks/gan_mnist.py --model vae --budget 1200 --seeds 0 1 2 \\
        --set net=conv --set latent=16
    .venv/bin/python benchmarks/gan_mnist.py --model gan --budget 150 --set gp_weight=10

Shared MNIST protocol: train on the first 8,000 digits, evaluate on the last 2,000. The model is
built as ``pushforward fit MODEL --data mnist`` builds it (its defaults for images, changed by
``--set``) and trained with its image training defaults, epoch by epoch, until its **CPU time**
passes ``--budget`` seconds (10 minutes on 2 cores is 1,200 CPU seconds; counting CPU time keeps
the budget fair on a shared machine). Then 10,000 samples are compared with the 2,000 held-out
digits by the Fréchet distance in the feature space of the digit classifier
(:mod:`pushforward.features`, trained on the 8,000 training digits); the floor is the distance
of the 8,000 real training digits to the same held-out digits. One JSON line per seed, then the
mean ± standard error over seeds.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import torch

from pushforward.data import datasets
from pushforward.metrics import digit_features, frechet_distance_from_samples
from pushforward.models.registry import MODELS
from pushforward.train import TrainConfig, fit, seeded


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def run(
    model_name: str,
    seed: int,
    budget: float,
    overrides: dict,
    samples: int,
    marks: list[float],
    train_overrides: dict | None = None,
    fixed_epochs: int = 0,
) -> dict:
    spec = MODELS[model_name]
    full = datasets.load_data("mnist")
    train, test = datasets.train_test_split(full, 8000)
    settings = spec.config(**overrides).resolve("images")
    train_cfg = TrainConfig.from_dict(
        {**spec.train_defaults_for("images"), **(train_overrides or {}), "epochs": 1, "seed": seed}
    )
    with seeded(seed):
        model = settings.build(train)
    net = digit_features(train.x, train.labels, test.x, test.labels, image_shape=full.image_shape)
    held = net(test.x)

    finished = {"epochs": -1}

    def distance() -> float:
        nonlocal spent
        if finished["epochs"] != epochs:  # what fit does after its last epoch (the VAE's prior)
            t = time.process_time()
            model.finish(train.x)
            spent += time.process_time() - t
            finished["epochs"] = epochs
        with torch.no_grad():
            y = model.sample(samples, generator=torch.Generator().manual_seed(seed)).float()
        return frechet_distance_from_samples(net(y.clamp(0, 1)), held)

    wall0 = time.perf_counter()
    epochs, trajectory, spent = 0, [], 0.0  # spent: CPU seconds of training only
    pending = sorted(m for m in marks if m < budget)
    if fixed_epochs:  # one run of fit, its schedule over all of them (the budget is not enforced)
        t = time.process_time()
        fit(model, train.x, TrainConfig.from_dict({**train_cfg.to_dict(), "epochs": fixed_epochs}))
        spent, epochs, finished["epochs"] = time.process_time() - t, fixed_epochs, fixed_epochs
    while spent < budget and not fixed_epochs:
        # one epoch at a time (the epoch's seed varies, so the shuffles differ), optimisers kept
        t = time.process_time()
        fit_epoch(model, train.x, train_cfg, epochs)
        spent += time.process_time() - t
        epochs += 1
        while pending and spent >= pending[0]:  # the distance so far (only finish() counted)
            pending.pop(0)
            trajectory.append({"cpu_seconds": round(spent, 1), "epochs": epochs,
                               "frechet_distance": distance()})  # fmt: skip
            print(json.dumps({"seed": seed, **trajectory[-1]}), flush=True)
    final = distance()  # after finish(), whose CPU time counts as training
    cpu, wall = spent, time.perf_counter() - wall0
    own = None  # the GAN's samples from g's own weights instead of their running average
    if getattr(model, "generator_ema", None) is not None:
        model.generator_ema, average = None, model.generator_ema
        own = distance()
        model.generator_ema = average
    return {
        "model": model_name,
        "seed": seed,
        "settings": settings.to_dict(),
        "train": train_cfg.to_dict(),
        "epochs": epochs,
        "cpu_seconds": round(cpu, 1),
        "wall_seconds": round(wall, 1),
        "samples": samples,
        "frechet_distance": final,
        "frechet_distance_own_weights": own,
        "trajectory": trajectory,
        "frechet_floor": frechet_distance_from_samples(net(train.x), held),
        "feature_accuracy": net.accuracy,
    }


_STATE: dict = {}


def fit_epoch(model, x, cfg: TrainConfig, done: int) -> None:
    """Train one more epoch, keeping the optimisers between calls (fit makes fresh ones)."""
    if "opts" not in _STATE or _STATE["model"] is not model:
        _STATE.update(model=model, opts=model.configure_optimizers(cfg))
    original = model.configure_optimizers
    model.configure_optimizers = lambda _cfg: _STATE["opts"]
    model.finish = lambda _x: None  # run once before each distance, not after every epoch
    try:
        fit(model, x, TrainConfig.from_dict({**cfg.to_dict(), "seed": cfg.seed * 1000 + done}))
    finally:
        model.configure_optimizers = original
        del model.finish


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=["gan", "vae"], default="gan")
    parser.add_argument("--budget", type=float, default=1200.0, help="CPU seconds of training")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument(
        "--marks", type=float, nargs="*", default=[],
        help="CPU seconds of training at which to print the distance so far as well",
    )  # fmt: skip
    parser.add_argument(
        "--epochs", type=int, default=0,
        help="train this many epochs in one run of fit instead (so that a learning-rate schedule "
        "spans them), and report the CPU seconds they took",
    )  # fmt: skip
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument(
        "--train", action="append", default=[], metavar="KEY=VALUE",
        help="a training setting, e.g. batch_size=64 (the learning rate schedule must be "
        "constant, since training goes one epoch at a time, unless --epochs is given)",
    )  # fmt: skip
    args = parser.parse_args()
    overrides = {k: _value(v) for k, v in (s.split("=", 1) for s in args.set)}
    train_overrides = {k: _value(v) for k, v in (s.split("=", 1) for s in args.train)}
    results = []
    for seed in args.seeds:
        r = run(args.model, seed, args.budget, overrides, args.samples, args.marks, train_overrides,
                args.epochs)  # fmt: skip
        print(json.dumps(r), flush=True)
        results.append(r)
    fd = [r["frechet_distance"] for r in results]
    se = statistics.stdev(fd) / math.sqrt(len(fd)) if len(fd) > 1 else float("nan")
    floor = statistics.mean(r["frechet_floor"] for r in results)
    print(f"{args.model} {overrides} {train_overrides}:")
    print(f"Fréchet distance {statistics.mean(fd):.2f} ± {se:.2f} "
          f"(floor {floor:.2f}, ratio {statistics.mean(fd) / floor:.2f}) over seeds {args.seeds}, "
          f"epochs {[r['epochs'] for r in results]}, feature accuracy "
          f"{results[0]['feature_accuracy']:.4f}")  # fmt: skip


if __name__ == "__main__":
    main()

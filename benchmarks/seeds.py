"""Several seeds as one stacked model (``fit --seeds N``) against the same seeds fitted one by one.

Produces the "Several seeds at once" table of BENCHMARKS.md:

    .venv/bin/python benchmarks/seeds.py                          # about 4 minutes on 2 cores
    .venv/bin/python benchmarks/seeds.py --device cuda --epochs 5

For each model, ``--seeds`` seeds of its ``fit`` defaults on ring8 (10,000 points drawn with each
seed, as ``fit --seed S`` draws them) train ``--epochs`` epochs two ways, alternating round by
round: one ``fit`` after another, and one ``fit_seeds`` stack. The table gives the median wall
seconds of each way, the speed-up, and the largest difference of a stacked member's final loss
from its single run's (the members are the single runs, to rounding).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch

from pushforward.data import load_data
from pushforward.runs import RunConfig
from pushforward.train import fit, fit_seeds, resolve_device, seeded


def members(model: str, seeds: int, epochs: int, device: str):
    """Fresh models, data and settings of ``model``'s defaults on ring8, one per seed."""
    rc = RunConfig.from_flat({"model": model, "data": "ring8", "epochs": epochs, "device": device})
    out = []
    for s in range(seeds):
        ds = load_data("ring8", n=10_000, generator=torch.Generator().manual_seed(s))
        with seeded(s):
            m = rc.settings.build(ds)
        out.append((m, ds.x, dataclasses.replace(rc.train, seed=s)))
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["vae", "fm", "ae"])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    rows = []
    for model in args.models:
        times: dict[str, list[float]] = {"one by one": [], "stacked": []}
        gap = 0.0
        for r in range(args.rounds):
            order = ["one by one", "stacked"] if r % 2 == 0 else ["stacked", "one by one"]
            losses = {}
            for way in order:
                runs = members(model, args.seeds, args.epochs, args.device)
                sync(device)
                start = time.perf_counter()
                if way == "stacked":
                    hs = fit_seeds(*map(list, zip(*runs, strict=True)))
                else:
                    hs = [fit(m, x, c) for m, x, c in runs]
                sync(device)
                times[way].append(time.perf_counter() - start)
                losses[way] = [h[-1]["loss"] for h in hs]
                print(f"  {model} round {r + 1} {way}: {times[way][-1]:.1f} s", flush=True)
            gap = max(gap, *(abs(a - b) for a, b in zip(*losses.values(), strict=True)))
        one, stacked = (statistics.median(times[k]) for k in ("one by one", "stacked"))
        rows.append(f"| {model} | {one:.1f} | {stacked:.1f} | {one / stacked:.1f}× | {gap:.2g} |")
    print(f"\n{args.seeds} seeds × {args.epochs} epochs of ring8 (10,000 points) on {device}, "
          f"{args.threads} threads, median of {args.rounds} alternating rounds\n")  # fmt: skip
    print("| model | one by one (s) | stacked (s) | speed-up | max |Δ final loss| |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()

"""Flow matching's cost per training step: pushforward's couplings against a torchcfm-style loop.

torchcfm's 2-D tutorial trains I-CFM for 20,000 steps (batch 256, an MLP of three hidden layers of
64 with SELU) in 43 s, and exact OT-CFM (POT's network simplex on the whole batch, then pairs
drawn from the plan) in 3 min 36 s: the OT coupling costs about 5× per step there. This benchmark
writes that loop here in plain PyTorch, as the tutorial does it (not imported: torchcfm is not a
dependency), and times, on the same data (ring8, 10,000 points) and the same machine, in one run:

* ``loop: independent``: the tutorial's I-CFM step (σ = 0);
* ``loop: exact OT``: the tutorial's OT-CFM step, exact OT on the whole batch of 256;
* ``pushforward: independent`` and ``pushforward: ot``: :func:`pushforward.train.fit` of
  :class:`pushforward.fm.FlowMatching` with the same widths (its OT on blocks of
  :data:`pushforward.fm.OT_BLOCK` rows).

Each configuration runs ``--steps`` steps, ``--rounds`` times in alternation after a warm-up round;
the table gives the median milliseconds per step and each row's ratio to its own independent
coupling, the median of the per-round ratios (so that the host's drift cancels). Command:

    .venv/bin/python benchmarks/fm_speed.py --steps 2000 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Sequence

import numpy as np
import ot
import torch
from torch import nn

from pushforward.data import ring8
from pushforward.models.fm import FlowMatching, FlowMatchingConfig
from pushforward.train import TrainConfig, fit, seeded

BATCH = 256
POINTS = 10_000


def tutorial_net(dim: int = 2, width: int = 64) -> nn.Module:
    """The tutorial's field: (x, t) concatenated, three hidden layers of ``width``, SELU."""
    return nn.Sequential(
        nn.Linear(dim + 1, width), nn.SELU(), nn.Linear(width, width), nn.SELU(),
        nn.Linear(width, width), nn.SELU(), nn.Linear(width, dim),
    )  # fmt: skip


def exact_ot_pairs(x0: torch.Tensor, x1: torch.Tensor, rng: np.random.Generator) -> tuple:
    """The tutorial's exact OT sampler: POT's plan on the whole batch, pairs drawn from it."""
    a, b = np.full(len(x0), 1 / len(x0)), np.full(len(x1), 1 / len(x1))
    plan = ot.emd(a, b, torch.cdist(x0, x1).square().numpy())
    p = plan.flatten() / plan.sum()
    idx = rng.choice(p.size, size=len(x0), p=p)
    i, j = np.divmod(idx, plan.shape[1])
    return x0[i], x1[j]


def loop(x: torch.Tensor, steps: int, *, exact_ot: bool, seed: int) -> float:
    """Run the tutorial's training loop for ``steps`` steps; return seconds per step."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = tutorial_net()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    start = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad()
        x1 = x[torch.randint(len(x), (BATCH,))]
        x0 = torch.randn_like(x1)
        if exact_ot:
            x0, x1 = exact_ot_pairs(x0, x1, rng)
        t = torch.rand(BATCH, 1)
        xt = t * x1 + (1 - t) * x0
        loss = (net(torch.cat([xt, t], dim=1)) - (x1 - x0)).square().mean()
        loss.backward()
        opt.step()
    return (time.perf_counter() - start) / steps


def pushforward(x: torch.Tensor, steps: int, *, coupling: str, seed: int) -> float:
    """Fit pushforward's FlowMatching for ``steps`` steps; return seconds per step."""
    epochs = max(1, round(steps * BATCH / len(x)))
    # the tutorial's field reads (x, t) only: no Fourier features of x, and the plain
    # conditional target, so that the two couplings differ in the pairing alone
    with seeded(seed):
        model = FlowMatching(FlowMatchingConfig(
            dim=2, hidden=[64, 64, 64], coupling=coupling, frequencies=0, reference=0
        ))  # fmt: skip
    cfg = TrainConfig(epochs=epochs, batch_size=BATCH, lr=1e-3, seed=seed)
    start = time.perf_counter()
    fit(model, x, cfg)
    return (time.perf_counter() - start) / (epochs * -(-len(x) // BATCH))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    x = ring8().sample(POINTS, generator=torch.Generator().manual_seed(0)).float()
    runs: dict[str, Callable[[int], float]] = {
        "loop: independent": lambda s: loop(x, args.steps, exact_ot=False, seed=s),
        "loop: exact OT": lambda s: loop(x, args.steps, exact_ot=True, seed=s),
        "pushforward: independent": lambda s: pushforward(
            x, args.steps, coupling="independent", seed=s
        ),
        "pushforward: ot": lambda s: pushforward(x, args.steps, coupling="ot", seed=s),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(-1, args.rounds):  # round -1 warms up and is not counted
        for name, run in runs.items():
            seconds = run(max(r, 0))
            print(f"round {r}: {name} {1e3 * seconds:.2f} ms/step", flush=True)
            if r >= 0:
                times[name].append(seconds)
    print()
    print("| training step | ms per step (median) | OT / independent (median of rounds) |")
    print("|---|---|---|")
    for name, t in times.items():
        base = times[name.split(":")[0] + ": independent"]
        ratio = statistics.median(a / b for a, b in zip(t, base, strict=True))
        print(f"| {name} | {1e3 * statistics.median(t):.2f} | {ratio:.2f}× |")
    if args.out is not None:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(json.dumps({"steps": args.steps, "seconds": times}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

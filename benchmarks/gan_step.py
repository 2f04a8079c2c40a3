"""Where a training step of the mixture GAN spends its CPU time, phase by phase.

Builds the recommended GAN (``RECOMMENDED``, optionally changed by ``--set KEY=VALUE``) on
10,000 points of ring8, then times each part of one training step on the same batch in process
CPU time (``time.process_time``, so that other processes on a shared host do not count), the
best of several rounds: the whole step as :meth:`GAN.training_step` takes it (R1 on every
``penalty_every``-th critic step), written out (:mod:`pushforward.models.gan.fused`) and through
autograd, then autograd's phases: a critic step without and with the R1 penalty, R1's double
backward alone, the generator's no-grad draw of the critic's fakes, the generator step, and the
two Adam steps. Command (one thread; ``ATEN_CPU_CAPABILITY=avx2 DNNL_MAX_CPU_ISA=AVX2`` before it
takes the code paths of a host without AVX-512):

    .venv/bin/python benchmarks/gan_step.py --batch 256
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from collections.abc import Callable, Sequence

import torch

from pushforward.data import datasets
from pushforward.models.gan import GAN, RECOMMENDED, GANConfig
from pushforward.models.gan.penalties import r1_penalty
from pushforward.train import TrainConfig, seeded


def phases(gan: GAN, opt: dict, cfg: TrainConfig, xb: torch.Tensor) -> dict[str, Callable]:
    """Return {phase: a function that runs it once} for the batch xb (B, 2)."""
    g = torch.Generator().manual_seed(0)
    b = xb.shape[0]

    def critic_step(lazy: float | None) -> None:
        real = gan._packs(xb, g)
        with torch.no_grad():
            fake = gan._fakes(b, g, xb.device)
        terms = gan._critic_terms(real, fake, g, lazy=lazy)
        opt["critic"].zero_grad(set_to_none=True)
        terms["critic_loss"].backward()
        opt["critic"].step()

    def fakes() -> None:
        with torch.no_grad():
            gan._fakes(b, g, xb.device)

    def r1() -> None:
        gp = r1_penalty(gan._score, gan._packs(xb, g), None)
        opt["critic"].zero_grad(set_to_none=True)
        gp.backward()

    def generator_step() -> None:
        gan.critic.requires_grad_(False)
        loss = gan.objective.generator(gan._score(gan._fakes(b, g, xb.device)))
        opt["generator"].zero_grad(set_to_none=True)
        loss.backward()
        gan.critic.requires_grad_(True)
        opt["generator"].step()

    def adam() -> None:
        opt["critic"].step()
        opt["generator"].step()

    k = float(gan.config.penalty_every)
    plain = copy.deepcopy(gan)
    plain.fused_step = False  # the same step through autograd
    plain_opt = plain.configure_optimizers(cfg)
    return {
        "training_step (R1 lazily), written out": lambda: gan.training_step(
            xb, opt, cfg, generator=g
        ),
        "training_step (R1 lazily), autograd": lambda: plain.training_step(
            xb, plain_opt, cfg, generator=g
        ),
        "critic step without R1": lambda: critic_step(None),
        "critic step with R1": lambda: critic_step(k),
        "R1 alone (forward, double backward)": r1,
        "fakes for the critic (no grad)": fakes,
        "generator step": generator_step,
        "two Adam steps": adam,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=RECOMMENDED["train"]["batch_size"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=80, help="steps a round (default 80)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; the best is kept")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="change a setting (a GANConfig field; VALUE as JSON) of the recommended GAN",
    )  # fmt: skip
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    changes = {k: json.loads(v) for k, _, v in (p.partition("=") for p in args.set)}
    x = datasets.ring8().sample(10_000, generator=torch.Generator().manual_seed(0))
    with seeded(0):
        gan = GAN(GANConfig(dim=2, **{**RECOMMENDED["model"], **changes}))
    gan.prepare(x)
    cfg = TrainConfig(**{**RECOMMENDED["train"], "batch_size": args.batch, "seed": 0})
    opt = gan.configure_optimizers(cfg)
    best: dict[str, float] = {}
    for _ in range(args.rounds):
        for name, run in phases(gan, opt, cfg, x[: args.batch]).items():
            for _ in range(args.steps // 10):
                run()
            start = time.process_time()
            for _ in range(args.steps):
                run()
            ms = 1000 * (time.process_time() - start) / args.steps
            best[name] = min(best.get(name, ms), ms)
    isa = torch.backends.cpu.get_cpu_capability()
    print(f"batch {args.batch}, {args.threads} thread(s), {isa}")
    print("| phase | CPU ms |\n|---|---|")
    for name, ms in best.items():
        print(f"| {name} | {ms:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

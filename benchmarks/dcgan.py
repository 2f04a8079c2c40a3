"""One step of pushforward's default image GAN against a plain PyTorch loop of the same networks.

Produces the "Images: GAN speed" table of BENCHMARKS.md:

    .venv/bin/python benchmarks/dcgan.py                 # about 4 minutes on 2 cores
    .venv/bin/python benchmarks/dcgan.py --old-steps 3   # also a few steps of the old default

The plain loop is written the way PyTorch-GAN's DCGAN script trains (a shuffling DataLoader,
``optimizer.zero_grad()``, one ``backward()`` per network, plain Adam, the losses read with
``.item()`` every batch), with the networks and the objective of ``pushforward fit gan --data
mnist``: the generator k = 64 → C₂·7·7 → ConvT C₁ → ConvT 1 → sigmoid, the critic Conv C₁ →
Conv C₂ → Linear (3×3, stride 2, leaky ReLU 0.2; (C₁, C₂) the GAN's conv widths, 32 and 64),
the non-saturating game on logits, R1 at the data (weight γ, as ``gp_weight``, taken every
``penalty_every``-th critic step with weight ``penalty_every``·γ, as StyleGAN2's loop does), and
a running average of the generator's weights.
The plain loop keeps PyTorch's default memory layout (pushforward's conv networks run
channels-last). It does the
same work per step as :meth:`pushforward.models.gan.GAN.training_step`: a critic step against fresh
fakes, then a generator step against fresh fakes.

Both loops train one epoch of the shared MNIST protocol's 8,000 training digits at the default
batch (128: 63 steps), alternating epoch by epoch; the table gives the median epoch of each.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pushforward.data import load_data, select_rows
from pushforward.models.gan import GAN_CONV_WIDTHS, RECOMMENDED_IMAGES, GANConfig
from pushforward.train import TrainConfig, fit, seeded

LATENT = RECOMMENDED_IMAGES["model"]["latent"]
GAMMA = RECOMMENDED_IMAGES["model"]["gp_weight"]
EMA = RECOMMENDED_IMAGES["model"]["ema"]
EVERY = RECOMMENDED_IMAGES["model"]["penalty_every"]
TRAIN = RECOMMENDED_IMAGES["train"]
C1, C2 = GAN_CONV_WIDTHS


def plain_generator() -> nn.Module:
    return nn.Sequential(
        nn.Linear(LATENT, C2 * 7 * 7),
        nn.ReLU(),
        nn.Unflatten(1, (C2, 7, 7)),
        nn.ConvTranspose2d(C2, C1, 3, stride=2, padding=1, output_padding=1),  # 7 → 14
        nn.ReLU(),
        nn.ConvTranspose2d(C1, 1, 3, stride=2, padding=1, output_padding=1),  # 14 → 28
        nn.Sigmoid(),
    )


def plain_critic() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, C1, 3, stride=2, padding=1),  # 28 → 14
        nn.LeakyReLU(0.2),
        nn.Conv2d(C1, C2, 3, stride=2, padding=1),  # 14 → 7
        nn.LeakyReLU(0.2),
        nn.Flatten(),
        nn.Linear(C2 * 7 * 7, 1),
    )


class PlainDCGAN:
    """The plain loop's state: networks, EMA copy, optimisers, data loader."""

    def __init__(self, images: torch.Tensor, seed: int, device: torch.device | str = "cpu"):
        torch.manual_seed(seed)
        self.device = torch.device(device)
        self.generator = plain_generator().to(self.device)
        self.critic = plain_critic().to(self.device)
        self.ema = plain_generator().to(self.device)
        self.ema.load_state_dict(self.generator.state_dict())
        betas = tuple(TRAIN["betas"])
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=TRAIN["lr"], betas=betas)
        self.opt_d = torch.optim.Adam(self.critic.parameters(), lr=TRAIN["lr"], betas=betas)
        data = TensorDataset(images.reshape(-1, 1, 28, 28))
        self.loader = DataLoader(data, batch_size=TRAIN["batch_size"], shuffle=True)
        self.adversarial = nn.BCEWithLogitsLoss()
        self.steps = 0

    def epoch(self) -> None:
        for (imgs,) in self.loader:
            imgs = imgs.to(self.device)  # the classic loop: batches from the host
            b = imgs.shape[0]
            valid = torch.ones(b, 1, device=self.device)
            fake = torch.zeros(b, 1, device=self.device)
            # critic: real against fresh fakes, plus R1 at the real images every EVERY steps,
            # weighted EVERY× (lazy regularisation, as StyleGAN2's training loop does it)
            self.opt_d.zero_grad()
            z = torch.randn(b, LATENT, device=self.device)
            gen_imgs = self.generator(z).detach()
            lazy = self.steps % EVERY == 0
            self.steps += 1
            real_imgs = imgs.requires_grad_(lazy)
            real_logits = self.critic(real_imgs)
            d_loss = self.adversarial(real_logits, valid) + self.adversarial(
                self.critic(gen_imgs), fake
            )
            if lazy:
                (grad,) = torch.autograd.grad(real_logits.sum(), real_imgs, create_graph=True)
                d_loss = d_loss + EVERY * GAMMA * 0.5 * grad.pow(2).flatten(1).sum(1).mean()
            d_loss.backward()
            self.opt_d.step()
            # generator: fool the critic on fresh fakes (the non-saturating loss)
            self.opt_g.zero_grad()
            z = torch.randn(b, LATENT, device=self.device)
            g_loss = self.adversarial(self.critic(self.generator(z)), valid)
            g_loss.backward()
            self.opt_g.step()
            with torch.no_grad():
                for p_ema, p in zip(
                    self.ema.parameters(), self.generator.parameters(), strict=True
                ):
                    p_ema.mul_(EMA).add_(p, alpha=1 - EMA)
            _ = (d_loss.item(), g_loss.item())  # the per-batch log line


def ours(ds, seed: int, device: str = "cpu"):
    """pushforward's default image GAN for ``ds`` and its default training settings (one epoch
    on ``device``)."""
    with seeded(seed):
        model = GANConfig().build(ds)
    return model, TrainConfig(**{**TRAIN, "epochs": 1, "seed": seed, "device": device})


def check_same_networks(model) -> None:
    """The plain networks have exactly the shapes of pushforward's (same parameter shapes)."""
    for mine, plain in ((model.generator_net, plain_generator()), (model.critic, plain_critic())):
        a = sorted(tuple(p.shape) for p in mine.parameters())
        b = sorted(tuple(p.shape) for p in plain.parameters())
        assert a == b, (a, b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs of each loop")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows", type=int, default=8000, help="training digits per epoch")
    parser.add_argument(
        "--old-steps", type=int, default=0,
        help="also time this many steps of the old default (--hidden 256,256,256)",
    )  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ds = select_rows(load_data("mnist"), f":{args.rows}")
    train = ds.x
    model, cfg = ours(ds, 0)
    check_same_networks(model)
    plain = PlainDCGAN(train, 0)
    steps = -(-train.shape[0] // TRAIN["batch_size"])
    times: dict[str, list[float]] = {"plain": [], "pushforward": []}
    # one warm-up epoch each, then alternate
    for i in range(args.epochs + 1):
        start = time.perf_counter()
        plain.epoch()
        t_plain = time.perf_counter() - start
        start = time.perf_counter()
        fit(model, train, cfg)  # one epoch of `pushforward fit` (epochs=1): metrics and checks
        t_ours = time.perf_counter() - start
        if i:
            times["plain"].append(t_plain)
            times["pushforward"].append(t_ours)
        ratio = t_ours / t_plain
        print(f"epoch {i}{' (warm-up)' if not i else ''}: plain {t_plain:.2f} s, "
              f"pushforward {t_ours:.2f} s ({ratio:.2f}×)", flush=True)  # fmt: skip
    med = {k: statistics.median(v) for k, v in times.items()}
    ratios = [b / a for a, b in zip(times["plain"], times["pushforward"], strict=True)]
    print(f"\n{steps} steps per epoch of {train.shape[0]:,} digits, batch {TRAIN['batch_size']}, "
          f"{args.threads} threads, median of {args.epochs} alternating epochs\n")  # fmt: skip
    full = -(-8000 // TRAIN["batch_size"])
    head = f"8,000 digits ({full} steps)"
    print(f"| loop | seconds per epoch | seconds per step | × plain | {head} |")
    print("|---|---|---|---|---|")
    for k in ("plain", "pushforward"):
        per_step = med[k] / steps
        print(f"| {k} | {med[k]:.2f} | {per_step:.3f} | {med[k] / med['plain']:.2f} "
              f"| {per_step * full:.1f} s |")  # fmt: skip
    print("\nper epoch:", {k: [round(t, 2) for t in v] for k, v in times.items()})
    print(f"median of the per-alternation ratios: {statistics.median(ratios):.2f}×")
    if args.old_steps:
        old = GANConfig(net="conv", hidden=[256, 256, 256], latent=LATENT)
        with seeded(0):
            big = old.build(ds)
        opts = big.configure_optimizers(cfg)
        gen = torch.Generator().manual_seed(0)
        xb = train[: TRAIN["batch_size"]]
        big.train()
        big.training_step(xb, opts, cfg, generator=gen)  # warm-up
        start = time.perf_counter()
        for _ in range(args.old_steps):
            big.training_step(xb, opts, cfg, generator=gen)
        per = (time.perf_counter() - start) / args.old_steps
        print(
            f"\nold default (conv 256,256,256): {per:.2f} s per step, "
            f"{per * steps:.0f} s per epoch (estimated from {args.old_steps} steps)"
        )


if __name__ == "__main__":
    main()

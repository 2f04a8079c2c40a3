"""VAE quality on the shared MNIST protocol: the classic pytorch/examples VAE against pushforward.

Protocol: train on the first 8,000 digits of the official MNIST test set, evaluate on the last
2,000, pixels in [0, 1], Bernoulli likelihood (BCE). For each seed:

* ``classic``: a faithful re-implementation of the pytorch/examples VAE training loop (784–400–20
  MLP, ReLU, sigmoid + BCE(sum) + KL(sum), a shuffling ``DataLoader``, ``zero_grad()``, plain Adam
  1e-3, batch 128, 10 epochs);
* ``pushforward-classic``: pushforward's VAE with the same architecture and budget, trained
  through :func:`pushforward.runs.fit_run`, the call behind ``pushforward fit vae``;
* ``pushforward-recommended``: ``pushforward fit vae`` with its defaults (runs.MODEL_DEFAULTS),
  for as many epochs as fit in the classic model's measured training wall time (equal time).

Every model is scored by the same estimators (the classic weights are loaded into pushforward's VAE,
whose layers match one to one): test −ELBO (one reparameterised draw per digit, analytic KL) and
the IWAE-k negative log-likelihood, in nats, both under N(0, I), the prior every model here was
trained with. ``fit vae`` on images samples from a Gaussian mixture fitted to the codes after
training (``prior="gmm"``, a sampler); the −ELBO with that mixture in place of the prior is printed
beside, labelled. Produces the "VAE quality" section of BENCHMARKS.md:

    .venv/bin/python benchmarks/vae_mnist.py --seeds 1 2 3 4 --iwae-k 1000
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pushforward.data import find_mnist_folder, load_mnist, train_test_split
from pushforward.models.vae import VAE, VAEConfig
from pushforward.runs import RunConfig, fit_run, load_model

# The classic architecture and budget, for pushforward's like-for-like run; pushforward's
# recommended run passes nothing, so it measures exactly what `pushforward fit vae` does by default.
CLASSIC = {"hidden": [400], "activation": "relu", "lr": 1e-3, "batch_size": 128}


class ClassicVAE(nn.Module):
    """The pytorch/examples VAE, layer for layer."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(784, 400)
        self.fc21 = nn.Linear(400, 20)
        self.fc22 = nn.Linear(400, 20)
        self.fc3 = nn.Linear(20, 400)
        self.fc4 = nn.Linear(400, 784)

    def encode(self, x):
        h1 = F.relu(self.fc1(x))
        return self.fc21(h1), self.fc22(h1)

    def reparameterize(self, mu, logvar):
        std = torch.exp(0.5 * logvar)
        eps = torch.randn_like(std)
        return mu + eps * std

    def decode(self, z):
        h3 = F.relu(self.fc3(z))
        return torch.sigmoid(self.fc4(h3))

    def forward(self, x):
        mu, logvar = self.encode(x.view(-1, 784))
        z = self.reparameterize(mu, logvar)
        return self.decode(z), mu, logvar


def classic_loss(recon_x, x, mu, logvar):
    bce = F.binary_cross_entropy(recon_x, x.view(-1, 784), reduction="sum")
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + kld


def train_classic(x_train: torch.Tensor, seed: int, epochs: int = 10) -> tuple[ClassicVAE, float]:
    torch.manual_seed(seed)
    model = ClassicVAE()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(TensorDataset(x_train), batch_size=128, shuffle=True)
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for (data,) in loader:
            optimizer.zero_grad()
            recon, mu, logvar = model(data)
            loss = classic_loss(recon, data, mu, logvar)
            loss.backward()
            optimizer.step()
    return model, time.perf_counter() - start


def as_pushforward(classic: ClassicVAE) -> VAE:
    """Load the classic weights into pushforward's VAE (same layers; sigmoid ↔ BCE from logits)."""
    vae = VAE(VAEConfig(dim=784, latent=20, loss="bce", hidden=[400], activation="relu"))
    with torch.no_grad():
        vae.encoder[0].load_state_dict(classic.fc1.state_dict())
        vae.encoder[2].weight.copy_(torch.cat([classic.fc21.weight, classic.fc22.weight]))
        vae.encoder[2].bias.copy_(torch.cat([classic.fc21.bias, classic.fc22.bias]))
        vae.decoder[0].load_state_dict(classic.fc3.state_dict())
        vae.decoder[2].load_state_dict(classic.fc4.state_dict())
    return vae.eval()


def score(vae: VAE, x_test: torch.Tensor, iwae_k: int) -> dict[str, float]:
    gen = torch.Generator().manual_seed(1234)
    e = vae.elbo(x_test, generator=gen, sampler=True)
    ll = vae.log_likelihood(x_test, k=iwae_k, generator=gen)
    out = {"neg_elbo": -float(e["elbo"].mean()), "iwae_nll": -ll.mean, "iwae_se": ll.mean_stderr}
    if "elbo_sampler" in e:
        out["neg_elbo_sampler"] = -float(e["elbo_sampler"].mean())
    return out


def train_pushforward(
    mnist_dir: Path, seed: int, *, settings: dict, epochs: int
) -> tuple[VAE, float]:
    values = {
        "model": "vae",
        "data": f"mnist:{mnist_dir}",
        "rows": ":8000",
        "latent": 20,
        "loss": "bce",
        "epochs": epochs,
        "seed": seed,
        "checkpoint_every": 10**6,
        **settings,
    }
    rc = RunConfig.from_flat(values)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        folder = fit_run(rc, out=Path(tmp) / "run", figures=False)
        seconds = time.perf_counter() - start
        return load_model(folder), seconds


def mean_spread(values: list[float]) -> str:
    m = statistics.mean(values)
    s = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{m:.2f} ± {s:.2f} (min {min(values):.2f}, max {max(values):.2f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--iwae-k", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--recommended-epochs",
        type=int,
        default=0,
        help="epochs for the recommended model (0: fill the classic's wall time)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    folder = find_mnist_folder()
    if folder is None:
        print(
            "MNIST not found: set PUSHFORWARD_DATA or place the IDX files in ../shared/data/mnist"
        )
        return 1
    train, test = train_test_split(load_mnist(folder), 8000)
    rows: dict[str, dict[str, list[float]]] = {}

    def record(name: str, scores: dict[str, float], seconds: float, epochs: int) -> None:
        r = rows.setdefault(name, {"neg_elbo": [], "iwae_nll": [], "seconds": [], "epochs": []})
        r["neg_elbo"].append(scores["neg_elbo"])
        r["iwae_nll"].append(scores["iwae_nll"])
        r["seconds"].append(seconds)
        r["epochs"].append(epochs)
        sampler = scores.get("neg_elbo_sampler")
        beside = f" (−ELBO under the gmm sampler {sampler:.2f})" if sampler is not None else ""
        print(
            f"  {name:<26} −ELBO {scores['neg_elbo']:.2f}  IWAE NLL {scores['iwae_nll']:.2f} "
            f"± {scores['iwae_se']:.2f}  ({epochs} epochs, {seconds:.1f} s){beside}",
            flush=True,
        )

    for seed in args.seeds:
        print(f"seed {seed}", flush=True)
        classic, t_classic = train_classic(train.x, seed)
        record(
            "classic (pytorch/examples)",
            score(as_pushforward(classic), test.x, args.iwae_k),
            t_classic,
            10,
        )
        vae, t = train_pushforward(folder, seed, settings=CLASSIC, epochs=10)
        record("pushforward, classic arch.", score(vae, test.x, args.iwae_k), t, 10)
        # equal wall time: measure one epoch of the recommended model, then fill the budget
        epochs = args.recommended_epochs
        if epochs == 0:
            _, t1 = train_pushforward(folder, seed, settings={}, epochs=2)
            epochs = max(1, int(t_classic / (t1 / 2)))
        vae, t = train_pushforward(folder, seed, settings={}, epochs=epochs)
        record("pushforward, recommended", score(vae, test.x, args.iwae_k), t, epochs)

    print()
    print(f"| model | test −ELBO (nats) | IWAE-{args.iwae_k} NLL (nats) | train seconds | epochs |")
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        print(
            f"| {name} | {mean_spread(r['neg_elbo'])} | {mean_spread(r['iwae_nll'])} | "
            f"{statistics.mean(r['seconds']):.1f} | {statistics.mean(r['epochs']):.0f} |"
        )
    print(
        f"\nseeds {args.seeds}, {args.threads} threads, torch {torch.__version__}, {sys.platform}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

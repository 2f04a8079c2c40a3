"""A dequantised flow or flow-matching model on the shared MNIST protocol: held-out bits/dim.

Protocol: train on the first 8,000 digits of the official MNIST test set, evaluate on the last
2,000; pixels k/255 in [0, 1] are dequantised (y = (255x + u)/256, u ~ U[0, 1)) and sent through
RealNVP's logit, and bits/dim are those of the 8-bit data (:meth:`pushforward.flow.Flow.evaluate`,
the standard convention). Published numbers for context, all trained on the 60,000 training
digits with convolutional multi-scale architectures for days: RealNVP 1.06, Glow 1.05, FFJORD
0.99 bits/dim; MAF (an MLP flow like these) about 1.9. Command (measured: 3.93 ± 0.02 held-out
bits/dim, 3.69 on the training digits, in 291 s on one thread; at lr 2e-3 for 18 epochs the first
epoch spiked and it ended at 4.34):

    .venv/bin/python benchmarks/flow_mnist.py --transform maf --layers 5 --hidden 1024 --epochs 12

Flow matching (``--model fm``: the field an MLP of ``--hidden`` widths, its likelihood Hutchinson's
unbiased estimate, since d = 784, with the standard error over rows that includes the probes'
noise; the number of field evaluations of the likelihood's and the samples' ODE solves printed;
``--samples FILE.png`` writes 64 samples):

    .venv/bin/python benchmarks/flow_mnist.py --model fm --hidden 1024 1024 1024 --epochs 12 \
        --lr 1e-3 --samples fm_mnist.png
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence

import torch

from pushforward.data import find_mnist_folder, load_mnist, train_test_split
from pushforward.models.flow import Flow, FlowConfig
from pushforward.models.fm import FlowMatching, FlowMatchingConfig
from pushforward.train import TrainConfig, fit, seeded


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["flow", "fm"], default="flow")
    parser.add_argument("--samples", default=None, help="write 64 samples here (.png)")
    parser.add_argument("--transform", default="maf")
    parser.add_argument("--layers", type=int, default=5)
    parser.add_argument("--hidden", type=int, nargs="+", default=[1024])
    parser.add_argument("--bins", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    folder = find_mnist_folder()
    if folder is None:
        raise SystemExit("MNIST test files not found; see pushforward.datasets.download_mnist")
    train, test = train_test_split(load_mnist(folder), 8000)
    if args.model == "fm":
        setting: dict = {"hidden": args.hidden}
    else:
        setting = {"transform": args.transform, "layers": args.layers, "hidden": args.hidden,
                   "bins": args.bins}  # fmt: skip
    with seeded(args.seed):
        if args.model == "fm":
            model = FlowMatching(FlowMatchingConfig(dim=784, image_shape=(28, 28), **setting))
        else:
            model = Flow(FlowConfig(dim=784, image_shape=(28, 28), **setting))
    cfg = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, lr_schedule="cosine",
        seed=args.seed,
    )  # fmt: skip
    start, cpu = time.perf_counter(), time.process_time()
    history = fit(model, train.x, cfg)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    gen = torch.Generator().manual_seed(args.seed + 1)
    held_out = model.evaluate(test.x, generator=gen)
    with torch.no_grad():
        images = model.sample(64, generator=torch.Generator().manual_seed(args.seed + 2))
    held_out["sampling_cost"] = model.sampling_cost()
    if args.samples is not None:
        from pushforward.core import save_figure
        from pushforward.runs import image_grid

        title = f"{args.model}: {held_out['bits_per_dim']:.2f} bits/dim"
        save_figure(image_grid(images.clamp(0, 1), (28, 28), title=title), args.samples)
    record = {
        "setting": setting,
        "train": cfg.to_dict(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_loss": [round(r.get("bits_per_dim", r["loss"]), 4) for r in history],
        "test": held_out,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
    }
    stderr = held_out["log_likelihood_stderr"] / (784 * math.log(2))  # in bits/dim
    name = "flow matching" if args.model == "fm" else f"{args.transform}, {args.layers} layers"
    print(
        f"{name} of {args.hidden}: held-out "
        f"{held_out['bits_per_dim']:.3f} ± {stderr:.3f} bits/dim after {args.epochs} epochs, "
        f"{seconds:.0f} s ({cpu_seconds:.0f} s CPU)"
    )
    print(json.dumps(record, indent=2))
    if args.out is not None:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The ``pushforward`` command: each subcommand parses its arguments, makes one library call and
writes files. User mistakes end with one ``pushforward: error: ...`` line and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from pushforward import __version__
from pushforward.errors import ConfigError, Interrupted, PushforwardError

log = logging.getLogger("pushforward")

FIGURE_SUFFIXES = (".png", ".svg", ".pdf")
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _figure_path(value: str | None, option: str) -> Path | None:
    if value is None:
        return None
    path = Path(value)
    if path.suffix.lower() not in FIGURE_SUFFIXES:
        raise ConfigError(
            f"{option} {value!r}: the picture must end in one of {', '.join(FIGURE_SUFFIXES)}"
        )
    return path


def _positive(kind: type = int):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return parse


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be ≥ 0, got {text}")
    return value


def _float_pair(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 2:
        raise argparse.ArgumentTypeError(f"{text!r} is not two numbers such as 0.5,0.999")
    return values


def _int_list(text: str) -> list[int]:
    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected integers separated by commas, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive widths, got {text!r}")
    return values


# --- subcommands ------------------------------------------------------------------------------


def cmd_data(args: argparse.Namespace) -> int:
    from pushforward import datasets, plots
    from pushforward.checkpoint import save_figure

    plot = _figure_path(args.plot, "--plot")
    ds = datasets.load_data(args.data, n=args.n, generator=torch.Generator().manual_seed(args.seed))
    print(ds.describe())
    if plot is not None:
        if ds.image_shape is not None:
            fig = plots.image_grid(ds.x[:64], ds.image_shape, ncols=16, title=ds.name)
        elif ds.dim == 2:
            fig = plots.scatter_2d(ds.x, labels=ds.labels, title=f"{ds.name}: {ds.n:,} points")
        else:
            raise ConfigError(
                f"--plot: cannot draw {ds.dim}-dimensional data; pictures are for 2-D points "
                "and images"
            )
        _say(f"wrote {save_figure(fig, plot)}")
    return 0


def cmd_example(args: argparse.Namespace) -> int:
    from pushforward import plots
    from pushforward.checkpoint import save_figure
    from pushforward.errors import lookup
    from pushforward.measures import EXAMPLES
    from pushforward.metrics import ks_critical_value, ks_distance

    ex = lookup(EXAMPLES, args.name, what="example")
    out = _figure_path(args.out, "--out") or Path(f"{ex.name}.png")
    y = ex.make().sample(args.n, generator=torch.Generator().manual_seed(args.seed))
    ks = ks_distance(y, ex.cdf)
    print(f"{ex.title}")
    print(f"{args.n:,} samples: mean {float(y.mean()):.4f}, std {float(y.std()):.4f}")
    crit = ks_critical_value(args.n)
    print(f"KS distance to the exact CDF {ks:.5f} (0.1% critical value {crit:.5f})")
    fig = plots.density_histogram(
        y, ex.log_density, title=ex.title, bins=args.bins, support=ex.support
    )
    _say(f"wrote {save_figure(fig, out)}")
    return 0


def cmd_dice(args: argparse.Namespace) -> int:
    from pushforward.discrete import two_dice_sum

    y = two_dice_sum(args.sides)
    print(f"Y = X1 + X2 for two fair {args.sides}-sided dice")
    for value, p in y.pmf.items():
        print(f"  Pr[Y = {value:>2}] = {p}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from pushforward.report import run_demo

    start = time.perf_counter()
    path = run_demo(args.out, quick=args.quick, seed=args.seed, progress=_say)
    _say(f"wrote {path} and its figures in {time.perf_counter() - start:.0f} s")
    return 0


class BarProgress:
    """Training progress on stderr: a tqdm bar with the live loss on a tty, else a few lines."""

    def __init__(self) -> None:
        self.bar = None
        self.tty = sys.stderr.isatty()

    def start(self, epochs: int, steps_per_epoch: int, first_epoch: int) -> None:
        self.epochs, self.every = epochs, max(1, epochs // 10)
        if self.tty:
            from tqdm import tqdm

            total = (epochs - first_epoch + 1) * steps_per_epoch
            self.bar = tqdm(total=total, unit="step", dynamic_ncols=True, mininterval=0.2)
            self._last = 0.0

    def step(self, loss) -> None:
        if self.bar is not None:
            self.bar.update(1)
            now = time.monotonic()
            if now - self._last > 0.25:  # reading the loss syncs; do it only when drawing
                self.bar.set_postfix(loss=f"{float(loss):.4g}", refresh=False)
                self._last = now

    def epoch(self, record: dict) -> None:
        if self.bar is not None:
            self.bar.set_description(f"epoch {record['epoch']}/{self.epochs}")
        elif record["epoch"] % self.every == 0 or record["epoch"] == self.epochs:
            terms = "  ".join(
                f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                for k, v in record.items()
                if k not in ("epoch", "samples_per_s") and isinstance(v, int | float)
                and not isinstance(v, bool)
            )  # fmt: skip
            _say(f"epoch {record['epoch']}/{self.epochs}  {terms}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _load_config_file(path: str | None) -> dict:
    if path is None:
        return {}
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file '{p}' not found")
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix.lower() == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib
            values = tomllib.loads(text)
        elif p.suffix.lower() == ".json":
            import json

            values = json.loads(text)
        else:
            raise ConfigError(f"config file '{p}': use a .json or .toml file")
    except ValueError as e:
        raise ConfigError(f"config file '{p}' cannot be parsed: {e}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file '{p}' must hold a table of settings")
    return {k.replace("-", "_"): v for k, v in values.items()}


FIT_FLAGS = (
    "data", "latent", "n", "rows", "loss", "net", "hidden", "activation", "tied", "sigma",
    "learn_sigma", "kl_weight", "kl_schedule", "kl_warmup", "free_bits", "epochs",
    "batch_size", "lr", "optimizer", "seed", "checkpoint_every", "device", "weight_decay",
    "noise", "critic_hidden", "critic_steps", "critic_lr", "pack", "gp_weight", "penalty", "ema",
    "betas", "precision", "lr_schedule", "jacobian_truncation",
)  # fmt: skip


def cmd_fit(args: argparse.Namespace) -> int:
    from pushforward.runs import RunConfig, fit_run, load_run_config

    if args.resume:
        stored = load_run_config(args.resume)["run"]
        values = {**{k: v for k, v in stored.items() if k != "train"}, **stored["train"]}
        if args.epochs is not None:
            values["epochs"] = args.epochs
        out = args.resume
    else:
        values = _load_config_file(args.config)
        if args.model is not None:
            values["model"] = args.model
        values.update({k: getattr(args, k) for k in FIT_FLAGS if getattr(args, k) is not None})
        out = args.out
    rc = RunConfig.from_flat(values)
    folder = fit_run(
        rc, out=out, resume=bool(args.resume), progress=BarProgress(), tensorboard=args.tensorboard
    )
    from pushforward import distributed

    if distributed.context().main:
        _say(f"run written to {folder}")
    return 0


def cmd_encode(args: argparse.Namespace) -> int:
    from pushforward.runs import encode_run

    z = encode_run(args.run, args.data, n=args.n, rows=args.rows, seed=args.seed)
    _write_array(z, args.out)
    return 0


def cmd_decode(args: argparse.Namespace) -> int:
    from pushforward import datasets
    from pushforward.runs import decode_run

    z = datasets.load_data(args.latents).x
    _write_array(decode_run(args.run, z), args.out)
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from pushforward import plots
    from pushforward.checkpoint import save_figure
    from pushforward.runs import load_run_config, sample_run

    out = Path(args.out)
    if out.suffix.lower() not in (*FIGURE_SUFFIXES, ".npy", ".csv"):
        raise ConfigError(f"--out {args.out!r}: use .png, .svg or .pdf for a picture, .npy or .csv")
    y = sample_run(args.run, args.n, seed=args.seed, jacobian_truncation=args.jacobian_truncation)
    if out.suffix.lower() in FIGURE_SUFFIXES:
        shape = load_run_config(args.run)["data"].get("image_shape")
        if shape:
            fig = plots.image_grid(y.clamp(0, 1), tuple(shape), title=f"{args.n} samples")
        elif y.shape[1] == 2:
            fig = plots.scatter_2d(y, title=f"{args.n:,} samples")
        else:
            raise ConfigError(f"cannot draw {y.shape[1]}-dimensional samples; use .npy or .csv")
        _say(f"wrote {save_figure(fig, out)}")
    else:
        _write_array(y, args.out)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from pushforward.runs import evaluate_run

    result = evaluate_run(
        args.run, args.data, n=args.n, rows=args.rows, iwae_k=args.iwae_k, seed=args.seed,
        jacobian_truncation=args.jacobian_truncation,
    )  # fmt: skip
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['model']} on {result['data']} ({result['n']:,} rows × {result['dim']})")
    if result.get("jacobian_truncation"):
        print(f"  samples with Jacobian truncation: {100 * result['jacobian_truncation']:g}% of "
              "latent draws rejected")  # fmt: skip
    if "neg_elbo" in result:
        print(f"  −ELBO                 {result['neg_elbo']:.3f} nats")
        print(f"    reconstruction      {-result['log_px_given_z']:.3f}, KL {result['kl']:.3f}")
    if "nll" in result:
        se = result.get("log_likelihood_stderr")
        how = f"IWAE, k = {result['iwae_k']}" if "iwae_k" in result else "exact"
        err = f" ± {se:.3f}" if se is not None else ""
        print(f"  −log p(x) ({how})  {result['nll']:.3f}{err} nats")
        print(f"  bits per dimension    {result['bits_per_dim']:.4f}")
    if "active_units" in result:
        print(f"  active units          {result['active_units']}")
    if "squared_error" in result:
        print(f"  squared error         {result['squared_error']:.4f} per example")
    if "modes_captured" in result:
        print(
            f"  modes captured        {result['modes_captured']} of {result['n_modes']}, "
            f"{100 * result['high_quality']:.1f}% high quality, "
            f"reverse KL {result['reverse_kl']:.3f}"
        )
        print(
            f"  mean log-density      {result['mean_log_density']:.3f} "
            f"(real data: {result['mean_log_density_floor']:.3f})"
        )
    if "mmd2" in result:
        m = result["quality_samples"]
        print(f"  sample quality on {m:,} points (floor: two real sets of {m:,})")
        for key, name in (("mmd2", "MMD²"), ("energy", "energy distance"), ("wasserstein1", "W₁")):
            print(f"    {name:<19} {result[key]:.5f}  (floor {result[key + '_floor']:.5f})")
    if "frechet_distance" in result:
        print(
            f"  Fréchet distance      {result['frechet_distance']:.3f} "
            f"(floor {result['frechet_distance_floor']:.3f}, {result['frechet_samples']:,} "
            f"images; feature net accuracy {100 * result['feature_accuracy']:.1f}%)"
        )
    return 0


def _write_array(a, out: str) -> None:
    import io

    import numpy as np

    from pushforward.checkpoint import atomic_write_bytes

    path = Path(out)
    arr = a.detach().cpu().numpy()
    buf = io.BytesIO()
    if path.suffix == ".npy":
        np.save(buf, arr, allow_pickle=False)
    elif path.suffix == ".csv":
        np.savetxt(buf, arr, delimiter=",", fmt="%.7g")
    else:
        raise ConfigError(f"--out {out!r}: use a .npy or .csv file")
    atomic_write_bytes(path, buf.getvalue())
    _say(f"wrote {path} ({arr.shape[0]} × {arr.shape[1]})")


# --- parser -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``pushforward`` command."""
    parser = argparse.ArgumentParser(
        prog="pushforward",
        description="Deep generative networks as pushforwards g#μ: sample, fit, measure, see.",
    )
    parser.add_argument("--version", action="version", version=f"pushforward {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    data_help = (
        "ring8, grid25, moons, digits, mnist, mnist:DIR, mixture:FILE.json|.toml, "
        "or a .npy/.npz/.csv file"
    )

    p = sub.add_parser("demo", help="regenerate the lecture's gallery into one HTML report")
    p.add_argument("--out", default="demo-output", help="output folder (default: demo-output)")
    p.add_argument("--quick", action="store_true", help="smaller and faster (under a minute)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("data", help="describe a data set and optionally draw it")
    p.add_argument("data", metavar="SPEC", help=data_help)
    p.add_argument("-n", "--n", type=_positive(), default=None, help="points to draw (mixtures)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plot", metavar="FILE", help="write a picture (.png, .svg, .pdf)")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("example", help="sample a built-in univariate pushforward and draw it")
    p.add_argument("name", metavar="NAME", help="identity, square, gaussian-icdf, square-normal")
    p.add_argument("-n", "--n", type=_positive(), default=100_000, help="samples (default 100000)")
    p.add_argument("--bins", type=_positive(), default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", metavar="FILE", help="histogram picture (default NAME.png)")
    p.set_defaults(func=cmd_example)

    p = sub.add_parser("fit", help="fit a model to data and write a run folder")
    p.add_argument("model", metavar="MODEL", nargs="?", help="pca, ppca, ae, vae or gan")
    p.add_argument("--data", metavar="SPEC", help=data_help)
    p.add_argument("--config", metavar="FILE", help="settings from a .json or .toml file")
    p.add_argument("--out", metavar="DIR", help="run folder (default: a fresh one under runs/)")
    p.add_argument("--resume", metavar="RUN", help="continue the run in this folder")
    p.add_argument("--latent", type=_positive(), help="latent dimension k (default 2)")
    p.add_argument("-n", "--n", type=_positive(), help="points to draw (mixtures)")
    p.add_argument(
        "--loss",
        help="ae/vae: reconstruction loss l2, l1, bce (vae also gaussian, laplace); "
        "gan: nonsaturating, minimax, wgan-gp, hinge",
    )
    p.add_argument("--net", help="network kind: mlp, conv")
    p.add_argument("--hidden", type=_int_list, help="hidden widths, e.g. 512,256")
    p.add_argument("--activation", help="relu, elu, gelu, silu, tanh, ...")
    p.add_argument("--tied", action="store_true", default=None, help="tied decoder weights")
    p.add_argument("--rows", metavar="A:B", help="use only these rows of the data, e.g. :8000")
    p.add_argument("--sigma", type=_positive(float), help="σ of the gaussian/laplace likelihood")
    p.add_argument("--learn-sigma", action="store_true", default=None, help="learn σ per dim")
    p.add_argument("--kl-weight", type=float, help="λ, the weight of the KL term (default 1)")
    p.add_argument("--kl-schedule", help="constant, linear (warm-up) or cyclical")
    p.add_argument("--kl-warmup", type=_positive(float), help="warm-up (or cycle) in epochs")
    p.add_argument("--free-bits", type=float, help="free bits per latent dimension (nats)")
    g = p.add_argument_group("GAN")
    g.add_argument("--noise", help="the base measure μ: gaussian (N(0, I)) or uniform ([−1, 1]^k)")
    g.add_argument("--critic-hidden", type=_int_list, help="critic widths (default --hidden)")
    g.add_argument("--critic-steps", type=_positive(), help="critic updates per generator update")
    g.add_argument("--critic-lr", type=_positive(float), help="critic learning rate (default --lr)")
    g.add_argument("--pack", type=_positive(), help="PacGAN: samples the critic judges at once")
    g.add_argument("--gp-weight", type=float, help="weight of the gradient penalty (0 = off)")
    g.add_argument("--penalty", help="gp (Gulrajani, at interpolates) or r1 (at the data)")
    g.add_argument("--ema", type=float, help="EMA decay of the generator's weights (0 = off)")
    g.add_argument(
        "--jacobian-truncation", type=float, metavar="Q",
        help="reject the share Q of latent draws where g stretches most when sampling (0 = off; "
        "default 0.03 for non-image data, 0 for images)",
    )  # fmt: skip
    p.add_argument("--epochs", type=_non_negative, help="training epochs")
    p.add_argument("--batch-size", type=_non_negative, help="minibatch size; 0 = full batch")
    p.add_argument("--lr", type=_positive(float), help="learning rate")
    p.add_argument("--lr-schedule", help="constant, or cosine (down to 0 at the last step)")
    p.add_argument("--optimizer", help="adam, adamw, sgd")
    p.add_argument("--betas", type=_float_pair, help="Adam's β₁,β₂, e.g. 0.5,0.999")
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--checkpoint-every", type=_positive(), help="epochs between checkpoints")
    p.add_argument("--device", help="auto, cpu, cuda")
    p.add_argument(
        "--precision", help="float32, bfloat16 (matrix products) or auto (bfloat16 where native)"
    )
    p.add_argument("--seed", type=int)
    p.add_argument("--tensorboard", metavar="DIR", help="also log scalars and samples to DIR")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("encode", help="latent codes of data under a run's model")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--data", metavar="SPEC", required=True, help=data_help)
    p.add_argument("-n", "--n", type=_positive(), help="points to draw (mixtures)")
    p.add_argument("--rows", metavar="A:B", help="use only these rows of the data")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", metavar="FILE", default="latents.npy", help=".npy or .csv")
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("sample", help="draw samples of a run's generative model g#μ")
    p.add_argument("run", metavar="RUN")
    p.add_argument("-n", "--n", type=_positive(), default=64, help="samples (default 64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", metavar="FILE", default="samples.png", help=".png/.svg/.pdf/.npy/.csv")
    p.add_argument(
        "--jacobian-truncation", type=float, metavar="Q",
        help="GAN runs: reject this share of latent draws where g stretches most (default: the "
        "run's own)",
    )  # fmt: skip
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser(
        "evaluate", help="likelihoods, errors and sample quality (with real-vs-real floors)"
    )
    p.add_argument("run", metavar="RUN")
    p.add_argument("--data", metavar="SPEC", required=True, help=data_help)
    p.add_argument("-n", "--n", type=_positive(), help="points to draw (mixtures)")
    p.add_argument("--rows", metavar="A:B", help="evaluate only these rows, e.g. 8000:")
    p.add_argument("--iwae-k", type=_positive(), default=1000, help="importance samples (1000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.add_argument(
        "--jacobian-truncation", type=float, metavar="Q",
        help="GAN runs: judge samples with this share of latent draws rejected (default: the "
        "run's own)",
    )  # fmt: skip
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("decode", help="decode latent codes with a run's model")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--latents", metavar="FILE", required=True, help=".npy, .npz or .csv (n, k)")
    p.add_argument("--out", metavar="FILE", default="decoded.npy", help=".npy or .csv")
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser("dice", help="the exact pmf of the sum of two fair dice")
    p.add_argument("--sides", type=_positive(), default=6)
    p.set_defaults(func=cmd_dice)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except Interrupted as e:
        print(f"pushforward: {e}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except PushforwardError as e:
        print(f"pushforward: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("pushforward: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED

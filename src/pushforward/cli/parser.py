"""The argument parser of every command, and :func:`run`, which parses a named command and runs it
(:func:`pushforward.cli.main`, in :mod:`pushforward.cli.top`, answers the top level first)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from pushforward.cli import commands as cmd
from pushforward.cli.flags import SettingFlag, add_sampling_flags, add_setting_flags, setting_flags
from pushforward.cli.top import COMMANDS, EXIT_INTERRUPTED, EXIT_USER_ERROR, top_parser
from pushforward.core import Interrupted, PushforwardError

__all__ = ["build_parser", "run"]

DATA_HELP = (
    "ring8, grid25, moons, digits, mnist, mnist:DIR, mixture:FILE.json|.toml, "
    "or a .npy/.npz/.csv file"
)


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


def _int_text(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


DEVICE_HELP = "auto (CUDA when present, else the CPU; the default), cpu, cuda or cuda:N"


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help=DEVICE_HELP)


def _model_names() -> list[str]:
    from pushforward.models.registry import MODELS

    return list(MODELS)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``pushforward`` command; the flags of ``fit``,
    ``sample`` and ``evaluate`` are generated from the settings of the registered models."""
    parser, sub = top_parser()
    flags = setting_flags()
    _add_demo(sub)
    _add_data_commands(sub)
    _add_fit(sub, flags)
    _add_run_commands(sub, flags)
    _add_dice(sub)
    return parser


def _add_demo(sub: Any) -> None:
    p = sub.add_parser("demo", help=COMMANDS["demo"])
    p.add_argument("--out", default="demo-output", help="output folder (default: demo-output)")
    p.add_argument("--quick", action="store_true", help="smaller and faster (under a minute)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--workers", type=int, choices=(1, 2), default=None,
        help="processes for the sections on the mixtures: 2 runs grid25's part beside ring8's "
        "(default: 2 on a machine with 2 or more CPUs); the page is the same either way",
    )  # fmt: skip
    _add_device(p)
    p.set_defaults(func=cmd.cmd_demo)


def _add_data_commands(sub: Any) -> None:
    """``data`` and ``example``: data sets and pushforwards, no run folder."""
    p = sub.add_parser("data", help=COMMANDS["data"])
    p.add_argument("data", metavar="SPEC", help=DATA_HELP)
    p.add_argument("-n", "--n", type=_positive(), default=None, help="points to draw (mixtures)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plot", metavar="FILE", help="write a picture (.png, .svg, .pdf)")
    p.set_defaults(func=cmd.cmd_data)

    p = sub.add_parser("example", help=COMMANDS["example"])
    p.add_argument("name", metavar="NAME", help="identity, square, gaussian-icdf, square-normal")
    p.add_argument("-n", "--n", type=_positive(), default=100_000, help="samples (default 100000)")
    p.add_argument("--bins", type=_positive(), default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", metavar="FILE", help="histogram picture (default NAME.png)")
    p.set_defaults(func=cmd.cmd_example)


def _add_fit(sub: Any, flags: list[SettingFlag]) -> None:
    p = sub.add_parser("fit", help=COMMANDS["fit"])
    p.add_argument("model", metavar="MODEL", nargs="?", help=", ".join(_model_names()))
    p.add_argument("--data", metavar="SPEC", help=DATA_HELP)
    p.add_argument("--config", metavar="FILE", help="settings from a .json or .toml file")
    p.add_argument("--out", metavar="DIR", help="run folder (default: a fresh one under runs/)")
    p.add_argument("--resume", metavar="RUN", help="continue the run in this folder")
    p.add_argument("-n", "--n", type=_int_text, help="points to draw (mixtures)")
    p.add_argument("--rows", metavar="A:B", help="use only these rows of the data, e.g. :8000")
    p.add_argument("--tensorboard", metavar="DIR", help="also log scalars and samples to DIR")
    p.add_argument(
        "--seeds", type=_positive(), default=1, metavar="N",
        help="fit the seeds --seed … --seed + N − 1 at once, as one stacked model (the VAE, the "
        "autoencoder, flow matching); writes the run folders OUT/seed-S",
    )  # fmt: skip
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="check the settings, print the run config, fit nothing",
    )
    p.add_argument(
        "--no-figures", dest="figures", action="store_false",
        help="write the run without its figures folder (about a second less a run: sweeps, "
        "scripts)",
    )  # fmt: skip
    add_setting_flags(p, flags)
    p.set_defaults(func=cmd.cmd_fit, flags=flags)


def _add_run_commands(sub: Any, flags: list[SettingFlag]) -> None:
    """``encode``, ``sample``, ``evaluate``, ``explore``, ``decode``: uses of a fitted run."""
    p = sub.add_parser("encode", help=COMMANDS["encode"])
    p.add_argument("run", metavar="RUN")
    p.add_argument("--data", metavar="SPEC", required=True, help=DATA_HELP)
    p.add_argument("-n", "--n", type=_positive(), help="points to draw (mixtures)")
    p.add_argument("--rows", metavar="A:B", help="use only these rows of the data")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", metavar="FILE", default="latents.npy", help=".npy or .csv")
    _add_device(p)
    p.set_defaults(func=cmd.cmd_encode)

    p = sub.add_parser("sample", help=COMMANDS["sample"])
    p.add_argument("run", metavar="RUN")
    p.add_argument("-n", "--n", type=_positive(), default=64, help="samples (default 64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", metavar="FILE", default="samples.png", help=".png/.svg/.pdf/.npy/.csv")
    add_sampling_flags(p, flags)
    _add_device(p)
    p.set_defaults(func=cmd.cmd_sample, flags=flags)

    p = sub.add_parser("evaluate", help=COMMANDS["evaluate"])
    p.add_argument("run", metavar="RUN")
    p.add_argument("--data", metavar="SPEC", required=True, help=DATA_HELP)
    p.add_argument("-n", "--n", type=_positive(), help="points to draw (mixtures)")
    p.add_argument("--rows", metavar="A:B", help="evaluate only these rows, e.g. 8000:")
    p.add_argument("--iwae-k", type=_positive(), default=1000, help="importance samples (1000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    add_sampling_flags(p, flags)
    _add_device(p)
    p.set_defaults(func=cmd.cmd_evaluate, flags=flags)

    p = sub.add_parser("explore", help=COMMANDS["explore"])
    p.add_argument("run", metavar="RUN")
    p.add_argument("--out", metavar="FILE", default="explore.html", help="the page (.html)")
    p.add_argument("--data", metavar="SPEC", help="data to encode (default: the run's, held out)")
    p.add_argument("-n", "--n", type=_positive(), help="points to draw (mixtures)")
    p.add_argument("--rows", metavar="A:B", help="use only these rows of the data")
    p.add_argument("--points", type=_positive(), default=2000, help="codes drawn (2000)")
    p.add_argument("--seed", type=int, default=None, help="draws of the data (default: fresh)")
    p.add_argument(
        "--precision", choices=("auto", "float16", "float32"), default="auto",
        help="decoder weights in the page (auto: float16 for large decoders)",
    )  # fmt: skip
    _add_device(p)
    p.set_defaults(func=cmd.cmd_explore)

    p = sub.add_parser("decode", help=COMMANDS["decode"])
    p.add_argument("run", metavar="RUN")
    p.add_argument("--latents", metavar="FILE", required=True, help=".npy, .npz or .csv (n, k)")
    p.add_argument("--out", metavar="FILE", default="decoded.npy", help=".npy or .csv")
    _add_device(p)
    p.set_defaults(func=cmd.cmd_decode)


def _add_dice(sub: Any) -> None:
    p = sub.add_parser("dice", help=COMMANDS["dice"])
    p.add_argument("--sides", type=_positive(), default=6)
    p.set_defaults(func=cmd.cmd_dice)


def _out_of_memory(e: BaseException) -> bool:
    """Whether ``e`` is an allocation that failed: CUDA's OutOfMemoryError, or the CPU
    allocator's RuntimeError ("DefaultCPUAllocator: can't allocate memory")."""
    import torch

    if isinstance(e, torch.OutOfMemoryError):
        return True
    return isinstance(e, RuntimeError) and "can't allocate memory" in str(e)


def run(argv: Sequence[str] | None = None) -> int:
    """Run the command line with the parser of every command (:func:`pushforward.cli.main`
    answers the top level's ``--help`` and ``--version`` first); return the exit status."""
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
    except Exception as e:
        if not _out_of_memory(e):
            raise
        device = getattr(args, "device", None) or "auto"
        kept = ("what was written before is kept" if args.command in ("fit", "demo")
                else "nothing was written")  # fmt: skip
        print(f"pushforward: error: out of memory in '{args.command}' (--device {device}): ask "
              f"for less at once (a smaller -n or --batch-size) or use a device with more "
              f"memory; {kept}", file=sys.stderr)  # fmt: skip
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("pushforward: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED

"""The ``pushforward`` command: each subcommand parses its arguments, makes one library call and
writes files. User mistakes end with one ``pushforward: error: ...`` line and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import os
import sys
import time
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from pushforward.core import ConfigError, Interrupted, PushforwardError
from pushforward.core.version import __version__

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


def _int_text(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _float_text(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _int_items(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected integers separated by commas, got {text!r}"
        ) from None


# how a setting's type is read from the command line; bounds are the settings' own checks
_PARSERS: dict[Any, Any] = {int: _int_text, float: _float_text, str: str}


def _flag_type(tp: Any) -> Any:
    """Return the argparse ``type`` for a setting of type ``tp`` (Optional unwrapped)."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        tp = args[0]
        args = list(typing.get_args(tp))
    origin = typing.get_origin(tp)
    if origin is list:
        return _int_items
    if origin is tuple:
        return _float_pair
    return _PARSERS.get(tp, tp)


@functools.cache
def _settings() -> dict[str, tuple[Any, dict[str, tuple[str, Any]], bool]]:
    """Return every setting ``fit`` takes, by name: its type, its help by owner (``training`` or
    a model's name) and whether it also changes how a fitted model samples."""
    from pushforward.core import setting_types
    from pushforward.models.registry import MODELS
    from pushforward.train import TrainConfig

    owners = [("training", TrainConfig), *((name, spec.config) for name, spec in MODELS.items())]
    out: dict[str, tuple[Any, dict[str, tuple[str, Any]], bool]] = {}
    for owner, cls in owners:
        types_ = setting_types(cls)
        for f in dataclasses.fields(cls):
            if f.metadata.get("derived"):  # filled from the data, not a flag
                continue
            tp, helps, sampling = out.get(f.name, (types_[f.name], {}, False))
            if _flag_type(tp) is not _flag_type(types_[f.name]):
                raise TypeError(f"setting {f.name} has two types: {tp} and {types_[f.name]}")
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            text = f.metadata.get("help", "")
            if cls is TrainConfig:  # the models whose benchmarked training defaults differ
                own = [_train_default(m, s, f.name) for m, s in MODELS.items()
                       if f.name in s.train_defaults]  # fmt: skip
                text += f" (default {_shown(default)}; {', '.join(own)})" if own else ""
                default = None if own else default
            helps[owner] = (text, default)
            out[f.name] = (tp, helps, sampling or bool(f.metadata.get("sampling")))
    return out


def _train_default(model: str, spec: Any, name: str) -> str:
    """``MODEL VALUE``, with the values for other kinds of data in brackets where they differ."""
    value = spec.train_defaults[name]
    others = [f"{kind} {_shown(d[name])}" for kind, d in spec.kind_train_defaults.items()
              if d.get(name, value) != value]  # fmt: skip
    return f"{model} {_shown(value)}" + (f" ({', '.join(others)})" if others else "")


def _shown(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(map(str, value))
    return str(value)


def _help(helps: dict[str, tuple[str, Any]]) -> str:
    """One help text for a flag several models share: owners with the same text together, each
    group with its default(s)."""
    by_text: dict[str, dict[str, Any]] = {}
    for owner, (text, default) in helps.items():
        by_text.setdefault(text, {})[owner] = default
    parts = []
    for text, defaults in by_text.items():
        values = {_shown(v) for v in defaults.values() if v is not None}
        if not values:
            shown = ""
        elif len(values) == 1 and None not in defaults.values():
            shown = f" (default {values.pop()})"
        else:
            shown = (
                " (defaults "
                + ", ".join(f"{o} {_shown(v)}" for o, v in defaults.items() if v is not None)
                + ")"
            )
        parts.append(f"{', '.join(defaults)}: {text}{shown}")
    return "; ".join(parts).replace("%", "%%")


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """Add one flag per setting of the training loop and of every registered model."""
    group = parser.add_argument_group("settings (the models or the training loop each is for)")
    for name, (tp, helps, _) in _settings().items():
        flag = "--" + name.replace("_", "-")
        if tp is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                               help=_help(helps))  # fmt: skip
        else:
            group.add_argument(flag, type=_flag_type(tp), default=None, help=_help(helps))


def _add_sampling_flags(parser: argparse.ArgumentParser) -> None:
    """Add the settings that change how a fitted model samples (a GAN's Jacobian truncation)."""
    for name, (tp, helps, sampling) in _settings().items():
        if sampling:
            parser.add_argument(
                "--" + name.replace("_", "-"), type=_flag_type(tp), default=None,
                help=_help(helps) + " (default: the run's own)",
            )  # fmt: skip


def _sampling_args(args: argparse.Namespace) -> dict[str, Any]:
    return {name: getattr(args, name) for name, (_, _, sampling) in _settings().items()
            if sampling and getattr(args, name) is not None}  # fmt: skip


# --- subcommands ------------------------------------------------------------------------------


def cmd_data(args: argparse.Namespace) -> int:
    from pushforward.core import save_figure
    from pushforward.data import datasets
    from pushforward.runs import plots

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
    from pushforward.core import lookup, save_figure
    from pushforward.measures import EXAMPLES
    from pushforward.metrics import ks_critical_value, ks_distance
    from pushforward.runs import plots

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
    from pushforward.measures import two_dice_sum

    y = two_dice_sum(args.sides)
    print(f"Y = X1 + X2 for two fair {args.sides}-sided dice")
    for value, p in y.pmf.items():
        print(f"  Pr[Y = {value:>2}] = {p}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from pushforward.gallery import run_demo

    start = time.perf_counter()
    # a bar with an ETA for each training run of the gallery on a terminal; nothing otherwise
    path = run_demo(
        args.out, quick=args.quick, seed=args.seed, progress=_say,
        bars=lambda label: BarProgress(label, lines=False),
        workers=args.workers if args.workers is not None else _demo_workers(),
    )  # fmt: skip
    _say(f"wrote {path} and its figures in {time.perf_counter() - start:.0f} s")
    return 0


def _demo_workers() -> int:
    """2 where this process may run on 2 or more CPUs (affinity and POSIX signal masks
    allowing), else 1."""
    import signal

    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return 2 if cpus >= 2 and hasattr(signal, "pthread_sigmask") else 1


class BarProgress:
    """Training progress on stderr: a tqdm bar with the live loss and an ETA on a tty, else
    (with ``lines``) a line every tenth of the epochs, or (without) nothing. ``label`` names
    the run in the bar."""

    def __init__(self, label: str | None = None, *, lines: bool = True) -> None:
        self.bar = None
        self.label, self.lines = label, lines
        self.tty = sys.stderr.isatty()

    def start(self, epochs: int, steps_per_epoch: int, first_epoch: int) -> None:
        self.epochs, self.every = epochs, max(1, epochs // 10)
        if self.tty:
            from tqdm import tqdm

            total = (epochs - first_epoch + 1) * steps_per_epoch
            self.bar = tqdm(
                total=total, unit="step", dynamic_ncols=True, mininterval=0.2, desc=self.label,
                leave=self.label is None,
            )  # fmt: skip
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
            where = f"epoch {record['epoch']}/{self.epochs}"
            self.bar.set_description(f"{self.label}: {where}" if self.label else where)
        elif not self.lines:
            return
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


def _refuse_training_settings(values: dict[str, Any]) -> None:
    """Refuse training settings for a model fitted in closed form (all but the data's seed)."""
    from pushforward.models.registry import MODELS
    from pushforward.train import TrainConfig

    spec = MODELS.get(values.get("model", ""))
    if spec is None or spec.trained:
        return
    train = {f.name for f in dataclasses.fields(TrainConfig)} - {"seed"}
    given = sorted(set(values) & train)
    if given:
        raise ConfigError(
            f"{given[0]} is a training setting, but {values['model']} is fitted in closed form; "
            "it takes none but seed"
        )


def cmd_fit(args: argparse.Namespace) -> int:
    from pushforward.runs import RunConfig, fit_run, load_run_config, plan_run

    names = ["data", "n", "rows", *_settings()]
    given = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
    if args.resume:
        rc = RunConfig.from_dict(load_run_config(args.resume)["run"])
        changed = sorted(set(given) - {"epochs", "device"})
        if changed or args.model is not None or args.config is not None:
            raise ConfigError(
                f"--resume continues a run with its own settings; only --epochs and --device "
                f"may change "
                f"(got --{(changed[0] if changed else 'model').replace('_', '-')})"
            )
        if given:
            rc = RunConfig.from_flat({**rc.to_flat(), **given})  # checks the new values
        out = args.resume
    else:
        values = _load_config_file(args.config)
        if args.model is not None:
            values["model"] = args.model
        values.update(given)
        _refuse_training_settings(values)
        rc = RunConfig.from_flat(values)
        out = args.out
    if args.dry_run:
        import json

        print(json.dumps(plan_run(rc), indent=2))
        return 0
    folder = fit_run(
        rc, out=out, resume=bool(args.resume), progress=BarProgress(), tensorboard=args.tensorboard
    )
    from pushforward.train import distributed

    if distributed.context().main:
        _say(f"run written to {folder}")
    return 0


def cmd_encode(args: argparse.Namespace) -> int:
    from pushforward.runs import encode_run

    z = encode_run(args.run, args.data, n=args.n, rows=args.rows, seed=args.seed)
    _write_array(z, args.out)
    return 0


def cmd_decode(args: argparse.Namespace) -> int:
    from pushforward.data import datasets
    from pushforward.runs import decode_run

    z = datasets.load_data(args.latents).x
    _write_array(decode_run(args.run, z), args.out)
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from pushforward.core import save_figure
    from pushforward.runs import load_run_config, plots, sample_run

    out = Path(args.out)
    if out.suffix.lower() not in (*FIGURE_SUFFIXES, ".npy", ".csv"):
        raise ConfigError(f"--out {args.out!r}: use .png, .svg or .pdf for a picture, .npy or .csv")
    y, cost = sample_run(args.run, args.n, seed=args.seed, with_cost=True, **_sampling_args(args))
    if cost:
        _say("sampling took " + ", ".join(f"{k} {v:,}" for k, v in cost.items()))
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


def cmd_explore(args: argparse.Namespace) -> int:
    from pushforward.explore import explore_run

    path = explore_run(
        args.run, args.out, data=args.data, rows=args.rows, n=args.n, points=args.points,
        seed=args.seed, precision=args.precision,
    )  # fmt: skip
    _say(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB); open it in a browser")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from pushforward.models.registry import MODELS
    from pushforward.runs import evaluate_run, load_run_config, result_keys

    result = evaluate_run(
        args.run, args.data, n=args.n, rows=args.rows, iwae_k=args.iwae_k, seed=args.seed,
        **_sampling_args(args),
    )  # fmt: skip
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    kind = load_run_config(args.run)["model"]["kind"]
    print(format_result(result, result_keys(MODELS[kind].cls)))
    return 0


def _value(value: Any, fmt: str) -> str:
    if isinstance(value, bool) or value is None or not isinstance(value, int | float):
        return str(value)
    return format(value, fmt) if fmt else str(value)


def format_result(result: dict[str, Any], keys: dict[str, Any] | None = None) -> str:
    """Return :func:`~pushforward.runs.evaluate_run`'s result as lines of text: one per key, in
    the order of ``keys`` (the model's :func:`~pushforward.runs.result_keys`; unknown keys last),
    each standard error and real-vs-real floor beside the value it belongs to."""
    from pushforward.core import ResultKey
    from pushforward.runs import result_keys

    RESULT_KEYS = keys if keys is not None else result_keys()

    head = ("run", "model", "data", "rows", "n", "dim")
    lines = [f"{result.get('model')} on {result.get('data')} "
             f"({result.get('n', 0):,} rows × {result.get('dim')})"]  # fmt: skip
    companions = {k for key in RESULT_KEYS.values() for k in (key.stderr, key.floor) if k}
    order = [k for k in RESULT_KEYS if k in result] + [k for k in result if k not in RESULT_KEYS]
    for key in order:
        if key in head or key in companions:
            continue
        spec = RESULT_KEYS.get(key, ResultKey(key, ".4g", ""))
        text = _value(result[key], spec.fmt)
        if spec.stderr in result:
            text += f" ± {_value(result[spec.stderr], spec.fmt)}"
        if spec.unit:
            text += f" {spec.unit}"
        if spec.floor in result:
            text += f"  ({spec.floor_label}: {_value(result[spec.floor], spec.fmt)})"
        lines.append(f"  {spec.label:<24} {text}")
    return "\n".join(lines)


def _write_array(a, out: str) -> None:
    import io

    import numpy as np

    from pushforward.core import atomic_write_bytes

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


def _model_names() -> list[str]:
    from pushforward.models.registry import MODELS

    return list(MODELS)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose refusals are one ``pushforward: error:`` line and exit 2."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(EXIT_USER_ERROR, f"pushforward: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``pushforward`` command."""
    parser = _Parser(
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
    p.add_argument(
        "--workers", type=int, choices=(1, 2), default=None,
        help="processes for the sections on the mixtures: 2 runs grid25's part beside ring8's "
        "(default: 2 on a machine with 2 or more CPUs); the page is the same either way",
    )  # fmt: skip
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
    p.add_argument("model", metavar="MODEL", nargs="?", help=", ".join(_model_names()))
    p.add_argument("--data", metavar="SPEC", help=data_help)
    p.add_argument("--config", metavar="FILE", help="settings from a .json or .toml file")
    p.add_argument("--out", metavar="DIR", help="run folder (default: a fresh one under runs/)")
    p.add_argument("--resume", metavar="RUN", help="continue the run in this folder")
    p.add_argument("-n", "--n", type=_int_text, help="points to draw (mixtures)")
    p.add_argument("--rows", metavar="A:B", help="use only these rows of the data, e.g. :8000")
    p.add_argument("--tensorboard", metavar="DIR", help="also log scalars and samples to DIR")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="check the settings, print the run config, fit nothing",
    )
    _add_setting_flags(p)
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
    _add_sampling_flags(p)
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
    _add_sampling_flags(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "explore", help="one offline HTML page: walk the latent space, scrub training"
    )
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
    p.set_defaults(func=cmd_explore)

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

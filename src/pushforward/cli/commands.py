"""The subcommands of ``pushforward``: each parses its arguments, makes one library call and
writes files. User mistakes raise :class:`~pushforward.core.PushforwardError`; :func:`main
<pushforward.cli.main>` turns them into one ``pushforward: error: ...`` line and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from pushforward.cli.flags import given_settings
from pushforward.cli.progress import BarProgress, say
from pushforward.core import ConfigError

__all__ = [
    "cmd_data",
    "cmd_decode",
    "cmd_demo",
    "cmd_dice",
    "cmd_evaluate",
    "cmd_example",
    "cmd_explore",
    "cmd_fit",
    "cmd_sample",
]

if TYPE_CHECKING:
    from pushforward.runs import RunConfig

FIGURE_SUFFIXES = (".png", ".svg", ".pdf")


def _figure_path(value: str | None, option: str) -> Path | None:
    if value is None:
        return None
    path = Path(value)
    if path.suffix.lower() not in FIGURE_SUFFIXES:
        raise ConfigError(
            f"{option} {value!r}: the picture must end in one of {', '.join(FIGURE_SUFFIXES)}"
        )
    return path


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
        say(f"wrote {save_figure(fig, plot)}")
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
    say(f"wrote {save_figure(fig, out)}")
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
        args.out, quick=args.quick, seed=args.seed, progress=say,
        bars=lambda label: BarProgress(label, lines=False),
        workers=args.workers if args.workers is not None else _demo_workers(),
        device=args.device,
    )  # fmt: skip
    say(f"wrote {path} and its figures in {time.perf_counter() - start:.0f} s")
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


def _refuse_training_settings(values: dict[str, Any]) -> None:
    """Refuse training settings for a model fitted in closed form (all but the data's seed and
    the device its closed form is computed on)."""
    from pushforward.models.registry import MODELS
    from pushforward.train import TrainConfig

    spec = MODELS.get(values.get("model", ""))
    if spec is None or spec.trained:
        return
    train = {f.name for f in dataclasses.fields(TrainConfig)} - {"seed", "device"}
    given = sorted(set(values) & train)
    if given:
        raise ConfigError(
            f"{given[0]} is a training setting, but {values['model']} is fitted in closed form; "
            "it takes none but seed and device"
        )


def cmd_fit(args: argparse.Namespace) -> int:
    from pushforward.runs import (
        RunConfig,
        fit_run,
        load_run_config,
        plan_run,
        read_settings_file,
        strict_json,
    )

    run_args = {k: getattr(args, k) for k in ("data", "n", "rows") if getattr(args, k) is not None}
    if args.resume:
        rc = RunConfig.from_dict(load_run_config(args.resume)["run"])
        given = {**run_args, **given_settings(args, args.flags, rc.model)}
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
        values = read_settings_file(args.config) if args.config is not None else {}
        if args.model is not None:
            values["model"] = args.model
        values.update(run_args)
        values.update(given_settings(args, args.flags, values.get("model")))
        _refuse_training_settings(values)
        rc = RunConfig.from_flat(values)
        out = args.out
    if args.dry_run:
        print(json.dumps(strict_json(plan_run(rc)), indent=2, allow_nan=False))
        return 0
    if args.seeds > 1:
        return _fit_seeds(args, rc, out)
    folder = fit_run(rc, out=out, resume=bool(args.resume), progress=BarProgress(),
                     tensorboard=args.tensorboard, figures=args.figures)  # fmt: skip
    from pushforward.train import distributed

    if distributed.context().main:
        say(f"run written to {folder}")
    return 0


def _fit_seeds(args: argparse.Namespace, rc: RunConfig, out: str | None) -> int:
    """``fit --seeds N``: the seeds as one stacked model, written as N run folders."""
    from pushforward.runs import fit_seed_runs

    if args.resume:
        raise ConfigError(
            "--seeds fits new runs; continue one seed's run with --resume on its folder "
            "(OUT/seed-S)"
        )
    if args.tensorboard is not None:
        raise ConfigError("--tensorboard logs one run; fit with --seeds without it")
    folders = fit_seed_runs(rc, args.seeds, out=out, progress=BarProgress(), figures=args.figures)
    say(f"{len(folders)} runs written: {folders[0]} … {folders[-1].name}")
    return 0


def cmd_encode(args: argparse.Namespace) -> int:
    from pushforward.runs import encode_run

    z = encode_run(
        args.run, args.data, n=args.n, rows=args.rows, seed=args.seed, device=args.device
    )
    _write_array(z, args.out)
    return 0


def cmd_decode(args: argparse.Namespace) -> int:
    from pushforward.data import datasets
    from pushforward.runs import decode_run

    z = datasets.load_data(args.latents).x
    _write_array(decode_run(args.run, z, device=args.device), args.out)
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from pushforward.core import save_figure
    from pushforward.runs import load_run_config, plots, sample_run

    out = Path(args.out)
    if out.suffix.lower() not in (*FIGURE_SUFFIXES, ".npy", ".csv"):
        raise ConfigError(f"--out {args.out!r}: use .png, .svg or .pdf for a picture, .npy or .csv")
    y, cost = sample_run(
        args.run, args.n, seed=args.seed, with_cost=True, device=args.device,
        **_sampling_args(args),
    )  # fmt: skip
    if cost:
        say("sampling took " + ", ".join(f"{k} {v:,}" for k, v in cost.items()))
    if out.suffix.lower() in FIGURE_SUFFIXES:
        shape = load_run_config(args.run)["data"].get("image_shape")
        if shape:
            fig = plots.image_grid(y.clamp(0, 1), tuple(shape), title=f"{args.n} samples")
        elif y.shape[1] == 2:
            fig = plots.scatter_2d(y, title=f"{args.n:,} samples")
        else:
            raise ConfigError(f"cannot draw {y.shape[1]}-dimensional samples; use .npy or .csv")
        say(f"wrote {save_figure(fig, out)}")
    else:
        _write_array(y, args.out)
    return 0


def cmd_explore(args: argparse.Namespace) -> int:
    from pushforward.explore import explore_run

    path = explore_run(
        args.run, args.out, data=args.data, rows=args.rows, n=args.n, points=args.points,
        seed=args.seed, precision=args.precision, device=args.device,
    )  # fmt: skip
    say(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB); open it in a browser")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pushforward.models.registry import MODELS
    from pushforward.runs import evaluate_run, format_result, result_keys, strict_json

    sampling = _sampling_args(args)
    result = evaluate_run(
        args.run, args.data, n=args.n, rows=args.rows, iwae_k=args.iwae_k, seed=args.seed,
        device=args.device, **sampling,
    )  # fmt: skip
    if args.json:  # strict JSON: a value not defined here (NaN) is null
        print(json.dumps(strict_json(result), indent=2, allow_nan=False))
        return 0
    print(format_result(result, result_keys(MODELS[_run_kind(args.run)].cls)))
    return 0


def _run_kind(run: str) -> str:
    from pushforward.runs import load_run_config

    return load_run_config(run)["model"]["kind"]


def _sampling_args(args: argparse.Namespace) -> dict[str, Any]:
    """The sampling settings given for the run's model (none given: the run's own)."""
    if not any(getattr(args, f.dest, None) is not None for f in args.flags if f.sampling):
        return {}
    return given_settings(args, args.flags, _run_kind(args.run), sampling=True)


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
    say(f"wrote {path} ({arr.shape[0]} × {arr.shape[1]})")

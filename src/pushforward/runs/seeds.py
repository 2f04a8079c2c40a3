"""Fitting several seeds of one setting at once: :func:`fit_seed_runs` is the library call behind
``pushforward fit --seeds N``. The N runs train as one stacked model
(:func:`pushforward.train.fit_seeds`) and are written as N ordinary run folders, ``OUT/seed-S``,
each what ``fit --seed S --out OUT/seed-S`` writes (to the rounding of batched matrix products):
``sample``, ``evaluate``, ``explore`` and ``fit --resume`` take any of them.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from pushforward.core import CONFIG, CheckpointError, ConfigError, save_json
from pushforward.runs.config import RunConfig
from pushforward.runs.figures import write_figures
from pushforward.runs.fit import build_run, fresh_folder, load_run_data
from pushforward.runs.folder import save_model
from pushforward.train import (
    Progress,
    check_stackable,
    distributed,
    fit_seeds,
    resolve_device,
)

__all__ = ["MAX_SEEDS", "fit_seed_runs", "seed_folder"]

log = logging.getLogger(__name__)

MAX_SEEDS = 64
"""The most seeds one stack trains (each holds its weights, gradients and optimiser state)."""


def seed_folder(base: str | Path, seed: int) -> Path:
    """Return the run folder of ``seed`` in a stack's folder ``base``."""
    return Path(base) / f"seed-{seed}"


def fit_seed_runs(
    rc: RunConfig,
    seeds: int,
    *,
    out: str | Path | None = None,
    progress: Progress | None = None,
    figures: bool = True,
) -> list[Path]:
    """Fit the model ``rc`` describes with the seeds ``rc.train.seed`` … ``+ seeds − 1`` (each
    on its data: mixtures are drawn with the seed) as one stacked model; write each run folder
    under ``out`` (default: a fresh folder under ``runs/``) and return their paths."""
    if isinstance(seeds, bool) or not isinstance(seeds, int) or not 1 <= seeds <= MAX_SEEDS:
        raise ConfigError(f"seeds = {seeds!r} is not allowed; use an integer from 1 to {MAX_SEEDS}")
    if not rc.spec.trained:
        raise ConfigError(f"{rc.model} is fitted in closed form; there are no seeds to stack")
    if rc.train.snapshot_every:
        raise ConfigError(
            "snapshot_every keeps samples over one run's training; fit with --seeds without it "
            "(0), or fit each seed on its own"
        )
    if distributed.context().active:
        raise ConfigError("--seeds trains in one process; run it without torchrun")
    device = resolve_device(rc.train.device)
    members = [dataclasses.replace(rc, train=dataclasses.replace(rc.train, seed=rc.train.seed + i))
               for i in range(seeds)]  # fmt: skip
    data = [load_run_data(m) for m in members]
    base = Path(out) if out is not None else fresh_folder(rc, data[0])
    folders = [seed_folder(base, m.train.seed) for m in members]
    taken = [f for f in folders if (f / CONFIG).exists()]
    if taken:
        raise CheckpointError(
            f"'{taken[0]}' already holds a run; choose another --out (continue one seed's run "
            "with --resume on its folder)"
        )
    built = [build_run(m, ds, device) for m, ds in zip(members, data, strict=True)]
    models = [model for model, _ in built]
    # refused before a folder is written, so that a refusal leaves nothing to block a retry
    check_stackable(models, [ds.x for ds in data], [m.train for m in members], folders)
    for folder, (_, record) in zip(folders, built, strict=True):
        folder.mkdir(parents=True, exist_ok=True)
        save_json(folder / CONFIG, record)
    fit_seeds(
        models, [ds.x for ds in data], [m.train for m in members], run_dirs=folders,
        progress=progress,
    )  # fmt: skip
    for folder, model, ds in zip(folders, models, data, strict=True):
        save_model(folder, model)
        if figures:
            write_figures(folder, model, ds)
    log.info("%d runs written under %s", seeds, base)
    return folders

"""Fitting a run: :func:`fit_run` is the one library call behind ``pushforward fit``."""

from __future__ import annotations

import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from pushforward.core import (
    CHECKPOINT,
    CONFIG,
    FIGURES,
    CheckpointError,
    ConfigError,
    Model,
    TrainingError,
    a_or_an,
    check_tensor_header,
    save_json,
)
from pushforward.data import datasets
from pushforward.models.registry import MODELS
from pushforward.runs.config import RunConfig
from pushforward.runs.figures import write_figures
from pushforward.runs.folder import run_record, save_model
from pushforward.train import (
    Progress,
    Reporters,
    SampleSnapshots,
    TensorBoardLogger,
    check_batch,
    check_memory,
    distributed,
    fit,
    resolve_device,
    seeded,
)

__all__ = ["OPTIMIZER_COPIES", "build_run", "fit_run", "fresh_folder", "load_run_data", "plan_run"]

log = logging.getLogger(__name__)

SNAPSHOT_IMAGES, SNAPSHOT_POINTS = 64, 1000  # samples per snapshot: an image grid, a scatter
OPTIMIZER_COPIES = {"adam": 2, "adamw": 2, "sgd": 1}
"""The copies of the weights each optimiser keeps as its state (Adam: the two moments)."""


def fresh_folder(rc: RunConfig, ds: datasets.Dataset) -> Path:
    """Return a new folder's path under ``runs/``, named by model, data and time."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{rc.model}-{ds.name}-{stamp}"
    folder, i = base, 1
    while folder.exists():
        folder, i = Path(f"{base}-{i}"), i + 1
    return folder


def load_run_data(rc: RunConfig) -> datasets.Dataset:
    """Return the run's data: its rows of ``rc.data``, mixtures drawn with the run's seed."""
    gen = torch.Generator().manual_seed(rc.train.seed)
    return datasets.select_rows(datasets.load_data(rc.data, n=rc.n, generator=gen), rc.rows)


def _state_bytes(rc: RunConfig, ds: datasets.Dataset) -> int | None:
    """Return the bytes fitting the model ``rc`` describes holds at once: its weights, and for
    a trained model their gradients and the optimiser's state (Adam's two moments, SGD's
    momentum), counted from the model's ``state_shapes`` without allocating anything (None where
    the model cannot be built on the meta device)."""
    assert rc.settings is not None
    if not getattr(rc.spec.cls, "builds_on_meta", True):
        return None
    try:
        with seeded(rc.train.seed), torch.device("meta"):
            config = rc.settings.build(ds).get_config()
        shapes = rc.spec.cls.state_shapes(config, tuple(ds.x.shape))
    except (NotImplementedError, RuntimeError):
        # an operator without a meta kernel (zuko's masks), or a model that cannot tell its
        # shapes: it is built for real below, unchecked
        return None
    numbers = sum(math.prod(s) for s in shapes.values())
    if not rc.spec.trained:
        return numbers * 8  # float64 fitted state
    copies = 2 + OPTIMIZER_COPIES.get(rc.train.optimizer, 2)  # weights, gradients, optimiser
    return numbers * 4 * copies


def build_run(
    rc: RunConfig, ds: datasets.Dataset, device: torch.device
) -> tuple[Model, dict[str, Any]]:
    """Return a fresh model for ``ds`` as ``rc`` describes, and the run record of config.json;
    a model too large for ``device``'s memory is refused before it is built."""
    assert rc.settings is not None
    needed = _state_bytes(rc, ds)
    if needed is not None:
        check_memory(
            needed,
            device,
            what=f"{a_or_an(rc.spec.cls.__name__)} of this size (weights and training state)",
            processes=distributed.context().local_world,
        )
    with seeded(rc.train.seed):
        model = rc.settings.build(ds)
    if model.trained:
        default = rc.spec.train_defaults_for(datasets.data_kind(rc.data)).get("batch_size")
        if rc.train.batch_size > ds.n and rc.train.batch_size == default:
            # a model's benchmarked batch (flow matching's 2,048) on data smaller than it: all
            # of the data each step, recorded as such in config.json
            log.info("batch_size %d > %d rows of %s: full batch", default, ds.n, ds.name)
            rc.train.batch_size = 0
        check_batch(rc.train, ds.n)
    if rc.train.snapshot_every and not model.generative:
        raise ConfigError(
            f"snapshot_every = {rc.train.snapshot_every} keeps samples over training, but a "
            f"{type(model).__name__} cannot sample; use 0 (off) or a generative model: "
            + ", ".join(k for k, s in MODELS.items() if s.cls.generative and s.trained)
        )
    return model, run_record(rc, model, ds, device=device)


def plan_run(rc: RunConfig) -> dict[str, Any]:
    """Return the record :func:`fit_run` would write to ``config.json`` (the resolved settings,
    the model's constructor arguments, the data's shape), loading the data and building the
    model but fitting and writing nothing: every setting is checked."""
    _, record = build_run(rc, load_run_data(rc), resolve_device(rc.train.device))
    return record


def fit_run(
    rc: RunConfig,
    *,
    out: str | Path | None = None,
    resume: bool = False,
    progress: Progress | None = None,
    figures: bool = True,
    tensorboard: str | Path | None = None,
) -> Path:
    """Fit the model ``rc`` describes on its data, write the run folder, and return its path.

    ``out`` names the folder (default: a fresh one under ``runs/``); it must not already hold a
    run unless ``resume`` is set, in which case training continues from its last checkpoint.
    With ``tensorboard``, each epoch's scalars (and samples, for image models) go there too.
    Without ``figures`` the run is written without its figures folder (one left by the run
    before a resume is removed: it showed the model as it was).
    """
    spec = rc.spec
    assert rc.settings is not None
    ctx = distributed.init(rc.train.device)
    device = resolve_device(rc.train.device, local_rank=ctx.local_rank if ctx.active else None)
    if ctx.active and not spec.trained:
        raise ConfigError(f"{rc.model} is fitted in closed form; run it in one process")
    ds = load_run_data(rc)
    folder = Path(out) if out is not None else fresh_folder(rc, ds)
    folder = Path(distributed.broadcast_text(str(folder)))  # rank 0 names it for every process
    if resume:
        if not spec.trained:
            raise ConfigError(f"{rc.model} is fitted in closed form; there is nothing to resume")
        if not (folder / CHECKPOINT).exists():
            log.warning("'%s' holds no checkpoint yet; training starts from the beginning", folder)
            resume = False
    elif distributed.any_true(ctx.main and (folder / CONFIG).exists()):
        raise CheckpointError(
            f"'{folder}' already holds a run; use --resume to continue it or choose another --out"
        )
    model, record = build_run(rc, ds, device)
    if resume:
        # refuse a checkpoint these settings cannot hold before config.json is rewritten, so a
        # failed resume leaves the run as it was (in every process, so that all stop together)
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        check_tensor_header(folder / CHECKPOINT, expected, max_bytes=2**62, prefix="model.")
    if ctx.main:
        folder.mkdir(parents=True, exist_ok=True)
        save_json(folder / CONFIG, record)
    distributed.barrier()
    if model.trained:
        if tensorboard is not None:
            board = TensorBoardLogger(tensorboard, model=model, image_shape=ds.image_shape)
            progress = Reporters(progress, board)
        if rc.train.snapshot_every:
            rows = SNAPSHOT_IMAGES if ds.image_shape is not None else SNAPSHOT_POINTS
            snaps = SampleSnapshots(
                model, rows, every=rc.train.snapshot_every, seed=rc.train.seed, folder=folder
            )
            progress = Reporters(progress, snaps)
        _train(model, ds, rc, folder, device, resume=resume, progress=progress)
    else:
        model.fit(ds.x.to(device))  # a closed form, computed on the device: its state stays there
    if ctx.main:
        save_model(folder, model)
        if figures:
            write_figures(folder, model, ds)
        elif (folder / FIGURES).is_dir():  # a resumed run's figures show the model it was
            shutil.rmtree(folder / FIGURES)
            log.info("removed the figures of %s: they showed the run before it was resumed", folder)
        log.info("run written to %s", folder)
    distributed.barrier()
    return folder


def _train(
    model: Model,
    ds: datasets.Dataset,
    rc: RunConfig,
    folder: Path,
    device: torch.device,
    *,
    resume: bool,
    progress: Progress | None,
) -> None:
    """Train ``model`` (the loop moves it and the data to the run's device); running out of the
    device's memory ends in one line naming the batch size, the last checkpoint left intact."""
    try:
        fit(model, ds.x, rc.train, run_dir=folder, resume=resume, progress=progress)
    except torch.OutOfMemoryError:
        batch = rc.train.batch_size or ds.n
        kept = (
            "the last checkpoint is intact: --resume continues it, on another --device"
            if (folder / CHECKPOINT).exists()
            else "no checkpoint was written yet"
        )
        raise TrainingError(
            f"out of memory on {device} training with batch size {batch}; fit again with a "
            f"smaller one (e.g. --batch-size {max(batch // 2, 1)}); {kept} ('{folder}')"
        ) from None

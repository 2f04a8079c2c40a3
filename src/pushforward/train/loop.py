"""One training loop for every model: seeded minibatches, checkpoints, exact resume, metrics.

A model subclasses :class:`~pushforward.train.Trainable` and declares how it takes one step;
:func:`fit` does the rest:

* the data stay one tensor on the device; each epoch shuffles row indices with the run's
  ``torch.Generator`` and slices batches (no per-item Python work);
* ``batch_size=0`` means full batch, "use all the data each round";
* after each epoch the metrics (means over examples) are appended to ``metrics.jsonl`` and, every
  ``checkpoint_every`` epochs, a checkpoint holding weights, optimiser and RNG state is written
  atomically as one safetensors file, so a run resumed from epoch k ends bit-exactly where an
  uninterrupted run would (on the CPU, with the same thread count);
* a non-finite loss stops training with :class:`~pushforward.core.TrainingError` naming the
  term, the epoch and the step; the last good checkpoint is left intact. Where the device runs
  ahead of the host (``finite_checks``), the terms are checked on the device and read once an
  epoch, so that no step waits for the device;
* ``compile`` captures the loss and its gradient with ``torch.compile``
  (:mod:`pushforward.train.capture`): on CUDA as CUDA graphs, one launch a step;
* a model's weight-free work on a batch (:meth:`Trainable.prepare_batch`, e.g. flow matching's
  optimal-transport pairing) runs for the next batches while the current step trains
  (:mod:`pushforward.train.prefetch`), with its own generator per step, so that prefetching
  changes no result.

Where the run trains and how fast (device, autocast, the CPU's levers) is
:mod:`pushforward.train.device`'s to say.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
from torch import Tensor

from pushforward.core import CheckpointError, ConfigError, Interrupted, TrainingError
from pushforward.train import distributed
from pushforward.train.capture import DeferredChecks, deferring
from pushforward.train.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from pushforward.train.config import TrainConfig, check_batch
from pushforward.train.device import (
    accelerator_levers,
    autocast,
    defers_finite_checks,
    flush_subnormal_state_,
    leave_cores,
    resolve_device,
    to_model_device,
)
from pushforward.train.forward import loss_forward
from pushforward.train.optim import LR_SCHEDULES, set_lr
from pushforward.train.prefetch import Prefetcher, make_prefetcher
from pushforward.train.records import EpochSums, Progress, read_metrics, write_metrics
from pushforward.train.stopping import StopRequest, deferred_stop
from pushforward.train.trainable import Shard, Terms, Trainable

__all__ = ["batch_generator", "fit"]

log = logging.getLogger(__name__)


# --- the loop -----------------------------------------------------------------------------------


@dataclass
class _Run:
    """What the steps of one :func:`fit` call share: settings, data, generators, optimisers."""

    model: Trainable
    cfg: TrainConfig
    ctx: distributed.Context
    device: torch.device
    data: Tensor  # (n, d) on the device
    val: Tensor | None  # (m, d) on the device; None outside the main process
    batch: int  # rows per step (over all processes)
    steps_per_epoch: int
    autocast: contextlib.AbstractContextManager
    schedule: Callable[[float], float] | None
    generator: torch.Generator  # shuffles, the same in every process; saved in checkpoints
    noise: torch.Generator  # the model's noise: ``generator`` itself in one process, and in
    # every process for a model that draws the whole batch's noise (``syncs_gradients``)
    optimizers: dict[str, torch.optim.Optimizer]
    source: Path | None  # the run folder every process reads a checkpoint from
    folder: Path | None  # the run folder written to: the main process only
    progress: Progress | None  # the main process only
    prefetch: Prefetcher | None = None  # prepares the next batch (``prepares_batches``)
    loss_forward: Callable[..., Terms] | None = None  # the loss through DDP or compiled
    checks: DeferredChecks | None = None  # non-finite terms, read once an epoch
    history: list[dict[str, Any]] = field(default_factory=list)
    last_good: str = "none"  # the last checkpoint written, for error messages

    @property
    def n(self) -> int:
        return self.data.shape[0]


@dataclass
class _Resume:
    """Where training picks up: the first epoch to run and, after a mid-epoch checkpoint, the
    step within it, the generator state at that epoch's start and the metric sums so far."""

    epoch: int = 1
    step: int = 0
    epoch_start_state: Tensor | None = None
    sums: dict[str, Tensor] = field(default_factory=dict)


def fit(
    model: Trainable,
    x: Tensor,
    cfg: TrainConfig,
    *,
    run_dir: str | Path | None = None,
    resume: bool = False,
    progress: Progress | None = None,
    x_val: Tensor | None = None,
) -> list[dict[str, Any]]:
    """Train ``model`` on the rows of x (n, d) as ``cfg`` says; return the per-epoch metrics.

    With ``run_dir``, metrics go to ``metrics.jsonl`` and checkpoints to ``checkpoint.safetensors``
    there; ``resume=True`` continues from that checkpoint, mid-epoch ones included. With
    ``x_val`` (m, d), each epoch also records ``val_loss``, the mean loss on it (no step).

    Ctrl-C or SIGTERM stops training between two steps, writes a checkpoint (with a run folder)
    and raises :class:`~pushforward.errors.Interrupted`.

    Every ``cfg.flush_every`` steps of the run the entries of Adam's (or SGD's) first moment
    too small to move a weight are set to zero before they turn subnormal, which x86 CPUs
    compute with slowly (:func:`~pushforward.train.flush_subnormal_state_`).
    """
    run = _prepare_run(
        model, x, cfg, run_dir=run_dir, resume=resume, progress=progress, x_val=x_val
    )
    start = _restore(run) if resume else _Resume()
    if run.folder is not None:
        run.folder.mkdir(parents=True, exist_ok=True)
    run.loss_forward = loss_forward(model, cfg, run.device, several=run.ctx.active)
    with contextlib.ExitStack() as stack:
        stack.enter_context(deferring(run.checks))
        if run.progress is not None:
            run.progress.start(cfg.epochs, run.steps_per_epoch, start.epoch)
            stack.callback(run.progress.close)
        if model.prepares_batches and cfg.prefetch:
            prefetch = make_prefetcher(functools.partial(_prepare_batch, run), run.device)
            run.prefetch = stack.enter_context(contextlib.closing(prefetch))
            # the preparing process (or thread) keeps a core busy (BENCHMARKS.md, "Flow
            # matching")
            stack.enter_context(leave_cores(1))
        stop = stack.enter_context(deferred_stop())
        for epoch in range(start.epoch, cfg.epochs + 1):
            mid_epoch = start if epoch == start.epoch and start.step else None
            _epoch(run, epoch, mid_epoch, stop)
    distributed.barrier()
    model.eval()
    model.finish(run.data)
    return run.history


def _prepare_run(
    model: Trainable,
    x: Tensor,
    cfg: TrainConfig,
    *,
    run_dir: str | Path | None,
    resume: bool,
    progress: Progress | None,
    x_val: Tensor | None,
) -> _Run:
    """Check x (n, d) against ``cfg``, move model, data and x_val (m, d) to the device, prepare a
    fresh model for the data, and make the generators and optimisers."""
    if x.dim() != 2 or x.shape[0] == 0:
        raise ConfigError(f"training data must have shape (n, d) with n ≥ 1, got {tuple(x.shape)}")
    ctx = distributed.init(cfg.device)
    device = resolve_device(cfg.device, local_rank=ctx.local_rank if ctx.active else None)
    n = x.shape[0]
    batch = check_batch(cfg, n)
    if batch < ctx.world:
        raise ConfigError(f"batch_size {batch} is smaller than the {ctx.world} processes")
    model.to(device)
    accelerator_levers(device)
    data = to_model_device(x, model)
    if not resume:
        model.prepare(data)  # data-dependent set-up; a resumed model has it in its checkpoint
    val = to_model_device(x_val, model) if x_val is not None and ctx.main else None
    # one generator shuffles (the same permutation in every process); in several processes each
    # draws its model noise (the VAE's ε) from its own generator, reseeded every epoch
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    folder = Path(run_dir) if run_dir is not None else None
    return _Run(
        model=model,
        cfg=cfg,
        ctx=ctx,
        device=device,
        data=data,
        val=val,
        batch=batch,
        steps_per_epoch=math.ceil(n / batch),
        autocast=autocast(cfg.precision, device, dim=x[0].numel()),
        schedule=LR_SCHEDULES[cfg.lr_schedule],
        generator=generator,
        noise=(
            torch.Generator(device=device)
            if ctx.active and not model.syncs_gradients
            else generator
        ),
        optimizers=model.configure_optimizers(cfg),
        checks=DeferredChecks() if defers_finite_checks(cfg.finite_checks, device) else None,
        source=folder,
        folder=folder if ctx.main else None,
        progress=progress if ctx.main else None,
    )


def _restore(run: _Run) -> _Resume:
    """Load the run folder's checkpoint into model, optimisers and generator, take the metrics
    recorded before it, and return where training picks up."""
    source = run.source
    if source is None or not (source / CHECKPOINT).exists():
        raise CheckpointError(f"cannot resume: no {CHECKPOINT} in '{source}'")
    info, extra = load_checkpoint(source / CHECKPOINT, run.model, run.optimizers, run.generator)
    start = _Resume(epoch=int(info["epoch"]) + 1, step=int(info.get("step", 0)))
    if info.get("rng_restarted"):  # another device's stream: its epoch's order is lost
        start.step = 0
    if start.step:
        start.epoch_start_state = extra["rng.epoch_start"]
        start.sums = {k[len("progress.sum.") :]: to_model_device(v, run.model)
                      for k, v in extra.items()
                      if k.startswith("progress.sum.")}  # fmt: skip
    run.history = [r for r in read_metrics(source) if r.get("epoch", 0) < start.epoch]
    run.last_good = f"epoch {start.epoch - 1}"
    log.info("resumed at epoch %d, step %d of %s", start.epoch, start.step, source)
    return start


def _epoch(run: _Run, epoch: int, mid_epoch: _Resume | None, stop: StopRequest) -> None:
    """Run the steps of ``epoch`` (those after a mid-epoch checkpoint's, when given), then record
    the epoch."""
    run.model.train()
    start = time.perf_counter()
    start_state, order = _shuffle(run, mid_epoch)
    sums = EpochSums(mid_epoch.sums if mid_epoch is not None else None)
    first_step = mid_epoch.step if mid_epoch is not None else 0
    rows = min(run.n, first_step * run.batch)
    if run.checks is not None:
        run.checks.reset()
    if run.noise is not run.generator:  # each process's own noise, reseeded every epoch
        run.noise.manual_seed(run.cfg.seed * 1_000_003 + run.ctx.rank * 7919 + epoch)

    def batch(s: int) -> Tensor:
        return order[s * run.batch : (s + 1) * run.batch]

    asked = first_step - 1  # the last step whose batch the prefetcher was asked for
    for step in range(first_step, run.steps_per_epoch):
        prepared = None
        if run.model.prepares_batches:
            if run.prefetch is None:  # prefetching off: the same work, in line
                prepared = _prepare_batch(run, epoch, step, batch(step))
            else:  # this step's batch and the next prefetch_depth, while this one trains
                while asked < min(step + run.cfg.prefetch_depth, run.steps_per_epoch - 1):
                    asked += 1
                    run.prefetch.request(epoch, asked, batch(asked))
                prepared = run.prefetch.take()
        counted = _step(run, epoch, step, batch(step), sums, prepared)
        rows += counted
        if counted and distributed.any_true(stop.signal is not None):
            _stop(run, epoch, step, start_state, sums.as_dict(), stop)
    _end_of_epoch(run, epoch, sums.as_dict(), rows, time.perf_counter() - start, start_state)


def _shuffle(run: _Run, mid_epoch: _Resume | None) -> tuple[Tensor, Tensor]:
    """Return the generator state at the epoch's start and the epoch's order of rows (n,)."""
    if mid_epoch is None:
        start_state = run.generator.get_state()
        return start_state, torch.randperm(run.n, generator=run.generator, device=run.device)
    # the permutation of the interrupted epoch, then the RNG where it stopped
    assert mid_epoch.epoch_start_state is not None
    current = run.generator.get_state()
    run.generator.set_state(mid_epoch.epoch_start_state)
    order = torch.randperm(run.n, generator=run.generator, device=run.device)
    run.generator.set_state(current)
    return mid_epoch.epoch_start_state, order


def _batch_rows(run: _Run, idx: Tensor) -> tuple[Tensor, Shard | None]:
    """Return the rows ``idx`` (B,) of the batch this process takes (its shard under torchrun)
    and the shard; (empty, None) for a last batch too small to share out."""
    if not run.ctx.active:
        return idx, None
    if idx.numel() < run.ctx.world:
        return idx[:0], None
    shard = Shard(run.ctx.rank, run.ctx.world, idx.numel())
    return shard.take(idx), shard


def batch_generator(seed: int, epoch: int, step: int, rank: int = 0) -> torch.Generator:
    """Return the CPU generator of :meth:`Trainable.prepare_batch` for a step of a run seeded
    ``seed``: seeded from the seed, the epoch, the step and the process's rank, so that it is
    the same on resume (and in a stack of seeds, :mod:`pushforward.train.seeds`)."""
    key = np.random.SeedSequence([seed % 2**63, epoch, step, rank])
    return torch.Generator().manual_seed(int(key.generate_state(1, np.uint64)[0] >> 1))


def _prepare_batch(run: _Run, epoch: int, step: int, idx: Tensor) -> Any:
    """Return the model's :meth:`~Trainable.prepare_batch` of a step's batch (this process's
    rows), or None for a batch too small to share out."""
    rows, _ = _batch_rows(run, idx)
    if rows.numel() == 0:
        return None
    generator = batch_generator(run.cfg.seed, epoch, step, run.ctx.rank)
    return run.model.prepare_batch(run.data[rows], generator=generator)


def _step(
    run: _Run, epoch: int, step: int, idx: Tensor, sums: EpochSums, prepared: Any = None
) -> int:
    """Take one optimisation step on the rows ``idx`` (B,) of the data (this process's share of
    them under torchrun), add its terms × its rows to ``sums``, and return the rows counted (0
    for a last batch too small to share out, which is skipped).

    A non-finite term stops training with a :class:`TrainingError` saying when and where the
    last good checkpoint is: ``training_step`` checks its terms (:func:`check_finite`) before it
    updates the weights, once a step; the epoch's sums are checked again at its end.
    """
    rows = idx.numel()
    # the shard (and DDP's loss) are passed to training_step under torchrun only, the prepared
    # batch to models that prepare only
    extra: dict[str, Any] = {}
    if run.ctx.active:
        idx, shard = _batch_rows(run, idx)
        if shard is None:
            return 0  # a last batch too small to shard (same in every process)
        extra["shard"] = shard
    if run.loss_forward is not None:
        extra["loss_forward"] = run.loss_forward
    if prepared is not None:
        extra["prepared"] = prepared
    xb = run.data[idx]
    elapsed_epochs = epoch - 1 + step / run.steps_per_epoch
    if run.schedule is not None:
        set_lr(run.optimizers, run.schedule(elapsed_epochs / max(run.cfg.epochs, 1)))
    if run.checks is not None:
        run.checks.step = step
    try:
        with run.autocast:
            terms = run.model.training_step(
                xb, run.optimizers, run.cfg, generator=run.noise, epoch=elapsed_epochs, **extra
            )
    except TrainingError as e:
        _stopped(run, str(e), epoch, step)
    every = run.cfg.flush_every
    if every and ((epoch - 1) * run.steps_per_epoch + step + 1) % every == 0:
        flush_subnormal_state_(run.optimizers)
    sums.add(terms, xb.shape[0])
    if run.progress is not None:
        run.progress.step(terms["loss"])
    return rows


def _stopped(run: _Run, what: str, epoch: int, step: int) -> NoReturn:
    """Raise the :class:`TrainingError` of a term that became non-finite: ``what`` ("the kl
    term became nan") at ``step`` (from 0) of ``epoch``, and where the last good checkpoint is."""
    where = f"'{run.folder / CHECKPOINT}'" if run.folder is not None else "no run folder"
    raise TrainingError(
        f"{what} at epoch {epoch}, step {step + 1}; training stopped "
        f"(last good checkpoint: {run.last_good}, {where})"
    ) from None


def _read_checks(run: _Run, epoch: int) -> None:
    """Raise the :class:`TrainingError` of the first non-finite term the epoch's deferred checks
    recorded, in every process when any process recorded one; nothing without deferred checks."""
    if run.checks is None:
        return
    failure = run.checks.failure()
    if not distributed.any_true(failure is not None, run.device):
        return
    if failure is None:
        raise TrainingError(
            f"a loss term became non-finite in another process in epoch {epoch}; training "
            f"stopped (last good checkpoint: {run.last_good})"
        )
    name, step = failure
    _stopped(run, f"the {name} term became non-finite", epoch, step)


def _stop(
    run: _Run,
    epoch: int,
    step: int,
    start_state: Tensor,
    sums: dict[str, Tensor],
    stop: StopRequest,
) -> NoReturn:
    """Write a mid-epoch checkpoint after ``step`` (with a run folder) and raise
    :class:`Interrupted`."""
    stop.signal = stop.signal or "a signal to another process"
    _read_checks(run, epoch)  # never a checkpoint of non-finite weights
    where = "nothing saved (no run folder)"
    if run.folder is not None:
        path = _checkpoint(run, epoch - 1, step + 1, start_state, sums)
        where = f"checkpoint written to '{path}'; continue with --resume {run.folder}"
    raise Interrupted(
        f"stopped by {stop.signal} at epoch {epoch}, step {step + 1} of "
        f"{run.steps_per_epoch}; {where}"
    )


def _end_of_epoch(
    run: _Run,
    epoch: int,
    sums: dict[str, Tensor],
    rows: int,
    elapsed: float,
    start_state: Tensor,
) -> None:
    """Record the epoch's metrics (means over its rows, the validation loss, the model's
    diagnostics), report them, and write metrics.jsonl and, when one is due, a checkpoint."""
    _read_checks(run, epoch)
    record: dict[str, Any] = {"epoch": epoch}
    if run.ctx.active:  # metrics are means over every process's rows
        keys = sorted(sums)
        total = distributed.all_reduce_(torch.stack([sums[k] for k in keys]))
        sums = dict(zip(keys, total, strict=True))
    record.update({k: float(v) / rows for k, v in sums.items()})
    bad = [k for k in sums if not math.isfinite(record[k])]
    if bad:  # a training_step that let a non-finite term through: stop before the checkpoint
        raise TrainingError(
            f"the {bad[0]} term became non-finite in epoch {epoch}; training stopped "
            f"(last good checkpoint: {run.last_good})"
        )
    record["seconds"] = elapsed
    record["samples_per_s"] = rows / elapsed if elapsed > 0 else float("inf")
    run.model.eval()
    if run.val is not None:
        with torch.no_grad():
            vg = torch.Generator(device=run.device).manual_seed(run.cfg.seed + 1)
            record["val_loss"] = float(run.model.loss(run.val, generator=vg)["loss"])
    if run.ctx.main:
        diag_gen = torch.Generator(device=run.device).manual_seed(run.cfg.seed + epoch)
        record.update(run.model.diagnostics(run.data, generator=diag_gen))
    run.history.append(record)
    if run.progress is not None:
        run.progress.epoch(record)
    if run.folder is not None:
        write_metrics(run.folder, run.history)
        if epoch % run.cfg.checkpoint_every == 0 or epoch == run.cfg.epochs:
            _checkpoint(run, epoch, 0, start_state, {})
            run.last_good = f"epoch {epoch}"


def _checkpoint(
    run: _Run, epoch_done: int, step: int, start_state: Tensor, sums: dict[str, Tensor]
) -> Path:
    """Write the run's checkpoint after ``epoch_done`` epochs and ``step`` steps of the next (a
    mid-epoch one also keeps the epoch's starting RNG state and metric sums); return its path."""
    assert run.folder is not None
    extra = {"rng.epoch_start": start_state} if step else {}
    extra.update(
        {f"progress.sum.{k}": v.detach().reshape(()) for k, v in sums.items()} if step else {}
    )
    meta = {"epoch": epoch_done, "step": step, "train_config": run.cfg.to_dict()}
    path = run.folder / CHECKPOINT
    save_checkpoint(path, run.model, run.optimizers, run.generator, meta, extra=extra)
    return path

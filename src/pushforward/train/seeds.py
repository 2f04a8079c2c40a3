"""Several seeds of one setting trained as one stacked model: :func:`fit_seeds`.

The N models' weights are stacked along a new first dimension (``torch.func.stack_module_state``)
and each step evaluates the N losses in one call (``torch.vmap`` over
``torch.func.functional_call``): one batched matrix product where N runs would make N small ones,
which is what bounds small networks on a GPU (launches) and on a CPU (per-operation overhead). One
optimiser of the same kind updates the stacked weights; Adam's update is elementwise, so each
slice moves as that seed's own optimiser would move it.

Each member is the run ``fit(model_i, x_i, cfg_i)`` would make, draw for draw:

* its own generator, seeded ``cfg_i.seed``, shuffles its rows and draws its model's noise
  (:meth:`~pushforward.train.Trainable.draw_noise`, outside the vmap, in the order :func:`fit`
  draws), and :meth:`~pushforward.train.Trainable.prepare_batch` gets the generator :func:`fit`
  would give it;
* its metrics, checkpoints and generator state are written to its own run folder in the format
  :func:`fit` writes, so that ``fit --resume`` continues a member as it continues any run.

So a member equals its single run to the rounding of batched against single matrix products
(and of autograd against the VAE's hand-written gradients), which the tests check. A model may
be stacked when it declares :attr:`~pushforward.train.Trainable.stacks` (its loss is a function of
the weights, the batch and the pre-drawn noise, with no data-dependent control flow, which
``vmap`` cannot trace).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state

from pushforward.core import ConfigError, Interrupted, TrainingError, a_or_an
from pushforward.train import distributed
from pushforward.train.capture import DeferredChecks
from pushforward.train.checkpoint import CHECKPOINT, save_checkpoint
from pushforward.train.config import TrainConfig, check_batch
from pushforward.train.device import (
    accelerator_levers,
    autocast,
    compile_mode,
    defers_finite_checks,
    flush_subnormal_state_,
    resolve_device,
    to_model_device,
)
from pushforward.train.loop import batch_generator
from pushforward.train.optim import LR_SCHEDULES, set_lr
from pushforward.train.records import Progress, write_metrics
from pushforward.train.stopping import deferred_stop
from pushforward.train.trainable import Optimization, Trainable

__all__ = ["check_stackable", "fit_seeds"]

log = logging.getLogger(__name__)


class _Loss(nn.Module):
    """A model's :meth:`~pushforward.train.Trainable.loss` as a module's forward, for
    ``functional_call``."""

    def __init__(self, model: Trainable):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, epoch: float, extra: dict[str, Any]) -> dict[str, Tensor]:
        return self.model.loss(x, epoch=epoch, **extra)


@dataclasses.dataclass
class _Stack:
    """What the stacked steps share: the members, their data and generators, the stacked
    weights and their optimisers, and each member's own optimisers (for its checkpoints)."""

    models: list[Trainable]
    cfgs: list[TrainConfig]
    data: Tensor  # (N, n, d) on the device
    generators: list[torch.Generator]
    params: dict[str, Tensor]  # name → (N, …) leaves
    buffers: dict[str, Tensor]
    optimizers: dict[str, torch.optim.Optimizer]  # over the stacked leaves
    own: list[dict[str, torch.optim.Optimizer]]  # each member's, state copied at checkpoints
    batch: int
    steps: int
    autocast: contextlib.AbstractContextManager
    folders: list[Path] | None
    checks: DeferredChecks | None = None  # non-finite terms, read once an epoch (off the CPU)

    @property
    def n_members(self) -> int:
        return len(self.models)


def fit_seeds(
    models: Sequence[Trainable],
    xs: Sequence[Tensor],
    cfgs: Sequence[TrainConfig],
    *,
    run_dirs: Sequence[str | Path] | None = None,
    progress: Progress | None = None,
) -> list[list[dict[str, Any]]]:
    """Train the models (one setting, built with different seeds) on their data xs[i] (n, d)
    as cfgs[i] says (settings equal but for the seed), as one stacked model; return each one's
    per-epoch metrics. With ``run_dirs``, each member's metrics and checkpoints go to its
    folder as :func:`~pushforward.train.fit` writes them. ``progress`` gets the members' mean
    loss at each step and their mean metrics at each epoch's end.

    Ctrl-C or SIGTERM stops between two steps; each member's last checkpoint is kept.
    """
    stack = _prepare(list(models), list(xs), list(cfgs), run_dirs)
    cfg = stack.cfgs[0]
    histories: list[list[dict[str, Any]]] = [[] for _ in stack.models]
    with contextlib.ExitStack() as exits:
        if progress is not None:
            progress.start(cfg.epochs, stack.steps, 1)
            exits.callback(progress.close)
        stop = exits.enter_context(deferred_stop())
        for model in stack.models:
            model.train()
        for epoch in range(1, cfg.epochs + 1):
            start = time.perf_counter()
            if stack.checks is not None:
                stack.checks.reset()
            sums, rows = _epoch(stack, epoch, progress, stop)
            _read_checks(stack, epoch)  # never a checkpoint of non-finite weights
            _end_of_epoch(stack, epoch, sums, rows, time.perf_counter() - start, histories)
            if progress is not None:
                progress.epoch(_mean_record([h[-1] for h in histories]))
    for model, x in zip(stack.models, stack.data.unbind(), strict=True):
        model.eval()
        model.finish(x)
    return histories


def _prepare(
    models: list[Trainable],
    xs: list[Tensor],
    cfgs: list[TrainConfig],
    run_dirs: Sequence[str | Path] | None,
) -> _Stack:
    """Check that the members can be stacked, move them and their data to the device, prepare
    them, and stack their weights and optimisers."""
    check_stackable(models, xs, cfgs, run_dirs)
    cfg = cfgs[0]
    device = resolve_device(cfg.device)
    if compile_mode(cfg.compile, device) is not None:  # (auto: on CUDA only)
        say = log.info if cfg.compile == "auto" else log.warning
        say("a stack of seeds trains op by op: compile = %r is not applied", cfg.compile)
    accelerator_levers(device)
    data = []
    for model, x in zip(models, xs, strict=True):
        model.to(device)
        data.append(to_model_device(x, model))
        model.prepare(data[-1])
    params, buffers = stack_module_state(models)
    own = [model.configure_optimizers(c) for model, c in zip(models, cfgs, strict=True)]
    n = xs[0].shape[0]
    batch = check_batch(cfg, n)
    return _Stack(
        models=models,
        cfgs=cfgs,
        data=torch.stack(data),
        generators=[torch.Generator(device=device).manual_seed(c.seed) for c in cfgs],
        params=params,
        buffers=buffers,
        optimizers=_stacked_optimizers(models[0], own[0], params),
        own=own,
        batch=batch,
        steps=math.ceil(n / batch),
        autocast=autocast(cfg.precision, device, dim=xs[0][0].numel()),
        folders=[Path(f) for f in run_dirs] if run_dirs is not None else None,
        checks=DeferredChecks() if defers_finite_checks(cfg.finite_checks, device) else None,
    )


def check_stackable(
    models: list[Trainable],
    xs: list[Tensor],
    cfgs: list[TrainConfig],
    run_dirs: Sequence[str | Path] | None = None,
) -> None:
    """Refuse, in one line each, what cannot be trained as one stack (models built with
    different seeds, their data xs[i] (n, d), their settings, their run folders)."""
    if not models or not (len(models) == len(xs) == len(cfgs)):
        raise ConfigError("fit_seeds needs as many models, data sets and settings, at least one")
    if run_dirs is not None and len(run_dirs) != len(models):
        raise ConfigError("fit_seeds needs one run folder per model")
    first = models[0]
    name = a_or_an(type(first).__name__)
    if not first.stacks or first.optimization is Optimization.OWN_STEP:
        why = "its loss branches on the data's values, which torch.vmap cannot trace"
        if first.optimization is Optimization.OWN_STEP:
            why = "it takes its own step, with several optimisers"
        raise ConfigError(
            f"{name} cannot be trained as a stack of seeds ({why}); fit the seeds one at a time"
        )
    if any(isinstance(m, nn.modules.conv._ConvNd) for m in first.modules()):
        raise ConfigError(
            f"{name} with convolutions cannot be trained as a stack of seeds (its activations "
            "are channels-last, which torch.vmap cannot batch); fit the seeds one at a time, "
            "or stack an MLP (--net mlp)"
        )
    if distributed.context().active:
        raise ConfigError("a stack of seeds trains in one process; run it without torchrun")
    free = set(first.stack_free_settings)
    config = {k: v for k, v in first.get_config().items() if k not in free}
    shapes = {k: v.shape for k, v in first.state_dict().items()}
    for model in models[1:]:
        other = {k: v for k, v in model.get_config().items() if k not in free}
        if type(model) is not type(first) or other != config:
            diff = sorted(k for k in config.keys() | other.keys() if config.get(k) != other.get(k))
            raise ConfigError(
                "the models of a stack of seeds must share one setting; they differ in "
                + (", ".join(diff) if diff else "their kind")
            )
        if {k: v.shape for k, v in model.state_dict().items()} != shapes:
            raise ConfigError("the models of a stack of seeds must have the same weights' shapes")
    settings = dataclasses.replace(cfgs[0], seed=0)
    if any(dataclasses.replace(c, seed=0) != settings for c in cfgs[1:]):
        raise ConfigError("the members of a stack of seeds must share their training settings")
    if len({c.seed for c in cfgs}) != len(cfgs):
        raise ConfigError("the members of a stack of seeds need different seeds")
    if any(x.dim() != 2 or x.shape != xs[0].shape or x.shape[0] == 0 for x in xs):
        raise ConfigError(
            "the members of a stack of seeds need data of one shape (n, d) with n ≥ 1, got "
            + ", ".join(str(tuple(x.shape)) for x in xs)
        )


def _stacked_optimizers(
    model: Trainable, own: dict[str, torch.optim.Optimizer], params: dict[str, Tensor]
) -> dict[str, torch.optim.Optimizer]:
    """Return optimisers of the kinds and settings of one member's, over the stacked leaves."""
    names = {id(p): name for name, p in model.named_parameters()}
    out = {}
    for key, opt in own.items():
        groups = [
            {**{k: v for k, v in g.items() if k != "params"},
             "params": [params[names[id(p)]] for p in g["params"]]}
            for g in opt.param_groups
        ]  # fmt: skip
        out[key] = type(opt)(groups)
    return out


def _epoch(
    stack: _Stack, epoch: int, progress: Progress | None, stop: Any
) -> tuple[dict[str, Tensor], int]:
    """Run one epoch's steps; return the sums of terms × rows by name, each (N,) over the
    members (one addition a term and step, on the device), and the rows."""
    orders = torch.stack([
        torch.randperm(stack.data.shape[1], generator=g, device=stack.data.device)
        for g in stack.generators
    ])  # fmt: skip
    members = torch.arange(stack.n_members, device=stack.data.device)[:, None]
    sums: dict[str, Tensor] = {}
    rows = 0
    for step in range(stack.steps):
        idx = orders[:, step * stack.batch : (step + 1) * stack.batch]  # (N, B)
        terms = _step(stack, epoch, step, stack.data[members, idx])
        b = idx.shape[1]
        rows += b
        for k, v in terms.items():
            sums[k] = sums[k] + v * b if k in sums else v * b
        if progress is not None:
            progress.step(terms["loss"].mean())
        if stop.signal is not None:
            kept = ("each seed's last checkpoint is kept: --resume continues a seed's folder"
                    if stack.folders is not None else "nothing saved (no run folders)")  # fmt: skip
            raise Interrupted(f"stopped by {stop.signal} at epoch {epoch}, step {step + 1}; {kept}")
    return sums, rows


def _extras(stack: _Stack, epoch: int, step: int, xb: Tensor) -> dict[str, Any]:
    """Each member's pre-drawn part of the step, stacked: :meth:`prepare_batch`'s result with
    the generator :func:`fit` gives it, else :meth:`draw_noise` from the member's generator."""
    first = stack.models[0]
    per_member = []
    for model, cfg, g, x in zip(stack.models, stack.cfgs, stack.generators, xb, strict=True):
        if model.prepares_batches:
            per_member.append({"prepared": model.prepare_batch(
                x, generator=batch_generator(cfg.seed, epoch, step))})  # fmt: skip
        else:
            noise = model.draw_noise(x, generator=g)
            per_member.append({} if noise is None else {"noise": noise})
    if not per_member[0]:
        return {}
    key = "prepared" if first.prepares_batches else "noise"
    values = [m[key] for m in per_member]
    if isinstance(values[0], tuple):
        return {key: tuple(torch.stack(parts).to(xb.device) for parts in zip(*values, strict=True))}
    return {key: torch.stack(values).to(xb.device)}


def _step(stack: _Stack, epoch: int, step: int, xb: Tensor) -> dict[str, Tensor]:
    """One step of every member on its batch xb[i] (N, B, d); return the terms (N,) by name."""
    cfg = stack.cfgs[0]
    elapsed = epoch - 1 + step / stack.steps
    schedule = LR_SCHEDULES[cfg.lr_schedule]
    if schedule is not None:
        set_lr(stack.optimizers, schedule(elapsed / max(cfg.epochs, 1)))
    extras = _extras(stack, epoch, step, xb)
    loss = _Loss(stack.models[0])
    params = {f"model.{k}": v for k, v in stack.params.items()}
    buffers = {f"model.{k}": v for k, v in stack.buffers.items()}

    def one(p: dict, b: dict, x: Tensor, extra: dict) -> dict[str, Tensor]:
        return functional_call(loss, (p, b), (x, elapsed, extra))

    with stack.autocast:
        terms = torch.vmap(one)(params, buffers, xb, extras)
    _check_finite(stack, terms, epoch, step)
    for opt in stack.optimizers.values():
        opt.zero_grad(set_to_none=True)
    terms["loss"].sum().backward()  # the members are independent: each slice gets its gradient
    if cfg.grad_clip > 0:
        _clip_each(list(stack.params.values()), cfg.grad_clip)
    for opt in stack.optimizers.values():
        opt.step()
    every = cfg.flush_every
    if every and ((epoch - 1) * stack.steps + step + 1) % every == 0:
        flush_subnormal_state_(stack.optimizers)
    return {k: v.detach() for k, v in terms.items()}


def _check_finite(stack: _Stack, terms: dict[str, Tensor], epoch: int, step: int) -> None:
    """Stop at the first non-finite term, naming the member's seed, the term and the step: on
    the CPU before any weight moves (one host synchronisation a step); where the device runs
    ahead (``finite_checks``) it is recorded there and read at the epoch's end."""
    if stack.checks is not None:
        stack.checks.step = step
        seeds = [c.seed for c in stack.cfgs]
        named = {f"the {k} term of seed {s}": v[i]
                 for k, v in terms.items() for i, s in enumerate(seeds)}  # fmt: skip
        stack.checks.record(named)
        return
    values = torch.stack([v.detach().float() for v in terms.values()])  # (terms, N)
    if bool(torch.isfinite(values).all()):
        return
    bad = (~torch.isfinite(values)).nonzero().tolist()
    names = list(terms)
    t, i = min(bad, key=lambda ti: (names[ti[0]] == "loss", ti[1]))
    _stopped(stack, f"the {names[t]} term of seed {stack.cfgs[i].seed} became "
             f"{float(values[t, i])}", epoch, step)  # fmt: skip


def _read_checks(stack: _Stack, epoch: int) -> None:
    """Raise the error of the first non-finite term the epoch's deferred checks recorded."""
    failure = stack.checks.failure() if stack.checks is not None else None
    if failure is not None:
        what, step = failure
        _stopped(stack, f"{what} became non-finite", epoch, step)


def _stopped(stack: _Stack, what: str, epoch: int, step: int) -> NoReturn:
    kept = ("each seed's last checkpoint is kept" if stack.folders is not None
            else "nothing saved (no run folders)")  # fmt: skip
    raise TrainingError(f"{what} at epoch {epoch}, step {step + 1}; training stopped ({kept})")


def _clip_each(params: list[Tensor], max_norm: float) -> None:
    """Scale each member's gradients to a total norm of at most ``max_norm``, as
    ``clip_grad_norm_`` scales one model's."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    norms = torch.stack([g.reshape(g.shape[0], -1).norm(dim=1) for g in grads]).norm(dim=0)
    coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.view(-1, *([1] * (g.dim() - 1))))


def _unstack(stack: _Stack) -> None:
    """Copy the stacked weights and buffers into each member model."""
    with torch.no_grad():
        for i, model in enumerate(stack.models):
            for name, t in (*model.named_parameters(), *model.named_buffers()):
                source = stack.params.get(name, stack.buffers.get(name))
                if source is not None:
                    t.copy_(source[i])


def _end_of_epoch(
    stack: _Stack,
    epoch: int,
    sums: dict[str, Tensor],
    rows: int,
    elapsed: float,
    histories: list[list[dict[str, Any]]],
) -> None:
    """Record each member's epoch as :func:`fit` records it and, when due, checkpoint it."""
    _unstack(stack)
    cfg = stack.cfgs[0]
    due = epoch % cfg.checkpoint_every == 0 or epoch == cfg.epochs
    names = list(sums)
    means = torch.stack([sums[k] for k in names]).double().div(rows).tolist()  # one read
    for i, (model, member_cfg) in enumerate(zip(stack.models, stack.cfgs, strict=True)):
        record: dict[str, Any] = {"epoch": epoch}
        record.update({k: means[t][i] for t, k in enumerate(names)})
        record["seconds"] = elapsed
        record["samples_per_s"] = rows / elapsed if elapsed > 0 else float("inf")
        model.eval()
        diag = torch.Generator(device=stack.data.device).manual_seed(member_cfg.seed + epoch)
        record.update(model.diagnostics(stack.data[i], generator=diag))
        model.train()
        histories[i].append(record)
        if stack.folders is not None:
            write_metrics(stack.folders[i], histories[i])
            if due:
                _checkpoint(stack, i, epoch)


def _checkpoint(stack: _Stack, i: int, epoch: int) -> None:
    """Write member i's checkpoint after ``epoch`` epochs, in :func:`fit`'s format: its
    weights, its slice of the optimisers' state, its generator."""
    model = stack.models[i]
    names = {id(p): name for name, p in model.named_parameters()}
    for key, own in stack.own[i].items():
        stacked = stack.optimizers[key]
        for g_own, g_stacked in zip(own.param_groups, stacked.param_groups, strict=True):
            g_own.update({k: v for k, v in g_stacked.items() if k != "params"})
            for p in g_own["params"]:
                leaf = stack.params[names[id(p)]]
                state = stacked.state.get(leaf)
                if state:
                    own.state[p] = {k: _member_slice(v, i, leaf) for k, v in state.items()}
    assert stack.folders is not None
    meta = {"epoch": epoch, "step": 0, "train_config": stack.cfgs[i].to_dict()}
    save_checkpoint(stack.folders[i] / CHECKPOINT, model, stack.own[i], stack.generators[i], meta)
    for own in stack.own[i].values():  # written: no second copy of the state to keep
        own.state.clear()


def _member_slice(value: Any, i: int, leaf: Tensor) -> Any:
    """Member i's part of a piece of the optimiser state of a stacked weight ``leaf`` (N, …):
    the slice of a tensor of the leaf's shape (Adam's moments), a copy of another (a step
    count)."""
    if isinstance(value, Tensor):
        return value[i].clone() if value.shape == leaf.shape else value.clone()
    return value


def _mean_record(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The members' records averaged, key by key (numbers only), for the progress bar."""
    keys = [k for k, v in records[0].items() if isinstance(v, int | float) and k != "epoch"]
    return {"epoch": records[0]["epoch"], **{k: sum(r[k] for r in records) / len(records)
                                             for k in keys}}  # fmt: skip

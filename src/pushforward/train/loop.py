"""One training loop for every model: seeded minibatches, checkpoints, exact resume, metrics.

A model subclasses :class:`Trainable` and says how to take one step; :func:`fit` does the rest:

* the data stay one tensor on the device; each epoch shuffles row indices with the run's
  ``torch.Generator`` and slices batches (no per-item Python work);
* ``batch_size=0`` means full batch, "use all the data each round";
* after each epoch the metrics (means over examples) are appended to ``metrics.jsonl`` and, every
  ``checkpoint_every`` epochs, a checkpoint holding weights, optimiser and RNG state is written
  atomically as one safetensors file, so a run resumed from epoch k ends bit-exactly where an
  uninterrupted run would (on the CPU, with the same thread count);
* a non-finite loss stops training with :class:`~pushforward.errors.TrainingError` naming the
  term, the epoch and the step; the last good checkpoint is left intact;
* a model's weight-free work on a batch (:meth:`Trainable.prepare_batch`, e.g. flow matching's
  optimal-transport pairing) runs for the next batch while the current step trains (in a forked
  process on the CPU under Linux, else on a worker thread: :mod:`pushforward.prefetch`), with its
  own generator per step, so that prefetching changes no result.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NoReturn, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from pushforward.core import (
    CHECKPOINT,
    METRICS,
    CheckpointError,
    ConfigError,
    Interrupted,
    Model,
    Settings,
    TrainingError,
    atomic_write_bytes,
    lookup,
    setting,
)
from pushforward.train import distributed
from pushforward.train.checkpoint import load_checkpoint, load_state_checked, save_checkpoint
from pushforward.train.prefetch import Prefetcher, make_prefetcher

__all__ = [
    "CHECKPOINT",
    "FLUSH_EVERY",
    "LR_SCHEDULES",
    "METRICS",
    "OPTIMIZERS",
    "PRECISIONS",
    "Progress",
    "Shard",
    "TrainConfig",
    "Trainable",
    "autocast_dtype",
    "check_batch",
    "fit",
    "flush_subnormal_state_",
    "flush_threshold",
    "read_metrics",
    "resolve_device",
    "seeded",
]

log = logging.getLogger(__name__)

PREFETCH = True
"""Whether :func:`fit` runs :meth:`Trainable.prepare_batch` for the next batch while the current
step trains (:func:`pushforward.prefetch.make_prefetcher`; False: in line, before each step; the
results are the same)."""
PREFETCH_DEPTH = 2
"""How many steps ahead of the current one :func:`fit` asks for prepared batches."""


def _fused_adam(cls, params, cfg: TrainConfig) -> torch.optim.Optimizer:
    # the fused kernel updates every parameter in one call (faster on CPU and GPU); torch
    # releases before 2.4 lack it on the CPU, so fall back to the default implementation there
    params = list(params)
    kwargs = {"lr": cfg.lr, "betas": cfg.betas, "weight_decay": cfg.weight_decay}
    try:
        return cls(params, fused=True, **kwargs)
    except (RuntimeError, TypeError):
        return cls(params, **kwargs)


def _adam(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    return _fused_adam(torch.optim.Adam, params, cfg)


def _adamw(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    return _fused_adam(torch.optim.AdamW, params, cfg)


def _sgd(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.betas[0], weight_decay=cfg.weight_decay)


OPTIMIZERS = {"adam": _adam, "adamw": _adamw, "sgd": _sgd}

FLUSH_EVERY = 64
"""Every how many steps :func:`fit` sets the optimisers' near-subnormal first moments to zero
(:func:`flush_subnormal_state_`); 0 never does."""
FLUSH_DTYPES = (torch.float32, torch.float64, torch.bfloat16)
FLUSH_MIN_EPS = 1e-8
"""The smallest Adam ε for which :func:`flush_subnormal_state_` touches m."""


def flush_threshold(dtype: torch.dtype) -> float:
    """2²⁴ × the smallest normal number of ``dtype``: about 2·10⁻³¹ in float32 and bfloat16."""
    return torch.finfo(dtype).tiny * 2.0**24


def _first_moment(opt: torch.optim.Optimizer, group: Mapping[str, Any]) -> str | None:
    """The state key of ``opt``'s first moment in a parameter group, where setting its entries
    below :func:`flush_threshold` to zero cannot move a weight; None elsewhere."""
    if type(opt) in (torch.optim.Adam, torch.optim.AdamW):
        # a step is lr · m̂ / (√v̂ + ε) with m̂ ≤ 10 m: under lr · 2·10⁻²² for such an m
        return "exp_avg" if group.get("eps", 0.0) >= FLUSH_MIN_EPS else None
    if type(opt) is torch.optim.SGD:
        return "momentum_buffer"  # a step is lr · the buffer (or less): under lr · 2·10⁻³¹
    return None


def flush_subnormal_state_(optimizers: Mapping[str, torch.optim.Optimizer]) -> None:
    """Set to zero, in place, the entries of the optimisers' first moments (Adam's and AdamW's
    m where ε ≥ :data:`FLUSH_MIN_EPS`, SGD's momentum; float32, float64 or bfloat16 tensors on
    the CPU) whose magnitude is below :func:`flush_threshold`. Other optimisers, and every other
    piece of state (Adam's v, step counts), are left alone.

    Where a weight's gradient is exactly zero step after step (a pixel blank in every batch
    lately, a ReLU unit that no longer fires) Adam's m shrinks by β₁ a step until it is
    subnormal, and there it stays: at β₁ = 0.9 the smallest values round back to themselves.
    x86 CPUs compute with subnormal numbers many times slower than with normal ones, and
    PyTorch's flush-to-zero setting does not reach worker threads that already exist. On the
    MNIST protocol, after about 700 steps, 85,000 entries of m were subnormal and training's
    throughput fell by 22% (BENCHMARKS.md, "Training speed"). Such an entry moves its weight by
    less than lr · 2·10⁻²², so setting it to zero changes no weight larger than about 10⁻¹⁵:
    in BENCHMARKS.md's runs the weights came out the same bit for bit. Called every
    :data:`FLUSH_EVERY` = 64 steps, it keeps m out of the subnormal range for β₁ ≥ 0.77 (from the
    threshold to the smallest normal number takes 24 / log₂(1/β₁) steps: 158 at β₁ = 0.9); it
    costs about 0.7 ms on the MNIST VAE's 650,000 entries of m, 0.3% of the steps it
    covers. GPUs compute with subnormal numbers at full speed, so state on other devices is left
    alone."""
    for opt in optimizers.values():
        for group in opt.param_groups:
            key = _first_moment(opt, group)
            if key is None:
                continue
            for p in group["params"]:
                value = opt.state.get(p, {}).get(key)
                if (
                    isinstance(value, Tensor)
                    and value.dtype in FLUSH_DTYPES
                    and value.device.type == "cpu"
                ):
                    value.mul_(value.abs() >= flush_threshold(value.dtype))


def _cosine(progress: float) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


# the learning rate at training progress p ∈ [0, 1] (elapsed epochs / epochs) is lr · f(p)
LR_SCHEDULES: dict[str, Callable[[float], float] | None] = {
    "constant": None,
    "cosine": _cosine,  # ½(1 + cos πp): from lr down to 0 at the last step (Loshchilov & Hutter)
}


def _set_lr(optimizers: Mapping[str, torch.optim.Optimizer], factor: float) -> None:
    """Set every parameter group's learning rate to factor × its initial one."""
    for opt in optimizers.values():
        for group in opt.param_groups:
            group["lr"] = group.setdefault("initial_lr", group["lr"]) * factor


PRECISIONS: dict[str, str] = {
    "float32": "every product in float32",
    "bfloat16": "matrix products in bfloat16 (autocast); weights, optimiser and losses in float32",
    "auto": "bfloat16 on a CPU with AMX tiles (where it is faster) for data of ≥ 64 dimensions, "
    "else float32",
}


@dataclass
class TrainConfig(Settings):
    """Settings of one training run. ``batch_size=0`` is full batch; ``grad_clip=0`` is off."""

    epochs: int = setting(20, "training epochs", minimum=0)
    batch_size: int = setting(128, "minibatch size; 0 = full batch", minimum=0)
    lr: float = setting(1e-3, "learning rate", above=0)
    optimizer: str = setting("adam", "adam, adamw or sgd", choices=OPTIMIZERS, what="optimizer")
    betas: tuple[float, float] = setting(
        (0.9, 0.999), "Adam's β₁,β₂ (SGD: momentum β₁), e.g. 0.5,0.999", minimum=0, below=1
    )
    weight_decay: float = setting(0.0, "weight decay", minimum=0)
    grad_clip: float = setting(0.0, "clip gradients to this 2-norm (0 = off)", minimum=0)
    seed: int = setting(0, "the seed of every random draw of the run")
    checkpoint_every: int = setting(1, "epochs between checkpoints", minimum=1)
    snapshot_every: int = setting(
        0, "keep a fixed-seed sample set every K epochs in the run folder for `pushforward "
        "explore` (0 = off; generative models)", minimum=0,
    )  # fmt: skip
    device: str = setting("cpu", "auto, cpu or cuda")
    precision: str = setting(
        "float32", "float32, bfloat16 (matrix products) or auto (bfloat16 on CPUs with AMX)",
        choices=PRECISIONS, what="precision",
    )  # fmt: skip
    lr_schedule: str = setting(
        "constant", "constant, or cosine (down to 0 at the last step)", choices=LR_SCHEDULES,
        what="learning-rate schedule",
    )  # fmt: skip

    def check(self) -> None:
        resolve_device(self.device)


def fast_bf16_flags(cpuinfo: str) -> bool:
    """Whether a CPU with these /proc/cpuinfo contents multiplies bfloat16 matrices faster than
    float32: only with AMX tiles (``amx_bf16``). AVX512-BF16 alone is not enough: on a 2-core
    Xeon with it and without AMX, 1024² products ran at 168 GFLOP/s in bfloat16 against 324 in
    float32, and the MNIST VAE trained a third slower under bfloat16 autocast; a host with AMX
    ran them at 951 against 208 (BENCHMARKS.md, "Training speed")."""
    return any(
        "amx_bf16" in line.split() for line in cpuinfo.splitlines() if line.startswith("flags")
    )


@functools.cache
def _native_bf16_cpu() -> bool:
    """Whether this CPU multiplies bfloat16 matrices natively and faster than float32 (AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()) and fast_bf16_flags(flags)


# ``auto`` precision considers bfloat16 only for data of at least this many dimensions
AUTO_BF16_MIN_DIM = 64


def autocast_dtype(
    precision: str, device: torch.device, *, dim: int | None = None
) -> torch.dtype | None:
    """Return the dtype training autocasts matrix products to on ``device``, None for float32.

    ``auto`` picks bfloat16 only on a CPU with AMX tiles (:func:`fast_bf16_flags`), where it
    multiplies matrices about four times as fast as float32 and the MNIST VAE ends at the same
    test ELBO (BENCHMARKS.md), and only for data of ``dim`` ≥ :data:`AUTO_BF16_MIN_DIM`
    dimensions (None: unknown, counted as large): on low-dimensional data the products are too
    small to gain, and bfloat16's 8-bit mantissa (relative error up to 2⁻⁹) is coarse beside
    fine structure such as ring8's σ = 0.01 at radius 1. Elsewhere, and on GPUs, it stays
    float32.
    """
    lookup(PRECISIONS, precision, what="precision")
    if precision == "bfloat16":
        return torch.bfloat16
    small = dim is not None and dim < AUTO_BF16_MIN_DIM
    if precision == "auto" and device.type == "cpu" and not small and _native_bf16_cpu():
        return torch.bfloat16
    return None


def check_batch(cfg: TrainConfig, n: int) -> int:
    """Return the batch size ``cfg`` gives for n rows (n for full batch), refusing one larger
    than the data."""
    batch = n if cfg.batch_size == 0 else cfg.batch_size
    if batch > n:
        raise ConfigError(
            f"batch_size {batch} is larger than the data ({n} rows); "
            "use a smaller batch, or 0 for full batch"
        )
    return batch


def resolve_device(name: str) -> torch.device:
    """Return the torch device for 'auto', 'cpu' or 'cuda' ('auto' picks CUDA when present)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} was asked for, but this torch sees no CUDA device")
        return torch.device(name)
    raise ConfigError(f"unknown device {name!r}; known: auto, cpu, cuda")


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block (typically a model's construction) with the global RNG seeded, then restore it.

    Layer initialisers draw from the global generator; this makes them reproducible without
    leaving the caller's global RNG state changed.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@dataclass(frozen=True)
class Shard:
    """This process's share of a batch under torchrun: rows ``tensor_split(world)[rank]`` of the
    batch's ``rows`` rows (every process holds the batch's row indices)."""

    rank: int
    world: int
    rows: int

    @property
    def weight(self) -> float:
        """b_r·world/B for this process's b_r of the batch's B rows: a loss that is a mean over
        the process's rows, times this weight, averages over the processes to the whole batch's
        mean (shards may differ in size by one row)."""
        own = self.rows // self.world + (1 if self.rank < self.rows % self.world else 0)
        return own * self.world / self.rows  # tensor_split gives the first rows % world one more

    def take(self, t: Tensor) -> Tensor:
        """Return this process's rows of t (B, …), a tensor of the whole batch."""
        if t.shape[0] != self.rows:
            raise ValueError(f"a batch-wide tensor has {self.rows} rows, got {t.shape[0]}")
        return t.tensor_split(self.world)[self.rank]


def draw_rows(
    draw: Callable[[int], Tensor], n: int, shard: Shard | None = None
) -> Tensor:  # fmt: skip
    """Return ``draw(n)``, the random rows (n, …) one process's share of a batch needs: with a
    ``shard``, the whole batch's draws (``shard.rows``) from the generator every process shares,
    this process's n of them taken, so that the processes together draw what one process would."""
    if shard is None:
        return draw(n)
    rows = shard.take(draw(shard.rows))
    assert rows.shape[0] == n, (rows.shape, n)
    return rows


class Trainable(nn.Module, Model):
    """A model of the contract (:class:`~pushforward.contract.Model`) trained by :func:`fit`.

    Subclasses define :meth:`loss` (one optimiser) or override :meth:`training_step` (several,
    as the GAN does), and :meth:`get_config` so that ``type(m)(**m.get_config())`` rebuilds it.
    The state is the module's ``state_dict``.

    Under torchrun a model with :meth:`loss` alone is wrapped in DistributedDataParallel. A model
    that takes its own steps declares ``syncs_gradients``: :func:`fit` then passes its
    ``training_step`` a :class:`Shard` and the generator every process shares, and the step
    averages its gradients itself (:func:`pushforward.distributed.average_gradients_`) and draws
    the whole batch's noise (:func:`draw_rows`).
    """

    trained = True
    syncs_gradients: ClassVar[bool] = False
    """Whether :meth:`training_step` keeps several processes in lock-step itself (see above)."""

    def get_state(self) -> dict[str, Tensor]:
        """Return the weights and buffers (the ``state_dict``)."""
        return self.state_dict()

    def load_state(self, state: Mapping[str, Tensor], *, source: str = "state") -> None:
        """Load weights, refusing missing, extra or mis-shaped tensors by name."""
        load_state_checked(self, state, source)

    @classmethod
    def state_shapes(
        cls, config: Mapping[str, Any], data_shape: tuple[int, int]
    ) -> dict[str, tuple[int, ...]]:
        """Return the shape of every weight and buffer, built on the meta device (no memory)."""
        try:
            with torch.device("meta"):
                model = cls.from_config(config)
        except NotImplementedError:
            # an operator without a meta kernel (zuko's masks use torch.unique): such a model
            # bounds its own size in its constructor, so it is built for real
            model = cls.from_config(config)
        return {k: tuple(v.shape) for k, v in model.state_dict().items()}

    def loss(
        self,
        x: Tensor,
        *,
        generator: torch.Generator | None = None,
        epoch: float | None = None,
    ) -> dict[str, Tensor]:
        """Return {'loss': scalar to minimise, other named scalar terms} for a batch x (B, d).

        ``epoch`` is the training time elapsed in epochs (0.5 = half way through the first), for
        schedules; None means training is over (evaluation).
        """
        raise NotImplementedError(f"{type(self).__name__} must define loss or training_step")

    def configure_optimizers(self, cfg: TrainConfig) -> dict[str, torch.optim.Optimizer]:
        """Return the named optimisers; by default one over all parameters."""
        return {"model": OPTIMIZERS[cfg.optimizer](self.parameters(), cfg)}

    def training_step(
        self,
        x: Tensor,
        optimizers: Mapping[str, torch.optim.Optimizer],
        cfg: TrainConfig,
        *,
        generator: torch.Generator | None = None,
        epoch: float = 0.0,
        shard: Shard | None = None,
        prepared: Any = None,
    ) -> dict[str, Tensor]:
        """Take one optimisation step on the batch x (B, d); return the detached terms.

        Under torchrun x is this process's ``shard`` of the batch (passed only then);
        ``prepared`` is :meth:`prepare_batch`'s result (passed only by models that prepare). An
        override checks its terms with :func:`check_finite` before it updates the weights, as
        this one does: :func:`fit` checks each step's terms only through it (and the epoch's
        sums at the epoch's end)."""
        manual = None
        if shard is None and prepared is None and "_loss_forward" not in self.__dict__:
            manual = self.manual_gradients(x, generator=generator, epoch=epoch)
        (opt,) = optimizers.values()
        if manual is not None:  # gradients computed without autograd
            terms, pairs = manual
            check_finite(terms)
            opt.zero_grad(set_to_none=True)
            for p, g in pairs:
                p.grad = g
        else:
            forward = self.__dict__.get("_loss_forward") or self.loss  # DDP's under torchrun
            extra = {"prepared": prepared} if prepared is not None else {}
            terms = forward(x, generator=generator, epoch=epoch, **extra)
            check_finite(terms)
            opt.zero_grad(set_to_none=True)
            # DDP averages the processes' gradients; a shard's weight b_r·world/B makes that
            # average the gradient of the whole batch's mean loss even when shards differ in size
            (terms["loss"] * (shard.weight if shard is not None else 1.0)).backward()
        if cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.parameters(), cfg.grad_clip)
        opt.step()
        return {k: v.detach() for k, v in terms.items()}

    def manual_gradients(
        self, x: Tensor, *, generator: torch.Generator | None = None, epoch: float | None = None
    ) -> tuple[dict[str, Tensor], list[tuple[Tensor, Tensor]]] | None:
        """Return (the detached terms of :meth:`loss`, (parameter, gradient of the loss) pairs)
        for the batch x (B, d), computed without autograd, or None (the default) to let
        autograd compute them. :meth:`training_step` asks first, in one process (under torchrun
        autograd's gradients are the ones DDP averages); parameters without a pair get no
        gradient. The result must equal autograd's to rounding, with the same random draws."""
        return None

    def prepare(self, x: Tensor) -> None:
        """Set up from the training data x (n, d) before the first step of a fresh run (not on
        resume: what this sets belongs in buffers, which checkpoints carry); nothing by default."""

    def finish(self, x: Tensor) -> None:
        """Set up from the training data x (n, d) after the last epoch (e.g. the VAE's prior
        fitted to its codes), in every process; what this sets belongs in buffers. Called when
        training completes (not when it is interrupted), also when a finished run is resumed, so
        it must give the same result from the same weights and data; nothing by default."""

    @property
    def prepares_batches(self) -> bool:
        """Whether :meth:`prepare_batch` does work for each batch (then :func:`fit` runs it)."""
        return False

    def prepare_batch(self, x: Tensor, *, generator: torch.Generator) -> Any:
        """Return the part of a step on the batch x (B, d) that does not depend on the weights
        (e.g. flow matching's optimal-transport pairing), for :meth:`loss`'s ``prepared``.

        When :attr:`prepares_batches`, :func:`fit` calls it for the next batches while the
        current step trains, in a process forked at the start of training or on a worker thread
        (:mod:`pushforward.prefetch`), with a CPU ``generator`` seeded from the run's seed, the
        epoch, the step and the process's rank: the result is the same however the call is
        scheduled, and a resumed run draws the same. It must not touch the weights, nor read
        anything that changes during training (a forked process sees the model as it was at
        the start).
        """
        return None

    def diagnostics(
        self, x: Tensor, *, generator: torch.Generator | None = None
    ) -> dict[str, float]:
        """Return extra per-epoch metrics on the training data x (n, d); none by default."""
        return {}


def check_finite(terms: Mapping[str, Tensor]) -> None:
    """Raise a bare TrainingError naming the first non-finite term; :func:`fit` adds when.

    Under torchrun every process learns whether any process failed, so all stop together.
    """
    values = torch.stack([v.detach().reshape(()) for v in terms.values()])
    ok = bool(torch.isfinite(values).all())  # one host synchronisation in the common case
    if distributed.any_true(not ok, values.device):
        if ok:
            raise TrainingError("a loss term became non-finite in another process")
    else:
        return
    bad = [k for k, v in terms.items() if not bool(torch.isfinite(v).all())]
    if bad:
        name = next((k for k in bad if k != "loss"), bad[0])
        value = float(terms[name].detach().reshape(-1)[0])
        raise TrainingError(f"the {name} term became {value}")


class Progress(Protocol):
    """What :func:`fit` reports to (the CLI draws a progress bar from it)."""

    def start(self, epochs: int, steps_per_epoch: int, first_epoch: int) -> None: ...

    def step(self, loss: Tensor) -> None: ...

    def epoch(self, record: dict[str, float]) -> None: ...

    def close(self) -> None: ...


def read_metrics(folder: Path) -> list[dict[str, Any]]:
    """Return the records of metrics.jsonl in ``folder``; a torn last line is dropped."""
    path = Path(folder) / METRICS
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return out


def _write_metrics(folder: Path, records: list[dict[str, Any]]) -> None:
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
    atomic_write_bytes(folder / METRICS, text.encode("utf-8"))


# --- the loop ----------------------------------------------------------------------------------


class _LossForward(nn.Module):
    """Routes a model's loss through ``forward``, so that DistributedDataParallel can wrap it."""

    def __init__(self, model: Trainable):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, *, generator=None, epoch=None, **extra) -> dict[str, Tensor]:
        return self.model.loss(x, generator=generator, epoch=epoch, **extra)


def _wrap_ddp(model: Trainable, device: torch.device) -> None:
    from torch.nn.parallel import DistributedDataParallel

    if model.syncs_gradients:
        # the model averages its own gradients; start every process from rank 0's weights and
        # buffers, as DistributedDataParallel does
        distributed.broadcast_(list(model.state_dict().values()))
        return
    if type(model).training_step is not Trainable.training_step:
        raise ConfigError(
            f"{type(model).__name__} takes its own training steps and cannot yet train in "
            "several processes; run it in one process"
        )
    ids = [device.index] if device.type == "cuda" else None
    object.__setattr__(
        model, "_loss_forward", DistributedDataParallel(_LossForward(model), device_ids=ids)
    )


def _unwrap_ddp(model: Trainable) -> None:
    model.__dict__.pop("_loss_forward", None)


class _StopRequest:
    """Set by a signal handler; the loop stops at the next step boundary."""

    def __init__(self) -> None:
        self.signal: str | None = None


@contextlib.contextmanager
def _deferred_stop() -> Iterator[_StopRequest]:
    """Turn SIGINT (Ctrl-C) and SIGTERM into a request to stop between two steps.

    A step is never cut in half, so the weights and optimiser state stay consistent and a
    checkpoint can be written first. A second Ctrl-C stops at once. Outside the main thread
    signals cannot be handled, and nothing changes.
    """
    stop = _StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, frame: Any) -> None:
        if stop.signal is not None:
            raise KeyboardInterrupt
        stop.signal = signal.Signals(signum).name

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


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

    Every :data:`FLUSH_EVERY` steps of the run the entries of Adam's (or SGD's) first moment too
    small to move a weight are set to zero before they turn subnormal, which x86 CPUs compute
    with slowly (:func:`flush_subnormal_state_`: the weights stay the same bit for bit in
    BENCHMARKS.md's runs).
    """
    run = _prepare_run(
        model, x, cfg, run_dir=run_dir, resume=resume, progress=progress, x_val=x_val
    )
    start = _restore(run) if resume else _Resume()
    if run.folder is not None:
        run.folder.mkdir(parents=True, exist_ok=True)
    if run.ctx.active:
        _wrap_ddp(model, run.device)
    if run.progress is not None:
        run.progress.start(cfg.epochs, run.steps_per_epoch, start.epoch)
    threads = torch.get_num_threads()
    if model.prepares_batches and PREFETCH:
        run.prefetch = make_prefetcher(functools.partial(_prepare_batch, run), run.device)
        # the preparing process (or thread) keeps a core busy: leave it one (BENCHMARKS.md,
        # "Flow matching": fm's default runs take 53 s on 2 cores, 58-60 s in line on both)
        torch.set_num_threads(max(threads - 1, 1))
    try:
        with _deferred_stop() as stop:
            for epoch in range(start.epoch, cfg.epochs + 1):
                mid_epoch = start if epoch == start.epoch and start.step else None
                _epoch(run, epoch, mid_epoch, stop)
    finally:
        if run.prefetch is not None:
            run.prefetch.close()
            torch.set_num_threads(threads)
        if run.progress is not None:
            run.progress.close()
        _unwrap_ddp(model)
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
    device = resolve_device(cfg.device)
    if ctx.active and device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
    n = x.shape[0]
    batch = check_batch(cfg, n)
    if batch < ctx.world:
        raise ConfigError(f"batch_size {batch} is smaller than the {ctx.world} processes")
    low = autocast_dtype(cfg.precision, device, dim=x[0].numel())
    autocast = (
        torch.autocast(device.type, dtype=low) if low is not None else contextlib.nullcontext()
    )
    model.to(device)
    data = x.to(device)
    if not resume:
        model.prepare(data)  # data-dependent set-up; a resumed model has it in its checkpoint
    val = x_val.to(device) if x_val is not None and ctx.main else None
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
        autocast=autocast,
        schedule=LR_SCHEDULES[cfg.lr_schedule],
        generator=generator,
        noise=(
            torch.Generator(device=device)
            if ctx.active and not model.syncs_gradients
            else generator
        ),
        optimizers=model.configure_optimizers(cfg),
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
    if start.step:
        start.epoch_start_state = extra["rng.epoch_start"]
        start.sums = {k[len("progress.sum.") :]: v.to(run.device) for k, v in extra.items()
                      if k.startswith("progress.sum.")}  # fmt: skip
    run.history = [r for r in read_metrics(source) if r.get("epoch", 0) < start.epoch]
    run.last_good = f"epoch {start.epoch - 1}"
    log.info("resumed at epoch %d, step %d of %s", start.epoch, start.step, source)
    return start


class _Sums:
    """The epoch's running sums of each step's terms × its rows, kept as one vector over the
    terms' names so that a step adds them in one operation; :meth:`as_dict` gives them by name.

    The vector starts from the sums a mid-epoch checkpoint carried, so that a resumed epoch adds
    in the same order, and to the same bits, as an uninterrupted one."""

    def __init__(self, start: Mapping[str, Tensor] | None = None):
        self.done: dict[str, Tensor] = dict(start or {})  # sums not (or no longer) in the vector
        self.keys: tuple[str, ...] = ()
        self.vector: Tensor | None = None

    def add(self, terms: Mapping[str, Tensor], rows: int) -> None:
        keys = tuple(terms)
        values = torch.stack([v.reshape(()) for v in terms.values()])
        if keys != self.keys or self.vector is None:  # the first step, or other terms
            self.done = self.as_dict()
            zero = torch.zeros((), dtype=values.dtype, device=values.device)
            self.vector = torch.stack([self.done.pop(k, zero).to(values) for k in keys])
            self.keys = keys
        self.vector.add_(values, alpha=rows)

    def as_dict(self) -> dict[str, Tensor]:
        out = dict(self.done)
        if self.vector is not None:
            out.update(zip(self.keys, self.vector.unbind(), strict=True))
        return out


def _epoch(run: _Run, epoch: int, mid_epoch: _Resume | None, stop: _StopRequest) -> None:
    """Run the steps of ``epoch`` (those after a mid-epoch checkpoint's, when given), then record
    the epoch."""
    run.model.train()
    start = time.perf_counter()
    start_state, order = _shuffle(run, mid_epoch)
    sums = _Sums(mid_epoch.sums if mid_epoch is not None else None)
    first_step = mid_epoch.step if mid_epoch is not None else 0
    rows = min(run.n, first_step * run.batch)
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
            else:  # this step's batch and the next PREFETCH_DEPTH, while this one trains
                while asked < min(step + PREFETCH_DEPTH, run.steps_per_epoch - 1):
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


def _batch_generator(run: _Run, epoch: int, step: int) -> torch.Generator:
    """Return the CPU generator of :meth:`Trainable.prepare_batch` for a step: seeded from the
    run's seed, the epoch, the step and the rank, so that it is the same on resume."""
    key = np.random.SeedSequence([run.cfg.seed % 2**63, epoch, step, run.ctx.rank])
    return torch.Generator().manual_seed(int(key.generate_state(1, np.uint64)[0] >> 1))


def _prepare_batch(run: _Run, epoch: int, step: int, idx: Tensor) -> Any:
    """Return the model's :meth:`~Trainable.prepare_batch` of a step's batch (this process's
    rows), or None for a batch too small to share out."""
    rows, _ = _batch_rows(run, idx)
    if rows.numel() == 0:
        return None
    return run.model.prepare_batch(run.data[rows], generator=_batch_generator(run, epoch, step))


def _step(run: _Run, epoch: int, step: int, idx: Tensor, sums: _Sums, prepared: Any = None) -> int:
    """Take one optimisation step on the rows ``idx`` (B,) of the data (this process's share of
    them under torchrun), add its terms × its rows to ``sums``, and return the rows counted (0
    for a last batch too small to share out, which is skipped).

    A non-finite term stops training with a :class:`TrainingError` saying when and where the
    last good checkpoint is: ``training_step`` checks its terms (:func:`check_finite`) before it
    updates the weights, once a step; the epoch's sums are checked again at its end.
    """
    rows = idx.numel()
    # the shard is passed to training_step under torchrun only, the prepared batch to models
    # that prepare only
    extra: dict[str, Any] = {}
    if run.ctx.active:
        idx, shard = _batch_rows(run, idx)
        if shard is None:
            return 0  # a last batch too small to shard (same in every process)
        extra["shard"] = shard
    if prepared is not None:
        extra["prepared"] = prepared
    xb = run.data[idx]
    elapsed_epochs = epoch - 1 + step / run.steps_per_epoch
    if run.schedule is not None:
        _set_lr(run.optimizers, run.schedule(elapsed_epochs / max(run.cfg.epochs, 1)))
    try:
        with run.autocast:
            terms = run.model.training_step(
                xb, run.optimizers, run.cfg, generator=run.noise, epoch=elapsed_epochs, **extra
            )
    except TrainingError as e:
        where = f"'{run.folder / CHECKPOINT}'" if run.folder is not None else "no run folder"
        raise TrainingError(
            f"{e} at epoch {epoch}, step {step + 1}; training stopped "
            f"(last good checkpoint: {run.last_good}, {where})"
        ) from None
    if FLUSH_EVERY and ((epoch - 1) * run.steps_per_epoch + step + 1) % FLUSH_EVERY == 0:
        flush_subnormal_state_(run.optimizers)
    sums.add(terms, xb.shape[0])
    if run.progress is not None:
        run.progress.step(terms["loss"])
    return rows


def _stop(
    run: _Run,
    epoch: int,
    step: int,
    start_state: Tensor,
    sums: dict[str, Tensor],
    stop: _StopRequest,
) -> NoReturn:
    """Write a mid-epoch checkpoint after ``step`` (with a run folder) and raise
    :class:`Interrupted`."""
    stop.signal = stop.signal or "a signal to another process"
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
        _write_metrics(run.folder, run.history)
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

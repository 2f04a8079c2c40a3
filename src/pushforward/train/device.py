"""Device and speed policy of training, in one place: which device a run trains on, how data get
there, which dtype matrix products autocast to, and the levers that matter on the CPU only.

* :func:`resolve_device` turns a :class:`~pushforward.train.TrainConfig` ``device`` (``auto``,
  ``cpu``, ``cuda``, ``cuda:N``) into a ``torch.device``, refusing what this torch cannot see;
* :func:`to_model_device` places data where a model's weights are, :func:`to_device` moves a
  model (its weights, or a closed-form model's fitted tensors) to a device, and
  :func:`generator_fits` says whether a saved generator state can continue on another device;
* :func:`available_memory` and :func:`check_memory` refuse a model too large for a device
  before it is built;
* :func:`autocast_dtype` and :func:`autocast` give the precision's autocast (bfloat16 on a CPU
  only where it is faster: AMX tiles, :func:`fast_bf16_flags`);
* :func:`compile_mode` and :func:`defers_finite_checks` say how a step is captured and when its
  terms are checked for non-finite values (:mod:`pushforward.train.capture` does both);
* the CPU-only levers: :func:`flush_subnormal_state_` (x86 CPUs compute with subnormal numbers
  slowly; GPUs do not), :func:`can_fork` (a forked child cannot use CUDA) and
  :func:`leave_cores` (intra-op threads for a worker beside training).

Generic training code asks these functions, never ``device.type`` itself.
"""

from __future__ import annotations

import contextlib
import functools
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pushforward.core import ConfigError, lookup

__all__ = [
    "AUTO_BF16_MIN_DIM",
    "COMPILE_MODES",
    "DEVICES",
    "FINITE_CHECKS",
    "FLUSH_EVERY",
    "PRECISIONS",
    "accelerator_levers",
    "autocast",
    "autocast_dtype",
    "autocast_enabled",
    "available_memory",
    "can_fork",
    "check_memory",
    "compile_mode",
    "ddp_device_ids",
    "defers_finite_checks",
    "fast_bf16_flags",
    "flush_subnormal_state_",
    "flush_threshold",
    "full_precision",
    "fused_optimizer",
    "generator_fits",
    "has_autocast",
    "leave_cores",
    "model_device",
    "resolve_device",
    "to_device",
    "to_model_device",
]

# --- which device -------------------------------------------------------------------------------

DEVICES: dict[str, str] = {
    "auto": "CUDA when this torch sees a GPU, else the CPU",
    "cpu": "the CPU",
    "cuda": "the current CUDA device (under torchrun: the process's own, cuda:LOCAL_RANK)",
    "cuda:N": "CUDA device N, 0 ≤ N < the number of CUDA devices this torch sees",
}
"""The device names :func:`resolve_device` accepts."""

_CUDA = re.compile(r"cuda(?::(\d+))?")


def _cuda_devices() -> str:
    count = torch.cuda.device_count()
    names = ", ".join(f"cuda:{i}" for i in range(count))
    return f"{count} CUDA device{'s' if count != 1 else ''}" + (f": {names}" if names else "")


def resolve_device(name: str, *, local_rank: int | None = None) -> torch.device:
    """Return the torch device a run named ``name`` trains on (one of :data:`DEVICES`).

    ``auto`` is CUDA when this torch sees a GPU, else the CPU. Under torchrun (``local_rank``
    given) CUDA means the process's own device, ``cuda:local_rank``, whatever index was named.
    A CUDA device this torch does not see raises a ConfigError naming the index and the devices
    there.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    match = _CUDA.fullmatch(name)
    if match is None:
        raise ConfigError(f"unknown device {name!r}; known: {', '.join(DEVICES)}")
    if not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} was asked for, but this torch sees no CUDA device")
    if local_rank is not None:
        index: int | None = local_rank
        asked = f"the process of local rank {local_rank} trains on cuda:{local_rank}"
    else:
        index = int(match[1]) if match[1] is not None else None
        asked = f"device {name!r} was asked for"
    if index is None:
        return torch.device("cuda")
    if index >= torch.cuda.device_count():
        raise ConfigError(f"{asked}, but this torch sees {_cuda_devices()}")
    return torch.device("cuda", index)


def ddp_device_ids(device: torch.device) -> list[int] | None:
    """Return DistributedDataParallel's ``device_ids`` for a model on ``device``: its one CUDA
    device, or None (the CPU)."""
    return [device.index] if device.type == "cuda" else None


def _fitted_tensors(model: Any) -> dict[str, Tensor]:
    """The tensors a model keeps: an nn.Module's weights and buffers, else (a model fitted in
    closed form, such as PCA) its tensor attributes."""
    if isinstance(model, nn.Module):
        return dict(model.state_dict(keep_vars=True))
    return {k: v for k, v in vars(model).items() if isinstance(v, Tensor)}


def model_device(model: Any) -> torch.device:
    """Return the device of the model's weights (its first parameter or buffer, or a closed-form
    model's first fitted tensor; the CPU for a model with none)."""
    for t in _fitted_tensors(model).values():
        return t.device
    return torch.device("cpu")


def to_model_device(x: Tensor, model: Any) -> Tensor:
    """Return x (any shape) on the device of ``model``'s weights (x itself when it is there)."""
    return x.to(model_device(model))


def to_device(model: Any, device: torch.device | str) -> Any:
    """Move ``model`` to ``device`` in place and return it: an nn.Module's weights and buffers,
    or a closed-form model's fitted tensors (its tensor attributes)."""
    if isinstance(model, nn.Module):
        return model.to(device)
    for name, t in _fitted_tensors(model).items():
        setattr(model, name, t.to(device))
    return model


def generator_fits(generator: torch.Generator, state: Tensor) -> bool:
    """Return whether ``state`` (a saved ``get_state()``) can be set into ``generator``: the
    generators of each device type keep states of their own size (the CPU's Mersenne Twister:
    5,056 bytes; CUDA's Philox: a seed and an offset), so a run resumed on another kind of device
    cannot continue its random stream."""
    return state.numel() == generator.get_state().numel()


# --- memory -------------------------------------------------------------------------------------


def available_memory(device: torch.device) -> int | None:
    """Return the bytes free for tensors on ``device``: CUDA's free memory, or the CPU's
    ``MemAvailable`` (from /proc/meminfo); None where it cannot be known."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    try:
        text = Path("/proc/meminfo").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024  # given in kB
    return None


def _size(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def check_memory(needed: int, device: torch.device, *, what: str, processes: int = 1) -> None:
    """Refuse (ConfigError) to build ``what``, which needs ``needed`` bytes in each of
    ``processes`` processes of this host (torchrun's local world), on a device with less memory
    available (:func:`available_memory`; unknown: no check). The processes share a CPU's memory;
    each CUDA process has a device of its own."""
    free = available_memory(device)
    shared = processes if device.type == "cpu" else 1
    if free is not None and needed * shared > free:
        each = f" in each of {shared} processes" if shared > 1 else ""
        raise ConfigError(
            f"{what} needs {_size(needed)}{each} but {device} has {_size(free)} available; "
            "use a smaller model (e.g. narrower --hidden) or a device with more memory"
        )


# --- precision ----------------------------------------------------------------------------------

PRECISIONS: dict[str, str] = {
    "float32": "every product in float32",
    "bfloat16": "matrix products in bfloat16 (autocast); weights, optimiser and losses in float32",
    "auto": "bfloat16 for data of ≥ 64 dimensions on a CPU with AMX tiles (where it is faster) "
    "and on a GPU with bfloat16 tensor cores, else float32",
}

AUTO_BF16_MIN_DIM = 64
"""``auto`` precision considers bfloat16 only for data of at least this many dimensions."""


def fast_bf16_flags(cpuinfo: str) -> bool:
    """Return whether a CPU with these /proc/cpuinfo contents multiplies bfloat16 matrices
    faster than float32: only with AMX tiles (``amx_bf16``). AVX512-BF16 alone is not enough: on
    such hosts bfloat16 products ran at half the float32 rate (BENCHMARKS.md, "Training
    speed")."""
    return any(
        "amx_bf16" in line.split() for line in cpuinfo.splitlines() if line.startswith("flags")
    )


@functools.cache
def _native_bf16_cpu() -> bool:
    """Return whether this CPU multiplies bfloat16 matrices natively and faster than float32."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()) and fast_bf16_flags(flags)


def autocast_dtype(
    precision: str, device: torch.device, *, dim: int | None = None
) -> torch.dtype | None:
    """Return the dtype training autocasts matrix products to on ``device``, None for float32.

    ``precision`` is a key of :data:`PRECISIONS`. ``auto`` picks bfloat16 only on a CPU with AMX
    tiles (:func:`fast_bf16_flags`), where the MNIST VAE trains faster to the same test ELBO
    (BENCHMARKS.md), or on a CUDA GPU that computes bfloat16 natively (Ampere and later: its
    tensor cores), and only for data of ``dim`` ≥ :data:`AUTO_BF16_MIN_DIM` dimensions (None:
    unknown, counted as large): on low-dimensional data the products are too small to gain, and
    bfloat16's 8-bit mantissa (relative error up to 2⁻⁹) is coarse beside fine structure such as
    ring8's σ = 0.01 at radius 1. Elsewhere it stays float32.
    """
    lookup(PRECISIONS, precision, what="precision")
    if precision == "bfloat16":
        return torch.bfloat16
    if precision != "auto" or (dim is not None and dim < AUTO_BF16_MIN_DIM):
        return None
    if device.type == "cpu" and _native_bf16_cpu():
        return torch.bfloat16
    if device.type == "cuda" and _native_bf16_cuda():
        return torch.bfloat16
    return None


def _native_bf16_cuda() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)


def accelerator_levers(device: torch.device) -> None:
    """Set the process-wide levers a run on ``device`` gains from: on CUDA, cuDNN's search for
    the fastest convolution algorithm of each shape (``cudnn.benchmark``; a training run meets
    the same few shapes thousands of times). Nothing elsewhere."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def autocast(
    precision: str, device: torch.device, *, dim: int | None = None
) -> contextlib.AbstractContextManager:
    """Return the context a training step runs in: autocast to :func:`autocast_dtype` on
    ``device``, or nothing for float32."""
    low = autocast_dtype(precision, device, dim=dim)
    if low is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=low)


# --- capturing the step ------------------------------------------------------------------------

COMPILE_MODES: dict[str, str] = {
    "auto": "reduce-overhead on CUDA, off elsewhere (compiling costs seconds a shape, which a "
    "CPU run of a few thousand small steps does not win back)",
    "off": "the loss runs op by op (eager)",
    "default": "the loss and its gradient through torch.compile: fused kernels",
    "reduce-overhead": "as default, and on CUDA the fused kernels replayed as CUDA graphs "
    "(one launch a step; the same as default on the CPU)",
}
"""How :func:`~pushforward.train.fit` captures a model's loss (``TrainConfig.compile``)."""

FINITE_CHECKS: dict[str, str] = {
    "auto": "step on the CPU, epoch on accelerators",
    "step": "each step's terms before it updates the weights (one host synchronisation a step; "
    "the weights never take a non-finite step)",
    "epoch": "a flag kept on the device, read at the end of each epoch and before each "
    "checkpoint (no synchronisation in a step; the epoch that failed is not saved)",
}
"""When :func:`~pushforward.train.fit` looks at each step's terms for non-finite values
(``TrainConfig.finite_checks``)."""


def compile_mode(request: str, device: torch.device) -> str | None:
    """Return the ``torch.compile`` mode a run's loss is compiled with on ``device``, None for
    none; ``request`` is a key of :data:`COMPILE_MODES`."""
    lookup(COMPILE_MODES, request, what="compile mode")
    if request == "auto":
        return "reduce-overhead" if device.type == "cuda" else None
    return None if request == "off" else request


def defers_finite_checks(request: str, device: torch.device) -> bool:
    """Return whether a run on ``device`` checks its terms once an epoch (on the device) rather
    than at every step (on the host); ``request`` is a key of :data:`FINITE_CHECKS`. On the CPU
    a step's check costs nothing (nothing runs ahead of the host); on an accelerator it makes
    the host wait for the step's last kernel, every step."""
    lookup(FINITE_CHECKS, request, what="finite check")
    if request == "auto":
        return device.type != "cpu"
    return request == "epoch"


# --- levers that matter on the CPU only ---------------------------------------------------------

FLUSH_EVERY = 64
"""The default of :class:`~pushforward.train.TrainConfig`'s ``flush_every``: every how many
steps :func:`~pushforward.train.fit` sets the optimisers' near-subnormal first moments to zero
(:func:`flush_subnormal_state_`)."""
FLUSH_DTYPES = (torch.float32, torch.float64, torch.bfloat16)
FLUSH_MIN_EPS = 1e-8
"""The smallest Adam ε for which :func:`flush_subnormal_state_` touches m."""


def flush_threshold(dtype: torch.dtype) -> float:
    """Return 2²⁴ × the smallest normal number of ``dtype``: about 2·10⁻³¹ in float32 and
    bfloat16."""
    return torch.finfo(dtype).tiny * 2.0**24


def _first_moment(opt: torch.optim.Optimizer, group: Mapping[str, Any]) -> str | None:
    """Return the state key of ``opt``'s first moment in a parameter group, where setting its
    entries below :func:`flush_threshold` to zero cannot move a weight; None elsewhere."""
    if isinstance(opt, (torch.optim.Adam, torch.optim.AdamW)):
        # a step is lr · m̂ / (√v̂ + ε) with m̂ ≤ 10 m: under lr · 2·10⁻²² for such an m
        return "exp_avg" if group.get("eps", 0.0) >= FLUSH_MIN_EPS else None
    if isinstance(opt, torch.optim.SGD):
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
    PyTorch's flush-to-zero setting does not reach worker threads that already exist
    (BENCHMARKS.md, "Training speed": the throughput lost, and runs whose weights came out the
    same bit for bit). Such an entry moves its weight by less than lr · 2·10⁻²², so setting it
    to zero changes no weight larger than about 10⁻¹⁵. Called every 64 steps (the default of
    ``flush_every``), it keeps m out of the subnormal range for β₁ ≥ 0.77 (from the threshold to
    the smallest normal number takes 24 / log₂(1/β₁) steps: 158 at β₁ = 0.9). GPUs compute with
    subnormal numbers at full speed, so state on other devices is left alone."""
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


def can_fork(device: torch.device) -> bool:
    """Return whether a child process forked now can serve training on ``device``: on Linux
    (fork is the safe and cheap start there) and on the CPU (a forked child cannot use CUDA)."""
    return sys.platform.startswith("linux") and device.type == "cpu"


@contextlib.contextmanager
def leave_cores(n: int = 1) -> Iterator[None]:
    """Run a block on ``n`` intra-op threads fewer (at least one), then restore the count: the
    cores a process or thread working beside training keeps busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(max(threads - n, 1))
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def has_autocast(kind: str) -> bool:
    """Return whether device type ``kind`` has autocast (``meta`` has none; torch < 2.4 cannot
    say, and has it on the CPU and CUDA)."""
    available = getattr(torch.amp, "is_autocast_available", None)
    return available(kind) if available is not None else kind in ("cpu", "cuda")


FUSED_OPTIMIZER_DEVICES = ("cpu", "cuda")
"""The device types whose parameters get the fused Adam kernel (one call updates them all)."""


def fused_optimizer(params: list[torch.nn.Parameter]) -> bool:
    """Return whether an optimiser of ``params`` should ask for the fused kernel: every one is
    on a device type that has it (``meta``, which the device tests run on, has none)."""
    return all(p.device.type in FUSED_OPTIMIZER_DEVICES for p in params)


def full_precision(device: torch.device | str) -> contextlib.AbstractContextManager:
    """Return a context in which products on ``device`` run in the weights' precision even
    inside an autocast region: ``torch.autocast(..., enabled=False)`` for a device type that has
    autocast, nothing for one that has none (``meta``, which the device tests run on)."""
    kind = torch.device(device).type
    if has_autocast(kind):
        return torch.autocast(kind, enabled=False)
    return contextlib.nullcontext()


def autocast_enabled(device: torch.device | str) -> bool:
    """Return whether an autocast region is active for ``device``'s type (on torch < 2.4,
    whose check takes no device type, through the CPU's or the default check); never for a
    device type that has no autocast (``meta``)."""
    kind = torch.device(device).type
    if not has_autocast(kind):
        return False
    try:
        return torch.is_autocast_enabled(kind)
    except TypeError:  # torch < 2.4 takes no device type
        if kind == "cpu":
            return torch.is_autocast_cpu_enabled()
        return torch.is_autocast_enabled()

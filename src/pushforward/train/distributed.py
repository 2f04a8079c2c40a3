"""Several processes, one run: PyTorch's own distributed engine, set up from torchrun's variables.

Launched by ``torchrun --nproc_per_node N -m pushforward fit ...`` (or several machines with
torchrun's rendezvous), every process reads RANK, WORLD_SIZE and LOCAL_RANK, joins one process
group (gloo on the CPU, NCCL on GPUs) and trains the same model on its shard of every batch;
DistributedDataParallel averages the gradients. Without those variables everything here is a
no-op and pushforward runs in one process, as usual.

A process group joined here is left when the process exits (:func:`shutdown`, run by ``atexit``)
while the interpreter is still whole. Left alive, it would be freed during interpreter
finalisation: its gloo threads joined and its sockets closed while Python tears itself down.

Nothing here pickles: the few values that travel between processes are tensors.
"""

from __future__ import annotations

import atexit
import datetime
import importlib
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from pushforward.core import ConfigError
from pushforward.train.device import resolve_device

__all__ = [
    "Context",
    "all_reduce_",
    "any_true",
    "average_gradients_",
    "barrier",
    "broadcast_",
    "broadcast_text",
    "context",
    "gather_rows",
    "init",
    "shutdown",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Context:
    """Where this process stands: its rank among ``world`` processes."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1  # the processes on this host (torchrun's LOCAL_WORLD_SIZE)

    @property
    def active(self) -> bool:
        """Whether more than one process takes part."""
        return self.world > 1

    @property
    def main(self) -> bool:
        """Whether this is the process that writes files and prints (rank 0)."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} is not an integer") from None


def init(device: str = "cpu") -> Context:
    """Join the process group described by torchrun's variables (once); return the context.

    The backend is NCCL when ``device`` (a name :func:`~pushforward.train.resolve_device`
    takes) is CUDA, gloo otherwise. A group joined here is left
    at exit (:func:`shutdown`).
    """
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return Context()
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    if not dist.is_initialized():
        backend = "nccl" if resolve_device(device).type == "cuda" else "gloo"
        # imported before the group exists: its functions take ``group.WORLD`` as a default
        # argument when first imported (the optimiser's first use imports them), which would
        # hold the group past shutdown() until interpreter finalisation
        importlib.import_module("torch.distributed.nn")
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=10))
        atexit.register(shutdown)
        log.info(
            "joined a %s process group of %d as rank %d",
            backend,
            dist.get_world_size(),
            dist.get_rank(),
        )
    return context()


def shutdown() -> None:
    """Leave the process group, if one is joined: its threads are joined, its sockets closed.

    :func:`init` runs this at exit; every process that joined should get there. The last
    collective call of a run is a :func:`barrier`, so no other process still waits on this one.
    """
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def context() -> Context:
    """Return the current context (one process unless a process group is initialised)."""
    if dist.is_available() and dist.is_initialized():
        world = dist.get_world_size()
        return Context(
            dist.get_rank(), world, _env_int("LOCAL_RANK", 0), _env_int("LOCAL_WORLD_SIZE", world)
        )
    return Context()


def barrier() -> None:
    """Wait for every process (no-op in one process)."""
    if context().active:
        dist.barrier()


def all_reduce_(t: Tensor) -> Tensor:
    """Sum ``t`` over all processes, in place; return it."""
    if context().active:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def average_gradients_(params: Iterable[torch.nn.Parameter]) -> None:
    """Replace each parameter's gradient by its mean over all processes, in one all-reduce of
    the gradients flattened together (no-op in one process; parameters without a gradient are
    skipped, and must be the same ones in every process).

    This is the average DistributedDataParallel takes, done after ``backward`` rather than
    overlapped with it: a model whose step DDP cannot wrap (the GAN's R1 and gradient penalties
    differentiate the critic twice, which DDP's reducer does not support) calls it itself.
    """
    ctx = context()
    if not ctx.active:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= ctx.world
    for g, avg in zip(grads, flat.split([g.numel() for g in grads]), strict=True):
        g.copy_(avg.view_as(g))


def gather_rows(t: Tensor, rows: int, start: int) -> Tensor:
    """Return the whole batch (rows, …) whose rows start … start + len(t) are this process's
    ``t`` (n, …) and the others the other processes' (every process must call this together):
    one all-reduce of the batch with zeros outside each process's rows, which adds every row to
    zeros only, so the rows arrive exactly. No gradient flows through it. In one process, ``t``
    placed at ``start`` in zeros."""
    full = t.new_zeros((rows, *t.shape[1:]))
    full[start : start + t.shape[0]] = t.detach()
    return all_reduce_(full)


def broadcast_(tensors: Iterable[Tensor]) -> None:
    """Overwrite each tensor, in place, with rank 0's (no-op in one process)."""
    if not context().active:
        return
    for t in tensors:
        dist.broadcast(t.data, src=0)


def any_true(flag: bool, device: torch.device | str = "cpu") -> bool:
    """Return whether ``flag`` holds in any process (every process must call this together)."""
    if not context().active:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def broadcast_text(text: str, device: torch.device | str = "cpu") -> str:
    """Return rank 0's ``text`` in every process (sent as bytes in tensors, not pickled)."""
    if not context().active:
        return text
    data = torch.tensor(list(text.encode("utf-8")), dtype=torch.uint8, device=device)
    size = torch.tensor([data.numel()], dtype=torch.int64, device=device)
    dist.broadcast(size, src=0)
    buf = torch.zeros(int(size.item()), dtype=torch.uint8, device=device)
    if context().main:
        buf.copy_(data)
    dist.broadcast(buf, src=0)
    return bytes(buf.cpu().tolist()).decode("utf-8")

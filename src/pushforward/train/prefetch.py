"""Prefetching a model's weight-free work on the next batch while the current step trains.

:func:`pushforward.train.fit` asks a :class:`Prefetcher` for :meth:`Trainable.prepare_batch
<pushforward.train.Trainable.prepare_batch>` of the next steps (``prefetch_depth`` ahead), then
takes the current step's result and trains it. Results come back in the order they were asked
for.

Two ways to run it:

* :class:`ForkedPrefetcher` (Linux, CPU training): a child process forked at the start of
  training, which inherits the model and the data and answers over a pipe. The training
  process runs no second Python thread, so nothing contends for its interpreter lock: a worker
  *thread* that prepares batches of many small operations (flow matching's draws and its
  optimal-transport pairing) slowed a training step of a few milliseconds by half as much again
  on 2 cores, where the same work in a second process left it untouched (BENCHMARKS.md, "Flow
  matching").
* :class:`ThreadPrefetcher`: a worker thread, elsewhere (other systems, accelerators: a forked
  child cannot use CUDA).

The child sets one intra-op thread, as PyTorch's own ``DataLoader`` workers do (and
:func:`~pushforward.train.fit` trains on one thread fewer meanwhile), ignores Ctrl-C
(the training process decides when to stop, and then closes the pipe), and exits when the pipe
closes, also when the training process is killed. Should the child fail or die, the training
process prepares the batches in line from then on (a failure is then raised there, as its own
exception). Both give exactly what calling ``prepare`` in line gives: the work depends only on
the request.
"""

from __future__ import annotations

import collections
import logging
import multiprocessing
import signal
import warnings
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from pushforward.train.device import can_fork

__all__ = [
    "ForkedPrefetcher",
    "Prefetcher",
    "ThreadPrefetcher",
    "make_prefetcher",
    "start_with_sigint_blocked",
]

log = logging.getLogger(__name__)

Prepare = Callable[..., Any]
"""prepare(*request) → the prepared batch: a tensor, a tuple or list of them, or None."""


class Prefetcher:
    """Runs ``prepare(*request)`` ahead of time; :meth:`take` returns the results in order."""

    def request(self, *args: Any) -> None:
        raise NotImplementedError

    def take(self) -> Any:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class ThreadPrefetcher(Prefetcher):
    """``prepare`` on one worker thread."""

    def __init__(self, prepare: Prepare):
        self.prepare = prepare
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="pushforward-prepare")
        self.pending: collections.deque[Future] = collections.deque()

    def request(self, *args: Any) -> None:
        self.pending.append(self.pool.submit(self.prepare, *args))

    def take(self) -> Any:
        return self.pending.popleft().result()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.pending.clear()


def _to_wire(value: Any) -> Any:
    """Tensors as NumPy arrays (pickled as bytes; PyTorch's own pickling of tensors for
    multiprocessing goes through shared-memory files, slower for small tensors)."""
    if isinstance(value, torch.Tensor):
        return ("tensor", value.detach().cpu().numpy())
    if isinstance(value, (tuple, list)):
        return (type(value).__name__, [_to_wire(v) for v in value])
    return ("value", value)


def _from_wire(wire: Any) -> Any:
    kind, value = wire
    if kind == "tensor":
        return torch.from_numpy(value)
    if kind in ("tuple", "list"):
        items = [_from_wire(v) for v in value]
        return tuple(items) if kind == "tuple" else items
    return value


def start_with_sigint_blocked(process: Any) -> None:
    """Start ``process`` (a multiprocessing Process) with SIGINT blocked in this thread, so that
    the child (forked or spawned) begins with SIGINT blocked: a Ctrl-C to the process group during
    its start-up stays pending there instead of raising KeyboardInterrupt; here it stays pending
    only until the start returns. Where signal masks do not exist (Windows), a plain start."""
    if not hasattr(signal, "pthread_sigmask"):
        process.start()
        return
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        process.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def _child_loop(conn: Any, parent_end: Any, prepare: Prepare) -> None:
    """The forked child: answer each request on ``conn`` with ``prepare``'s result until None or
    the pipe closes."""
    parent_end.close()  # else the pipe stays open after the training process dies
    # Ctrl-C reaches the whole foreground group: the training process decides when to stop. The
    # child starts with SIGINT blocked (ForkedPrefetcher forks so), so one that arrives before
    # it is ignored here stays pending and is then discarded, not raised mid-start-up
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    torch.set_num_threads(1)
    while True:
        try:
            args = conn.recv()
        except (EOFError, OSError):
            return
        if args is None:
            return
        try:
            args = tuple(torch.from_numpy(a) if isinstance(a, np.ndarray) else a for a in args)
            reply = ("ok", _to_wire(prepare(*args)))
        except Exception as e:  # sent back and raised in the training process
            reply = ("error", f"{type(e).__name__}: {e}")
        try:
            conn.send(reply)
        except (BrokenPipeError, OSError):
            return


class ForkedPrefetcher(Prefetcher):
    """``prepare`` in a child process forked now, which inherits everything ``prepare`` reads:
    what it reads must not change after this (for :meth:`Trainable.prepare_batch`, nothing it
    reads does: it does not read the weights).

    If the child fails on a request, or dies (a SIGTERM to the process group, the kernel's
    out-of-memory killer), that request and every later one are prepared in line: a failure then
    raises its own exception here, and the results stay the same.
    """

    def __init__(self, prepare: Prepare):
        self.prepare = prepare
        self.asked: collections.deque[tuple] = collections.deque()
        self.lost = False  # the child is gone: prepare in line
        ctx = multiprocessing.get_context("fork")
        self.conn, child = ctx.Pipe()
        with warnings.catch_warnings():
            # Python ≥ 3.12 warns on fork in a process with threads (the intra-op pool); the
            # child runs only ``prepare`` on one thread, as DataLoader's forked workers do
            warnings.filterwarnings("ignore", message=r".*fork\(\)", category=DeprecationWarning)
            self.process = ctx.Process(
                target=_child_loop, args=(child, self.conn, prepare), name="pushforward-prepare",
                daemon=True,
            )  # fmt: skip
            # the child inherits the block until it ignores SIGINT
            start_with_sigint_blocked(self.process)
        child.close()

    def request(self, *args: Any) -> None:
        self.asked.append(args)
        if self.lost:
            return
        try:
            self.conn.send(tuple(a.numpy() if isinstance(a, torch.Tensor) else a for a in args))
        except (BrokenPipeError, OSError):
            self._lose("it stopped reading")

    def take(self) -> Any:
        args = self.asked.popleft()
        if not self.lost:
            try:
                status, value = self.conn.recv()
            except (EOFError, OSError):
                self._lose("it died")
            else:
                if status == "ok":
                    return _from_wire(value)
                self._lose(f"it failed: {value}")
        return self.prepare(*args)  # in line: the same result, or the failure raised here

    def _lose(self, why: str) -> None:
        self.process.join(timeout=1.0)
        log.warning(
            "the process that prepares batches (pid %s, exit code %s) is gone, %s; preparing "
            "them in line from here", self.process.pid, self.process.exitcode, why,
        )  # fmt: skip
        self.lost = True
        self._end_child()

    def close(self) -> None:
        self.asked.clear()
        self._end_child()

    def _end_child(self) -> None:
        if self.conn.closed:
            return
        try:
            self.conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        self.conn.close()
        self.process.join(timeout=5.0)
        if self.process.is_alive():  # stuck in a long prepare: it holds nothing of value
            self.process.kill()
            self.process.join()


def make_prefetcher(prepare: Prepare, device: torch.device) -> Prefetcher:
    """Return a :class:`ForkedPrefetcher` where :func:`~pushforward.train.can_fork` (training
    on ``device``), else a :class:`ThreadPrefetcher`."""
    return ForkedPrefetcher(prepare) if can_fork(device) else ThreadPrefetcher(prepare)

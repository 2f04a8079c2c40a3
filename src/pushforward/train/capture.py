"""Capturing a training step for the device: the loss through ``torch.compile`` (CUDA graphs on
CUDA), and checks of a step's terms that do not make the host wait for the device.

* :class:`CompiledLoss` is a model's :meth:`~pushforward.train.Trainable.loss` through
  ``torch.compile``; its gradient is compiled with it (AOTAutograd). The noise is still drawn
  from the run's ``torch.Generator``, so a compiled step draws what the eager step draws and
  leaves the generator where the eager step leaves it. Should compiling fail on the first call
  (no C++ compiler, an operation the compiler lacks), the run goes on eagerly, with a warning.
* :func:`outside_graph` marks a function the compiled loss runs eagerly, where the compiler
  does not trace (``torch.compiler.disable``), without importing the compiler at start-up.
* :class:`DeferredChecks` keeps, on the device, the first step of the epoch at which each term
  became non-finite; :func:`~pushforward.train.fit` reads it once an epoch (and before a
  checkpoint) instead of once a step. :func:`deferring` makes
  :func:`~pushforward.train.check_finite` record into it.

Which of these a run uses on which device is :mod:`pushforward.train.device`'s to say
(:func:`~pushforward.train.compile_mode`, :func:`~pushforward.train.defers_finite_checks`).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor

__all__ = ["CompiledLoss", "DeferredChecks", "deferred_checks", "deferring", "outside_graph"]

log = logging.getLogger(__name__)


_EAGER: dict[Callable[..., Any], Callable[..., Any]] = {}
"""Each function marked :func:`outside_graph`, and what its calls run: itself until a loss is
compiled, then itself through ``torch.compiler.disable``."""


def outside_graph(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Mark ``fn`` to run eagerly inside a compiled loss, as ``torch.compiler.disable`` would,
    with the wrapper made when a loss is first compiled (:class:`CompiledLoss`) instead of at
    import: making it imports ``torch._dynamo``, which took 1.2–1.5 s of each process's
    start-up (BENCHMARKS.md) and which only a compiled step needs."""
    _EAGER[fn] = fn

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        return _EAGER[fn](*args, **kwargs)

    return call


def _disable_marked() -> None:
    """Run every :func:`outside_graph` function through ``torch.compiler.disable`` from now on."""
    for fn, now in list(_EAGER.items()):
        if now is fn:
            _EAGER[fn] = torch.compiler.disable(fn)


class CompiledLoss:
    """``loss(x, *, generator, epoch, **extra)`` through ``torch.compile(mode=mode)``, with one
    graph per batch shape (the full batches and an epoch's shorter last one).

    ``epoch`` reaches the compiled loss as a 0-d float64 CPU tensor, so that a loss whose
    weights follow the epoch (a KL warm-up) is compiled once, not at every step: such a loss
    reads it where the compiler does not trace (:func:`outside_graph`)."""

    def __init__(self, loss: Callable[..., dict[str, Tensor]], mode: str):
        _disable_marked()
        self.eager = loss
        self.mode = mode
        self.compiled: Callable[..., dict[str, Tensor]] | None = torch.compile(
            loss, mode=mode, dynamic=False
        )
        self.ready = False  # the first call compiled and ran

    def __call__(self, x: Tensor, *, generator: torch.Generator | None = None, **kw: Any):
        if self.compiled is None:
            return self.eager(x, generator=generator, **kw)
        traced = dict(kw)
        if kw.get("epoch") is not None:  # a value the compiler would specialise on, every step
            traced["epoch"] = torch.tensor(kw["epoch"], dtype=torch.float64)
        if self.mode == "reduce-overhead":  # a new step: the last step's graph outputs are free
            torch.compiler.cudagraph_mark_step_begin()
        if self.ready:
            return self.compiled(x, generator=generator, **traced)
        state = generator.get_state() if generator is not None else None
        try:
            out = self.compiled(x, generator=generator, **traced)
        except Exception as e:  # compiling failed: train eagerly from the same draws
            log.warning("torch.compile(mode=%r) failed, training op by op: %s",
                        self.mode, " ".join(str(e).split())[:300])  # fmt: skip
            if generator is not None and state is not None:
                generator.set_state(state)
            self.compiled = None
            return self.eager(x, generator=generator, **kw)
        self.ready = True
        return out


class DeferredChecks:
    """The step (within the epoch) at which each term first became non-finite, kept on the
    device: recording a step's terms launches a few small kernels and waits for none."""

    def __init__(self) -> None:
        self.step = 0  # the step recorded next; set by the training loop
        self.first: dict[tuple[str, ...], Tensor] = {}  # term names → (k,) int64, −1: finite

    def record(self, terms: Mapping[str, Tensor]) -> None:
        """Note which of ``terms`` (named scalars) are non-finite at :attr:`step`."""
        keys = tuple(terms)
        values = torch.stack([v.detach().reshape(()).float() for v in terms.values()])
        first = self.first.get(keys)
        if first is None:
            first = torch.full((len(keys),), -1, dtype=torch.int64, device=values.device)
            self.first[keys] = first
        first.masked_fill_(~torch.isfinite(values) & (first < 0), self.step)

    def failure(self) -> tuple[str, int] | None:
        """Return (the term's name, its step) of the first non-finite term recorded, a term
        other than 'loss' where both failed at once; None when all were finite. One host
        synchronisation."""
        if not self.first:
            return None
        names = [name for keys in self.first for name in keys]
        steps = torch.cat(list(self.first.values())).tolist()  # the one read
        found = [(s, n == "loss", n) for n, s in zip(names, steps, strict=True) if s >= 0]
        if not found:
            return None
        step, _, name = min(found)
        return name, step

    def reset(self) -> None:
        """Forget what was recorded (a new epoch)."""
        self.first.clear()
        self.step = 0


_DEFERRED: contextvars.ContextVar[DeferredChecks | None] = contextvars.ContextVar(
    "pushforward_deferred_checks", default=None
)


def deferred_checks() -> DeferredChecks | None:
    """Return the :class:`DeferredChecks` that :func:`~pushforward.train.check_finite` records
    into now, None when it checks on the spot."""
    return _DEFERRED.get()


@contextlib.contextmanager
def deferring(checks: DeferredChecks | None) -> Iterator[DeferredChecks | None]:
    """Make :func:`~pushforward.train.check_finite` record into ``checks`` inside the block
    (None: check on the spot)."""
    token = _DEFERRED.set(checks)
    try:
        yield checks
    finally:
        _DEFERRED.reset(token)

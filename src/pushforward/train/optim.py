"""Optimisers and learning-rate schedules, by the names :class:`~pushforward.train.TrainConfig`
takes."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import torch

from pushforward.train.device import fused_optimizer

if TYPE_CHECKING:
    from pushforward.train.config import TrainConfig

__all__ = ["LR_SCHEDULES", "OPTIMIZERS", "eager_optimizer", "running_average_", "set_lr"]

Params = Iterable[torch.nn.Parameter]

_LAZY_DYNAMO = ("add_param_group", "zero_grad", "state_dict", "load_state_dict")
"""The methods of ``torch.optim.Optimizer`` that torch wraps in its lazy ``_disable_dynamo``:
the wrapper imports ``torch._dynamo`` at its first call."""


def _wrapped(fn: Any, wrapper: str) -> Callable[..., Any] | None:
    """Return the function that torch's wrapper named ``wrapper`` wraps, found along ``fn``'s
    chain of ``__wrapped__`` (the first optimiser of a class wraps its ``step`` once more, for
    profiling and hooks), or None when the chain has no such wrapper (another torch release)."""
    for _ in range(8):
        code, inner = getattr(fn, "__code__", None), getattr(fn, "__wrapped__", None)
        if not callable(inner):
            return None
        if code is not None and code.co_name == wrapper:
            return inner
        fn = inner
    return None


@functools.cache
def eager_optimizer(cls: type[torch.optim.Optimizer]) -> type[torch.optim.Optimizer]:
    """Return a subclass of the torch optimiser ``cls`` whose methods skip the wrappers that keep
    ``torch.compile`` from tracing them, or ``cls`` itself where torch's wrappers are not the
    known ones.

    ``torch.optim`` wraps ``add_param_group`` (called by the constructor), ``zero_grad`` and
    the state methods in ``torch._disable_dynamo``, and ``step`` in a wrapper that sets the
    grad mode and adds graph breaks; each imports ``torch._dynamo`` at its first call, which took
    2.4–3.3 s of a process on a 2-core AMD EPYC with AVX2 (BENCHMARKS.md, "Training speed"),
    for every ``fit``, though nothing here compiles an optimiser. The subclass runs the same
    functions under the grad mode torch's wrapper sets (off, unless ``differentiable``); its
    steps, state and ``state_dict`` are torch's own (tests compare them bit for bit)."""
    body: dict[str, Any] = {}
    for name in _LAZY_DYNAMO:
        body[name] = _wrapped(getattr(cls, name), "inner")
    raw_step = _wrapped(cls.step, "_use_grad")
    if raw_step is None or any(fn is None for fn in body.values()):
        return cls

    @functools.wraps(raw_step)
    def step(self: torch.optim.Optimizer, *args: Any, **kwargs: Any) -> Any:
        with torch.set_grad_enabled(bool(self.defaults.get("differentiable", False))):
            return raw_step(self, *args, **kwargs)

    body["step"] = step
    # named as torch's class (its repr), found by pickle as EagerNAME (the module's __getattr__)
    made = type(cls.__name__, (cls,), {**body, "__module__": __name__, "__doc__": cls.__doc__})
    made.__qualname__ = f"{_EAGER}{cls.__name__}"
    return made


_EAGER = "Eager"
"""The prefix of the names under which pickle finds the classes :func:`eager_optimizer` makes."""


def __getattr__(name: str) -> type[torch.optim.Optimizer]:
    """Return ``EagerNAME``: :func:`eager_optimizer` of ``torch.optim.NAME`` (how pickle finds a
    pickled optimiser's class)."""
    base = getattr(torch.optim, name[len(_EAGER) :], None) if name.startswith(_EAGER) else None
    if isinstance(base, type) and issubclass(base, torch.optim.Optimizer):
        made = eager_optimizer(base)
        if made is not base:
            return made
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _fused_adam(cls: type, params: Params, cfg: TrainConfig) -> torch.optim.Optimizer:
    # the fused kernel updates every parameter in one call (faster on CPU and GPU); torch
    # releases before 2.4 lack it on the CPU, so fall back to the default implementation there
    params = list(params)
    kwargs = {"lr": cfg.lr, "betas": cfg.betas, "weight_decay": cfg.weight_decay}
    if fused_optimizer(params):
        try:
            return cls(params, fused=True, **kwargs)
        except (RuntimeError, TypeError):
            pass
    return cls(params, **kwargs)


def _adam(params: Params, cfg: TrainConfig) -> torch.optim.Optimizer:
    return _fused_adam(eager_optimizer(torch.optim.Adam), params, cfg)


def _adamw(params: Params, cfg: TrainConfig) -> torch.optim.Optimizer:
    return _fused_adam(eager_optimizer(torch.optim.AdamW), params, cfg)


def _sgd(params: Params, cfg: TrainConfig) -> torch.optim.Optimizer:
    sgd = eager_optimizer(torch.optim.SGD)
    return sgd(params, lr=cfg.lr, momentum=cfg.betas[0], weight_decay=cfg.weight_decay)


OPTIMIZERS: dict[str, Callable[[Params, TrainConfig], torch.optim.Optimizer]] = {
    "adam": _adam,
    "adamw": _adamw,
    "sgd": _sgd,  # momentum β₁
}
"""Optimiser name → ``make(parameters, cfg)``, at ``cfg``'s lr, betas and weight decay."""


def _cosine(progress: float) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


LR_SCHEDULES: dict[str, Callable[[float], float] | None] = {
    "constant": None,
    "cosine": _cosine,  # ½(1 + cos πp): from lr down to 0 at the last step (Loshchilov & Hutter)
}
"""Schedule name → f: the learning rate at training progress p ∈ [0, 1] (elapsed epochs /
epochs) is lr · f(p); None keeps lr."""


def set_lr(optimizers: Mapping[str, torch.optim.Optimizer], factor: float) -> None:
    """Set every parameter group's learning rate to factor × its initial one."""
    for opt in optimizers.values():
        for group in opt.param_groups:
            group["lr"] = group.setdefault("initial_lr", group["lr"]) * factor


@torch.no_grad()
def running_average_(average: torch.nn.Module, net: torch.nn.Module, decay: float,
                     steps: int) -> None:  # fmt: skip
    """Move ``average``'s weights towards ``net``'s after ``steps`` optimiser steps: w̄ ← d·w̄ +
    (1 − d)·w with d = min(decay, (1 + t)/(10 + t)), so that early on the average follows the
    net closely instead of dragging the random initial weights through a short run."""
    d = min(decay, (1 + steps) / (10 + steps))
    torch._foreach_lerp_(list(average.parameters()), list(net.parameters()), 1 - d)

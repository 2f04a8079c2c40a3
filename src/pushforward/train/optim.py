"""Optimisers and learning-rate schedules, by the names :class:`~pushforward.train.TrainConfig`
takes."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

import torch

from pushforward.train.device import fused_optimizer

if TYPE_CHECKING:
    from pushforward.train.config import TrainConfig

__all__ = ["LR_SCHEDULES", "OPTIMIZERS", "running_average_", "set_lr"]

Params = Iterable[torch.nn.Parameter]


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
    return _fused_adam(torch.optim.Adam, params, cfg)


def _adamw(params: Params, cfg: TrainConfig) -> torch.optim.Optimizer:
    return _fused_adam(torch.optim.AdamW, params, cfg)


def _sgd(params: Params, cfg: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.betas[0], weight_decay=cfg.weight_decay)


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

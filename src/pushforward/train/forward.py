"""The route a training step's loss takes: through DistributedDataParallel under torchrun,
through ``torch.compile`` where the run asks for it (:mod:`pushforward.train.capture`), or
straight to the model's :meth:`~pushforward.train.Trainable.loss` (None)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import Tensor, nn

from pushforward.core import ConfigError
from pushforward.train import distributed
from pushforward.train.capture import CompiledLoss
from pushforward.train.config import TrainConfig
from pushforward.train.device import compile_mode, ddp_device_ids
from pushforward.train.trainable import Optimization, Terms, Trainable

__all__ = ["loss_forward"]

log = logging.getLogger(__name__)


def loss_forward(
    model: Trainable, cfg: TrainConfig, device: torch.device, *, several: bool
) -> Callable[..., Terms] | None:  # fmt: skip
    """Return what a step of ``model`` on ``device`` computes its loss through: DDP when
    ``several`` processes train, else the loss compiled as ``cfg.compile`` says; None where the
    model's own :meth:`~pushforward.train.Trainable.loss` serves."""
    if several:
        return _ddp_loss_forward(model, device)
    return _compiled_loss(model, cfg, device)


# --- several processes --------------------------------------------------------------------------


class _LossForward(nn.Module):
    """Routes a model's loss through ``forward``, so that DistributedDataParallel can wrap it."""

    def __init__(self, model: Trainable):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, *, generator=None, epoch=None, **extra) -> Terms:
        return self.model.loss(x, generator=generator, epoch=epoch, **extra)


def _ddp_loss_forward(model: Trainable, device: torch.device) -> Callable[..., Terms] | None:
    """Set ``model`` up to train in several processes as its :attr:`~Trainable.optimization`
    says: return its loss wrapped in DistributedDataParallel for the autograd patterns, or None
    for a model whose own step keeps the processes in lock-step (started from rank 0's weights
    and buffers, as DistributedDataParallel starts)."""
    from torch.nn.parallel import DistributedDataParallel

    if model.optimization is Optimization.OWN_STEP:
        if not model.syncs_gradients:
            raise ConfigError(
                f"{type(model).__name__} takes its own training steps and cannot yet train in "
                "several processes; run it in one process"
            )
        distributed.broadcast_(list(model.state_dict().values()))
        return None
    return DistributedDataParallel(_LossForward(model), device_ids=ddp_device_ids(device))


def _compiled_loss(
    model: Trainable, cfg: TrainConfig, device: torch.device
) -> CompiledLoss | None:  # fmt: skip
    """Return the model's loss compiled as ``cfg.compile`` says on ``device`` (the default
    step then takes autograd's gradients of it, also for a model with hand-written ones), or
    None: no compiling asked for, or a model that takes its own step."""
    mode = compile_mode(cfg.compile, device)
    if mode is None:
        return None
    if model.optimization is Optimization.OWN_STEP or not model.compiles:
        log.info("%s is not compiled (its own step, or a loss the compiler gets wrong)",
                 type(model).__name__)  # fmt: skip
        return None
    return CompiledLoss(model.loss, mode)

"""What training reports to, besides the CLI's progress bar: TensorBoard, and fan-out to several.

A reporter has the four methods of :class:`pushforward.train.Progress` (``start``, ``step``,
``epoch``, ``close``); :func:`pushforward.train.fit` calls them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pushforward.errors import ConfigError

__all__ = ["Reporters", "TensorBoardLogger"]


class Reporters:
    """Forward every report to each of several reporters, in order."""

    def __init__(self, *reporters: Any):
        self.reporters = [r for r in reporters if r is not None]

    def start(self, epochs: int, steps_per_epoch: int, first_epoch: int) -> None:
        for r in self.reporters:
            r.start(epochs, steps_per_epoch, first_epoch)

    def step(self, loss: Tensor) -> None:
        for r in self.reporters:
            r.step(loss)

    def epoch(self, record: dict[str, Any]) -> None:
        for r in self.reporters:
            r.epoch(record)

    def close(self) -> None:
        for r in self.reporters:
            r.close()


class TensorBoardLogger:
    """Write each epoch's scalars (and a grid of samples, for image models) to TensorBoard.

    Needs the ``tensorboard`` package (``pip install pushforward[tensorboard]``). Scalars are
    the float entries of each metrics record, under ``train/NAME``; with ``model`` and
    ``image_shape`` given, 64 samples of g#μ are logged every epoch under ``samples``.
    """

    def __init__(
        self,
        log_dir: str | Path,
        *,
        model: Any = None,
        image_shape: tuple[int, int] | None = None,
        seed: int = 0,
    ):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                "TensorBoard logging needs the tensorboard package: pip install tensorboard"
            ) from None
        self._writer_cls = SummaryWriter
        self.log_dir = Path(log_dir)
        self.model, self.image_shape, self.seed = model, image_shape, seed
        self.writer = None

    def start(self, epochs: int, steps_per_epoch: int, first_epoch: int) -> None:
        self.writer = self._writer_cls(log_dir=str(self.log_dir), purge_step=first_epoch)

    def step(self, loss: Tensor) -> None:
        pass  # per-step scalars would force a host synchronisation every step

    def epoch(self, record: dict[str, Any]) -> None:
        assert self.writer is not None, "start() first"
        epoch = int(record["epoch"])
        for key, value in record.items():
            if isinstance(value, float) and math.isfinite(value) and key != "epoch":
                self.writer.add_scalar(f"train/{key}", value, epoch)
        if (
            self.model is not None
            and self.image_shape is not None
            and hasattr(self.model, "sample")
        ):
            gen = torch.Generator().manual_seed(self.seed)
            with torch.no_grad():
                x = self.model.sample(64, generator=gen).float().clamp(0, 1).cpu()
            self.writer.add_images("samples", x.reshape(-1, 1, *self.image_shape), epoch)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

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

from pushforward.core import (
    SNAPSHOTS,
    CheckpointError,
    ConfigError,
    load_tensors,
    read_safetensors_header,
    save_tensors,
)

__all__ = ["SNAPSHOTS", "Reporters", "SampleSnapshots", "TensorBoardLogger", "read_snapshots"]


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
    ``image_shape`` given and a model that declares itself ``generative``, 64 samples of g#μ are
    logged every epoch under ``samples``.
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
        # a model that cannot sample (the autoencoder) says so in its declaration
        if self.model is not None and self.image_shape is not None and self.model.generative:
            gen = torch.Generator().manual_seed(self.seed)
            with torch.no_grad():
                x = self.model.sample(64, generator=gen).float().clamp(0, 1).cpu()
            self.writer.add_images("samples", x.reshape(-1, 1, *self.image_shape), epoch)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class SampleSnapshots:
    """Keep a fixed-seed sample set of g#μ before training and every ``every`` epochs (and at
    the last), as ``frames`` of (epoch, samples (n, d)); with ``folder``, also write them all to
    ``folder/snapshots.safetensors`` after each one, atomically (``epochs`` (S,) int64 and
    ``samples`` (S, n, d) float32).

    The samples come from :meth:`~pushforward.contract.Model.sample` with a generator of their
    own, seeded ``seed`` every time, so each frame shows the same draws of μ pushed through the
    weights of that epoch, and the run's own random streams are untouched (resume stays exact).
    Resumed at epoch e, the frames of the folder's file before e are kept.
    """

    def __init__(
        self, model: Any, n: int, *, every: int, seed: int = 0, folder: str | Path | None = None
    ):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ConfigError(f"every = {every!r} is not allowed; use an integer ≥ 1")
        self.model, self.n, self.every, self.seed = model, n, every, seed
        self.folder = Path(folder) if folder is not None else None
        self.frames: list[tuple[int, Tensor]] = []
        self.epochs = 0

    def start(self, epochs: int, steps_per_epoch: int, first_epoch: int) -> None:
        self.epochs = epochs
        if first_epoch > 1 and self.folder is not None:
            saved = read_snapshots(self.folder)
            if saved is not None:
                epochs_, samples = saved
                self.frames = [(e, s) for e, s in zip(epochs_, samples, strict=True)
                               if e < first_epoch]  # fmt: skip
        if first_epoch == 1:
            self._add(0)

    def step(self, loss: Tensor) -> None:
        pass

    def epoch(self, record: dict[str, Any]) -> None:
        epoch = int(record["epoch"])
        if epoch % self.every == 0 or epoch == self.epochs:
            self._add(epoch)

    def close(self) -> None:
        pass

    def _add(self, epoch: int) -> None:
        gen = torch.Generator().manual_seed(self.seed)
        samples = self.model.sample(self.n, generator=gen).detach().float().cpu()  # (n, d)
        self.frames.append((epoch, samples))
        if self.folder is not None:
            save_tensors(
                self.folder / SNAPSHOTS,
                {"epochs": torch.tensor([e for e, _ in self.frames], dtype=torch.int64),
                 "samples": torch.stack([s for _, s in self.frames])},
                metadata={"seed": str(self.seed), "every": str(self.every)},
            )  # fmt: skip


def read_snapshots(folder: str | Path) -> tuple[list[int], Tensor] | None:
    """Return the epochs (S,) and samples (S, n, d) of a run folder's snapshots, or None when
    it has none; a file that is not a snapshot file raises CheckpointError."""
    path = Path(folder) / SNAPSHOTS
    if not path.exists():
        return None
    header = read_safetensors_header(path)
    shapes = {k: shape for k, (_, shape) in header.items()}
    epochs, samples = shapes.get("epochs"), shapes.get("samples")
    if epochs is None or samples is None or len(samples) != 3 or epochs != samples[:1]:
        raise CheckpointError(
            f"'{path}' is not a snapshot file: it must hold epochs (S,) and samples (S, n, d), "
            f"it holds {shapes}"
        )
    tensors = load_tensors(path)
    return [int(e) for e in tensors["epochs"]], tensors["samples"].float()

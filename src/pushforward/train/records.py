"""What training records and reports: the per-epoch metrics file, the running sums each epoch's
means come from, and the :class:`Progress` protocol :func:`~pushforward.train.fit` reports to."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from pushforward.core import METRICS, atomic_write_bytes

__all__ = ["METRICS", "EpochSums", "Progress", "read_metrics", "write_metrics"]


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


def write_metrics(folder: Path, records: list[dict[str, Any]]) -> None:
    """Write the records to metrics.jsonl in ``folder``, atomically."""
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
    atomic_write_bytes(folder / METRICS, text.encode("utf-8"))


class EpochSums:
    """The epoch's running sums of each step's terms × its rows, kept as one vector over the
    terms' names so that a step adds them in one operation; :meth:`as_dict` gives them by name.

    The vector starts from the sums a mid-epoch checkpoint carried, so that a resumed epoch adds
    in the same order, and to the same bits, as an uninterrupted one."""

    def __init__(self, start: Mapping[str, Tensor] | None = None):
        self.done: dict[str, Tensor] = dict(start or {})  # sums not (or no longer) in the vector
        self.keys: tuple[str, ...] = ()
        self.vector: Tensor | None = None

    def add(self, terms: Mapping[str, Tensor], rows: int) -> None:
        """Add each scalar term × ``rows`` to its sum."""
        keys = tuple(terms)
        values = torch.stack([v.reshape(()) for v in terms.values()])
        if keys != self.keys or self.vector is None:  # the first step, or other terms
            self.done = self.as_dict()
            zero = torch.zeros((), dtype=values.dtype, device=values.device)
            self.vector = torch.stack([self.done.pop(k, zero).to(values) for k in keys])
            self.keys = keys
        self.vector.add_(values, alpha=rows)

    def as_dict(self) -> dict[str, Tensor]:
        """Return the sums by term name (0-d tensors)."""
        out = dict(self.done)
        if self.vector is not None:
            out.update(zip(self.keys, self.vector.unbind(), strict=True))
        return out

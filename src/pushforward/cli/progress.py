"""Training progress on the terminal: the CLI's reporter for :func:`pushforward.train.fit`."""

from __future__ import annotations

import sys
import time

__all__ = ["BarProgress", "say"]


def say(msg: str) -> None:
    """Write one line to stderr (what the command did, beside its output on stdout)."""
    print(msg, file=sys.stderr, flush=True)


class BarProgress:
    """Training progress on stderr: a tqdm bar with the live loss and an ETA on a tty, else
    (with ``lines``) a line every tenth of the epochs, or (without) nothing. ``label`` names
    the run in the bar."""

    def __init__(self, label: str | None = None, *, lines: bool = True) -> None:
        self.bar = None
        self.label, self.lines = label, lines
        self.tty = sys.stderr.isatty()

    def start(self, epochs: int, steps_per_epoch: int, first_epoch: int) -> None:
        self.epochs, self.every = epochs, max(1, epochs // 10)
        if self.tty:
            from tqdm import tqdm

            total = (epochs - first_epoch + 1) * steps_per_epoch
            self.bar = tqdm(
                total=total, unit="step", dynamic_ncols=True, mininterval=0.2, desc=self.label,
                leave=self.label is None,
            )  # fmt: skip
            self._last = 0.0

    def step(self, loss) -> None:
        if self.bar is not None:
            self.bar.update(1)
            now = time.monotonic()
            if now - self._last > 0.25:  # reading the loss syncs; do it only when drawing
                self.bar.set_postfix(loss=f"{float(loss):.4g}", refresh=False)
                self._last = now

    def epoch(self, record: dict) -> None:
        if self.bar is not None:
            where = f"epoch {record['epoch']}/{self.epochs}"
            self.bar.set_description(f"{self.label}: {where}" if self.label else where)
        elif not self.lines:
            return
        elif record["epoch"] % self.every == 0 or record["epoch"] == self.epochs:
            terms = "  ".join(
                f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                for k, v in record.items()
                if k not in ("epoch", "samples_per_s") and isinstance(v, int | float)
                and not isinstance(v, bool)
            )  # fmt: skip
            say(f"epoch {record['epoch']}/{self.epochs}  {terms}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

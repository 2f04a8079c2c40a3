"""Stopping training cleanly on a signal: Ctrl-C and SIGTERM become a request that the loop
honours between two steps."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["StopRequest", "deferred_stop"]


class StopRequest:
    """Set by a signal handler; the loop stops at the next step boundary."""

    def __init__(self) -> None:
        self.signal: str | None = None
        """The name of the signal that asked to stop, or None."""


@contextlib.contextmanager
def deferred_stop() -> Iterator[StopRequest]:
    """Turn SIGINT (Ctrl-C) and SIGTERM into a request to stop between two steps.

    A step is never cut in half, so the weights and optimiser state stay consistent and a
    checkpoint can be written first. A second Ctrl-C stops at once. Outside the main thread
    signals cannot be handled, and nothing changes. The handlers found are put back after.
    """
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, frame: Any) -> None:
        if stop.signal is not None:
            raise KeyboardInterrupt
        stop.signal = signal.Signals(signum).name

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)

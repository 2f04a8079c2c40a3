"""The gallery's second process: two of the opening sections and one mixture's chain, run beside
this process from the start, and its answer.

The child is spawned (no state shared), started with SIGINT blocked so that a Ctrl-C in the
terminal reaches only the parent, and ends when the parent ends, even by SIGKILL (Linux's
PR_SET_PDEATHSIG). Its log records travel up the same pipe as its answer and are handled here by
this process's own loggers, so they are printed (or filed) exactly as this process's records.
"""

from __future__ import annotations

import logging
import logging.handlers
import threading
import time
import traceback
from pathlib import Path
from typing import Any, NoReturn

from pushforward.gallery.chain import Chain, mixture_chain, threads
from pushforward.gallery.page import Report, Section
from pushforward.gallery.sections.flow import flow_digits

__all__ = ["AFTER", "BESIDE", "Beside", "second_part"]

log = logging.getLogger(__name__)

BESIDE = ("PCA and autoencoders", "GAN on digits")
"""The opening sections the second process makes before its mixture's chain: with it, the two
processes' shares of the gallery's work were closest (BENCHMARKS.md, "the slow host")."""

AFTER = "MAF on digits"
"""The part the second process makes after its mixture's chain (the flows' section ends with it):
without it the first process took about 5 s longer than the second in ``--quick``, 45 against 40
s on a 2-core AMD EPYC with AVX2 (BENCHMARKS.md)."""

Parts = dict[str, Section]
"""Sections by the name of their part."""


class _PipeQueue:
    """The queue of the child's :class:`logging.handlers.QueueHandler`: each record, and at the
    end the answer, is sent up the pipe ``conn`` as (kind, value, traceback text)."""

    def __init__(self, conn: Any):
        self.conn = conn
        self.lock = threading.Lock()  # a record may come from another thread of the child

    def put_nowait(self, record: logging.LogRecord) -> None:
        self.send("log", record, "")

    def send(self, kind: str, value: Any, trace: str) -> None:
        with self.lock:
            self.conn.send((kind, value, trace))


def _die_with(parent: int) -> None:
    """End this process (SIGKILL: it has nothing to clean up) when ``parent`` ends, even by
    SIGKILL: Linux's PR_SET_PDEATHSIG; elsewhere the child runs its chain to the end and then
    finds the pipe closed."""
    import ctypes
    import os
    import signal
    import sys

    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent ended before the line above took effect
        os._exit(1)


def second_part(report: Report, name: str, quick: bool, seed: int) -> tuple[Parts, Chain]:
    """Return the sections :data:`BESIDE` and :data:`AFTER` name (by name) and mixture
    ``name``'s chain, made one after the other on one thread: the share of the gallery's work the
    second process takes (the first makes the other sections meanwhile). Their times lead and
    end the chain's timings."""
    import torch

    from pushforward.data import datasets
    from pushforward.gallery.sections.encoders import encoders_section
    from pushforward.gallery.sections.gan_digits import gan_digits_section

    datasets.load_data(name, n=1, generator=torch.Generator())  # a bad name fails before the work
    mnist_dir = datasets.find_mnist_folder()
    mnist = f"mnist:{mnist_dir}" if mnist_dir is not None else None
    work = {
        "PCA and autoencoders": lambda: encoders_section(report, quick, seed),
        "GAN on digits": lambda: gan_digits_section(report, quick, seed, mnist),
    }
    sections, took = {}, []
    with threads(1):
        for part in BESIDE:
            start = time.perf_counter()
            sections[part] = work[part]()
            took.append((part, time.perf_counter() - start))
        chain = mixture_chain(report, name, quick, seed)
        start = time.perf_counter()
        sections[AFTER] = Section("", "")
        flow_digits(report, sections[AFTER], quick, seed)
        chain.timings.append((AFTER, time.perf_counter() - start))
    chain.timings[:0] = took
    return sections, chain


def _chain_in_child(conn: Any, folder: str, name: str, quick: bool, seed: int, parent: int,
                    level: int, device: str = "cpu") -> None:  # fmt: skip
    """Entry point of the second process: make :func:`second_part` and send it back, with every
    log record of level ``level`` or above on the way.

    The parent started this process with SIGINT blocked, and it stays blocked here (training
    installs a Ctrl-C handler, which a blocked signal never reaches): a Ctrl-C is the parent's
    to handle, and the parent ends this process."""
    from pushforward.core import PushforwardError

    _die_with(parent)
    pipe = _PipeQueue(conn)
    logging.getLogger().addHandler(logging.handlers.QueueHandler(pipe))  # type: ignore[arg-type]
    logging.getLogger("pushforward").setLevel(level)
    try:
        answer = second_part(Report(Path(folder), device=device), name, quick, seed)
    except BaseException as e:  # every failure goes back to the parent
        kind = type(e).__name__ if isinstance(e, PushforwardError) else None
        pipe.send("error", (kind, str(e)), traceback.format_exc())
    else:
        pipe.send("ok", answer, "")
    finally:
        conn.close()


class Beside:
    """:func:`second_part` in a second, spawned process (one thread); :meth:`result` waits for it.

    The child is started with SIGINT blocked, so a Ctrl-C in the terminal reaches only this
    process, which ends the child in :meth:`close`. A child that dies without answering (killed,
    out of memory) is reported as an error instead of waiting forever, and the child ends when
    this process does. A thread here receives the child's log records as they come.
    """

    def __init__(self, folder: Path, name: str, quick: bool, seed: int, device: str = "cpu"):
        import multiprocessing
        import os

        from pushforward.train import start_with_sigint_blocked

        self.name, self.folder = name, folder
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe(duplex=False)
        level = logging.getLogger("pushforward").getEffectiveLevel()
        args = (child, str(folder), name, quick, seed, os.getpid(), level, device)
        self.process = ctx.Process(target=_chain_in_child, args=args,
                                   name=f"pushforward-demo-{name}")  # fmt: skip
        start_with_sigint_blocked(self.process)  # POSIX; elsewhere Ctrl-C reaches both
        child.close()
        self._answer: tuple[str, Any, str] | None = None
        self._answered = threading.Event()
        self._listener = threading.Thread(target=self._listen, daemon=True,
                                          name=f"pushforward-demo-{name}-log")  # fmt: skip
        self._listener.start()

    def _listen(self) -> None:
        """Handle the child's log records here until its answer (kept) or the pipe's end."""
        try:
            while True:
                kind, value, trace = self.conn.recv()
                if kind != "log":
                    self._answer = (kind, value, trace)
                    return
                logging.getLogger(value.name).handle(value)
        except (EOFError, OSError):  # the child's end closed without an answer
            return
        finally:
            self._answered.set()

    def result(self) -> tuple[Parts, Chain]:
        """Wait for the child's sections and chain and return them; raise the child's
        error, the same kind for an error of the library's own, or a RuntimeError when the
        child died."""
        while not self._answered.wait(0.5):
            # the pipe's end is not enough: a process the child forked may still hold it
            if not self.process.is_alive() and not self._answered.wait(5):
                self._died()
        if self._answer is None:
            self._died()
        status, value, trace = self._answer
        if status != "ok":
            kind, message = value
            where = f"the gallery's part on {self.name} (in its second process)"
            if kind is not None:  # an error of the library's own: the same kind, here
                from pushforward.core import errors

                cls = getattr(errors, kind, None)
                if not (isinstance(cls, type) and issubclass(cls, errors.PushforwardError)):
                    cls = errors.PushforwardError
                raise cls(f"{where}: {message}")
            log.error("the gallery's second process failed:\n%s", trace)
            raise RuntimeError(f"{where} failed: {message}")
        return value

    def _died(self) -> NoReturn:
        self.process.join(5)
        raise RuntimeError(
            f"the gallery's second process ({self.name}) ended without an answer, "
            f"exit code {self.process.exitcode}"
        )

    def close(self) -> None:
        """End the child if it still runs (SIGTERM, then SIGKILL after 5 s) and remove what its
        unfinished atomic writes left."""
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)
            if self.process.is_alive():
                self.process.kill()
                self.process.join()
            for tmp in (self.folder / "figures").glob(f".*{self.name}*.tmp"):
                tmp.unlink(missing_ok=True)
        self.process.join()
        self._listener.join(5)
        self.conn.close()

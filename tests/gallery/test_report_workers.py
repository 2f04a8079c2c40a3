"""The gallery's second process: bad settings are refused, and its failures and deaths reach the
parent as one clear error instead of a hang (the full run is in test_report.py, a slow test)."""

import os
import signal
import sys
import time

import pytest

from pushforward.cli import main
from pushforward.core import ConfigError, DataError
from pushforward.gallery import run_demo
from pushforward.gallery.processes import Beside


@pytest.mark.parametrize("workers", [0, 3, True, 1.5, 2.0])
def test_run_demo_refuses_other_worker_counts(tmp_path, workers):
    with pytest.raises(ConfigError, match=r"workers = .* use 1 or 2"):
        run_demo(tmp_path, workers=workers)
    assert list(tmp_path.iterdir()) == []  # refused before anything was written


def test_the_cli_refuses_other_worker_counts(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["demo", "--workers", "3", "--out", str(tmp_path / "out")])
    assert e.value.code == 2
    assert "--workers" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_failure_in_the_second_process_is_raised_here_with_its_cause(tmp_path):
    """An error of the library's own (here an unknown data set) comes back as the same kind of
    error, so that the command line prints it as one line."""
    beside = Beside(tmp_path, "no-such-mixture", quick=True, seed=0)
    try:
        with pytest.raises(
            DataError, match=r"no-such-mixture \(in its second process\): .*no-such"
        ):
            beside.result()
    finally:
        beside.close()
    assert not beside.process.is_alive()


def test_a_ctrl_c_while_the_second_process_starts_does_not_kill_it(tmp_path):
    """The terminal's SIGINT reaches the whole process group; the child is started with it
    blocked and then ignores it, so it still answers (here: with its own error), and the parent
    alone decides to stop."""
    beside = Beside(tmp_path, "no-such-mixture", quick=True, seed=0)
    try:
        os.kill(beside.process.pid, signal.SIGINT)  # during the child's start-up
        time.sleep(0.2)
        os.kill(beside.process.pid, signal.SIGINT)
        with pytest.raises(DataError, match=r"in its second process\): "):  # not interrupted
            beside.result()
    finally:
        beside.close()


def test_a_second_process_that_dies_is_reported_not_waited_for(tmp_path):
    beside = Beside(tmp_path, "ring8", quick=True, seed=0)
    try:
        os.kill(beside.process.pid, signal.SIGKILL)
        start = time.monotonic()
        with pytest.raises(RuntimeError, match=r"ended without an answer, exit code -9"):
            beside.result()
        assert time.monotonic() - start < 30
    finally:
        beside.close()


def _running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped by its new parent, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:  # no /proc (not Linux) or gone meanwhile
        return not os.path.exists("/proc")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_second_process_ends_when_the_gallery_is_killed(tmp_path):
    """A SIGKILL leaves no handler to run in the parent; the child must not train on alone."""
    import subprocess

    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from pushforward.gallery.processes import Beside\n"
        "if __name__ == '__main__':\n"
        f"    b = Beside(Path({str(tmp_path)!r}), 'ring8', quick=False, seed=0)\n"
        "    print(b.process.pid, flush=True)\n"
        "    time.sleep(600)\n"
    )
    path = tmp_path / "parent.py"
    path.write_text(script)
    parent = subprocess.Popen([sys.executable, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        time.sleep(3)  # the child is importing or training by now
        os.kill(child, 0)  # alive
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 60  # the full chain alone would train for minutes
    while time.monotonic() < deadline:
        if not _running(child):
            break
        time.sleep(0.2)
    else:
        os.kill(child, signal.SIGKILL)
        pytest.fail("the second process outlived the gallery that started it")


def test_the_second_process_log_records_reach_this_process_loggers():
    """The child's records go up its pipe (a QueueHandler's queue) and are handled here by the
    logger of their name, formatted by this process's handlers."""
    import logging
    import multiprocessing

    from pushforward.gallery.processes import _PipeQueue

    here, there = multiprocessing.Pipe(duplex=False)
    sender = logging.getLogger("pushforward.test-child")
    handler = logging.handlers.QueueHandler(_PipeQueue(there))
    sender.addHandler(handler)
    sender.propagate = False
    try:
        sender.warning("step %d of %s", 3, "ring8")
    finally:
        sender.removeHandler(handler)
        sender.propagate = True
    kind, record, _ = here.recv()
    assert kind == "log" and record.name == "pushforward.test-child"
    seen = []

    class Keep(logging.Handler):
        def emit(self, r):
            seen.append(self.format(r))

    keep = Keep()
    keep.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    receiver = logging.getLogger(record.name)
    receiver.addHandler(keep)
    try:
        receiver.handle(record)
    finally:
        receiver.removeHandler(keep)
    assert seen == ["WARNING pushforward.test-child: step 3 of ring8"]

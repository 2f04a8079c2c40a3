"""The prefetchers behind fit's prepared batches: a forked process and a worker thread."""

import os
import signal
import sys

import pytest
import torch

from pushforward.train import (
    ForkedPrefetcher,
    ThreadPrefetcher,
    can_fork,
    make_prefetcher,
    prefetch,
)

STATE = {"scale": 2.0}


def prepare(step: int, rows: torch.Tensor):
    """A stand-in for prepare_batch: tensors, a tuple, None, and a failure on request."""
    if step < 0:
        raise ValueError(f"no batch {step}")
    if step == 99:
        return None
    gen = torch.Generator().manual_seed(step)
    return (rows.double() * STATE["scale"], torch.randn(3, generator=gen), [step, "x"])


def _both():
    return [pytest.param(ForkedPrefetcher, id="fork"), pytest.param(ThreadPrefetcher, id="thread")]


@pytest.mark.parametrize("kind", _both())
def test_results_come_back_in_order_and_equal_the_call_in_line(kind):
    pre = kind(prepare)
    try:
        requests = [(s, torch.arange(4) + s) for s in (3, 1, 99, 7)]
        for r in requests[:2]:
            pre.request(*r)
        got = [pre.take()]
        for r in requests[2:]:
            pre.request(*r)
        got += [pre.take() for _ in range(3)]
    finally:
        pre.close()
    for (step, rows), out in zip(requests, got, strict=True):
        want = prepare(step, rows)
        if want is None:
            assert out is None
            continue
        assert isinstance(out, tuple) and len(out) == 3
        assert torch.equal(out[0], want[0]) and out[0].dtype == torch.float64
        assert torch.equal(out[1], want[1])
        assert out[2] == want[2]


def test_the_forked_child_sees_the_state_at_the_fork_not_later():
    pre = ForkedPrefetcher(prepare)
    try:
        STATE["scale"] = 5.0  # after the fork: the child keeps 2.0
        pre.request(1, torch.ones(2))
        assert torch.equal(pre.take()[0], torch.full((2,), 2.0, dtype=torch.float64))
    finally:
        STATE["scale"] = 2.0
        pre.close()


@pytest.mark.parametrize("kind", _both())
def test_a_failure_in_prepare_is_raised_as_its_own_exception(kind):
    pre = kind(prepare)
    try:
        pre.request(-3, torch.ones(1))
        pre.request(4, torch.ones(1))
        with pytest.raises(ValueError, match="no batch -3"):
            pre.take()
        assert torch.equal(pre.take()[1], prepare(4, torch.ones(1))[1])  # in line from here
    finally:
        pre.close()


def test_a_dead_child_leaves_the_batches_to_the_training_process(caplog):
    pre = ForkedPrefetcher(prepare)
    try:
        os.kill(pre.process.pid, signal.SIGINT)  # ignored: the training process decides
        pre.request(2, torch.ones(1))
        assert torch.equal(pre.take()[1], prepare(2, torch.ones(1))[1])
        pre.request(5, torch.ones(1))
        os.kill(pre.process.pid, signal.SIGKILL)
        pre.process.join(timeout=10)
        pre.request(6, torch.ones(1))
        with caplog.at_level("WARNING", logger="pushforward.train.prefetch"):
            five, six = pre.take(), pre.take()
        assert "is gone" in caplog.text and pre.lost
        assert torch.equal(five[1], prepare(5, torch.ones(1))[1])
        assert torch.equal(six[1], prepare(6, torch.ones(1))[1])
    finally:
        pre.close()


def test_a_ctrl_c_during_the_childs_start_up_does_not_kill_it(monkeypatch):
    # the child ignores SIGINT from its first instruction on, being forked with SIGINT blocked;
    # before, a SIGINT that came before its signal.signal(SIGINT, SIG_IGN) raised
    # KeyboardInterrupt there (seen once in the suite). The child is made slow to reach that call
    # so that the SIGINT surely lands first.
    import time

    parent, install = os.getpid(), signal.signal

    def slow_install(signum, handler):
        if os.getpid() != parent and signum == signal.SIGINT:
            time.sleep(0.5)
        return install(signum, handler)

    monkeypatch.setattr(prefetch.signal, "signal", slow_install)
    pre = ForkedPrefetcher(prepare)
    try:
        time.sleep(0.1)
        os.kill(pre.process.pid, signal.SIGINT)
        pre.request(3, torch.ones(1))
        assert torch.equal(pre.take()[1], prepare(3, torch.ones(1))[1])
        assert not pre.lost and pre.process.is_alive()
    finally:
        pre.close()
    assert pre.process.exitcode == 0


def test_close_ends_the_child_and_so_does_a_closed_pipe():
    pre = ForkedPrefetcher(prepare)
    pre.request(1, torch.ones(1))  # an answer left unread
    pre.close()
    assert not pre.process.is_alive() and pre.process.exitcode == 0
    orphan = ForkedPrefetcher(prepare)
    orphan.conn.close()  # as when the training process is killed
    orphan.process.join(timeout=10)
    assert not orphan.process.is_alive() and orphan.process.exitcode == 0


def test_fork_only_for_cpu_training_on_linux(monkeypatch):
    assert not can_fork(torch.device("cuda"))
    monkeypatch.setattr(sys, "platform", "darwin")
    assert not can_fork(torch.device("cpu"))
    pre = make_prefetcher(prepare, torch.device("cpu"))
    try:
        assert isinstance(pre, ThreadPrefetcher)
    finally:
        pre.close()
    monkeypatch.setattr(sys, "platform", "linux")
    pre = make_prefetcher(prepare, torch.device("cpu"))
    try:
        assert isinstance(pre, ForkedPrefetcher) and pre.process.is_alive()
    finally:
        pre.close()

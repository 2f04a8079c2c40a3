"""Shared test fixtures, the ``--device`` option and the ``cuda`` marker, and the reliability
counts printed at the end of the test run.

``pytest --device cuda`` runs the device-aware tests (those that take the ``device`` fixture) on
that device; the default is the CPU, where the model template's device test still finds stray CPU
tensors by running the models on ``meta`` under :class:`device_guard.MetaGuard`. A test marked
``cuda`` needs a CUDA device and is skipped where this torch sees none.
"""

import os
from collections import Counter

import pytest
import torch

from device_guard import MetaGuard

RELIABILITY: Counter = Counter()


@pytest.fixture
def reliability() -> Counter:
    """Counts of inputs tried, faults injected and runs resumed, summed over the whole run."""
    return RELIABILITY


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Cached feature networks go to a folder of this test run, never the user's own cache."""
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = old


def pytest_addoption(parser):
    parser.addoption(
        "--device",
        default="cpu",
        help="device of the device-aware tests: cpu (default), cuda or cuda:N",
    )


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device; this torch sees none")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def device(request) -> torch.device:
    """The device named by ``--device`` (default the CPU); a CUDA device this torch cannot see
    fails the tests that ask for it rather than testing the CPU in its place."""
    dev = torch.device(request.config.getoption("--device"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        pytest.fail(f"--device {dev} was given, but this torch sees no CUDA device")
    return dev


@pytest.fixture
def meta_guard() -> MetaGuard:
    """A fresh :class:`device_guard.MetaGuard`: ``with meta_guard: ...`` fails on the first
    operation that meets a model on ``meta`` with a stray CPU tensor."""
    return MetaGuard()


def pytest_terminal_summary(terminalreporter):
    if RELIABILITY:
        terminalreporter.section("reliability")
        for name, count in sorted(RELIABILITY.items()):
            terminalreporter.write_line(f"{name}: {count}")

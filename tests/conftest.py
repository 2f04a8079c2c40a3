"""Shared test fixtures, the ``--device`` option and the ``cuda`` marker, and the reliability
counts printed at the end of the test run.

``pytest --device NAME`` chooses the device of the whole run, as ``--device`` does for every
command: ``auto`` (the default: CUDA where this torch sees it, else the CPU), ``cpu``, ``cuda`` or
``cuda:N``. Every ``auto`` of the library (the default of :class:`~pushforward.train.TrainConfig`
and of every command, in-process or run as a subprocess) resolves to that device, and the
device-aware tests (those that take the ``device`` fixture) put their models there too.
``--device cpu`` hides CUDA from the run (``CUDA_VISIBLE_DEVICES`` is emptied before torch first
looks for it), so a GPU machine can run the CPU suite as CI does. Without a GPU, the model
template's device test still finds stray CPU tensors by running the models on ``meta`` under
:class:`device_guard.MetaGuard`. A test marked ``cuda`` needs a CUDA device and is skipped where
this torch sees none. ``stored_run`` rebuilds a stored run folder of ``tests/fixtures/runs``,
whose weights are kept as text (``model.json``), with its ``model.safetensors``.
"""

import json
import os
import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch

from device_guard import MetaGuard
from pushforward.train import resolve_device

RELIABILITY: Counter = Counter()


def write_stored_weights(folder: Path, out: Path) -> Path:
    """Copy the run folder ``folder`` to ``out`` and write its ``model.safetensors`` from its
    ``model.json`` (each tensor's dtype, shape and values, exact: float32 and float64 values
    round-trip through JSON's decimals; and the file's metadata); return ``out``."""
    from safetensors.torch import save_file

    shutil.copytree(folder, out, ignore=shutil.ignore_patterns("model.json"))
    spec = json.loads((folder / "model.json").read_text())
    tensors = {k: torch.tensor(t["values"], dtype=getattr(torch, t["dtype"])).reshape(t["shape"])
               for k, t in spec["tensors"].items()}  # fmt: skip
    save_file(tensors, str(out / "model.safetensors"), metadata=spec["metadata"])
    return out


@pytest.fixture
def stored_run(tmp_path):
    """``stored_run(folder)``: the fixture run ``folder``, ready to load, in a temporary copy."""
    return lambda folder: write_stored_weights(folder, tmp_path / folder.name)


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
        default="auto",
        help="device of the whole run: auto (default: CUDA where present), cpu, cuda or cuda:N",
    )


def pytest_configure(config):
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:  # a worker of pytest -n N: the cores are shared out, not oversubscribed
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(workers)))
    name = config.getoption("--device")
    if name == "cpu":  # before torch first asks for CUDA, so that nothing of this run sees it
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    elif name.startswith("cuda:"):  # the library's "auto" and "cuda" resolve to this one
        os.environ["CUDA_VISIBLE_DEVICES"] = name.split(":", 1)[1]


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device; this torch sees none")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def device(request) -> torch.device:
    """The device named by ``--device``, as the library resolves ``auto``; a CUDA device this
    torch cannot see fails the tests that ask for it rather than testing the CPU in its place."""
    name = request.config.getoption("--device")
    if name.startswith("cuda") and not torch.cuda.is_available():
        pytest.fail(f"--device {name} was given, but this torch sees no CUDA device")
    # cuda:N was made the only visible device in pytest_configure: it is cuda:0 in this process
    return resolve_device("cuda" if name.startswith("cuda") else name)


@pytest.fixture
def meta_guard() -> MetaGuard:
    """A fresh :class:`device_guard.MetaGuard`: ``with meta_guard: ...`` fails on the first
    operation that meets a model on ``meta`` with a stray CPU tensor."""
    return MetaGuard()


def pytest_sessionfinish(session):
    if hasattr(session.config, "workeroutput"):  # a worker of pytest -n N: counts go up
        session.config.workeroutput["reliability"] = dict(RELIABILITY)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """pytest-xdist's controller: add each worker's reliability counts to this run's."""
    RELIABILITY.update(getattr(node, "workeroutput", {}).get("reliability", {}))


def pytest_terminal_summary(terminalreporter):
    if RELIABILITY:
        terminalreporter.section("reliability")
        for name, count in sorted(RELIABILITY.items()):
            terminalreporter.write_line(f"{name}: {count}")

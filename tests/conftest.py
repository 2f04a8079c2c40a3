"""Shared test fixtures, and the reliability counts printed at the end of the test run."""

import os
from collections import Counter

import pytest

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


def pytest_terminal_summary(terminalreporter):
    if RELIABILITY:
        terminalreporter.section("reliability")
        for name, count in sorted(RELIABILITY.items()):
            terminalreporter.write_line(f"{name}: {count}")

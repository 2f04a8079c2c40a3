"""Shared test fixtures, and the reliability counts printed at the end of the test run."""

from collections import Counter

import pytest

RELIABILITY: Counter = Counter()


@pytest.fixture
def reliability() -> Counter:
    """Counts of inputs tried, faults injected and runs resumed, summed over the whole run."""
    return RELIABILITY


def pytest_terminal_summary(terminalreporter):
    if RELIABILITY:
        terminalreporter.section("reliability")
        for name, count in sorted(RELIABILITY.items()):
            terminalreporter.write_line(f"{name}: {count}")

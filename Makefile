# The two commands of the README, and a few more for contributors.
VENV ?= .venv
PY := $(VENV)/bin/python
OUT ?= demo-output

.PHONY: setup setup-run demo test test-slow test-all lint bench clean

# everything, test tools included
setup:
	@bash scripts/setup.sh test

# what the commands need, without the test tools (the gallery needs neither pytest nor ruff)
setup-run:
	@bash scripts/setup.sh ""

demo: setup-run
	$(VENV)/bin/pushforward demo --out $(OUT)

test: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(PY) -m pytest -q -m "not slow" -n auto

# the tests marked slow (multi-process runs, kills, the quick gallery, quality runs): CI runs them
test-slow: setup
	$(PY) -m pytest -q -m slow

test-all: test test-slow

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache

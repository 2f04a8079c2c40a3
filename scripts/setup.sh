#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment in .venv and install pushforward into it.
#
# Installer: uv, installed into the environment by pip, then installs the packages: it takes
# seconds where pip takes a minute (BENCHMARKS.md, "the set-up"). Where uv cannot be had (no
# index, or a pip older than 22.3 outside the environment), pip installs everything, as before.
# PUSHFORWARD_INSTALLER=pip chooses pip.
#
# torch: where a local CPU build of torch 2.13.0 is on pip's find-links (as on the project's
# development and CI machines), pip installs it from there first, offline, so that nothing pulls
# a multi-GB CUDA build. Elsewhere that step finds nothing and torch>=2.2 is resolved from the
# user's own index, so any torch at or above the minimum works (install your own first to choose
# a CUDA or ROCm build).
#
# Byte code: uv installs without compiling, and the set-up then compiles what the commands import
# (scripts/compile_imports.py), about a third of the environment's files; compiling every file
# takes twice as long, and nothing compiled at all costs each new process seconds where
# PYTHONDONTWRITEBYTECODE is set. With the test tools it compiles everything, as pip would: the
# tests reach further into torch than the commands.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${PUSHFORWARD_VENV:-.venv}
PY=${PYTHON:-python3}
EXTRAS=${1-test}  # "" installs what the commands need; "test" adds the test tools
INSTALLER=${PUSHFORWARD_INSTALLER:-uv}
UV_MIN="uv>=0.13"

stamp="$VENV/.pushforward-installed"
sum="$(cat pyproject.toml scripts/setup.sh scripts/compile_imports.py | cksum)"
want="$sum-$EXTRAS"
have="$(cat "$stamp" 2>/dev/null || true)"
# nothing to do when the same files were installed with these extras, or with the test extras
# (a superset) when none are asked for
if [ -x "$VENV/bin/python" ] && { [ "$have" = "$want" ] || { [ -z "$EXTRAS" ] && [ "$have" = "$sum-test" ]; }; }; then
    exit 0
fi

quiet() { "$@" 2> >(grep -v "^WARNING: Location" >&2); }

if [ ! -x "$VENV/bin/python" ]; then
    if [ "$INSTALLER" = uv ]; then
        "$PY" -m venv --without-pip "$VENV"  # pip goes in with the packages, below (7 s sooner)
    else
        "$PY" -m venv "$VENV"
    fi
fi
# pip: the environment's own when it has one, else the host's, pointed at the environment
# (pip >= 22.3), else one put into the environment now
if "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
    pip=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
elif "$PY" -m pip --python "$VENV/bin/python" --version >/dev/null 2>&1; then
    pip=("$PY" -m pip --python "$VENV/bin/python" --disable-pip-version-check -q)
else
    "$VENV/bin/python" -m ensurepip --default-pip >/dev/null 2>&1
    pip=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
fi

uv=""
if [ "$INSTALLER" = uv ]; then
    if [ -x "$VENV/bin/uv" ] || quiet "${pip[@]}" install "$UV_MIN" >/dev/null; then
        uv="$VENV/bin/uv"
    else
        echo "setup: could not install uv; pip installs everything"
    fi
fi

if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
    compile=()
    [ -n "$uv" ] && compile=(--no-compile)  # compiled below, with the rest of what is imported
    "${pip[@]}" install --no-index --no-deps ${compile[@]+"${compile[@]}"} "torch==2.13.0" >/dev/null 2>&1 \
        && echo "setup: installed the local CPU build of torch" \
        || echo "setup: no local torch build found; torch>=2.2 comes from the index"
fi

target=".${EXTRAS:+[$EXTRAS]}"
# uv leaves pip out of an environment; it goes in, so that `pip install` in .venv works as before
if [ -n "$uv" ] && "$uv" pip install -q --python "$VENV/bin/python" -e "$target" pip; then
    all=()
    [ -n "$EXTRAS" ] && all=(--all)  # the tests reach further than the commands: compile it all
    env -u PYTHONDONTWRITEBYTECODE "$VENV/bin/python" scripts/compile_imports.py ${all[@]+"${all[@]}"}
else
    [ -n "$uv" ] && echo "setup: uv failed; pip installs the rest"
    "$VENV/bin/python" -m pip --version >/dev/null 2>&1 \
        || "$VENV/bin/python" -m ensurepip --default-pip >/dev/null 2>&1
    quiet "$VENV/bin/python" -m pip --disable-pip-version-check -q install -e "$target"
fi
echo "$want" > "$stamp"
echo "setup: ready in $VENV ($("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)'))"

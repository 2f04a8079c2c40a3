#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment in .venv and install pushforward into it.
#
# Installer: uv, installed into the environment by pip, then installs the packages: it takes
# seconds where pip takes a minute (BENCHMARKS.md, "the set-up"). It is given pip's own index
# settings (scripts/pip_indexes.py: mirrors, extra indexes, local wheels, constraints, the
# certificate bundle). Where uv cannot be had or fails, pip installs everything, as before;
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
sum="$(cat pyproject.toml scripts/setup.sh scripts/compile_imports.py scripts/pip_indexes.py | cksum)"
want="$sum-$EXTRAS"
have="$(cat "$stamp" 2>/dev/null || true)"
runs() { "$VENV/bin/python" -c "" >/dev/null 2>&1; }
# nothing to do when the same files were installed with these extras, or with the test extras
# (a superset) when none are asked for
if runs && { [ "$have" = "$want" ] || { [ -z "$EXTRAS" ] && [ "$have" = "$sum-test" ]; }; }; then
    exit 0
fi

quiet() { "$@" 2> >(grep -v "^WARNING: Location" >&2); }

if ! runs; then
    # a new environment, or one whose interpreter is gone (its Python was upgraded or removed)
    [ -e "$VENV" ] && echo "setup: $VENV does not run; making it anew"
    if [ "$INSTALLER" = uv ]; then
        "$PY" -m venv --clear --without-pip "$VENV"  # pip goes in with the packages (7 s sooner)
    else
        "$PY" -m venv --clear "$VENV"
    fi
fi
# pip: the environment's own when it has one, else the host's, pointed at the environment
# (pip >= 22.3), else one put into the environment now
if "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
    pip=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
elif "$PY" -m pip --python "$VENV/bin/python" --version >/dev/null 2>&1; then
    pip=("$PY" -m pip --python "$VENV/bin/python" --disable-pip-version-check -q)
elif "$VENV/bin/python" -m ensurepip --default-pip >/dev/null; then
    pip=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
else
    echo "setup: no pip for $VENV: the host's pip is older than 22.3 and ensurepip failed" >&2
    exit 1
fi

uv=""
if [ "$INSTALLER" = uv ]; then
    if quiet "${pip[@]}" install "$UV_MIN" >/dev/null; then
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
if [ -n "$uv" ]; then
    # pip's index settings (its configuration files and PIP_* variables), passed on to uv
    uv_args=()
    while IFS= read -r arg; do
        case "$arg" in
            "") ;;
            SSL_CERT_FILE=*) [ -z "${SSL_CERT_FILE:-}" ] && export "$arg" ;;
            *) uv_args+=("$arg") ;;
        esac
    done < <("$PY" scripts/pip_indexes.py)
    # uv leaves pip out of an environment; it goes in, so that `pip install` in .venv works
    if ! "$uv" pip install -q --python "$VENV/bin/python" ${uv_args[@]+"${uv_args[@]}"} \
            -e "$target" pip; then
        echo "setup: uv failed; pip installs the rest"
        quiet "${pip[@]}" install -e "$target"
    fi
    all=()
    [ -n "$EXTRAS" ] && all=(--all)  # the tests reach further than the commands: compile it all
    env -u PYTHONDONTWRITEBYTECODE "$VENV/bin/python" scripts/compile_imports.py ${all[@]+"${all[@]}"}
else
    quiet "${pip[@]}" install -e "$target"
fi
version="$("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)')"
echo "$want" > "$stamp"
echo "setup: ready in $VENV ($version)"

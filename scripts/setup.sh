#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment in .venv and install pushforward into it.
#
# torch: where a local CPU build of torch 2.13.0 is on pip's find-links (as on the project's
# development and CI machines), it is installed from there first, offline, so that pip never pulls
# a multi-GB CUDA build. Elsewhere that step finds nothing and pip resolves "torch>=2.2" from the
# user's own index, so any torch at or above the minimum works (install your own first to choose
# a CUDA or ROCm build).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${PUSHFORWARD_VENV:-.venv}
PY=${PYTHON:-python3}
EXTRAS=${1:-test}

if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
pip=("$VENV/bin/python" -m pip --disable-pip-version-check -q)

stamp="$VENV/.pushforward-installed"
want="$(cat pyproject.toml scripts/setup.sh | cksum)-$EXTRAS"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi

if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
    "${pip[@]}" install --no-index --no-deps "torch==2.13.0" >/dev/null 2>&1 \
        && echo "setup: installed the local CPU build of torch" \
        || echo "setup: no local torch build found; pip will resolve torch>=2.2"
fi
"${pip[@]}" install -e ".[$EXTRAS]" 2> >(grep -v "^WARNING: Location" >&2)
echo "$want" > "$stamp"
echo "setup: ready in $VENV ($("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)'))"

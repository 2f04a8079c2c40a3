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
EXTRAS=${1-test}  # "" installs what the commands need; "test" adds the test tools

if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
pip=("$VENV/bin/python" -m pip --disable-pip-version-check -q)

stamp="$VENV/.pushforward-installed"
sum="$(cat pyproject.toml scripts/setup.sh | cksum)"
want="$sum-$EXTRAS"
have="$(cat "$stamp" 2>/dev/null || true)"
# nothing to do when the same files were installed with these extras, or with the test extras
# (a superset) when none are asked for
if [ "$have" = "$want" ] || { [ -z "$EXTRAS" ] && [ "$have" = "$sum-test" ]; }; then
    exit 0
fi

if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
    "${pip[@]}" install --no-index --no-deps "torch==2.13.0" >/dev/null 2>&1 \
        && echo "setup: installed the local CPU build of torch" \
        || echo "setup: no local torch build found; pip will resolve torch>=2.2"
fi
"${pip[@]}" install -e ".${EXTRAS:+[$EXTRAS]}" 2> >(grep -v "^WARNING: Location" >&2)
echo "$want" > "$stamp"
echo "setup: ready in $VENV ($("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)'))"

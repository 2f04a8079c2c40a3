#!/usr/bin/env bash
# Every check that needs a CUDA GPU, in one run (about 9 minutes on one H100 or H200), for a
# machine where the project's dependencies are importable by $PYTHON (default python3; the
# package itself is read from src/). Prints the device, then each part's table:
#
#   1. the device-aware tests on CUDA: training, the models' template, flow matching's solvers,
#      the stack of seeds, the explorer (pytest --device cuda; the slow ones left out);
#   2. benchmarks/gpu.py: the MNIST protocol against the classic loop, flow and flow matching
#      against 2 CPU threads, the conv GAN against the plain DCGAN loop, the gallery's time;
#   3. benchmarks/seeds.py on CUDA: ten seeds stacked against ten runs one by one.
#
#   bash benchmarks/gpu_check.sh [ROUNDS]      # ROUNDS alternations of each benchmark (default 2)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
ROUNDS=${1:-2}
"$PY" - <<'PY' || exit 1
import importlib.util
import sys

import torch

missing = [m for m in ("zuko", "ot", "torchdiffeq", "safetensors", "tqdm", "matplotlib", "PIL")
           if importlib.util.find_spec(m) is None]
if missing:  # (ot is POT's import name, PIL Pillow's)
    sys.exit(f"missing Python packages: {', '.join(missing)}; install them (or their wheels) first")
assert torch.cuda.is_available(), "no CUDA device: nothing to check"
print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
PY
status=0
"$PY" -m pytest -q -x -p no:cacheprovider --device cuda -m "not slow" tests/train \
    tests/models/test_models.py tests/models/test_fm.py tests/explore || status=1
"$PY" benchmarks/gpu.py --device cuda --rounds "$ROUNDS" || status=1
"$PY" benchmarks/seeds.py --device cuda --epochs 3 --rounds "$ROUNDS" --models vae fm ae || status=1
exit $status

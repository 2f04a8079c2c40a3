"""The package's architecture, checked: each layer imports only from the layers below it, no model
imports a sibling model, every package imports on its own (no import cycle), and no module or
function outgrows the size the style guide allows."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "pushforward"

LAYERS = [
    ["core"],
    ["data"],
    ["measures"],
    ["nets"],
    ["train"],
    ["metrics"],
    ["models"],
    ["runs"],
    ["pages"],
    ["gallery", "explore"],
    ["cli", "__init__", "__main__"],
]
"""Bottom to top; a module may import from its own layer's package and from any layer below."""

RANK = {name: i for i, names in enumerate(LAYERS) for name in names}
PACKAGES = sorted(p.name for p in SRC.iterdir() if (p / "__init__.py").exists())
MODULES = sorted(SRC.rglob("*.py"))


def _top(path: Path) -> str:
    """The layer name of a module: its top-level package under pushforward, or its stem."""
    rel = path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, dotted module) of every pushforward import in a module, lazy ones included."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "pushforward":
                out += [(node.lineno, f"pushforward.{a.name}") for a in node.names]
            elif node.module.startswith("pushforward."):
                out.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("pushforward.")]
    return out


def test_every_package_has_a_layer():
    assert set(PACKAGES) <= set(RANK), f"give these packages a layer: {set(PACKAGES) - set(RANK)}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_a_module_imports_only_its_layer_and_the_layers_below(path):
    own = _top(path)
    bad = []
    for line, module in _imports(path):
        target = module.split(".")[1]
        if target in RANK and RANK[target] > RANK[own]:
            bad.append(f"line {line}: {module}")
    assert not bad, f"{path.relative_to(SRC)} reaches up a layer: {bad}"


@pytest.mark.parametrize(
    "path", [p for p in MODULES if _top(p) == "models"], ids=lambda p: str(p.relative_to(SRC))
)
def test_no_model_imports_a_sibling_model(path):
    rel = path.relative_to(SRC / "models")
    family = rel.parts[0] if len(rel.parts) > 1 else rel.stem
    if family in ("registry", "__init__"):
        return
    siblings = []
    for line, module in _imports(path):
        parts = module.split(".")
        if parts[1] == "models" and len(parts) > 2 and parts[2] != family:
            siblings.append(f"line {line}: {module}")
    assert not siblings, f"models/{rel} imports another model: {siblings}"


# One interpreter imports torch (which every package imports first, and which loads none of
# LOADED_WHEN_USED), then forks a child per package that imports that package first: an import
# cycle through a package, or a heavy module it loads, shows in its child as in a fresh
# interpreter, for a tenth of the cost of 13 interpreters that each import torch (about 4 s each
# on a 2-core AMD EPYC with AVX2). Where there is no fork, each package gets its own interpreter.
_PROBE = """
import json, os, sys, traceback
heavy, packages = {heavy!r}, {packages!r}
os.environ["EAGER_IMPORT"] = "1"  # the lazy packages (lazy_loader) resolve every name at import
out = {{}}
if hasattr(os, "fork"):
    import torch
    out["preloaded"] = [m for m in heavy if m in sys.modules]
for package in packages:
    if not hasattr(os, "fork"):
        out[package] = None
        continue
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            __import__("pushforward." + package)
            msg = {{"error": None, "loaded": [m for m in heavy if m in sys.modules]}}
        except BaseException:
            msg = {{"error": traceback.format_exc()[-2000:], "loaded": []}}
        os.write(w, json.dumps(msg).encode())
        os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 1 << 16):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    out[package] = json.loads(data)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def imported_alone() -> dict:
    """{package: {'error', 'loaded'} or None (no fork here)} for every package imported first."""
    code = _PROBE.format(heavy=LOADED_WHEN_USED, packages=PACKAGES)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out.get("preloaded", []) == [], "importing torch loaded a module the check looks for"
    return out


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_imports_on_its_own(package, imported_alone):
    """An interpreter imports the package first: an import cycle through it fails here. Nor
    does it load what only some commands need (:data:`LOADED_WHEN_USED`)."""
    result = imported_alone[package]
    if result is None:  # no fork: a fresh interpreter of its own
        heavy = ", ".join(repr(m) for m in LOADED_WHEN_USED)
        code = (f"import sys, pushforward.{package}; "
                f"print(*[m for m in ({heavy},) if m in sys.modules])")  # fmt: skip
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=120, env={**os.environ, "EAGER_IMPORT": "1"})  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        result = {"error": None, "loaded": done.stdout.split()}
    assert result["error"] is None, result["error"]
    assert result["loaded"] == [], f"importing pushforward.{package} loads {result['loaded']}"


LOADED_WHEN_USED = ("torch._dynamo", "torchdiffeq", "scipy", "ot", "sklearn", "matplotlib")
"""Modules that every process would pay for at start-up: the compiler (over a second, only a
compiled step needs it: ``train.outside_graph``), the ODE solver and SciPy (0.3–0.5 s, only a
solve or an OT pairing needs them), POT (about 2 s, the exact W₁), scikit-learn (0.7–0.8 s, only
the ``gmm`` prior's fit needs it; the 8×8 digits are read without it), matplotlib (about 0.45
s, only a figure needs it: ``runs.plots``)."""


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_no_module_is_over_500_lines(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= 500, f"{path.relative_to(SRC)} has {lines} lines"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_no_function_is_over_80_lines(path):
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > 80
    ]
    assert not long, f"{path.relative_to(SRC)}: {long}"

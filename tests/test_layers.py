"""The package's architecture, checked: each layer imports only from the layers below it, no model
imports a sibling model, every package imports on its own (no import cycle), and no module or
function outgrows the size the style guide allows."""

import ast
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


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_imports_on_its_own(package):
    """A fresh interpreter imports the package first: an import cycle through it fails here.
    Nor does it load what only some commands need (:data:`LOADED_WHEN_USED`)."""
    heavy = ", ".join(repr(m) for m in LOADED_WHEN_USED)
    code = (f"import sys, pushforward.{package}; "
            f"print(*[m for m in ({heavy},) if m in sys.modules])")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [], f"importing pushforward.{package} loads {done.stdout}"


LOADED_WHEN_USED = ("torch._dynamo", "torchdiffeq", "scipy", "ot", "sklearn")
"""Modules that every process would pay for at start-up: the compiler (over a second, only a
compiled step needs it: ``train.outside_graph``), the ODE solver and SciPy (0.3–0.5 s, only a
solve or an OT pairing needs them), POT (about 2 s, the exact W₁), scikit-learn (0.7–0.8 s, only
the ``gmm`` prior's fit needs it; the 8×8 digits are read without it)."""


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

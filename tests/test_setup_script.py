"""The set-up script: what it compiles after an install that compiled nothing
(scripts/compile_imports.py) covers every module the commands import, lazy ones included."""

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "pushforward"


def _load(name: str):
    """The set-up's helper script scripts/NAME.py, imported as a module."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _function_level_imports() -> dict[str, str]:
    """Third-party modules imported inside a function anywhere in the package → one place."""
    found = {}
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for sub in ast.walk(node):
                names = []
                if isinstance(sub, ast.Import):
                    names = [a.name for a in sub.names]
                elif isinstance(sub, ast.ImportFrom) and sub.level == 0 and sub.module:
                    names = [sub.module]
                for name in names:
                    top = name.split(".")[0]
                    if top != "pushforward" and top not in sys.stdlib_module_names:
                        found.setdefault(name, f"{path.relative_to(SRC)}:{sub.lineno}")
    return found


def test_every_lazy_third_party_import_is_compiled_by_the_set_up():
    lazy = _load("compile_imports").LAZY
    found = _function_level_imports()
    assert {"ot", "scipy.optimize", "torchdiffeq"} <= set(found)  # the scan sees them
    missing = {
        name: where
        for name, where in found.items()
        if not any(entry == name or entry.startswith(name + ".") for entry in lazy)
    }
    assert not missing, f"add these to LAZY in scripts/compile_imports.py: {missing}"


def test_the_list_names_every_own_module_but_the_entry_point():
    names = _load("compile_imports").modules()
    own = [n for n in names if n.startswith("pushforward.")]
    files = [p for p in SRC.rglob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    assert len(own) >= len(files)
    assert "pushforward.gallery.demo" in own and "pushforward.cli.commands" in own
    assert not any(n.endswith("__main__") for n in names)


def test_a_module_that_fails_to_import_stops_the_set_up(monkeypatch):
    script = _load("compile_imports")
    monkeypatch.setattr(script, "LAZY", ("no_such_module_anywhere",))
    monkeypatch.setattr(script, "modules", lambda: list(script.LAZY))
    with pytest.raises(ImportError):
        script.main([])
    monkeypatch.setattr(script, "OPTIONAL", {"no_such_module_anywhere"})
    assert script.main([]) == 0  # an optional one is passed over


def test_the_set_up_script_parses():
    done = subprocess.run(["bash", "-n", str(ROOT / "scripts" / "setup.sh")], capture_output=True,
                          text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_pips_index_settings_become_uvs_arguments():
    listing = "\n".join([
        ":env:.find-links='/wheels'",
        "global.find-links='/wheels'",  # the same place twice: passed once
        "global.extra-index-url='file:///a/simple file:///b/simple'",
        "global.constraint='/etc/c.txt'",
        "global.cert='/etc/ca.crt'",
        "global.timeout='60'",  # not an index setting
        "freeze.find-links='/elsewhere'",  # not a setting of pip install
    ])  # fmt: skip
    assert _load("pip_indexes").uv_arguments(listing) == [
        "--find-links", "/wheels",
        "--extra-index-url", "file:///a/simple",
        "--extra-index-url", "file:///b/simple",
        "--constraint", "/etc/c.txt",
        "--index-strategy", "unsafe-best-match",
        "SSL_CERT_FILE=/etc/ca.crt",
    ]  # fmt: skip
    assert _load("pip_indexes").uv_arguments("") == []

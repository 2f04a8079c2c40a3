"""The command's top level: ``--help``, ``--version`` and a call that names no command are answered
without importing torch, as the parser of every command answers them; the lazy packages export
what their stubs name."""

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from pushforward.cli import build_parser, main

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.mark.parametrize(
    "argv",
    [["--version"], ["--help"], ["-h"], [], ["-v"], ["--bogus"], ["-v", "--help"], ["--", "-x"]],
    ids=repr,
)
def test_the_top_level_answers_as_the_parser_of_every_command(argv, capsys):
    with pytest.raises(SystemExit) as light:
        main(argv)
    light_out = capsys.readouterr()
    with pytest.raises(SystemExit) as full:
        build_parser().parse_args(argv)
    full_out = capsys.readouterr()
    assert light.value.code == full.value.code
    assert (light_out.out, light_out.err) == (full_out.out, full_out.err)
    assert light_out.out or light_out.err


PROBE = """
import atexit, runpy, sys
loaded = lambda: [m for m in ("pushforward.cli.top", "torch") if m in sys.modules]
atexit.register(lambda: print("loaded:", *loaded(), file=sys.stderr))
runpy.run_module("pushforward", run_name="__main__")
"""


@pytest.mark.parametrize("argv", [["--version"], ["--help"], []], ids=repr)
def test_the_top_level_imports_no_torch(argv):
    """``python -m pushforward ARGV`` in a fresh interpreter, as a user runs it, does not load
    torch (2 s or more); the modules loaded are read at exit."""
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == (2 if not argv else 0), done.stderr[-2000:]
    assert done.stderr.splitlines()[-1] == "loaded: pushforward.cli.top"


def test_a_named_command_still_gets_its_own_arguments(capsys):
    assert main(["dice", "--sides", "2"]) == 0
    assert "Pr[Y =  3] = 1/2" in capsys.readouterr().out
    with pytest.raises(SystemExit) as refused:
        main(["dice", "--sides", "0"])
    assert refused.value.code == 2
    assert "--sides: must be > 0" in capsys.readouterr().err


@pytest.mark.parametrize("package", ["pushforward", "pushforward.core", "pushforward.cli"])
def test_a_lazy_package_exports_exactly_what_its_stub_names(package):
    module = importlib.import_module(package)
    stub = ast.parse(SRC.joinpath(*package.split("."), "__init__.pyi").read_text("utf-8"))
    listed = next(ast.literal_eval(node.value) for node in stub.body
                  if isinstance(node, ast.Assign) and node.targets[0].id == "__all__")  # fmt: skip
    assert sorted(module.__all__) == sorted(listed)
    assert set(dir(module)) >= set(module.__all__)
    for name in module.__all__:
        value = getattr(module, name)
        assert value is not None
        assert not isinstance(value, type(sys)), f"{package}.{name} is a module, not the export"
    with pytest.raises(AttributeError):
        module.no_such_name  # noqa: B018


def test_the_stubs_are_package_data():
    """A non-editable install copies only the package data pyproject.toml declares."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib
    import fnmatch

    pyproject = SRC.parent / "pyproject.toml"
    declared = tomllib.loads(pyproject.read_text())["tool"]["setuptools"]["package-data"]
    for stub in (SRC / "pushforward").rglob("*.pyi"):
        package = ".".join(stub.parent.relative_to(SRC).parts)
        patterns = [*declared.get("*", []), *declared.get(package, [])]
        assert any(fnmatch.fnmatch(stub.name, g) for g in patterns), stub

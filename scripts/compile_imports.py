"""Compile to byte code, once, every module that pushforward's commands import (or, with
``--all``, every file of the environment): run by ``setup.sh`` after an install that compiled
nothing.

Importing a module writes its byte code beside it, so importing everything the commands can import
compiles exactly that: a third of the environment's files, in about half the time compiling all of
them takes (BENCHMARKS.md, "the set-up"). Without it, a host that sets ``PYTHONDONTWRITEBYTECODE``
would compile the same modules again in every new process. ``setup.sh`` runs this with that
variable unset.

Usage: ``python scripts/compile_imports.py [--all]``
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

LAZY = (
    "PIL.Image",
    "matplotlib.backends.backend_agg",
    "matplotlib.figure",
    "numpy",
    "ot",
    "pooch",
    "scipy.optimize",
    "sklearn.datasets",
    "sklearn.mixture",
    "tomli",  # Python 3.10 only: 3.11 reads TOML with tomllib
    "torch._dynamo",  # torch.optim's first optimiser imports it
    "torch.nn.parallel",
    "torch.utils.tensorboard",
    "torchdiffeq",
    "tqdm",
)
"""Third-party modules that pushforward imports inside functions, when first needed (a test keeps
this list complete)."""

OPTIONAL = {"tomli", "torch.utils.tensorboard"}
"""Modules that may be absent: a backport this Python does not need, an extra not installed."""


def modules() -> list[str]:
    """The names to import: every pushforward module, then :data:`LAZY`."""
    import pushforward

    own = [
        info.name
        for info in pkgutil.walk_packages(pushforward.__path__, "pushforward.")
        if not info.name.endswith("__main__")  # running it would start the command line
    ]
    return [*own, *LAZY]


def compile_all() -> None:
    """Compile every file of the environment, as pip does when it installs: the tests start many
    processes that reach far into torch (the compiler, the distributed engine) and the test tools;
    on the slow host the fast suite took 27 CPU s more with only the commands' modules compiled."""
    import compileall
    import sysconfig

    import pushforward

    paths = [sysconfig.get_path(key) for key in ("purelib", "platlib")]
    for path in dict.fromkeys([*paths, *pushforward.__path__]):  # an editable install's source too
        # quiet=2: a file that fails to compile stays source, as when pip compiles
        compileall.compile_dir(path, quiet=2, workers=0)


def main(argv: list[str]) -> int:
    if "--all" in argv:
        compile_all()
        return 0
    for name in modules():
        try:
            importlib.import_module(name)
        except Exception:  # an optional extra may be absent, or present but broken
            if name not in OPTIONAL:
                raise
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

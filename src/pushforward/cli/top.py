"""The ``pushforward`` command's top level: its commands, its own flags and :func:`main`.

``pushforward --help``, ``--version`` and a call that names no command are answered here, without
importing torch; a named command goes to :mod:`pushforward.cli.parser`, whose flags come from the
models' settings.
"""

from __future__ import annotations

import argparse
import sys
import typing
from collections.abc import Sequence
from typing import Any

from pushforward.core.version import __version__

__all__ = ["COMMANDS", "EXIT_INTERRUPTED", "EXIT_USER_ERROR", "Parser", "main", "top_parser"]

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130

COMMANDS: dict[str, str] = {
    "demo": "regenerate the lecture's gallery into one HTML report",
    "data": "describe a data set and optionally draw it",
    "example": "sample a built-in univariate pushforward and draw it",
    "fit": "fit a model to data and write a run folder",
    "encode": "latent codes of data under a run's model",
    "sample": "draw samples of a run's generative model g#μ",
    "evaluate": "likelihoods, errors and sample quality (with real-vs-real floors)",
    "explore": "one offline HTML page: walk the latent space, scrub training",
    "decode": "decode latent codes with a run's model",
    "dice": "the exact pmf of the sum of two fair dice",
}
"""Each command and its line in ``pushforward --help``, in the order shown."""


class Parser(argparse.ArgumentParser):
    """An argument parser whose refusals are one ``pushforward: error:`` line and exit 2."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(EXIT_USER_ERROR, f"pushforward: error: {message} (see {self.prog} --help)\n")


def top_parser() -> tuple[Parser, Any]:
    """Return the command's parser with its own flags, and its group of commands (empty)."""
    parser = Parser(
        prog="pushforward",
        description="Deep generative networks as pushforwards g#μ: sample, fit, measure, see.",
    )
    parser.add_argument("--version", action="version", version=f"pushforward {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    return parser, sub


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if all(a.startswith("-") for a in args):
        # no command named: --help, --version or a mistake, which the top level answers and
        # exits on (the commands' own arguments are not needed to tell them apart)
        parser, sub = top_parser()
        for name, help_ in COMMANDS.items():
            sub.add_parser(name, help=help_)
        parser.parse_args(args)
    from pushforward.cli.parser import run

    return run(args)

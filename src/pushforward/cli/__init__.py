"""The ``pushforward`` command: each subcommand parses its arguments, makes one library call and
writes files. User mistakes end with one ``pushforward: error: ...`` line and exit status 2.

The flags of ``fit`` are generated from the settings of the training loop and of every registered
model (:mod:`pushforward.cli.flags`).
"""

from pushforward.cli.flags import SettingFlag, setting_flags
from pushforward.cli.parser import EXIT_INTERRUPTED, EXIT_USER_ERROR, build_parser, main
from pushforward.cli.progress import BarProgress

__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_USER_ERROR",
    "BarProgress",
    "SettingFlag",
    "build_parser",
    "main",
    "setting_flags",
]

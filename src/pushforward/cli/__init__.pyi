"""The names :mod:`pushforward.cli` exports, imported on first use (``__init__.py``)."""

from .flags import SettingFlag, setting_flags
from .parser import build_parser
from .progress import BarProgress
from .top import EXIT_INTERRUPTED, EXIT_USER_ERROR, main

__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_USER_ERROR",
    "BarProgress",
    "SettingFlag",
    "build_parser",
    "main",
    "setting_flags",
]

"""The core layer: errors, validation, the Model contract, settings, file I/O. Imports nothing else
of pushforward."""

import lazy_loader

# the names of __init__.pyi, each imported when first used (SPEC 1, scientific Python's lazy
# loading): ``pushforward --version`` and ``--help`` need no torch, and nothing else changes
__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)

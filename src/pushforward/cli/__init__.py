"""The ``pushforward`` command: each subcommand parses its arguments, makes one library call and
writes files. User mistakes end with one ``pushforward: error: ...`` line and exit status 2.

The flags of ``fit`` are generated from the settings of the training loop and of every registered
model (:mod:`pushforward.cli.flags`).
"""

import lazy_loader

# the names of __init__.pyi, each imported when first used (SPEC 1, scientific Python's lazy
# loading): ``pushforward --version`` and ``--help`` need no torch, and nothing else changes
__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)

"""pushforward: deep generative networks as pushforwards g#μ.

The public API, in one place::

    from pushforward import Pushforward, StandardNormal, VAE, fit_run, load_model, load_data

Models share one contract (:class:`Model`): ``sample``, ``decode``, and ``encode`` or an exact
``log_prob`` where they have one, declared by ``has_encoder`` and ``has_exact_density``. The
registry :data:`MODELS` names every model family ``pushforward fit`` knows.
"""

import lazy_loader

# the names of __init__.pyi, each imported when first used (SPEC 1, scientific Python's lazy
# loading): ``pushforward --version`` and ``--help`` need no torch, and nothing else changes
__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)

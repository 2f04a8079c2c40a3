"""The registry of model families: the one place a new model is added.

Each entry is a :class:`~pushforward.contract.ModelSpec` that the model's own module defines
beside the model: its class, its settings dataclass (from which ``pushforward fit NAME`` makes its
flags) and the training settings it was benchmarked with. Adding a model is one module and one
line here; the shared test template (``tests/test_models.py``) picks it up.
"""

from __future__ import annotations

from pushforward.core import ModelSpec
from pushforward.models import autoencoder, flow, pca
from pushforward.models.fm import model as fm
from pushforward.models.gan import model as gan
from pushforward.models.vae import model as vae

__all__ = ["MODELS"]

MODELS: dict[str, ModelSpec] = {
    "pca": pca.PCA_SPEC,
    "ppca": pca.PPCA_SPEC,
    "ae": autoencoder.SPEC,
    "vae": vae.SPEC,
    "gan": gan.SPEC,
    "flow": flow.SPEC,
    "fm": fm.SPEC,
}

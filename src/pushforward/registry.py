"""The registry of model families: the one place a new model is added.

Each entry is a :class:`~pushforward.contract.ModelSpec` that the model's own module defines
beside the model: its class, its settings dataclass (from which ``pushforward fit NAME`` makes its
flags) and the training settings it was benchmarked with. Adding a model is one module and one
line here; the shared test template (``tests/test_models.py``) picks it up.
"""

from __future__ import annotations

from pushforward import autoencoder, flow, fm, gan, pca, vae
from pushforward.contract import ModelSpec

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

"""A small digit classifier whose features measure image samples (a Fréchet distance for digits).

The Fréchet Inception Distance needs a network pre-trained on natural images, which means a
download. For digits the project trains its own: an MLP classifier, trained deterministically
(fixed seed, full determinism on the CPU) on a training split, cached on disk by a hash of its
training data and settings, and reported with its held-out accuracy. Its penultimate activations
(B, 128) are the feature space in which :func:`pushforward.metrics.frechet_distance_from_samples`
compares real and generated images.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pushforward.checkpoint import load_state_checked, load_tensors, save_tensors
from pushforward.errors import CheckpointError, ConfigError
from pushforward.nets import MLP
from pushforward.train import Trainable, TrainConfig, fit, seeded
from pushforward.validate import check_rows

__all__ = ["DigitClassifier", "FeatureNet", "digit_features", "feature_cache_dir"]

log = logging.getLogger(__name__)

SETTINGS = {"hidden": [256, 128], "epochs": 40, "batch_size": 128, "lr": 1e-3, "seed": 0}


class DigitClassifier(Trainable):
    """An MLP (B, d) → logits (B, classes); :meth:`features` is its last hidden layer (B, 128)."""

    def __init__(self, dim: int, classes: int = 10, hidden: list[int] | None = None):
        super().__init__()
        self.dim, self.classes = dim, classes
        self.hidden = list(hidden or SETTINGS["hidden"])
        self.body = MLP(dim, self.hidden[:-1], self.hidden[-1])
        self.head = nn.Linear(self.hidden[-1], classes)

    def get_config(self) -> dict[str, Any]:
        return {"dim": self.dim, "classes": self.classes, "hidden": self.hidden}

    def features(self, x: Tensor) -> Tensor:
        """Return the penultimate activations relu(body(x)), shape (B, hidden[-1])."""
        return F.relu(self.body(x))

    def forward(self, x: Tensor) -> Tensor:
        """Return class logits, shape (B, classes)."""
        return self.head(self.features(x))

    def loss(self, x: Tensor, *, generator=None, epoch=None) -> dict[str, Tensor]:
        # rows carry their label in the last column, so the shared loop can shuffle them together
        logits = self(x[:, :-1])
        return {"loss": F.cross_entropy(logits, x[:, -1].long())}


@dataclass(frozen=True)
class FeatureNet:
    """A trained :class:`DigitClassifier` with its held-out accuracy and where it came from."""

    model: DigitClassifier
    accuracy: float
    key: str

    @torch.no_grad()
    def __call__(self, x: Tensor) -> Tensor:
        """Return the features (n, 128) of images x (n, d), in batches."""
        check_rows(x, "images", dim=self.model.dim)
        return torch.cat([self.model.features(b.float()) for b in x.split(4096)])


def feature_cache_dir() -> Path:
    """Return the folder of cached feature networks: ``$XDG_CACHE_HOME/pushforward/features``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pushforward" / "features"


def _key(x: Tensor, labels: Tensor) -> str:
    h = hashlib.sha256()
    h.update(x.detach().cpu().contiguous().numpy().tobytes())
    h.update(labels.detach().cpu().contiguous().numpy().tobytes())
    h.update(json.dumps(SETTINGS, sort_keys=True).encode())
    return h.hexdigest()[:24]


def digit_features(
    x_train: Tensor,
    labels_train: Tensor,
    x_test: Tensor,
    labels_test: Tensor,
    *,
    cache_dir: str | Path | None = None,
) -> FeatureNet:
    """Return the feature network for this training split, trained once and then cached.

    x (n, d) in [0, 1], labels (n,) in 0..classes−1. Training is deterministic (seeded, CPU), so
    the cache only saves time: a missing or unreadable cache file is simply rebuilt.
    """
    check_rows(x_train, "x_train")
    check_rows(x_test, "x_test", dim=x_train.shape[1])
    if labels_train.shape != (x_train.shape[0],) or labels_test.shape != (x_test.shape[0],):
        raise ConfigError("labels must have one entry per row of x_train and x_test")
    classes = int(max(labels_train.max(), labels_test.max())) + 1
    key = _key(x_train, labels_train)
    path = Path(cache_dir or feature_cache_dir()) / f"digits-{key}.safetensors"
    with seeded(SETTINGS["seed"]):
        model = DigitClassifier(x_train.shape[1], classes)
    try:
        load_state_checked(model, load_tensors(path), str(path))
        log.info("feature network loaded from %s", path)
    except CheckpointError:
        log.info("training the digit feature network (cached at %s)", path)
        rows = torch.cat([x_train.float(), labels_train.float().unsqueeze(1)], dim=1)
        cfg = TrainConfig(**{k: v for k, v in SETTINGS.items() if k != "hidden"})
        fit(model, rows, cfg)
        try:
            save_tensors(path, model.state_dict())
        except CheckpointError as e:  # an unwritable cache costs time, not correctness
            log.warning("could not cache the feature network: %s", e)
    model.eval()
    with torch.no_grad():
        accuracy = float((model(x_test.float()).argmax(1) == labels_test).float().mean())
    return FeatureNet(model, accuracy, key)

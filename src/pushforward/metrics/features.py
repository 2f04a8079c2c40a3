"""A small digit classifier whose features measure image samples (a Fréchet distance for digits).

The Fréchet Inception Distance needs a network pre-trained on natural images, which means a
download. For digits the project trains its own: a small conv classifier on square images of at
least :data:`MIN_CONV_SIDE` pixels a side (two 3×3 conv layers of 32 and 64 channels with 2×2
max-pooling, then 128 features; trained on randomly shifted copies of the digits, up to 2 pixels
each way on 28×28 images), an MLP on other rows (8×8 digits: there the conv net scored 90.9%
held out, the MLP 91%), trained deterministically (fixed seed, full determinism on the CPU) on a
training split, cached on disk by a hash of its training data and settings
(:func:`feature_key`), and reported with its held-out accuracy. The shared MNIST protocol's
classifier ships with the package (:mod:`pushforward.metrics.shipped`): where its hash checks,
it is not trained at all. Its penultimate activations (B, 128) are the feature space in which
:func:`pushforward.metrics.frechet_distance_from_samples` compares real and generated images.
On the shared MNIST protocol (8,000 digits to train, 2,000 held out) the conv classifier reaches
99.1% held-out accuracy after 20 epochs (98.9% after 12) where the MLP reached 96.1%
(BENCHMARKS.md, "Images").
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pushforward.core import CheckpointError, ConfigError, check_rows, load_tensors, save_tensors
from pushforward.metrics.shipped import read_shipped
from pushforward.nets import MLP
from pushforward.train import Trainable, TrainConfig, fit, load_state_checked, seeded

__all__ = [
    "DigitClassifier",
    "FeatureNet",
    "accuracy",
    "classifier_settings",
    "digit_features",
    "feature_cache_dir",
    "feature_key",
    "new_classifier",
    "train_classifier",
]

log = logging.getLogger(__name__)

SETTINGS = {"hidden": [256, 128], "epochs": 40, "batch_size": 128, "lr": 1e-3, "seed": 0}
"""The MLP classifier's settings (rows that are not square images)."""

CONV_SETTINGS = {
    "channels": [32, 64], "hidden": [128], "shift": 2 / 28, "epochs": 20, "batch_size": 128,
    "lr": 2e-3, "lr_schedule": "cosine", "seed": 0,
}  # fmt: skip
"""The conv classifier's settings (square images); ``shift`` is the largest random shift of a
training image, as a share of its side."""

FEATURE_BATCH = 256
"""Rows per forward pass of a classifier that scores or featurises (no training): the conv net's
first activations for 256 digits (26 MB) stay near the cores, and 2,000 MNIST digits take half
the time they take in passes of 1,024, with the same result to the last bit (BENCHMARKS.md, "the
digit classifier's passes")."""

MIN_CONV_SIDE = 16
"""The smallest side of square images that get the conv classifier."""

TRAIN_SHARE = 0.8
"""The share of a data set, its first rows, that image quality trains the classifier on (the
shared MNIST protocol: 8,000 of the 10,000 official test digits); the rest is held out."""


class DigitClassifier(Trainable):
    """A classifier (B, d) → logits (B, classes); :meth:`features` is its last hidden layer
    (B, 128). A conv net for square images of ``side`` pixels (``side`` given), else an MLP."""

    def __init__(
        self,
        dim: int,
        classes: int = 10,
        hidden: list[int] | None = None,
        side: int | None = None,
        channels: list[int] | None = None,
        shift: float = 0.0,
    ):
        super().__init__()
        self.dim, self.classes, self.side, self.shift = dim, classes, side, float(shift)
        if side is None:
            self.hidden = list(hidden or SETTINGS["hidden"])
            self.channels: list[int] = []
            self.body: nn.Module = MLP(dim, self.hidden[:-1], self.hidden[-1])
        else:
            if side * side != dim:
                raise ConfigError(f"side = {side} does not make images of {dim} pixels")
            self.hidden = list(hidden or CONV_SETTINGS["hidden"])
            self.channels = list(channels or CONV_SETTINGS["channels"])
            layers: list[nn.Module] = [nn.Unflatten(1, (1, side, side))]
            c_in, s = 1, side
            for c in self.channels:  # 3×3 conv, ReLU, 2×2 max-pool: side s → ⌊s/2⌋
                layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
                c_in, s = c, s // 2
            layers += [nn.Flatten(), MLP(c_in * s * s, self.hidden[:-1], self.hidden[-1])]
            self.body = nn.Sequential(*layers)
        self.head = nn.Linear(self.hidden[-1], classes)

    def get_config(self) -> dict[str, Any]:
        return {"dim": self.dim, "classes": self.classes, "hidden": self.hidden,
                "side": self.side, "channels": self.channels, "shift": self.shift}  # fmt: skip

    def features(self, x: Tensor) -> Tensor:
        """Return the penultimate activations relu(body(x)), shape (B, hidden[-1])."""
        return F.relu(self.body(x))

    def forward(self, x: Tensor) -> Tensor:
        """Return class logits, shape (B, classes)."""
        return self.head(self.features(x))

    def _shifted(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        """Return the images x (B, d) each moved by its own random shift of up to ``shift`` of
        the side in each direction (bilinear, zeros outside), drawn from ``generator``."""
        b = x.shape[0]
        move = (torch.rand(b, 2, generator=generator, device=x.device) * 2 - 1) * 2 * self.shift
        theta = torch.zeros(b, 2, 3, device=x.device, dtype=x.dtype)
        theta[:, 0, 0] = theta[:, 1, 1] = 1.0
        theta[:, :, 2] = move.to(x.dtype)  # in grid units: the side spans 2
        images = x.reshape(b, 1, self.side, self.side)
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        return F.grid_sample(images, grid, align_corners=False).reshape(b, -1)

    def loss(self, x: Tensor, *, generator=None, epoch=None) -> dict[str, Tensor]:
        # rows carry their label in the last column, so the shared loop can shuffle them together
        images, labels = x[:, :-1], x[:, -1].long()
        if self.side is not None and self.shift > 0 and epoch is not None:  # training only
            images = self._shifted(images, generator)
        return {"loss": F.cross_entropy(self(images), labels)}


_MEMO: OrderedDict[tuple[str, ...], Any] = OrderedDict()
"""Results of the feature networks by (what, digest of the weights, digest of the rows): a
process scores the same real images against several models (the gallery's two priors, each
table's floor), and the conv net's pass over 2,000 MNIST digits takes about 1.5 s on a 2-core
AMD EPYC with AVX2. The same weights on the same rows give the same result, so nothing stale can
come back."""

MEMO_ENTRIES = 16
"""The most results :data:`_MEMO` keeps (the least recently used go first)."""


def _digest(*tensors: Tensor) -> str:
    """A SHA-256 of tensors' dtypes, shapes and bytes (on the CPU)."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _remembered(key: tuple[str, ...], compute: Callable[[], Any]) -> Any:
    """``compute()``, or its result for ``key`` when it was computed before in this process."""
    if key in _MEMO:
        _MEMO.move_to_end(key)
        return _MEMO[key]
    value = compute()
    _MEMO[key] = value
    while len(_MEMO) > MEMO_ENTRIES:
        _MEMO.popitem(last=False)
    return value


@dataclass(frozen=True)
class FeatureNet:
    """A trained :class:`DigitClassifier` with its held-out accuracy and where it came from."""

    model: DigitClassifier
    accuracy: float
    key: str

    @torch.no_grad()
    def __call__(self, x: Tensor) -> Tensor:
        """Return the features (n, 128) of images x (n, d), in batches: a copy of the earlier
        result when the same weights (as they are now) saw the same rows in this process."""
        check_rows(x, "images", dim=self.model.dim)
        key = ("features", _digest(*self.model.state_dict().values()), _digest(x))
        features = lambda: torch.cat(  # noqa: E731
            [self.model.features(b.float()) for b in x.split(FEATURE_BATCH)]
        )
        return _remembered(key, features).clone()


def feature_cache_dir() -> Path:
    """Return the folder of cached feature networks: ``$XDG_CACHE_HOME/pushforward/features``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pushforward" / "features"


def classifier_settings(image_shape: tuple[int, int] | None) -> dict[str, Any]:
    """Return the settings of the classifier for images of ``image_shape``: the conv net's
    (:data:`CONV_SETTINGS` with the side) for square images of at least :data:`MIN_CONV_SIDE`
    pixels a side, else the MLP's (:data:`SETTINGS`)."""
    square = (
        image_shape is not None
        and image_shape[0] == image_shape[1]
        and image_shape[0] >= MIN_CONV_SIDE
    )
    return {**CONV_SETTINGS, "side": image_shape[0]} if square else dict(SETTINGS)


def feature_key(x_train: Tensor, labels_train: Tensor, settings: dict[str, Any]) -> str:
    """Return the 24 hex digits that name a classifier: a SHA-256 of its training rows x (n, d),
    labels (n,) and settings."""
    h = hashlib.sha256()
    h.update(x_train.detach().cpu().contiguous().numpy().tobytes())
    h.update(labels_train.detach().cpu().contiguous().numpy().tobytes())
    h.update(json.dumps(settings, sort_keys=True).encode())
    return h.hexdigest()[:24]


def new_classifier(dim: int, classes: int, settings: dict[str, Any]) -> DigitClassifier:
    """Return an untrained classifier of rows (B, dim) into ``classes``, initialised from
    ``settings["seed"]`` (the conv net when the settings have a ``side``)."""
    with seeded(settings["seed"]):
        if "side" in settings:
            return DigitClassifier(dim, classes, hidden=settings["hidden"],
                                   side=settings["side"], channels=settings["channels"],
                                   shift=settings["shift"])  # fmt: skip
        return DigitClassifier(dim, classes, hidden=settings["hidden"])


def train_classifier(
    model: DigitClassifier, x_train: Tensor, labels_train: Tensor, settings: dict[str, Any]
) -> None:
    """Train ``model`` in place on x (n, d) with labels (n,): seeded and on the CPU, so the same
    data and settings give the same weights on one machine (other CPUs' kernels may differ in
    the last bits)."""
    rows = torch.cat([x_train.float(), labels_train.float().unsqueeze(1)], dim=1)
    train_keys = ("epochs", "batch_size", "lr", "lr_schedule", "seed")
    cfg = TrainConfig(**{k: settings[k] for k in train_keys if k in settings}, device="cpu")
    fit(model, rows, cfg)


@torch.no_grad()
def accuracy(model: DigitClassifier, x: Tensor, labels: Tensor) -> float:
    """Return the share of rows x (n, d) that ``model`` classifies as ``labels`` (n,), in passes
    of :data:`FEATURE_BATCH` rows."""
    model.eval()
    predicted = torch.cat([model(b.float()).argmax(1) for b in x.split(FEATURE_BATCH)])
    return float((predicted == labels).float().mean())


def digit_features(
    x_train: Tensor,
    labels_train: Tensor,
    x_test: Tensor,
    labels_test: Tensor,
    *,
    image_shape: tuple[int, int] | None = None,
    cache_dir: str | Path | None = None,
) -> FeatureNet:
    """Return the feature network for this training split: shipped, cached or trained once.

    x (n, d) in [0, 1], labels (n,) in 0..classes−1; with a square ``image_shape`` (h, w) the
    network is the conv classifier (:data:`CONV_SETTINGS`) when its side is at least
    :data:`MIN_CONV_SIDE`, else the MLP (:data:`SETTINGS`). Its weights come from, in order:
    the file shipped in the package (:mod:`pushforward.metrics.shipped`: the shared MNIST
    protocol's classifier) when it was trained on this data with these settings and its SHA-256
    is the pinned one; the cache (:func:`feature_cache_dir`); else training (seeded, on the CPU),
    whose result is cached. A missing or unreadable cache file is simply rebuilt. The accuracy is
    measured on (x_test, labels_test).
    """
    check_rows(x_train, "x_train")
    check_rows(x_test, "x_test", dim=x_train.shape[1])
    if labels_train.shape != (x_train.shape[0],) or labels_test.shape != (x_test.shape[0],):
        raise ConfigError("labels must have one entry per row of x_train and x_test")
    classes = int(max(labels_train.max(), labels_test.max())) + 1
    settings = classifier_settings(image_shape)
    key = feature_key(x_train, labels_train, settings)
    model = new_classifier(x_train.shape[1], classes, settings)
    if not _load_shipped(model, key):
        path = Path(cache_dir or feature_cache_dir()) / f"digits-{key}.safetensors"
        try:
            load_state_checked(model, load_tensors(path), str(path))
            log.info("feature network loaded from %s", path)
        except CheckpointError:
            log.info("training the digit feature network (cached at %s)", path)
            train_classifier(model, x_train, labels_train, settings)
            try:
                save_tensors(path, model.state_dict())
            except CheckpointError as e:  # an unwritable cache costs time, not correctness
                log.warning("could not cache the feature network: %s", e)
    weights = _digest(*model.state_dict().values())
    measured = _remembered(("accuracy", weights, _digest(x_test, labels_test)),
                           lambda: accuracy(model, x_test, labels_test))  # fmt: skip
    return FeatureNet(model, measured, key)


def _load_shipped(model: DigitClassifier, key: str) -> bool:
    """Load the shipped weights into ``model`` when they are this key's; return whether it did."""
    shipped = read_shipped(key)
    if shipped is None:
        return False
    try:
        load_state_checked(model, shipped[0], "the shipped digit classifier")
    except CheckpointError as e:
        log.warning("%s", e)
        return False
    log.info("feature network loaded from the shipped weights (key %s)", key)
    return True

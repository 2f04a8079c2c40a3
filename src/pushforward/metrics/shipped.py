"""The digit classifier's weights shipped in the package, used only when their SHA-256 checks.

Training the conv digit classifier of :mod:`pushforward.metrics.features` on the shared MNIST
protocol (the first 8,000 digits of the official test set) costs minutes of CPU time, so its
weights ship with the package: one safetensors file (float16, about 0.8 MB: :func:`shipped_form`,
under the repository's 1 MiB a file) under ``weights/``
whose SHA-256 is pinned in :data:`SHIPPED_SHA256`. The file's safetensors metadata records what it
was trained on: the data key (:func:`pushforward.metrics.features.digit_features` computes the
same key from its training data and settings), the settings and the held-out accuracy.

A file whose hash differs from the pinned one is never loaded (a warning says so, and the caller
falls back to its cache or to training); loading never unpickles. ``python -m
pushforward.metrics.rebuild_classifier`` rebuilds the file and checks it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from importlib import resources
from pathlib import Path
from typing import Final

from safetensors import SafetensorError
from safetensors.torch import load as st_load
from torch import Tensor

__all__ = ["SHIPPED_SHA256", "read_shipped", "sha256_hex", "shipped_form", "shipped_path"]

log = logging.getLogger(__name__)

SHIPPED_NAME: Final = "digits-conv.safetensors"
"""The shipped file's name, in the ``weights`` folder beside this module."""

SHIPPED_SHA256: Final = "46d60ead63cb7e2eec8c383828026f006b514bb103abf3adb79ba381dccee682"
"""The SHA-256 of the shipped file; the one place to change after a rebuild."""


def shipped_path() -> Path:
    """Return where the shipped weights file lies in the installed package."""
    return Path(str(resources.files("pushforward.metrics") / "weights" / SHIPPED_NAME))


def shipped_form(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Return the weights as they ship: floating tensors rounded to float16 (half the bytes;
    loading casts them back to the model's float32), others unchanged."""
    return {k: v.half() if v.is_floating_point() else v for k, v in state.items()}


def sha256_hex(data: bytes) -> str:
    """Return the SHA-256 of ``data`` as 64 hex digits."""
    return hashlib.sha256(data).hexdigest()


def read_shipped(key: str) -> tuple[dict[str, Tensor], dict[str, str]] | None:
    """Return the shipped tensors and their metadata when the file's SHA-256 is
    :data:`SHIPPED_SHA256` and its data key is ``key``; else None.

    A missing file or another key is silent (debug log); a hash that does not match, or a file
    that cannot be read, logs a warning, and the file is not parsed beyond its header.
    """
    path = shipped_path()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        log.debug("no shipped digit classifier at %s", path)
        return None
    except OSError as e:
        log.warning("cannot read the shipped digit classifier '%s': %s", path, e.strerror or e)
        return None
    digest = sha256_hex(data)
    if digest != SHIPPED_SHA256:
        log.warning(
            "the shipped digit classifier '%s' has SHA-256 %s, not the pinned %s: not used "
            "(rebuild it with python -m pushforward.metrics.rebuild_classifier)",
            path, digest, SHIPPED_SHA256,
        )  # fmt: skip
        return None
    try:  # the bytes whose hash was checked, not the file again
        tensors = st_load(data)
        metadata = _metadata(data)
    except (SafetensorError, ValueError, RuntimeError) as e:
        log.warning("the shipped digit classifier '%s' is unreadable: %s", path, e)
        return None
    if metadata.get("key") != key:
        log.debug("the shipped digit classifier is for data key %s, not %s", metadata.get("key"),
                  key)  # fmt: skip
        return None
    return tensors, metadata


def _metadata(data: bytes) -> dict[str, str]:
    """Return the ``__metadata__`` of a safetensors file's bytes (an empty dict when absent)."""
    n = int.from_bytes(data[:8], "little")
    return dict(json.loads(data[8 : 8 + n]).get("__metadata__", {}))

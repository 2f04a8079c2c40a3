"""The run folder on disk: writing the model, reading ``config.json`` and the model back.

The file names are :mod:`pushforward.core.layout`'s. :func:`load_model` rebuilds a model from a
folder, refusing folders of another format and tensors that do not fit.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from pushforward.core import (
    CHECKPOINT,
    CONFIG,
    WEIGHTS,
    CheckpointError,
    ConfigError,
    Model,
    check_tensor_header,
    load_json,
    load_tensors,
    lookup,
    save_tensors,
)
from pushforward.core.version import __version__
from pushforward.data import datasets
from pushforward.models.registry import MODELS
from pushforward.runs.config import RunConfig
from pushforward.train import resolve_device, to_device

__all__ = [
    "MAX_MODEL_BYTES",
    "READABLE_FORMATS",
    "RUN_FORMAT",
    "load_model",
    "load_run_config",
    "run_record",
    "save_model",
]

RUN_FORMAT = 2
"""The format of the run folders this release writes."""
READABLE_FORMATS = (1, 2)  # format 1: the run settings as one flat table for every model
MAX_MODEL_BYTES = 4 * 2**30
"""The largest model state a run folder may ask to load (4 GiB): a larger one is a typo or a
hostile file, refused before anything is allocated."""


def run_record(
    rc: RunConfig, model: Model, ds: datasets.Dataset, *, device: torch.device | None = None
) -> dict[str, Any]:
    """Return what ``config.json`` records of a run: its format, the versions, the device it
    was fitted on (``run.train.device`` keeps what was asked for, e.g. ``auto``), the resolved
    settings, the model's kind and config, and the data's spec, name and shape (n, d)."""
    return {
        "format": RUN_FORMAT,
        "pushforward": __version__,
        "torch": torch.__version__,
        **({"device": str(device)} if device is not None else {}),
        "run": rc.to_dict(),
        "model": {"kind": rc.model, "config": model.get_config()},
        "data": {
            "spec": rc.data,
            "name": ds.name,
            "shape": list(ds.x.shape),
            "image_shape": list(ds.image_shape) if ds.image_shape else None,
        },
    }


def save_model(folder: Path, model: Model) -> None:
    """Write the model's weights (or fitted state) to ``folder/model.safetensors`` atomically."""
    save_tensors(folder / WEIGHTS, model.get_state(), metadata={"pushforward": __version__})


def load_run_config(folder: str | Path) -> dict[str, Any]:
    """Return the parsed ``config.json`` of a run folder, checking its format."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"run folder '{folder}' not found")
    cfg = load_json(folder / CONFIG)
    ok = isinstance(cfg, dict) and cfg.get("format") in READABLE_FORMATS
    if not ok or not isinstance(cfg.get("model"), dict) or not isinstance(cfg.get("data"), dict):
        formats = " or ".join(map(str, READABLE_FORMATS))
        raise CheckpointError(
            f"'{folder / CONFIG}' is not a pushforward run of format {formats} "
            f"(found format {cfg.get('format') if isinstance(cfg, dict) else None!r})"
        )
    return cfg


def load_model(folder: str | Path, *, device: str | torch.device = "cpu") -> Model:
    """Rebuild the model saved in a run folder (final weights, else the last checkpoint) on
    ``device`` (a torch device, or a name :func:`~pushforward.train.resolve_device` takes): the
    weights are stored from the CPU, so a run fitted on one device loads on any other.

    The weights file's header is checked against the shapes the run's config makes, and their
    total size against :data:`MAX_MODEL_BYTES`, before any tensor is allocated.
    """
    folder = Path(folder)
    cfg = load_run_config(folder)
    spec = lookup(MODELS, cfg["model"].get("kind"), what="model")
    config = cfg["model"].get("config")
    shape = cfg["data"].get("shape")
    if not isinstance(config, dict) or not isinstance(shape, list) or len(shape) != 2:
        raise CheckpointError(f"'{folder / CONFIG}' lacks the model's config or the data's shape")
    try:
        expected = spec.cls.state_shapes(config, (int(shape[0]), int(shape[1])))
    except (ConfigError, ValueError) as e:
        raise CheckpointError(f"'{folder / CONFIG}' describes no valid model: {e}") from None
    size = sum(math.prod(s) for s in expected.values()) * 4
    if size > MAX_MODEL_BYTES:
        raise CheckpointError(
            f"'{folder / CONFIG}' asks for a model of {size / 2**30:.1f} GiB, more than the "
            f"{MAX_MODEL_BYTES / 2**30:.0f} GiB a run may load"
        )
    if (folder / WEIGHTS).exists():
        source, prefix = folder / WEIGHTS, ""
    elif (folder / CHECKPOINT).exists():
        source, prefix = folder / CHECKPOINT, "model."
    else:
        raise CheckpointError(f"run folder '{folder}' holds no {WEIGHTS} and no {CHECKPOINT}")
    check_tensor_header(source, expected, max_bytes=MAX_MODEL_BYTES, prefix=prefix)
    state = {k[len(prefix) :]: v for k, v in load_tensors(source).items() if k.startswith(prefix)}
    model = spec.cls.from_config(config)
    model.load_state(state, source=str(source))
    model.eval()
    return to_device(model, device if isinstance(device, torch.device) else resolve_device(device))

"""Training checkpoints: a model's and its optimisers' state as safetensors plus JSON (no
pickle)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import Tensor, nn

from pushforward.core import CHECKPOINT, a_or_an
from pushforward.core.errors import CheckpointError
from pushforward.train.device import generator_fits

__all__ = [
    "CHECKPOINT",
    "CHECKPOINT_FORMAT",
    "flatten_state",
    "load_checkpoint",
    "load_state_checked",
    "match_parameter_layout_",
    "save_checkpoint",
    "unflatten_state",
]

from pushforward.core.io import load_tensors, save_tensors

log = logging.getLogger(__name__)

# --- training checkpoints: state dicts as tensors + JSON (no pickle) -----------------------------

CHECKPOINT_FORMAT = 1


def flatten_state(obj: Any, prefix: str, tensors: dict[str, Tensor]) -> Any:
    """Return a JSON skeleton of a nested state, moving every tensor into ``tensors``."""
    if isinstance(obj, Tensor):
        key = f"{prefix}"
        tensors[key] = obj.detach().cpu().clone()
        return {"__tensor__": key}
    if isinstance(obj, Mapping):
        return {"__dict__": [[flatten_state(k, f"{prefix}.k{i}", tensors),
                              flatten_state(v, f"{prefix}.{i}", tensors)]
                             for i, (k, v) in enumerate(obj.items())]}  # fmt: skip
    if isinstance(obj, tuple):
        return {
            "__tuple__": [flatten_state(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
        }
    if isinstance(obj, list):
        return [flatten_state(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise CheckpointError(f"cannot store {a_or_an(type(obj).__name__)} in a checkpoint ({prefix})")


def unflatten_state(skeleton: Any, tensors: Mapping[str, Tensor]) -> Any:
    """Invert :func:`flatten_state`."""
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            key = skeleton["__tensor__"]
            if key not in tensors:
                raise CheckpointError(f"checkpoint is missing the tensor {key!r}")
            return tensors[key]
        if "__tuple__" in skeleton:
            return tuple(unflatten_state(v, tensors) for v in skeleton["__tuple__"])
        if "__dict__" in skeleton:
            return {
                unflatten_state(k, tensors): unflatten_state(v, tensors)
                for k, v in skeleton["__dict__"]
            }
        raise CheckpointError(f"unexpected entry in checkpoint: {sorted(skeleton)}")
    if isinstance(skeleton, list):
        return [unflatten_state(v, tensors) for v in skeleton]
    return skeleton


def load_state_checked(module: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """Load weights into ``module``, refusing missing, extra or mis-shaped tensors by name."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    if missing or extra:
        raise CheckpointError(
            f"{source} does not fit the model: missing {missing[:5]}, unexpected {extra[:5]}"
        )
    for k, v in own.items():
        if tuple(v.shape) != tuple(state[k].shape):
            raise CheckpointError(
                f"{source}: tensor {k!r} has shape {tuple(state[k].shape)} but the model's "
                f"{k!r} has shape {tuple(v.shape)}"
            )
    module.load_state_dict(dict(state))


def save_checkpoint(
    path: Path,
    model: nn.Module,
    optimizers: Mapping[str, torch.optim.Optimizer],
    generator: torch.Generator,
    meta: dict[str, Any],
    *,
    extra: Mapping[str, Tensor] | None = None,
) -> None:
    """Write weights, optimiser and RNG state, ``meta`` and ``extra`` tensors as one safetensors
    file, atomically."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update(extra or {})
    optim = {
        name: flatten_state(opt.state_dict(), f"optim.{name}", tensors)
        for name, opt in optimizers.items()
    }
    tensors["rng.generator"] = generator.get_state()
    info = {"format": CHECKPOINT_FORMAT, "optimizers": optim, **meta}
    save_tensors(path, tensors, metadata={"pushforward": json.dumps(info)})


def load_checkpoint(
    path: Path,
    model: nn.Module,
    optimizers: Mapping[str, torch.optim.Optimizer],
    generator: torch.Generator,
) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Restore a checkpoint written by :func:`save_checkpoint`; return its ``meta`` and the
    ``extra`` tensors (those outside model, optimiser and generator state)."""
    tensors = load_tensors(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            info = json.loads((f.metadata() or {}).get("pushforward", "null"))
    except Exception as e:  # the file was readable a moment ago; report anything odd as corrupt
        raise CheckpointError(f"'{path}' has unreadable metadata: {e}") from None
    if not isinstance(info, dict) or info.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"'{path}' is not a pushforward checkpoint of format {CHECKPOINT_FORMAT}"
        )
    load_state_checked(
        model, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, str(path)
    )
    saved = info["optimizers"]
    if set(saved) != set(optimizers):
        raise CheckpointError(
            f"'{path}' holds optimisers {sorted(saved)}, the model has {sorted(optimizers)}"
        )
    for name, opt in optimizers.items():
        opt.load_state_dict(unflatten_state(saved[name], tensors))
        match_parameter_layout_(opt)
    state = tensors["rng.generator"]
    if generator_fits(generator, state):
        generator.set_state(state)
    else:  # saved on another kind of device: its stream cannot continue here
        log.warning(
            "'%s' was written on another kind of device; its random stream restarts here from "
            "the run's seed and epoch",
            path,
        )
        generator.manual_seed(int(info.get("train_config", {}).get("seed", 0)) + int(info["epoch"]))
        info["rng_restarted"] = True
    own = ("model.", "optim.", "rng.generator")
    return info, {k: v for k, v in tensors.items() if not k.startswith(own)}


def match_parameter_layout_(opt: torch.optim.Optimizer) -> None:
    """Give each optimiser state tensor of a parameter's shape that parameter's memory layout.

    Files store tensors contiguous, and ``load_state_dict`` keeps that layout; a parameter kept
    channels-last (the conv networks') then meets state of other strides, which PyTorch's fused
    Adam kernel pairs element by element in memory order: silently wrong steps after a resume.
    """
    for group in opt.param_groups:
        for p in group["params"]:
            state = opt.state.get(p, {})
            for key, value in state.items():
                if (
                    isinstance(value, torch.Tensor)
                    and value.shape == p.shape
                    and value.stride() != p.stride()
                ):
                    state[key] = torch.empty_like(p, dtype=value.dtype).copy_(value)

"""Computing in the weights' own precision: autocast switched off where a device has one."""

from __future__ import annotations

import contextlib

import torch

__all__ = ["full_precision"]


def full_precision(device: torch.device | str) -> contextlib.AbstractContextManager:
    """Return a context in which products on ``device`` run in the weights' precision even
    inside an autocast region: ``torch.autocast(..., enabled=False)`` for a device type that has
    autocast, nothing for one that has none (``meta``, which the device tests run on)."""
    kind = torch.device(device).type
    if torch.amp.is_autocast_available(kind):
        return torch.autocast(kind, enabled=False)
    return contextlib.nullcontext()

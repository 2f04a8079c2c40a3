"""A guard that finds device bugs without a GPU: a model moved to PyTorch's ``meta`` device, run
under :class:`MetaGuard`, fails on the first operation that meets a stray CPU tensor.

A ``meta`` tensor has a shape and a dtype but no storage, so a model on ``meta`` stands in for a
model on a GPU: whatever a method makes on the CPU (noise, a constant, a mask, ``arange``) and
then combines with the model's tensors is a tensor that would have been on the wrong device on a
GPU. Plain ``meta`` does not catch every such mix by itself (``F.linear(cpu_x, meta_w)`` returns a
CPU tensor silently), so the guard looks at every ATen operation:

* an operation that meets a ``meta`` tensor and a CPU tensor of one dimension or more raises
  (0-dim CPU scalars are fine: PyTorch moves those to any device itself);
* reading the value of a ``meta`` tensor (``.item()``, ``bool(t)``) gives zero (or False), but
  ``all`` gives True and ``any`` False (0-dim CPU tensors): checks such as
  ``torch.isfinite(x).all()`` pass, so that the code after them runs;
* drawing on ``meta`` from a CPU ``torch.Generator`` raises (on a GPU it raises too);
* copying a ``meta`` tensor to the CPU gives CPU zeros of its shape and dtype: results may come
  back to the CPU for files and figures.

Values computed under the guard are meaningless; only the devices and the shapes are checked.
Each such read of a ``meta`` value (a value read, a check, a copy to the CPU) is one the host
would wait for on a GPU: :attr:`MetaGuard.reads` lists them, so that a test can count the host
synchronisations of a training step.
"""

from __future__ import annotations

import traceback
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = ["META", "MetaGuard", "StrayTensorError"]

META = torch.device("meta")
"""The stand-in device of a model under :class:`MetaGuard`."""

_aten = torch.ops.aten


_CHECKS = {
    _aten.all.default: True,
    _aten.all.dim: True,
    _aten.any.default: False,
    _aten.any.dim: False,
}
"""The reductions a check reads, and what they give on ``meta``: "all fine" (a CPU 0-dim
tensor, which mixes with any device), so that code past the check runs."""


class StrayTensorError(AssertionError):
    """An operation combined a model's tensors with a CPU tensor that should have been on the
    model's device."""


def _device_type(device: Any) -> str | None:
    return None if device is None else torch.device(device).type


def _to_cpu(func: Any, args: tuple, kwargs: dict) -> bool:
    """Whether ``func(*args, **kwargs)`` is a copy of a tensor to the CPU."""
    if func not in (_aten._to_copy.default, _aten.to.device, _aten.to.dtype_layout):
        return False
    device = kwargs.get("device")
    if device is None and func is _aten.to.device:
        device = args[1]
    return _device_type(device) == "cpu"


class MetaGuard(TorchDispatchMode):
    """Raise :class:`StrayTensorError` when an operation mixes ``meta`` tensors with a CPU tensor
    of one dimension or more; read ``meta`` values as zeros and copy ``meta`` tensors to the CPU
    as zeros (see the module's docstring). :attr:`reads` lists the operations that read a
    ``meta`` value back to the host, each with the innermost line of pushforward that asked."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    def _read(self, func: Any) -> None:
        frames = [f for f in traceback.extract_stack() if "pushforward" in f.filename]
        where = f"{frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno}" if frames else "?"
        self.reads.append(f"{func} at {where}")

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        flat, _ = tree_flatten((args, kwargs))
        tensors = [t for t in flat if isinstance(t, torch.Tensor)]
        on_meta = any(t.device.type == "meta" for t in tensors)
        if on_meta or _device_type(kwargs.get("device")) == "meta":
            generators = [g for g in flat if isinstance(g, torch.Generator)]
            if any(g.device.type == "cpu" for g in generators):
                raise StrayTensorError(
                    f"{func}: a CPU generator draws on the model's meta device (draw where the "
                    "generator lives, then move the draws)"
                )
        if on_meta:
            stray = [t for t in tensors if t.device.type == "cpu" and t.dim() > 0]
            if stray:
                raise StrayTensorError(
                    f"{func}: a CPU tensor of shape {tuple(stray[0].shape)} meets the model's "
                    "meta tensors (it would be on the wrong device on a GPU)"
                )
            if func in _CHECKS:  # a check such as bool(torch.isfinite(x).all()) passes
                self._read(func)
                return torch.tensor(_CHECKS[func])
            if func is _aten._local_scalar_dense.default:
                self._read(func)
                t = tensors[0]
                if t.dtype == torch.bool:
                    return False
                return 0.0 if t.is_floating_point() or t.is_complex() else 0
            if _to_cpu(func, args, kwargs):
                self._read(func)
                dtype = kwargs.get("dtype") or args[0].dtype
                return torch.zeros(args[0].shape, dtype=dtype)
        return func(*args, **kwargs)

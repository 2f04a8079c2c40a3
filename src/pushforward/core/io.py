"""Files that must never be half-written or unsafe to read: atomic writes, safetensors and JSON.

Every write goes to a temporary file in the target's folder, is flushed to disk, and is renamed
over the target (``os.replace`` is atomic on POSIX and Windows), so a reader sees the old file or
the new one, never a mixture. Weights are safetensors, metadata JSON: loading never unpickles.

A training checkpoint (:func:`save_checkpoint`, :func:`load_checkpoint`) is one safetensors file:
model weights, optimiser state (its tensors beside a JSON skeleton, :func:`flatten_state`) and
the generator's RNG state, so a resumed run ends bit-exactly where an uninterrupted one would.

Loading validates before it allocates: :func:`read_safetensors_header` reads only a file's JSON
header, and :func:`check_tensor_header` compares its names, shapes and total size with what a
model expects (shapes from a model built on the meta device) before any tensor is read.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from pushforward.core.errors import CheckpointError, one_line
from pushforward.core.validate import check_int

__all__ = [
    "MAX_HEADER_BYTES",
    "atomic_path",
    "atomic_write_bytes",
    "check_tensor_header",
    "load_json",
    "load_tensors",
    "read_safetensors_header",
    "save_figure",
    "save_json",
    "save_tensors",
]


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed to ``path``.

    On any exception the temporary file is removed and ``path`` is left as it was.
    """
    target = Path(path)
    folder = target.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    except OSError as e:
        raise CheckpointError(f"cannot write to folder '{folder}': {e.strerror or e}") from None
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual permissions
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"cannot write '{target}': {e.strerror or e}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def save_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def load_json(path: str | os.PathLike[str]) -> Any:
    """Return the JSON value in ``path``; a missing or corrupt file raises CheckpointError."""
    p = Path(path)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"'{p}' not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"'{p}' is not valid JSON: {e}") from None
    except OSError as e:
        raise CheckpointError(f"cannot read '{p}': {e.strerror or e}") from None


def save_tensors(
    path: str | os.PathLike[str],
    tensors: dict[str, torch.Tensor],
    metadata: dict[str, str] | None = None,
) -> None:
    """Write named tensors to a safetensors file atomically (tensors are made contiguous)."""
    flat = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    atomic_write_bytes(path, st_save(flat, metadata=metadata))


def load_tensors(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Return the named tensors of a safetensors file; never unpickles anything.

    A missing, truncated or foreign file raises CheckpointError naming it.
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"weights file '{p}' not found") from None
    except OSError as e:
        raise CheckpointError(f"cannot read '{p}': {e.strerror or e}") from None
    try:
        return st_load(data)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"'{p}' is not a valid safetensors file: {e}") from None


def save_figure(fig: Any, path: str | os.PathLike[str], *, dpi: int = 110) -> Path:
    """Save a matplotlib figure to ``path`` atomically (format from the suffix); return the path."""
    target = Path(path)
    fmt = target.suffix.lstrip(".").lower() or "png"
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format=fmt, dpi=dpi)
    return target


# --- reading a safetensors header without its data -----------------------------------------------

MAX_HEADER_BYTES: Final = 100_000_000
"""Longest JSON header :func:`read_safetensors_header` reads (safetensors' own limit)."""

_DTYPE_BYTES: Final[Mapping[str, int]] = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}


def _listed(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _header_entry(
    p: Path, name: str, entry: object, data_size: int
) -> tuple[str, tuple[int, ...], tuple[int, int]]:
    """Return one header entry's dtype, shape and data span [begin, end) after checking them."""
    bad = f"'{p}' is not a valid safetensors file: tensor {name!r}"
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= set(entry):
        raise CheckpointError(f"{bad} must have a dtype, a shape and data_offsets")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in _DTYPE_BYTES:
        raise CheckpointError(
            f"{bad} has unknown dtype {dtype!r}; known: {', '.join(_DTYPE_BYTES)}"
        )
    if not isinstance(shape, list) or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape
    ):
        raise CheckpointError(f"{bad} has shape {shape!r}; expected a list of integers >= 0")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
        or not 0 <= offsets[0] <= offsets[1]
    ):
        raise CheckpointError(
            f"{bad} has data_offsets {offsets!r}; expected [begin, end] with 0 <= begin <= end"
        )
    begin, end = offsets
    need = math.prod(shape) * _DTYPE_BYTES[dtype]
    if end - begin != need:
        raise CheckpointError(
            f"{bad} of dtype {dtype} and shape {tuple(shape)} needs {need:,} bytes, but its "
            f"data_offsets [{begin}, {end}] hold {end - begin:,}"
        )
    if end > data_size:
        raise CheckpointError(
            f"{bad} ends at byte {end:,} of the data, beyond the {data_size:,} bytes the file "
            "holds after its header (truncated?)"
        )
    return dtype, tuple(shape), (begin, end)


def read_safetensors_header(path: str | os.PathLike[str]) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Return {name: (dtype, shape)} for every tensor of a safetensors file, reading only its
    header, never the tensor data.

    The file is an 8-byte little-endian header length N, N bytes of JSON, then the data. The
    length must be at most :data:`MAX_HEADER_BYTES` and fit in the file; each entry needs a known
    dtype (``"F32"``, ``"U8"``, ...), a shape of integers ≥ 0 and data offsets [begin, end) that
    hold exactly prod(shape) × itemsize bytes; together the spans must tile the data region (no
    gap, overlap or byte beyond the file). Anything else raises one :class:`CheckpointError`
    naming the file.
    """
    p = Path(path)
    invalid = f"'{p}' is not a valid safetensors file"
    try:
        with open(p, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            length = f.read(8)
            if len(length) < 8:
                raise CheckpointError(
                    f"{invalid}: it is {size} bytes long, too short for the 8-byte header length"
                )
            n = int.from_bytes(length, "little")
            if n > MAX_HEADER_BYTES:
                raise CheckpointError(
                    f"{invalid}: it declares a header of {n:,} bytes, more than the "
                    f"{MAX_HEADER_BYTES:,} allowed"
                )
            if 8 + n > size:
                raise CheckpointError(
                    f"{invalid}: it declares a header of {n:,} bytes, but only {size - 8:,} "
                    "follow the header length (truncated?)"
                )
            raw = f.read(n)
    except FileNotFoundError:
        raise CheckpointError(f"weights file '{p}' not found") from None
    except OSError as e:
        raise CheckpointError(f"cannot read '{p}': {e.strerror or e}") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{invalid}: its header is not JSON ({one_line(e)})") from None
    if not isinstance(header, dict):
        raise CheckpointError(
            f"{invalid}: its header is a JSON {type(header).__name__}, not an object"
        )
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(f"{invalid}: its __metadata__ must map names to strings")
    data_size = size - 8 - n
    out: dict[str, tuple[str, tuple[int, ...]]] = {}
    spans = []
    for name, entry in header.items():
        dtype, shape, span = _header_entry(p, name, entry, data_size)
        out[name] = (dtype, shape)
        spans.append((span, name))
    covered = 0
    for (begin, end), name in sorted(spans):
        if begin != covered:
            problem = (
                "overlaps the tensor before it" if begin < covered else "leaves a gap before it"
            )
            raise CheckpointError(
                f"{invalid}: tensor {name!r} starts at byte {begin:,} of the data and {problem} "
                f"(which ends at byte {covered:,})"
            )
        covered = end
    if covered != data_size:
        raise CheckpointError(
            f"{invalid}: {data_size - covered:,} bytes follow the last tensor's data"
        )
    return out


def check_tensor_header(
    path: str | os.PathLike[str],
    expected: Mapping[str, tuple[int, ...]],
    *,
    max_bytes: int,
    prefix: str = "",
) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Return the header of a safetensors file (:func:`read_safetensors_header`) after checking it
    holds exactly the tensors ``expected`` names, each of its expected shape, and no more than
    ``max_bytes`` bytes of tensor data in all; no tensor data is read.

    ``expected`` maps names to shapes, e.g. ``{k: tuple(v.shape) for k, v in
    model.state_dict().items()}`` of a model built on ``torch.device("meta")``, which allocates
    nothing, so a file can be refused before memory is spent on it. Missing, unexpected and
    mis-shaped tensors are named together in one :class:`CheckpointError`. With ``prefix``, only
    the tensors whose names start with it are compared, without it (a training checkpoint's
    ``model.`` tensors, say).
    """
    max_bytes = check_int(max_bytes, "max_bytes", minimum=0)
    header = {
        k[len(prefix) :]: v
        for k, v in read_safetensors_header(path).items()
        if k.startswith(prefix)
    }
    missing = sorted(set(expected) - set(header))
    unexpected = sorted(set(header) - set(expected))
    misshaped = [
        f"{k!r} has shape {header[k][1]}, the model's {tuple(expected[k])}"
        for k in sorted(set(header) & set(expected))
        if header[k][1] != tuple(expected[k])
    ]
    problems = [
        f"{what} {_listed(items)}"
        for what, items in (
            ("missing", [repr(k) for k in missing]),
            ("unexpected", [repr(k) for k in unexpected]),
            ("mis-shaped:", misshaped),
        )
        if items
    ]
    if problems:
        raise CheckpointError(f"'{Path(path)}' does not fit the model: {'; '.join(problems)}")
    total = sum(math.prod(shape) * _DTYPE_BYTES[dtype] for dtype, shape in header.values())
    if total > max_bytes:
        raise CheckpointError(
            f"'{Path(path)}' holds {total:,} bytes of tensors, more than the {max_bytes:,} allowed"
        )
    return header

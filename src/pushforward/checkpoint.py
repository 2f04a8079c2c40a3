"""Files that must never be half-written or unsafe to read: atomic writes, safetensors and JSON.

Every write goes to a temporary file in the target's folder, is flushed to disk, and is renamed
over the target (``os.replace`` is atomic on POSIX and Windows), so a reader sees the old file or
the new one, never a mixture. Weights are safetensors, metadata JSON: loading never unpickles.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from pushforward.errors import CheckpointError

__all__ = [
    "atomic_path",
    "atomic_write_bytes",
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


MAX_HEADER_BYTES = 100 * 2**20


def read_safetensors_header(path: str | os.PathLike[str]) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Return each tensor's (dtype, shape) by name, read from a safetensors file's header alone.

    No tensor data is read. A missing file, an absurd or truncated header, malformed JSON or
    entries whose byte ranges do not fit the file raise CheckpointError naming the file.
    """
    p = Path(path)
    try:
        with open(p, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(f"'{p}' is not a valid safetensors file: it is too short")
            n = int.from_bytes(head, "little")
            if n > MAX_HEADER_BYTES or 8 + n > size:
                raise CheckpointError(
                    f"'{p}' is not a valid safetensors file: its header claims {n:,} bytes "
                    f"in a file of {size:,}"
                )
            raw = f.read(n)
    except FileNotFoundError:
        raise CheckpointError(f"weights file '{p}' not found") from None
    except OSError as e:
        raise CheckpointError(f"cannot read '{p}': {e.strerror or e}") from None
    try:
        header = json.loads(raw)
        if not isinstance(header, dict):
            raise ValueError("the header is not a table")
        out = {}
        data_size = size - 8 - n
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            dtype, shape, (start, stop) = entry["dtype"], entry["shape"], entry["data_offsets"]
            shape = tuple(int(s) for s in shape)
            if any(s < 0 for s in shape) or not 0 <= start <= stop <= data_size:
                raise ValueError(f"tensor {name!r} lies outside the file")
            out[str(name)] = (str(dtype), shape)
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"'{p}' is not a valid safetensors file: {e}") from None
    return out


def save_figure(fig: Any, path: str | os.PathLike[str], *, dpi: int = 110) -> Path:
    """Save a matplotlib figure to ``path`` atomically (format from the suffix); return the path."""
    target = Path(path)
    fmt = target.suffix.lstrip(".").lower() or "png"
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format=fmt, dpi=dpi)
    return target

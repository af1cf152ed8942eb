"""Atomic file writes: a temp file in the same folder, then ``os.replace``.

A crash, Ctrl-C or full disk mid-write leaves the previous file intact and no half file:
users must never lose a model or a label map they made. JSON files go through
:func:`jsonable`, the one conversion of numpy values, tuples and paths to plain JSON.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .errors import InputError


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_read_umask()
"""Read once at import: changing the umask later would race with worker threads."""


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write to; it replaces ``path`` only if the block succeeds.

    A failing write (full disk, no permission) becomes an ``InputError`` naming ``path``.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as error:
        raise InputError(f"{target}: cannot write here ({error.strerror or error})") from error
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as handle:
            os.fsync(handle.fileno())  # on disk before it replaces the old file
        os.chmod(tmp_path, _FILE_MODE)  # mkstemp makes files private; give the usual mode
        os.replace(tmp_path, target)
    except OSError as error:
        raise InputError(
            f"{target}: could not write the file ({error.strerror or error}); any previous file is unchanged"
        ) from error
    finally:
        tmp_path.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def jsonable(value: Any) -> Any:
    """Plain JSON types: numpy scalars and arrays, tuples and paths converted, NaN and infinities
    as null (JSON has no NaN); anything else is left for ``json.dumps`` to accept or refuse."""
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [jsonable(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def atomic_write_json(path: str | Path, document: Any, indent: int = 2) -> Path:
    """Write ``document`` as strict JSON (through :func:`jsonable`) atomically."""
    return atomic_write_text(path, json.dumps(jsonable(document), indent=indent, allow_nan=False))

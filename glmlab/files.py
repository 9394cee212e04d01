"""Crash-safe writes of the files a later run reads back: a reader sees the old file or the new one.

State files (an eval run's config.json and summary, training's initial_eval.json and run record,
export manifests) are written with `atomic_write`: the bytes go to a temporary file in the same
folder, are fsynced, and `os.replace` swaps it in (atomic within one file system); the folder is then
fsynced so the rename itself survives a power cut. A process killed mid-write leaves at most a
`.NAME.*.tmp` file beside the old one, never a truncated NAME. Written by hand: the standard library
has every piece, and the `atomicwrites` package that used to wrap them is archived.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

__all__ = ["atomic_write", "fsync_dir"]


def atomic_write(path: str | Path, data: str | bytes) -> Path:
    """Write `data` (str: UTF-8) to `path` so that a crash leaves either the old file or the new one."""
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    # os.open with 0o666 lets the umask set the mode, as open() does (mkstemp would make it 0600).
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(payload)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    fsync_dir(path.parent)
    return path


def fsync_dir(folder: str | Path) -> None:
    """Make a folder's entries (a rename, a new or removed file) durable; a no-op where folders cannot
    be opened (Windows)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)

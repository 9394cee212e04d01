"""Crash-safe writes of the files a later run reads back: a reader sees the old file or the new one.

State files (an eval run's config.json and summary, training's initial_eval.json and run record,
export manifests) are written with `atomic_write`: the bytes go to a temporary file in the same
folder, are fsynced, and `os.replace` swaps it in (atomic within one file system); the folder is then
fsynced so the rename itself survives a power cut. A process killed mid-write leaves at most a
`.NAME.*.tmp` file beside the old one, never a truncated NAME. `staged_folder` does the same for a
whole folder (an export): it is written beside its target, fsynced, and swapped in by renames.
Written by hand: the standard library has every piece, and the `atomicwrites` package that used to
wrap them is archived.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_write", "fsync_dir", "staged_folder"]


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


@contextlib.contextmanager
def staged_folder(target: str | Path) -> Iterator[Path]:
    """A new empty folder beside `target` to write into; when the block ends without error it is
    fsynced and replaces `target` (an existing `target` is moved aside first, then deleted), and on an
    error it is deleted and `target` is left as it was.

    A crash while writing leaves `target` untouched (plus a `.NAME.*.tmp` folder); only a crash
    between the two renames of the swap leaves the old folder at `.NAME.*.old` with `target` absent.
    """
    target = Path(target).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:12]
    staging = target.with_name(f".{target.name}.{tag}.tmp")
    staging.mkdir()  # not mkdtemp: its 0700 mode would become the target's
    try:
        yield staging
        _fsync_tree(staging)
        if target.exists():
            old = target.with_name(f".{target.name}.{tag}.old")
            os.replace(target, old)
            os.replace(staging, target)
            fsync_dir(target.parent)
            shutil.rmtree(old)
        else:
            os.replace(staging, target)
        fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _fsync_tree(folder: Path) -> None:
    """fsync every file and folder under `folder` (before a rename makes them visible)."""
    for root, _, names in os.walk(folder):
        for name in names:
            with open(os.path.join(root, name), "rb") as file:
                os.fsync(file.fileno())
        fsync_dir(root)

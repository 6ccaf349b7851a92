"""Writes that survive a crash or a power cut: whole or not at all, and still there afterwards.

A rename is atomic, but until its folder is fsynced a power cut can undo it; and renaming a
folder whose files were never fsynced can publish it with empty files. So: fsync the contents,
rename, fsync the folder the name lives in. Every rename that commits something in a run folder
goes through `rename_durably`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

TMP_PREFIX = ".tmp-"  # every temporary name in a run folder starts with it (cleaned on start)


def fsync_folder(folder: Path) -> None:
    """Make the names in `folder` (created, renamed or removed) durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file and folder under `root` (a checkpoint written by libraries that do not)."""
    for folder, _, files in os.walk(root):
        for name in files:
            fd = os.open(Path(folder) / name, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_folder(Path(folder))


def rename_durably(source: Path, target: Path) -> None:
    """Rename `source` (a file or a folder whose contents are already durable) to `target`,
    replacing a file there, and fsync the folder(s) that hold the names."""
    os.replace(source, target)
    fsync_folder(Path(target).parent)
    if Path(source).parent != Path(target).parent:
        fsync_folder(Path(source).parent)


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see either nothing or the whole file, durably."""
    path = Path(path)
    if not path.parent.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
        fsync_folder(path.parent.parent)  # the new folder's name, or the file could lose its way
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TMP_PREFIX, suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        rename_durably(Path(tmp), path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

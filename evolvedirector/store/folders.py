"""Folders that appear whole or not at all: an exported student, an exported dataset.

The folder is written beside its destination under a hidden name, made durable and renamed into
place at the end (store/durable.py), so a crash or an error never leaves a half-written folder
that looks complete; a user's folder that already holds anything is never written into.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from evolvedirector.store.durable import fsync_tree, rename_durably


def refuse_to_overwrite(out: Path) -> None:
    """Raise FileExistsError unless `out` is absent or an empty folder."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} already exists and is not an empty folder; choose another --out")


@contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """Yield an empty staging folder beside `out`; when the block ends without an error it
    becomes `out`, otherwise it is removed."""
    out = Path(out)
    refuse_to_overwrite(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield staging
        fsync_tree(staging)
        if out.exists():
            out.rmdir()  # empty (checked above): a rename cannot replace a folder
        rename_durably(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

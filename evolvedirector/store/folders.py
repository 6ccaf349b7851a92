"""Folders that appear whole or not at all: an exported student, an exported dataset, a checkpoint.

The folder is written beside its destination under a hidden name, made durable and renamed into
place at the end (store/durable.py), so a crash or an error never leaves a half-written folder
that looks complete; a user's folder that already holds anything is never written into.

Checkpoints (the trainer's `step-N`, a run's `checkpoints/round-R`) are published the same way,
by `publish_folder`, and found through a `latest` pointer written after them (`point_latest`):
a crash leaves the previous checkpoint and pointer, never half of one. The two are separate
calls because a run points `latest` at a round's checkpoint only once the store has committed
the round.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from evolvedirector.store.durable import fsync_tree, rename_durably, write_atomic


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


def publish_folder(staging: Path, final: Path) -> None:
    """Rename the finished folder `staging` to `final`, durably, replacing what a crash left at
    `final` (a folder renamed into place whose pointer or commit never followed)."""
    shutil.rmtree(final, ignore_errors=True)
    fsync_tree(staging)  # torch and safetensors do not fsync: a power cut could publish empty files
    rename_durably(Path(staging), Path(final))


def point_latest(pointer: Path, name: str, superseded: Iterable[Path] = ()) -> None:
    """Write `pointer` to name `name` (atomically), then remove the `superseded` folders: a crash
    in between leaves an old folder that the next call removes, never a pointer to nothing."""
    write_atomic(pointer, (name + "\n").encode())
    for folder in superseded:
        shutil.rmtree(folder, ignore_errors=True)

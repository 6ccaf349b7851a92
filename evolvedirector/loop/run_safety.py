"""What is checked and tidied before a run folder is written to, so that a damaged, foreign or
emptied folder is refused instead of being restarted over, and a killed run's leftovers go.

Refused, each with one line naming the file (`RunFolderError`):
- an `evolve.db` that is not SQLite, or fails SQLite's `quick_check` (truncated, overwritten);
- a `config.yaml` that is not a valid EvolveDirector run config (checked by writers only: `status`
  reads a run whatever its config);
- a store that is missing or empty while the folder holds a previous run's images, checkpoints
  or round grids (starting over would buy every image again and lose the run's history);
- a committed checkpoint, or an image of the active set, that is missing from disk.

Tidied (`tidy_leftovers`): temporary files and checkpoint folders of writes a kill interrupted,
uncommitted checkpoints, and `checkpoints/latest`, which a kill between the round's commit and
the pointer's write leaves naming the round before.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from rich.console import Console

from evolvedirector.config import ConfigError, RunConfig, load_config
from evolvedirector.loop.run_folder import RunFolder, RunFolderError
from evolvedirector.store import ImageStore, Store
from evolvedirector.store.durable import TMP_PREFIX
from evolvedirector.student.latest import latest_checkpoint

STORE_FILE = "evolve.db"
CONFIG_FILE = "config.yaml"
SQLITE_HEADER = b"SQLite format 3\x00"
# What only a run writes; found beside an empty store, it is a previous run's.
RUN_OUTPUTS = ("images/*/*.png", "checkpoints/round-*", "rounds/*")
# Folders only a writer holding the run's lock writes into (`features/` and `trainer/` are also
# written by `evolvedirector.launch`, which may run beside the loop: left alone).
TIDIED = ("images/*", "checkpoints", "rounds/*", "eval")


def saved_config(run_dir: Path) -> RunConfig | None:
    """The run's own config.yaml (None when there is none yet); a foreign file is refused."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.exists():
        return None
    try:
        return load_config(path, overrides={"out": str(run_dir)})
    except ConfigError as error:
        lines = str(error).splitlines()
        reason = "; ".join(line.strip() for line in lines[1:]) or lines[0]
        raise RunFolderError(f"{path} is not a valid EvolveDirector run config ({reason}); fix or move it, "
                             "or choose another --out") from None


def check_run_folder(run_dir: Path) -> None:
    """What a writer checks: the folder's config is this run's (or none yet) and its store is
    whole (`check_store_file`)."""
    saved_config(run_dir)
    check_store_file(run_dir)


def check_store_file(run_dir: Path) -> bool:
    """Refuse a folder whose store is damaged, or empty while the rest of a run is there. Reads
    only: safe beside a live run. Returns whether the store holds anything a run wrote (False: a
    new folder, or a start that failed before it bought or trained anything)."""
    run_dir = Path(run_dir)
    db = run_dir / STORE_FILE
    if db.is_file() and db.stat().st_size > 0:
        with db.open("rb") as handle:
            if handle.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
                raise RunFolderError(f"{db} is not an SQLite database (overwritten or damaged); restore it from a "
                                     "backup or choose another --out")
        if _has_history(db):
            return True
    outputs = next((hit for pattern in RUN_OUTPUTS for hit in run_dir.glob(pattern)), None)
    if outputs is not None:
        state = "empty" if db.is_file() else "missing"
        raise RunFolderError(f"{run_dir} holds a previous run's files ({outputs.relative_to(run_dir)}, ...) but its "
                             f"store {db} is {state}; restore evolve.db or choose another --out")
    return False


def check_store_needs(run_dir: Path, store: Store, images: ImageStore) -> None:
    """Refuse a run whose committed checkpoint or active set's images are gone from disk: resuming
    would fail in training, every time."""
    from evolvedirector.trainer.checkpoint import STATE  # torch: only when a run really opens

    row = latest_checkpoint(store)
    if row is not None and not (Path(run_dir) / row["checkpoint"] / STATE).is_file():
        raise RunFolderError(f"{Path(run_dir) / row['checkpoint']}, the checkpoint of committed round {row['round']}, "
                             "is missing or incomplete; restore it or choose another --out")
    missing = [s for s in store.active_samples() if s.image_hash not in images]
    if missing:
        first = missing[0]
        raise RunFolderError(
            f"image {first.image_hash} of sample {first.id} (teacher {first.teacher}) is missing from "
            f"{images.root}" + (f", and {len(missing) - 1} more of the active set's" if len(missing) > 1 else "")
            + "; restore the images or choose another --out"
        )


def open_run_folder(folder: RunFolder, config: RunConfig, console: Console) -> tuple[Store, ImageStore]:
    """A writer's store and images: a damaged, foreign or emptied folder refused, the config saved,
    and what a killed run left tidied (each thing done shown in a note)."""
    store = None
    try:
        check_run_folder(folder.path)
        folder.save_config(config)
        store = Store(folder.path / STORE_FILE)
        images = ImageStore(folder.path / "images")
        check_store_needs(folder.path, store, images)
    except BaseException:
        if store is not None:
            store.close()
        raise
    for done in tidy_leftovers(folder, store):
        console.print(f"note: {done}", highlight=False)
    return store, images


def tidy_leftovers(folder: RunFolder, store: Store) -> list[str]:
    """Remove what killed writes left and point `checkpoints/latest` at the store's last
    checkpoint. Only under the run's lock. Returns what it did, to be shown."""
    done = []
    # The folder itself too: `ab` may write report.html there without the lock, but only at its
    # stop, and a report is rebuilt after every round anyway.
    parents = [folder.path, *(parent for pattern in TIDIED for parent in folder.path.glob(pattern))]
    leftovers = [path for parent in parents if parent.is_dir() for path in parent.glob(f"{TMP_PREFIX}*")]
    for path in leftovers:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    if leftovers:
        done.append(f"removed {len(leftovers)} temporary files left by an interrupted write")
    row = latest_checkpoint(store)
    pointer = folder.path / "checkpoints" / "latest"
    named = pointer.read_text().strip() if pointer.is_file() else None
    committed = None if row is None else Path(row["checkpoint"]).name
    stray = [path for path in folder.path.glob("checkpoints/round-*") if path.name != committed]
    if row is not None and (named != row["checkpoint"] or stray):
        folder.point_latest_at(row["checkpoint"])  # also removes the checkpoints no committed round names
        done.append(f"checkpoints/latest names {row['checkpoint']}, the store's last committed checkpoint")
    elif row is None and (named is not None or stray):
        pointer.unlink(missing_ok=True)
        for path in stray:
            shutil.rmtree(path)
        done.append("removed checkpoints of rounds that never committed")
    return done


def _has_history(db: Path) -> bool:
    """Whether the store passes quick_check and holds anything a run wrote (rounds, samples or
    ledger rows)."""
    try:
        conn = sqlite3.connect(db, timeout=30)
        try:
            problems = [row[0] for row in conn.execute("PRAGMA quick_check")]
            if problems != ["ok"]:
                raise RunFolderError(f"{db} is damaged (SQLite quick_check: {problems[0]}); restore it from a "
                                     "backup or choose another --out")
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            return any(conn.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone()
                       for table in ("rounds", "samples", "teacher_calls") if table in tables)
        finally:
            conn.close()
    except sqlite3.DatabaseError as error:
        raise RunFolderError(f"{db} is damaged ({error}); restore it from a backup or choose another --out") from None

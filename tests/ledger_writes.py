"""Ledger rows written the way the ledger writes them: the writes of store/teacher_calls.py, run
by a LedgerWriter on its own connection; for rows a run left behind (a crash mid-call, faults)."""

from __future__ import annotations

from pathlib import Path

from evolvedirector.teachers.ledger_writer import LedgerWriter


def write_rows(path: Path, *writes) -> None:
    """Commit `writes` (functions of a connection) to the store at `path`; a refused write (its
    budget spent) raises its error here, and the writes before it stay committed."""
    writer = LedgerWriter(path)
    futures = [writer.submit(write) for write in writes]
    writer.close()
    for future in futures:
        future.result()

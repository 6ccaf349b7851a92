"""The teacher-call ledger's rows: what was bought, at what price, and what went wrong.

Two tables of the run's store (their schema is in store/db.py, with the rest of the file):
- `teacher_calls`: one row per idempotency key, written before the call is made (status
  `pending`) and finished after (`done` or `failed`; or forgotten, the row deleted, when its
  teacher could not be reached at all and billed nothing: teachers/health.py, so a later run asks
  again). It commits on its own, outside any round, because money spent is spent even if the
  round in progress is lost. A queue API's request id is written into the row as soon as the API
  returns it, before polling, so a resumed run polls that id instead of paying for a new job.
  `billed` says whether the row counts as spend: pending and done calls do, failed ones only when
  the provider billed them anyway.
  Earlier attempts under the same key count too, at `price` each: `remade`, calls in flight when
  a run died that were made again on resume (possibly billed: the provider may have finished
  them), and `rebought`, images whose files were lost and that were bought again (billed).
  `sent` tells a call in flight (1: handed to the teacher) from one still waiting for a slot (0),
  which a run that died never made; NULL in rows older than the column, counted as sent.
- `teacher_faults`: how many faults of each kind (429, 5xx, timeout, ...) each teacher met.

`TeacherCalls` reads them over one connection (the store's: `Store.calls`). The writes are
functions of a connection, run inside a transaction the caller holds: the Ledger's writer thread
(teachers/ledger_writer.py) runs many in one, so one fsync commits them all.
"""

from __future__ import annotations

import sqlite3
import time

from evolvedirector.store.buckets import bucket_text


class BudgetExceeded(Exception):
    """A teacher call would take the run past its budget in calls or dollars."""


# Dollars of a group of rows: each billed row's cost, and every earlier attempt at its price.
_DOLLARS = "COALESCE(SUM(CASE WHEN billed = 1 THEN cost ELSE 0 END + (remade + rebought) * COALESCE(price, 0)), 0)"


class TeacherCalls:
    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def call(self, key: str) -> dict | None:
        row = self.conn.execute("SELECT * FROM teacher_calls WHERE key = ?", (key,)).fetchone()
        return None if row is None else dict(row)

    def pending(self) -> list[dict]:
        rows = self.conn.execute("SELECT * FROM teacher_calls WHERE status = 'pending' ORDER BY created_at").fetchall()
        return [dict(row) for row in rows]

    def spend(self) -> tuple[int, float]:
        """(calls, dollars) that count against the budget: pending (they may have been paid), done,
        and billed failures, and every earlier attempt under their keys (made again after a crash,
        or bought again)."""
        calls, dollars = self.conn.execute(
            f"SELECT COALESCE(SUM(billed + remade + rebought), 0), {_DOLLARS} FROM teacher_calls"
        ).fetchone()
        return calls, dollars

    def possibly_billed(self) -> tuple[int, float]:
        """(calls, dollars) of `spend` that a provider may not have billed: calls in flight when a
        run died, made again on resume (a provider that deduplicates by key bills them once)."""
        calls, dollars = self.conn.execute(
            "SELECT COALESCE(SUM(remade), 0), COALESCE(SUM(remade * COALESCE(price, 0)), 0) FROM teacher_calls"
        ).fetchone()
        return calls, dollars

    def by_teacher(self) -> list[dict]:
        """Per teacher: calls done, pending and failed, dollars spent and dollars possibly billed."""
        rows = self.conn.execute(
            f"SELECT teacher, SUM(status = 'done') AS done, SUM(status = 'pending') AS pending,"
            f" SUM(status = 'failed') AS failed, {_DOLLARS} AS dollars,"
            f" SUM(remade * COALESCE(price, 0)) AS possibly_billed FROM teacher_calls GROUP BY teacher ORDER BY teacher"
        )
        return [dict(row) for row in rows]

    def fault_counts(self) -> dict[str, dict[str, int]]:
        """{teacher: {fault kind: count}}, for `evolvedirector status` and the report."""
        counts: dict[str, dict[str, int]] = {}
        for row in self.conn.execute("SELECT teacher, kind, count FROM teacher_faults ORDER BY teacher, kind"):
            counts.setdefault(row["teacher"], {})[row["kind"]] = row["count"]
        return counts


# -- writes, over any connection, inside a transaction the caller holds -------------------------


def _check_budget(conn: sqlite3.Connection, cost: float, max_calls: int | None, max_dollars: float | None) -> None:
    """Raise BudgetExceeded if one more call at `cost` would pass a cap."""
    calls, dollars = TeacherCalls(conn).spend()
    if max_calls is not None and calls + 1 > max_calls:
        raise BudgetExceeded(f"teacher-call budget of {max_calls} calls is spent")
    if max_dollars is not None and dollars + cost > max_dollars + 1e-9:
        raise BudgetExceeded(f"budget of ${max_dollars:.2f} is spent (${dollars:.2f} used)")


def reserve(
    conn: sqlite3.Connection, *, key: str, teacher: str, prompt: str, seed: int, size: int, cost: float,
    round: int, max_calls: int | None, max_dollars: float | None, bucket: tuple[int, int] | None = None,
) -> None:
    """Insert a pending call if the budget allows it; raise BudgetExceeded, inserting nothing, if not.

    The caller's transaction is immediate (it holds the write lock), so the budget check and the
    insert see no other writer in between: two reservations can never both squeeze under the cap.
    """
    _check_budget(conn, cost, max_calls, max_dollars)
    conn.execute(
        "INSERT INTO teacher_calls (key, teacher, prompt, seed, size, bucket, status, cost, price, round, created_at,"
        " sent) VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, 0)",
        (key, teacher, prompt, seed, size, bucket_text(bucket), cost, cost, round, time.time()),
    )


def remake(
    conn: sqlite3.Connection, key: str, *, cost: float, max_calls: int | None, max_dollars: float | None,
) -> None:
    """Count a pending call's lost attempt (in flight when a run died) before it is made again:
    the provider may have billed it, so it stays in the spend beside the new attempt."""
    _check_budget(conn, cost, max_calls, max_dollars)
    conn.execute(
        "UPDATE teacher_calls SET remade = remade + 1, price = COALESCE(price, ?), sent = 0"
        " WHERE key = ? AND status = 'pending'",
        (cost, key),
    )


def mark_sent(conn: sqlite3.Connection, key: str) -> None:
    """The call is about to be handed to the teacher: from now on a crash leaves it possibly billed."""
    conn.execute("UPDATE teacher_calls SET sent = 1 WHERE key = ?", (key,))


def rebuy(
    conn: sqlite3.Connection, key: str, *, cost: float, max_calls: int | None, max_dollars: float | None,
) -> None:
    """Reopen a done call whose image file is gone, to buy it again: the lost purchase stays in
    the spend (`rebought`) and the new one is pending at its full price."""
    _check_budget(conn, cost, max_calls, max_dollars)
    conn.execute(
        "UPDATE teacher_calls SET rebought = rebought + 1, price = COALESCE(price, cost), status = 'pending',"
        " cost = ?, billed = 1, image_hash = NULL, error = NULL, finished_at = NULL, request_id = NULL, sent = 0"
        " WHERE key = ? AND status = 'done'",
        (cost, key),
    )


def finish(
    conn: sqlite3.Connection, key: str, *, image_hash: str | None = None, error: str | None = None,
    billed: bool = False,
) -> None:
    """Record a call's outcome: an image (done, billed) or an error (failed; billed if the provider
    charged it anyway, otherwise its cost drops to 0 and it leaves the budget)."""
    status = "done" if error is None else "failed"
    billed = status == "done" or billed
    conn.execute(
        "UPDATE teacher_calls SET status = ?, image_hash = ?, error = ?, finished_at = ?, billed = ?,"
        " cost = CASE WHEN ? THEN cost ELSE 0 END WHERE key = ?",
        (status, image_hash, error, time.time(), int(billed), int(billed), key),
    )


def forget(conn: sqlite3.Connection, key: str) -> None:
    """Undo a call the provider made nothing of and billed nothing for, because its teacher could
    not be reached (teachers/health.py): the next buy of the key calls again. A row with no
    earlier attempt goes, as if never reserved; one with earlier attempts (spend) is pending
    again, not sent. A done, billed or queued (request id) call is left as it is."""
    undone = "key = ? AND request_id IS NULL AND (status = 'pending' OR (status = 'failed' AND billed = 0))"
    conn.execute(f"DELETE FROM teacher_calls WHERE {undone} AND remade = 0 AND rebought = 0", (key,))
    conn.execute(
        "UPDATE teacher_calls SET status = 'pending', sent = 0, billed = 1, cost = COALESCE(price, cost),"
        f" error = NULL, finished_at = NULL WHERE {undone}",
        (key,),
    )


def set_request_id(conn: sqlite3.Connection, key: str, request_id: str) -> None:
    """Remember a queue API's id for a pending call, before polling it (crash-safe)."""
    conn.execute("UPDATE teacher_calls SET request_id = ? WHERE key = ? AND status = 'pending'", (request_id, key))


def count_fault(conn: sqlite3.Connection, teacher: str, kind: str) -> None:
    conn.execute(
        "INSERT INTO teacher_faults (teacher, kind, count) VALUES (?, ?, 1)"
        " ON CONFLICT (teacher, kind) DO UPDATE SET count = count + 1",
        (teacher, kind),
    )

"""The run's SQLite file: the dynamic dataset and its history, the teacher-call ledger, the votes.

These tables tell the whole story of a run:
- `samples`: every prompt that ever entered the training set, with its category (`domain`: the
  world's category, the shapes world's domains or a prompt file's categories), its lineage
  (parent, operation, round added, round deleted), the image shape it was bought at (`bucket`,
  height x width, NULL for the square image size) and the teacher image it trains on. The set of version r is the
  samples with `round_added <= r` and no deletion at or before r.
- `candidates`: every teacher image considered for a sample, and which one the director chose.
- `verdicts`: every discrimination (student against teacher) and the action it caused.
- `refusals`: every prompt the director proposed that the world refused, with the reason.
- `rounds`: one row per committed round, with its counts and metrics. A round exists once its
  row does; everything a round writes goes in with that row in a single transaction.
- `teacher_calls` and `teacher_faults`: the ledger, every teacher call with its price and
  outcome, and the faults each teacher met. Its rows and their SQL are store/teacher_calls.py's
  (`Store.calls`): they commit on their own, outside any round.
- `director_failures`: per round, director calls that got no usable answer, by operation (judge:
  a student-teacher verdict, select, expand, mutate, categorize) and kind (auth, http_5xx,
  timeout, unparseable, ...; director/failures.py). An unusable verdict is counted here, never
  stored as a verdict, and causes no action: its sample stays in the set.
- `unjudged`: the samples of a round that got no usable verdict, and why; the next round judges
  them again (on top of its random share).
- `heldout_references`: where the world has no exact rules and the director measures the student
  by its win rate (loop/heldout.py), the best teacher image of each held-out prompt it judges,
  chosen once, committed with the round that bought it. Held-out prompts are never trained on:
  their images are in no table of the set.
- `ab_votes`: blind human preferences from the A/B page (`evolvedirector ab`): for one prompt,
  the student's image against one teacher's, which side the student was shown on, and the choice.

The loop is the only writer of the dynamic set (WAL mode lets readers such as `evolvedirector
status` look at a live run without blocking it); `evolvedirector eval` adds ledger rows (never
beside a live loop: both hold the run folder's lock, loop/run_lock.py) and the A/B page adds votes
beside it, each in short transactions that wait for the other's (busy timeout).

Schema changes are additive only (`CREATE ... IF NOT EXISTS` and `ADDED_COLUMNS`, run on every
open), so a store written by an older version opens unchanged and gains the new tables and columns.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from evolvedirector.store.buckets import bucket_text, parse_bucket  # noqa: F401  (parse_bucket: callers import it here)
from evolvedirector.store.teacher_calls import TeacherCalls

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS samples (
    id INTEGER PRIMARY KEY,
    prompt TEXT NOT NULL,
    domain TEXT NOT NULL,
    parent_id INTEGER REFERENCES samples(id),
    operation TEXT NOT NULL CHECK (operation IN ('seed', 'expand', 'mutate')),
    round_added INTEGER NOT NULL,
    round_deleted INTEGER,
    teacher TEXT NOT NULL,
    image_hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS samples_active ON samples (round_deleted, round_added);
CREATE TABLE IF NOT EXISTS candidates (
    sample_id INTEGER NOT NULL REFERENCES samples(id),
    teacher TEXT NOT NULL,
    image_hash TEXT NOT NULL,
    chosen INTEGER NOT NULL,
    PRIMARY KEY (sample_id, teacher)
);
CREATE TABLE IF NOT EXISTS verdicts (
    id INTEGER PRIMARY KEY,
    round INTEGER NOT NULL,
    sample_id INTEGER NOT NULL REFERENCES samples(id),
    student_image TEXT NOT NULL,
    teacher_image TEXT NOT NULL,
    student_shown_first INTEGER NOT NULL,
    winner TEXT NOT NULL CHECK (winner IN ('student', 'teacher')),
    action TEXT NOT NULL CHECK (action IN ('delete', 'expand', 'keep'))  -- keep: an ablation switched the operation off
);
CREATE TABLE IF NOT EXISTS rounds (
    round INTEGER PRIMARY KEY,
    started_at REAL NOT NULL,
    committed_at REAL NOT NULL,
    set_size INTEGER NOT NULL,
    added INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    mutated INTEGER NOT NULL,
    judged INTEGER NOT NULL,
    teacher_wins INTEGER NOT NULL,
    train_step INTEGER NOT NULL,
    checkpoint TEXT,
    metrics TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS teacher_calls (
    key TEXT PRIMARY KEY,
    teacher TEXT NOT NULL,
    prompt TEXT NOT NULL,
    seed INTEGER NOT NULL,
    size INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'done', 'failed')),
    cost REAL NOT NULL,
    image_hash TEXT,
    error TEXT,
    round INTEGER NOT NULL,
    created_at REAL NOT NULL,
    finished_at REAL,
    request_id TEXT,
    billed INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS teacher_faults (
    teacher TEXT NOT NULL,
    kind TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (teacher, kind)
);
CREATE TABLE IF NOT EXISTS refusals (
    id INTEGER PRIMARY KEY,
    round INTEGER NOT NULL,
    parent_id INTEGER REFERENCES samples(id),
    operation TEXT NOT NULL CHECK (operation IN ('expand', 'mutate')),
    reason TEXT NOT NULL,
    proposal TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS director_failures (
    round INTEGER NOT NULL,
    operation TEXT NOT NULL,
    kind TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (round, operation, kind)
);
CREATE TABLE IF NOT EXISTS unjudged (
    round INTEGER NOT NULL,
    sample_id INTEGER NOT NULL REFERENCES samples(id),
    kind TEXT NOT NULL,
    PRIMARY KEY (round, sample_id)
);
CREATE TABLE IF NOT EXISTS heldout_references (
    prompt TEXT PRIMARY KEY,
    teacher TEXT NOT NULL,
    image_hash TEXT NOT NULL,
    round INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS ab_votes (
    id INTEGER PRIMARY KEY,
    created_at REAL NOT NULL,
    prompt TEXT NOT NULL,
    domain TEXT NOT NULL,
    teacher TEXT NOT NULL,
    student_image TEXT NOT NULL,
    teacher_image TEXT NOT NULL,
    student_side TEXT NOT NULL CHECK (student_side IN ('left', 'right')),
    preferred TEXT NOT NULL CHECK (preferred IN ('student', 'teacher', 'tie'))
);
"""

# Columns added after a table was first released: (table, column, declaration).
ADDED_COLUMNS = (
    ("samples", "bucket", "TEXT"),  # height x width, e.g. 768x1344; NULL: the square image size
    ("teacher_calls", "bucket", "TEXT"),
    ("teacher_calls", "price", "REAL"),  # dollars per attempt; NULL in rows older than the column
    ("teacher_calls", "remade", "INTEGER NOT NULL DEFAULT 0"),
    ("teacher_calls", "rebought", "INTEGER NOT NULL DEFAULT 0"),
    ("teacher_calls", "sent", "INTEGER"),
)


@dataclass
class NewSample:
    """A prompt entering the set in this round, with the teacher image it will train on."""

    prompt: str
    domain: str
    operation: str
    teacher: str
    image_hash: str
    parent_id: int | None = None
    # (teacher, image hash) of every image the director chose among; empty for one teacher.
    candidates: list[tuple[str, str]] = field(default_factory=list)
    bucket: tuple[int, int] | None = None  # (height, width) it was bought at; None: the square size


@dataclass
class RefusalRecord:
    """A proposal of the director that the world refused (see worlds/base.py)."""

    parent_id: int | None
    operation: str  # expand or mutate
    reason: str
    proposal: str


@dataclass
class VerdictRecord:
    sample_id: int
    student_image: str
    teacher_image: str
    student_shown_first: bool
    winner: str
    action: str


@dataclass
class RoundRecord:
    """Everything one round changes; `Store.commit_round` writes it all or nothing."""

    round: int
    started_at: float
    new_samples: list[NewSample] = field(default_factory=list)
    deleted_ids: list[int] = field(default_factory=list)
    verdicts: list[VerdictRecord] = field(default_factory=list)
    refusals: list[RefusalRecord] = field(default_factory=list)
    # (operation, kind) -> director calls that got no usable answer this round
    director_failures: dict[tuple[str, str], int] = field(default_factory=dict)
    unjudged: list[tuple[int, str]] = field(default_factory=list)  # (sample id, failure kind): no usable verdict
    # (held-out prompt, teacher, image hash): best teacher images chosen this round (loop/heldout.py)
    heldout_references: list[tuple[str, str, str]] = field(default_factory=list)
    train_step: int = 0
    checkpoint: str | None = None
    metrics: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Sample:
    id: int
    prompt: str
    domain: str
    parent_id: int | None
    operation: str
    round_added: int
    round_deleted: int | None
    teacher: str
    image_hash: str
    bucket: str | None = None  # height x width as stored, e.g. "768x1344"; None: the square size


class Store:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE ... COMMIT), so it is
        # plain to see in the code what commits together.
        self.conn = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute("PRAGMA foreign_keys=ON")
        self.conn.executescript(SCHEMA)
        for table, column, declaration in ADDED_COLUMNS:
            if column not in {row["name"] for row in self.conn.execute(f"PRAGMA table_info({table})")}:
                self.conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
        self.calls = TeacherCalls(self.conn)

    def close(self) -> None:
        self.conn.close()

    # -- transactions -------------------------------------------------------------------------

    def _transaction(self):
        return _Transaction(self.conn)

    # -- rounds and samples -------------------------------------------------------------------

    def last_round(self) -> int | None:
        """The last committed round, or None before the seed set (round 0) is committed."""
        row = self.conn.execute("SELECT MAX(round) AS r FROM rounds").fetchone()
        return row["r"]

    def rounds(self) -> list[dict]:
        rows = self.conn.execute("SELECT * FROM rounds ORDER BY round").fetchall()
        out = []
        for row in rows:
            record = dict(row)
            record["metrics"] = json.loads(record["metrics"])
            out.append(record)
        return out

    def active_samples(self, at_round: int | None = None) -> list[Sample]:
        """The dynamic set D at version `at_round` (default: the last committed round)."""
        if at_round is None:
            at_round = self.last_round()
            if at_round is None:
                return []
        rows = self.conn.execute(
            "SELECT * FROM samples WHERE round_added <= ? AND (round_deleted IS NULL OR round_deleted > ?)"
            " ORDER BY id",
            (at_round, at_round),
        ).fetchall()
        return [Sample(**dict(row)) for row in rows]

    def sample(self, sample_id: int) -> Sample:
        row = self.conn.execute("SELECT * FROM samples WHERE id = ?", (sample_id,)).fetchone()
        if row is None:
            raise KeyError(f"no sample with id {sample_id}")
        return Sample(**dict(row))

    def lineage(self, sample_id: int) -> list[Sample]:
        """The sample and its ancestors, newest first: why is this image in the training set?"""
        chain = [self.sample(sample_id)]
        while chain[-1].parent_id is not None:
            chain.append(self.sample(chain[-1].parent_id))
        return chain

    def all_samples(self) -> list[Sample]:
        """Every sample ever added, deleted ones included, in id order (for the report's lineage)."""
        return [Sample(**dict(row)) for row in self.conn.execute("SELECT * FROM samples ORDER BY id")]

    def samples_added_up_to(self, at_round: int) -> list[Sample]:
        """Every sample added in rounds 0..at_round, deleted or not (as stored now: a later
        deletion shows in round_deleted), in id order."""
        rows = self.conn.execute("SELECT * FROM samples WHERE round_added <= ? ORDER BY id", (at_round,))
        return [Sample(**dict(row)) for row in rows]

    def all_verdicts(self) -> list[dict]:
        return [dict(row) for row in self.conn.execute("SELECT * FROM verdicts ORDER BY id")]

    def all_candidates(self) -> list[dict]:
        """Every teacher image the director chose among, with `chosen` 1 for the one kept."""
        rows = self.conn.execute("SELECT * FROM candidates ORDER BY sample_id, teacher")
        return [dict(row) for row in rows]

    def count_samples(self) -> int:
        return self.conn.execute("SELECT COUNT(*) AS n FROM samples").fetchone()["n"]

    def domain_counts(self) -> dict[str, int]:
        """Samples in the set now, per category, the largest first."""
        rows = self.conn.execute(
            "SELECT domain, COUNT(*) AS n FROM samples WHERE round_deleted IS NULL GROUP BY domain ORDER BY n DESC"
        )
        return {row["domain"]: row["n"] for row in rows}

    def refusal_counts(self) -> dict[str, dict[str, int]]:
        """reason -> operation -> how many proposals the world refused for it, over the whole run."""
        counts: dict[str, dict[str, int]] = {}
        for row in self.conn.execute(
            "SELECT reason, operation, COUNT(*) AS n FROM refusals GROUP BY reason, operation ORDER BY n DESC"
        ):
            counts.setdefault(row["reason"], {})[row["operation"]] = row["n"]
        return counts

    def director_failures(self) -> dict[int, dict[str, int]]:
        """round -> kind -> director calls that got no usable answer (every operation)."""
        failures: dict[int, dict[str, int]] = {}
        for row in self.conn.execute(
            "SELECT round, kind, SUM(count) AS n FROM director_failures GROUP BY round, kind ORDER BY round, n DESC"
        ):
            failures.setdefault(row["round"], {})[row["kind"]] = row["n"]
        return failures

    def unjudged(self, round: int) -> set[int]:
        """Ids of the samples that got no usable verdict in `round`."""
        rows = self.conn.execute("SELECT sample_id FROM unjudged WHERE round = ?", (round,))
        return {row["sample_id"] for row in rows}

    def all_refusals(self) -> list[dict]:
        return [dict(row) for row in self.conn.execute("SELECT * FROM refusals ORDER BY id")]

    def verdict_counts(self) -> dict[str, int]:
        rows = self.conn.execute("SELECT winner, COUNT(*) AS n FROM verdicts GROUP BY winner").fetchall()
        return {row["winner"]: row["n"] for row in rows}

    def selection_counts(self) -> list[dict]:
        """Training samples per (domain, teacher): which teacher the set learns each domain from."""
        rows = self.conn.execute(
            "SELECT domain, teacher, COUNT(*) AS n FROM samples GROUP BY domain, teacher ORDER BY domain, teacher"
        ).fetchall()
        return [dict(row) for row in rows]

    def selection_wins(self) -> dict[str, dict[str, int]]:
        """domain -> teacher -> how often the director chose that teacher's image over the others'
        (samples bought from several teachers only: an expansion bought from one proves nothing)."""
        rows = self.conn.execute(
            "SELECT domain, teacher, COUNT(*) AS n FROM samples s"
            " WHERE EXISTS (SELECT 1 FROM candidates c WHERE c.sample_id = s.id) GROUP BY domain, teacher"
        ).fetchall()
        wins: dict[str, dict[str, int]] = {}
        for row in rows:
            wins.setdefault(row["domain"], {})[row["teacher"]] = row["n"]
        return wins

    def heldout_references(self) -> dict[str, tuple[str, str]]:
        """held-out prompt -> (teacher, image hash) of the best teacher image chosen for it."""
        rows = self.conn.execute("SELECT prompt, teacher, image_hash FROM heldout_references").fetchall()
        return {row["prompt"]: (row["teacher"], row["image_hash"]) for row in rows}

    def commit_round(self, record: RoundRecord) -> None:
        """Write a whole round in one transaction: a crash leaves the old version or the new one."""
        with self._transaction():
            if self.conn.execute("SELECT 1 FROM rounds WHERE round = ?", (record.round,)).fetchone():
                raise ValueError(f"round {record.round} is already committed")
            for sample_id in record.deleted_ids:
                cursor = self.conn.execute(
                    "UPDATE samples SET round_deleted = ? WHERE id = ? AND round_deleted IS NULL",
                    (record.round, sample_id),
                )
                if cursor.rowcount != 1:
                    raise ValueError(f"sample {sample_id} is not in the active set")
            for new in record.new_samples:
                cursor = self.conn.execute(
                    "INSERT INTO samples (prompt, domain, parent_id, operation, round_added, teacher, image_hash,"
                    " bucket) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (new.prompt, new.domain, new.parent_id, new.operation, record.round, new.teacher, new.image_hash,
                     bucket_text(new.bucket)),
                )
                for teacher, image_hash in new.candidates:
                    self.conn.execute(
                        "INSERT INTO candidates (sample_id, teacher, image_hash, chosen) VALUES (?, ?, ?, ?)",
                        (cursor.lastrowid, teacher, image_hash, int(teacher == new.teacher)),
                    )
            for verdict in record.verdicts:
                self.conn.execute(
                    "INSERT INTO verdicts (round, sample_id, student_image, teacher_image, student_shown_first,"
                    " winner, action) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (record.round, verdict.sample_id, verdict.student_image, verdict.teacher_image,
                     int(verdict.student_shown_first), verdict.winner, verdict.action),
                )
            for refusal in record.refusals:
                self.conn.execute(
                    "INSERT INTO refusals (round, parent_id, operation, reason, proposal) VALUES (?, ?, ?, ?, ?)",
                    (record.round, refusal.parent_id, refusal.operation, refusal.reason, refusal.proposal),
                )
            for sample_id, kind in record.unjudged:
                self.conn.execute("INSERT INTO unjudged (round, sample_id, kind) VALUES (?, ?, ?)",
                                  (record.round, sample_id, kind))
            for (operation, kind), count in record.director_failures.items():
                self.conn.execute(
                    "INSERT INTO director_failures (round, operation, kind, count) VALUES (?, ?, ?, ?)",
                    (record.round, operation, kind, count),
                )
            for prompt, teacher, image_hash in record.heldout_references:
                self.conn.execute(
                    "INSERT OR REPLACE INTO heldout_references (prompt, teacher, image_hash, round)"
                    " VALUES (?, ?, ?, ?)",
                    (prompt, teacher, image_hash, record.round),
                )
            set_size = self.conn.execute(
                "SELECT COUNT(*) AS n FROM samples WHERE round_deleted IS NULL"
            ).fetchone()["n"]
            self.conn.execute(
                "INSERT INTO rounds (round, started_at, committed_at, set_size, added, deleted, mutated, judged,"
                " teacher_wins, train_step, checkpoint, metrics) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.round, record.started_at, time.time(), set_size, len(record.new_samples),
                    len(record.deleted_ids), sum(s.operation == "mutate" for s in record.new_samples),
                    len(record.verdicts), sum(v.winner == "teacher" for v in record.verdicts),
                    record.train_step, record.checkpoint, json.dumps(record.metrics),
                ),
            )

    # -- the teacher-call ledger, for its readers (status, the loop, eval, the report) ---------------
    # Its SQL is TeacherCalls' (store/teacher_calls.py), over this connection; the Ledger writes it.

    def call(self, key: str) -> dict | None:
        return self.calls.call(key)

    def spend(self) -> tuple[int, float]:
        return self.calls.spend()

    def possibly_billed(self) -> tuple[int, float]:
        return self.calls.possibly_billed()

    def spend_by_teacher(self) -> list[dict]:
        return self.calls.by_teacher()

    def fault_counts(self) -> dict[str, dict[str, int]]:
        return self.calls.fault_counts()

    # -- blind human preference (the A/B page) --------------------------------------------------

    def add_vote(
        self, *, prompt: str, domain: str, teacher: str, student_image: str, teacher_image: str,
        student_side: str, preferred: str,
    ) -> int:
        """Record one human choice between the student's and a teacher's image; returns its id."""
        with self._transaction():
            cursor = self.conn.execute(
                "INSERT INTO ab_votes (created_at, prompt, domain, teacher, student_image, teacher_image,"
                " student_side, preferred) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (time.time(), prompt, domain, teacher, student_image, teacher_image, student_side, preferred),
            )
        return cursor.lastrowid

    def votes(self) -> list[dict]:
        rows = self.conn.execute("SELECT * FROM ab_votes ORDER BY id").fetchall()
        return [dict(row) for row in rows]


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception (including KeyboardInterrupt)."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self):
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.conn.execute("COMMIT")
        else:
            self.conn.execute("ROLLBACK")
        return False

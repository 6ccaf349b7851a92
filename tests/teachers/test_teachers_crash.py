"""kill -9 in the middle of a batch of calls, then resume: no stored request id is submitted
again, and the provider's bill lies between the spend recorded without and with the calls that
were in flight at the crash (counted as possibly billed)."""

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from evolvedirector.store import ImageStore, Store
from evolvedirector.teachers import Ledger, idempotency_key
from evolvedirector.testing.fake_images_api import FakeImageAPI

sys.path.insert(0, str(Path(__file__).parent))
from teachers_crash_worker import SLOTS, crash_openai_teacher, crash_requests, crash_teacher  # noqa: E402

pytestmark = pytest.mark.timeout(30)
CALLS = 30
WORKER = Path(__file__).parent / "teachers_crash_worker.py"


def ledger_rows(db: Path, *extra: str) -> list[tuple]:
    """(key, status, request_id, *extra) of every ledger row, read as `evolvedirector status` would."""
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute(f"SELECT {', '.join(('key', 'status', 'request_id', *extra))} FROM teacher_calls").fetchall()
    except sqlite3.OperationalError:  # the schema is not there yet
        return []
    finally:
        conn.close()


@contextmanager
def worker_killed_at_the_end(tmp_path: Path, api: FakeImageAPI, backend: str):
    """The worker buying a batch of CALLS calls from `api`, SIGKILLed when the block ends: the
    block waits for the state to kill it in."""
    child = subprocess.Popen([sys.executable, str(WORKER), str(tmp_path), api.url, str(CALLS), backend],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL, "the batch finished before it could be killed"


def wait_until(condition, deadline: float) -> None:
    """Left as soon as `condition()` holds (a state the batch reached, never a delay after one),
    or at `deadline`, set long for a slow, busy machine."""
    while time.monotonic() < deadline and not condition():
        time.sleep(0.02)


def done_calls(db: Path) -> int:
    return sum(status == "done" for _, status, _ in ledger_rows(db))


def test_kill_9_mid_batch_then_resume_pays_each_image_once(tmp_path):
    db = tmp_path / "evolve.db"
    with FakeImageAPI(latency=0.4) as api:
        def polled() -> int:
            return sum(status == "pending" and rid is not None for _, status, rid in ledger_rows(db))

        with worker_killed_at_the_end(tmp_path, api, "queue"):
            wait_until(lambda: done_calls(db) >= 6 and polled() >= 2, time.monotonic() + 90)

        at_kill = ledger_rows(db, "sent")
        ids_at_kill = {key: rid for key, _, rid, _ in at_kill if rid is not None}
        unnamed_at_kill = sum(status == "pending" and rid is None and sent for _, status, rid, sent in at_kill)
        assert any(status == "pending" for _, status, _, _ in at_kill) and ids_at_kill
        submits_at_kill = len(api.submits)

        # Resume as the loop does: settle what was pending, then ask for the whole batch again.
        store, images = Store(db), ImageStore(tmp_path / "images")
        teacher = crash_teacher(api.url)
        ledger = Ledger(store, images)
        asyncio.run(ledger.settle_pending({"qu": teacher}))
        purchases = asyncio.run(ledger.buy(teacher, crash_requests(CALLS), round=1))

        assert all(p.image_hash in images for p in purchases)
        rows = store.conn.execute("SELECT * FROM teacher_calls").fetchall()
        assert len(rows) == CALLS and {r["status"] for r in rows} == {"done"}
        # One job per key at the provider, and every row names its own job.
        jobs_by_key = {job.key: job.id for job in api.jobs.values()}
        assert len(api.jobs) == CALLS == len(jobs_by_key)
        assert all(jobs_by_key[r["key"]] == r["request_id"] for r in rows)
        # A call whose request id was stored before the crash was polled, never submitted again.
        resubmitted = [key for key, _ in api.submits[submits_at_kill:] if key in ids_at_kill]
        assert resubmitted == []
        assert all(ids_at_kill[key] == jobs_by_key[key] for key in ids_at_kill)
        keys = {idempotency_key("qu", r) for r in crash_requests(CALLS)}
        assert {r["key"] for r in rows} == keys
        # The provider deduplicates submits by the key header: it bills each image once. A call
        # in flight with no request id at the crash was made again, and stays counted as possibly
        # billed; one still waiting for a slot was never made, and counts once.
        assert api.billed_jobs() == CALLS
        assert store.possibly_billed() == (unnamed_at_kill, pytest.approx(unnamed_at_kill * 0.02))
        assert store.spend() == (CALLS + unnamed_at_kill, pytest.approx((CALLS + unnamed_at_kill) * 0.02))
        store.close()


def kill_mid_batch(tmp_path: Path, api: FakeImageAPI, backend: str) -> list[tuple]:
    """Start the worker; once some calls are done, hold the API's answers and SIGKILL the worker
    when every slot's call is at the API (held there, not merely sent) and every other sent call
    is recorded done; release them then: the API makes and bills them, as a provider finishes what
    it was sent. The rows at the kill."""
    db = tmp_path / "evolve.db"

    def sent_unfinished() -> int:
        return sum(status == "pending" and sent for _, status, _, sent in ledger_rows(db, "sent"))

    deadline = time.monotonic() + 90
    try:
        with worker_killed_at_the_end(tmp_path, api, backend):
            wait_until(lambda: done_calls(db) >= 6, deadline)
            api.hold()
            # A call answered just before the hold may still be on its way to `done`: wait for it too.
            wait_until(lambda: api.held >= SLOTS and sent_unfinished() <= api.held, deadline)
    finally:
        api.release()
    return ledger_rows(db, "sent")


@pytest.mark.parametrize("honour", [False, True])
def test_calls_in_flight_at_a_kill_are_counted_so_that_the_bill_reconciles(tmp_path, honour):
    """The OpenAI images API has no request ids: calls in flight at a kill are made again on
    resume. Whether or not the provider deduplicates by the Idempotency-Key header, its bill lies
    within [spend - possibly billed, spend]; before, the re-made calls were recorded nowhere."""
    with FakeImageAPI(latency=0.4, honour_idempotency=honour) as api:
        at_kill = kill_mid_batch(tmp_path, api, "openai")
        pending_at_kill = sum(status == "pending" for _, status, _, _ in at_kill)
        in_flight_at_kill = sum(status == "pending" and sent for _, status, _, sent in at_kill)
        assert in_flight_at_kill == SLOTS < pending_at_kill  # every slot's call; the other pending ones never left
        deadline = time.monotonic() + 60
        while api._in_flight and time.monotonic() < deadline:  # the dead run's calls finish (billed)
            time.sleep(0.02)
        store, images = Store(tmp_path / "evolve.db"), ImageStore(tmp_path / "images")
        teacher = crash_openai_teacher(api.url)
        ledger = Ledger(store, images)
        assert asyncio.run(ledger.settle_pending({"oa": teacher})) == pending_at_kill
        purchases = asyncio.run(ledger.buy(teacher, crash_requests(CALLS), round=1))
        assert all(p.image_hash in images for p in purchases)
        assert {r["status"] for r in store.conn.execute("SELECT status FROM teacher_calls")} == {"done"}

        calls, dollars = store.spend()
        possible_calls, possible_dollars = store.possibly_billed()
        assert (calls, possible_calls) == (CALLS + in_flight_at_kill, in_flight_at_kill)
        assert dollars == pytest.approx(calls * 0.04) and possible_dollars == pytest.approx(in_flight_at_kill * 0.04)
        billed = api.generated * 0.04
        assert dollars - possible_dollars - 1e-9 <= billed <= dollars + 1e-9
        if honour:
            assert api.generated == CALLS  # every re-made call carried its key: billed once
        else:
            assert api.generated > CALLS  # the provider billed calls the dead run never recorded
        # Every generation carried the ledger key of its call.
        keys = {idempotency_key("oa", r) for r in crash_requests(CALLS)}
        assert set(api.generate_keys) == keys
        store.close()

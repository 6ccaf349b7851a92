import asyncio
import sqlite3
from functools import partial

import numpy as np
import pytest

from evolvedirector.store import BudgetExceeded, ImageStore, NewSample, RoundRecord, Store, VerdictRecord, teacher_calls
from evolvedirector.teachers import ImageRequest, Ledger, idempotency_key
from evolvedirector.worlds.shapes.teacher import ShapesTeacher
from tests.ledger_writes import write_rows


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "evolve.db")
    yield s
    s.close()


def seed(store, prompts=("a red circle on the left", "two blue squares")):
    store.commit_round(RoundRecord(round=0, started_at=0.0, new_samples=[
        NewSample(prompt=p, domain="object", operation="seed", teacher="atlas", image_hash=f"h{i}")
        for i, p in enumerate(prompts)
    ]))
    return store.active_samples()


def test_round_commit_is_all_or_nothing(store):
    first, second = seed(store)
    bad = RoundRecord(
        round=1, started_at=0.0,
        new_samples=[NewSample(prompt="a red square on the left", domain="object", operation="expand",
                               teacher="atlas", image_hash="h9", parent_id=first.id)],
        deleted_ids=[second.id],
        # An invalid verdict fails after the deletion and the insert have run inside the transaction.
        verdicts=[VerdictRecord(first.id, "s", "t", True, winner="nobody", action="expand")],
    )
    with pytest.raises(sqlite3.IntegrityError):
        store.commit_round(bad)
    assert store.last_round() == 0
    assert store.count_samples() == 2
    assert [s.id for s in store.active_samples()] == [first.id, second.id]


def test_a_round_cannot_be_committed_twice_or_delete_an_inactive_sample(store):
    first, _ = seed(store)
    with pytest.raises(ValueError, match="already committed"):
        store.commit_round(RoundRecord(round=0, started_at=0.0))
    store.commit_round(RoundRecord(round=1, started_at=0.0, deleted_ids=[first.id]))
    with pytest.raises(ValueError, match="not in the active set"):
        store.commit_round(RoundRecord(round=2, started_at=0.0, deleted_ids=[first.id]))
    assert store.last_round() == 1


def test_versions_and_lineage(store):
    root, other = seed(store)
    store.commit_round(RoundRecord(
        round=1, started_at=0.0, deleted_ids=[other.id],
        new_samples=[NewSample(prompt="a red square on the left", domain="object", operation="expand",
                               teacher="quill", image_hash="c1", parent_id=root.id,
                               candidates=[("atlas", "c0"), ("quill", "c1")])],
        verdicts=[VerdictRecord(root.id, "s1", "h0", False, "teacher", "expand"),
                  VerdictRecord(other.id, "s2", "h1", True, "student", "delete")],
    ))
    child = [s for s in store.active_samples() if s.operation == "expand"][0]
    store.commit_round(RoundRecord(round=2, started_at=0.0, new_samples=[
        NewSample(prompt="a red square on the right", domain="object", operation="expand", teacher="quill",
                  image_hash="g1", parent_id=child.id)]))
    grandchild = [s for s in store.active_samples() if s.parent_id == child.id][0]

    assert [s.prompt for s in store.lineage(grandchild.id)] == [
        "a red square on the right", "a red square on the left", "a red circle on the left"]
    assert {s.id for s in store.active_samples(at_round=0)} == {root.id, other.id}
    assert {s.id for s in store.active_samples(at_round=1)} == {root.id, child.id}
    assert store.sample(other.id).round_deleted == 1
    assert store.verdict_counts() == {"teacher": 1, "student": 1}
    chosen = store.conn.execute("SELECT teacher, chosen FROM candidates ORDER BY teacher").fetchall()
    assert [tuple(r) for r in chosen] == [("atlas", 0), ("quill", 1)]
    rounds = store.rounds()
    assert [(r["round"], r["added"], r["deleted"], r["judged"], r["teacher_wins"]) for r in rounds] == [
        (0, 2, 0, 0, 0), (1, 1, 1, 2, 1), (2, 1, 0, 0, 0)]


def test_image_store_is_content_addressed_and_detects_corruption(tmp_path):
    images = ImageStore(tmp_path / "images")
    image = np.zeros((8, 8, 3), np.uint8)
    image[2:4, 2:4] = (220, 40, 40)
    digest = images.put(image)
    assert images.put(image.copy()) == digest
    np.testing.assert_array_equal(images.get(digest), image)
    assert not list(images.root.rglob(".tmp-*"))
    images.path(digest).write_bytes(b"not a png")
    with pytest.raises(ValueError, match="does not match its hash"):
        images.get(digest)
    with pytest.raises(ValueError, match="uint8"):
        images.put(image.astype(np.float32))


def requests(n, size=32):
    from evolvedirector.worlds.shapes import grammar

    prompts = grammar.all_prompts()[:n]
    return [ImageRequest(p, 0, size) for p in prompts]


def test_ledger_never_overshoots_the_call_budget_under_concurrency(tmp_path, store):
    ledger = Ledger(store, ImageStore(tmp_path / "images"), max_calls=10, concurrency=16)
    purchases = asyncio.run(ledger.buy(ShapesTeacher("atlas"), requests(40), round=0))
    assert sum(p.image_hash is not None for p in purchases) == 10
    assert ledger.exhausted
    assert store.spend() == (10, pytest.approx(10 * 0.04))


def test_ledger_never_overshoots_the_dollar_budget(tmp_path, store):
    ledger = Ledger(store, ImageStore(tmp_path / "images"), max_dollars=1.0)
    asyncio.run(ledger.buy(ShapesTeacher("quill"), requests(40), round=0))
    calls, dollars = store.spend()
    assert calls == 16  # floor(1.00 / 0.06)
    assert dollars <= 1.0


def test_ledger_reuses_paid_calls_and_finishes_pending_ones_without_paying_twice(tmp_path, store):
    images = ImageStore(tmp_path / "images")
    teacher = ShapesTeacher("tally")
    wanted = requests(6)
    first = asyncio.run(Ledger(store, images).buy(teacher, wanted[:4], round=0))
    assert not any(p.reused for p in first)
    # A crash between handing a call to the teacher and recording its result leaves a pending row.
    key = idempotency_key("tally", wanted[4])
    write_rows(store.path,
               partial(teacher_calls.reserve, key=key, teacher="tally", prompt=wanted[4].prompt, seed=0, size=32,
                       cost=teacher.cost_per_image, round=0, max_calls=None, max_dollars=None),
               partial(teacher_calls.mark_sent, key=key))
    again = asyncio.run(Ledger(store, images).buy(teacher, wanted, round=1))
    assert [p.reused for p in again] == [True] * 4 + [False, False]
    assert [p.image_hash for p in again[:4]] == [p.image_hash for p in first]
    rows = store.conn.execute("SELECT status, COUNT(*) AS n FROM teacher_calls GROUP BY status").fetchall()
    assert {r["status"]: r["n"] for r in rows} == {"done": 6}
    # The pending call's lost attempt may have been billed: it stays counted, as possibly billed.
    assert store.spend() == (7, pytest.approx(7 * 0.03))
    assert store.possibly_billed() == (1, pytest.approx(0.03))


def test_budget_check_refuses_without_recording(store):
    reserve = partial(teacher_calls.reserve, teacher="atlas", seed=0, size=32, round=0, max_calls=None,
                      max_dollars=1.0)
    write_rows(store.path, partial(reserve, key="k1", prompt="p", cost=0.5))
    with pytest.raises(BudgetExceeded, match=r"\$1.00"):
        write_rows(store.path, partial(reserve, key="k2", prompt="q", cost=0.6))
    assert store.calls.call("k1") is not None and store.calls.call("k2") is None

"""Spend that a provider's bill reconciles with: a call made again after a crash stays counted
as possibly billed, a lost image bought again is billed at its price, every generation carries
the ledger's key, and the budget covers all of it."""

import asyncio
from functools import partial

import httpx
import pytest

from evolvedirector.store import teacher_calls
from evolvedirector.teachers import ImageRequest, Ledger, idempotency_key
from tests.ledger_writes import write_rows

REQUEST = ImageRequest("a red circle", 0, 32)


def reserve_as_a_dead_run_did(store, key: str, sent: bool = True) -> None:
    """The row a run that died left: reserved, and handed to the teacher or still waiting for a slot."""
    writes = [partial(teacher_calls.reserve, key=key, teacher="oa", prompt=REQUEST.prompt, seed=0, size=32,
                      cost=0.04, round=0, max_calls=None, max_dollars=None)]
    if sent:
        writes.append(partial(teacher_calls.mark_sent, key=key))
    write_rows(store.path, *writes)


@pytest.mark.parametrize("honour", [False, True])
def test_a_call_in_flight_at_a_crash_is_made_again_and_counted_once_as_possibly_billed(
        store, images, openai_teacher, honour):
    from evolvedirector.testing.fake_images_api import FakeImageAPI

    key = idempotency_key("oa", REQUEST)
    with FakeImageAPI(honour_idempotency=honour) as api:
        # The dead run: its row was reserved and its request reached the provider, which billed it.
        reserve_as_a_dead_run_did(store, key)
        httpx.post(f"{api.url}/v1/images/generations", json={"prompt": REQUEST.prompt, "size": "32x32"},
                   headers={"Idempotency-Key": key}).raise_for_status()
        assert asyncio.run(Ledger(store, images).settle_pending({"oa": openai_teacher(api)})) == 1
    row = store.call(key)
    assert row["status"] == "done" and row["image_hash"] in images and row["remade"] == 1
    assert api.generate_keys == [key, key]
    assert store.spend() == (2, pytest.approx(0.08))
    assert store.possibly_billed() == (1, pytest.approx(0.04))
    # What the provider billed: once if it honours the key, twice if not; within the range either way.
    assert api.generated == (1 if honour else 2)
    assert 0.08 - 0.04 <= api.generated * 0.04 <= 0.08 + 1e-9


def test_a_call_the_dead_run_never_sent_is_made_once_and_not_counted_twice(api, store, images, openai_teacher):
    key = idempotency_key("oa", REQUEST)
    reserve_as_a_dead_run_did(store, key, sent=False)  # it was waiting for a slot
    assert asyncio.run(Ledger(store, images).settle_pending({"oa": openai_teacher(api)})) == 1
    assert store.call(key)["status"] == "done" and api.generated == 1
    assert store.spend() == (1, pytest.approx(0.04)) and store.possibly_billed() == (0, 0)


def test_a_lost_image_behind_a_done_row_is_bought_again_at_its_price(api, store, images, openai_teacher, buy):
    teacher = openai_teacher(api)
    [first] = buy(teacher, [REQUEST.prompt])
    images.path(first.image_hash).unlink()
    [again] = buy(teacher, [REQUEST.prompt])
    assert again.image_hash in images and not again.reused
    key = idempotency_key("oa", REQUEST)
    row = store.call(key)
    assert row["status"] == "done" and row["rebought"] == 1 and row["remade"] == 0
    # Two images were made and billed; the ledger says so, and none of it is "possibly".
    assert api.generated == 2
    assert store.spend() == (2, pytest.approx(0.08))
    assert store.possibly_billed() == (0, 0)
    # The rebuy is a new purchase: its key differs, so a deduplicating provider makes a new image.
    assert api.generate_keys == [key, f"{key}-1"]


def test_a_remake_or_a_rebuy_the_budget_cannot_cover_is_refused(api, store, images, openai_teacher):
    teacher = openai_teacher(api)
    key = idempotency_key("oa", REQUEST)
    reserve_as_a_dead_run_did(store, key)
    ledger = Ledger(store, images, max_dollars=0.05)  # the pending call's $0.04 leaves too little
    [purchase] = asyncio.run(ledger.buy(teacher, [REQUEST], round=1))
    assert purchase.image_hash is None and "budget" in purchase.error and ledger.exhausted
    assert store.call(key)["status"] == "pending" and api.generate_keys == []
    assert store.spend() == (1, pytest.approx(0.04))

    [bought] = asyncio.run(Ledger(store, images, max_dollars=0.08).buy(teacher, [REQUEST], round=1))
    images.path(bought.image_hash).unlink()
    ledger = Ledger(store, images, max_dollars=0.10)
    [purchase] = asyncio.run(ledger.buy(teacher, [REQUEST], round=2))
    assert purchase.image_hash is None and ledger.exhausted
    assert store.call(key)["status"] == "done" and store.spend() == (2, pytest.approx(0.08))


def test_every_http_teacher_call_carries_the_ledger_key(api, store, images, openai_teacher, queue_teacher, buy):
    buy(openai_teacher(api), ["a red circle"])
    buy(queue_teacher(api), ["a red circle"])  # no idempotency_header configured: sent all the same
    assert api.generate_keys == [idempotency_key("oa", REQUEST)]
    assert [key for key, _ in api.submits] == [idempotency_key("qu", REQUEST)]

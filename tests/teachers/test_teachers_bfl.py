"""The `bfl` teacher against a fake of Black Forest Labs' FLUX API: bought through the ledger, sizes
on the model's grid, the key only where it may go, 429 waits honoured, credits and moderation
mapped, and a task collected by its stored record, never submitted twice."""

import asyncio
import json
import time
from functools import partial

import pytest

from evolvedirector.config import BFLTeacherConfig, parse_config
from evolvedirector.store import teacher_calls
from evolvedirector.teachers import ImageRequest, Ledger, build_teacher, idempotency_key
from evolvedirector.teachers.base import CallContext
from evolvedirector.teachers.bfl import BFLTeacher, key_may_go, read_task, task_record
from evolvedirector.teachers.faults import Fault
from tests.ledger_writes import write_rows
from tests.teachers.conftest import FAST_RETRY
from tests.teachers.fakes.bfl_api import FakeBFL
from tests.teachers.fakes.server import Reply

pytestmark = pytest.mark.timeout(30)

KEY = "bfl-test-key"


@pytest.fixture
def bfl():
    with FakeBFL(KEY) as server:
        yield server


@pytest.fixture
def flux(bfl, monkeypatch):
    """make(**fields): a `bfl` teacher on the fake (the user's config, base_url pointed at the fake)."""
    monkeypatch.setenv("BFL_API_KEY", KEY)

    def make(**fields):
        return build_teacher(BFLTeacherConfig(**{
            "name": "flux", "backend": "bfl", "model": "flux-pro-1.1", "api_key_env": "BFL_API_KEY",
            "cost_per_image": 0.04, "base_url": bfl.url, "timeout_s": 5, "poll_interval_s": 0.01,
            "retry": FAST_RETRY, **fields,
        }))

    return make


def row_of(store, prompt, seed=0):
    return store.call(idempotency_key("flux", ImageRequest(prompt, seed, 32)))


def test_the_users_config_builds_a_bfl_teacher_on_the_public_host(monkeypatch):
    monkeypatch.setenv("BFL_API_KEY", KEY)
    config = parse_config({"teachers": [{"name": "flux", "backend": "bfl", "model": "flux-pro-1.1",
                                         "api_key_env": "BFL_API_KEY", "cost_per_image": 0.04}]})
    teacher = build_teacher(config.teachers[0])
    assert isinstance(teacher, BFLTeacher)
    assert teacher.base_url == "https://api.bfl.ai" and teacher.concurrency == 24
    assert KEY not in repr(teacher)


def test_a_purchase_submits_polls_downloads_and_bills_once(bfl, flux, buy, store, images):
    [purchase] = buy(flux(), ["a red circle"])
    assert purchase.image_hash in images
    assert images.get(purchase.image_hash).shape == (32, 32, 3)
    assert len(bfl.submits) == 1 and bfl.billed == 1 and bfl.requests["poll"] == 2  # Pending, then Ready
    assert bfl.submits[0]["prompt"] == "a red circle" and bfl.submits[0]["seed"] == 0
    row = row_of(store, "a red circle")
    assert row["status"] == "done" and json.loads(row["request_id"])["id"] == "task-1"
    assert store.spend() == (1, pytest.approx(0.04))
    [again] = buy(flux(), ["a red circle"])  # already bought: the ledger asks nothing
    assert again.image_hash == purchase.image_hash and len(bfl.submits) == 1


def test_sizes_are_on_the_models_grid_square_and_bucket(bfl, flux):
    teacher = flux()
    requests = [ImageRequest("square", 0, 32), ImageRequest("wide", 0, 32, bucket=(32, 64)),
                ImageRequest("tall", 0, 32, bucket=(48, 32))]
    results = asyncio.run(teacher.generate(requests))
    assert [r.image.shape for r in results] == [(32, 32, 3), (32, 64, 3), (48, 32, 3)]
    asked = {body["prompt"]: (body["width"], body["height"]) for body in bfl.submits}
    # 1024x1024 for a square; a bucket keeps that area, shrunk whole to fit 1440, on multiples of 32.
    assert asked == {"square": (1024, 1024), "wide": (1440, 704), "tall": (832, 1248)}
    assert all(side % 32 == 0 and 256 <= side <= 1440 for size in asked.values() for side in size)


def test_a_size_off_the_grid_is_a_final_client_error_not_billed(bfl, flux, buy, store):
    [purchase] = buy(flux(size_multiple=16, default_size="1010x1010"), ["a red circle"])  # 1008: not /32
    assert purchase.image_hash is None and "client_error" in purchase.error and "HTTP 422" in purchase.error
    assert bfl.requests["submit"] == 1 and bfl.billed == 0 and store.spend() == (0, 0)


def test_the_key_goes_in_x_key_to_the_api_never_to_the_delivery_host_nor_a_ledger_row(bfl, flux, buy, store):
    bfl.outcome["a forbidden prompt"] = "Request Moderated"
    buy(flux(), ["a red circle", "a forbidden prompt"])
    for route in ("submit", "poll"):
        assert all(call.headers.get("x-key") == KEY for call in bfl.routes_seen(route))
    [delivery] = bfl.routes_seen("delivery")
    assert delivery.headers["host"].startswith("localhost:") and "x-key" not in delivery.headers
    assert all(KEY not in value for call in bfl.routes_seen("delivery") for value in call.headers.values())
    for prompt in ("a red circle", "a forbidden prompt"):
        row = row_of(store, prompt)
        assert KEY not in json.dumps(dict(row))


def test_a_wrong_key_is_an_auth_fault_that_never_shows_the_key(bfl, flux, buy, monkeypatch):
    monkeypatch.setenv("BFL_API_KEY", "not-the-key-0123456789")
    [purchase] = buy(build_teacher(BFLTeacherConfig(
        name="flux", backend="bfl", cost_per_image=0.04, base_url=bfl.url, retry=FAST_RETRY)), ["a red circle"])
    assert purchase.image_hash is None and "auth" in purchase.error and "HTTP 403" in purchase.error
    assert "not-the-key-0123456789" not in purchase.error
    assert bfl.requests["submit"] == 1 and not bfl.submits  # 403 is final: asked once


def test_where_the_key_may_go():
    base = "https://api.bfl.ai"
    assert key_may_go(base, "https://api.bfl.ai/v1/flux-pro-1.1")
    assert key_may_go(base, "https://api.us1.bfl.ai/v1/get_result?id=x")  # a regional polling host
    assert not key_may_go(base, "http://api.us1.bfl.ai/v1/get_result?id=x")  # never in clear text
    assert not key_may_go(base, "https://api.bfl.ai.evil.example/v1/get_result")
    assert not key_may_go(base, "https://evilbfl.ai/v1/get_result")
    assert not key_may_go(base, "https://api.bfl.ai@evil.example/")
    assert key_may_go("http://127.0.0.1:8000", "http://127.0.0.1:8000/v1/get_result?id=x")
    assert not key_may_go("http://127.0.0.1:8000", "http://localhost:8000/v1/get_result?id=x")
    assert not key_may_go("http://127.0.0.1:8000", "http://127.0.0.1:8001/")


def test_a_polling_url_on_a_foreign_host_gets_no_key_the_task_is_polled_on_base_url(bfl, flux, buy):
    bfl.polling_host = f"localhost:{bfl.url.rsplit(':', 1)[1]}"  # not base_url's origin, not under bfl.ai
    [purchase] = buy(flux(), ["a red circle"])
    assert purchase.image_hash is not None
    polls = bfl.routes_seen("poll")
    assert polls and all(call.headers["host"] == bfl.url.split("//")[1] for call in polls)


@pytest.mark.parametrize("header", [True, False])
def test_429_is_retried_after_the_wait_it_names(bfl, flux, buy, store, header):
    body = {"detail": "Too many active tasks", "retry_after": 0.5}
    bfl.fail_next("submit", Reply(429, body, headers={"retry-after": "0.5"} if header else {}))
    teacher = flux(retry={"max_attempts": 3, "backoff_s": 0.0, "max_backoff_s": 5.0})
    started = time.monotonic()
    [purchase] = buy(teacher, ["a red circle"])
    assert purchase.image_hash is not None
    assert time.monotonic() - started >= 0.45  # no backoff of its own: only the server's wait explains it
    assert bfl.requests["submit"] == 2 and len(bfl.submits) == 1 and bfl.billed == 1
    assert store.fault_counts()["flux"] == {"rate_limited": 1}


def test_more_tasks_than_the_account_may_run_wait_for_a_slot(bfl, flux, buy):
    bfl.max_active, bfl.pending_polls = 1, 3
    [first, second] = buy(flux(concurrency=2, retry={"max_attempts": 6, "backoff_s": 0.01, "max_backoff_s": 2.0}),
                          ["a red circle", "a blue square"])
    assert first.image_hash is not None and second.image_hash is not None
    assert len(bfl.submits) == 2 and bfl.billed == 2 and bfl.requests["submit"] > 2  # one was told to wait


def test_out_of_credits_is_an_out_of_credits_fault_not_billed(bfl, flux, buy, store):
    bfl.credits = 0
    [purchase] = buy(flux(), ["a red circle"])
    assert purchase.image_hash is None and "out_of_credits" in purchase.error
    assert bfl.requests["submit"] == 1 and bfl.billed == 0
    assert store.spend() == (0, 0)


@pytest.mark.parametrize("status", ["Request Moderated", "Content Moderated"])
def test_a_moderated_task_is_refused_free_and_final(bfl, flux, buy, store, status):
    bfl.outcome["a forbidden prompt"] = status
    [purchase] = buy(flux(), ["a forbidden prompt"])
    assert purchase.image_hash is None and "refused" in purchase.error and status in purchase.error
    row = row_of(store, "a forbidden prompt")
    assert row["status"] == "failed" and row["billed"] == 0 and store.spend() == (0, 0)
    buy(flux(), ["a forbidden prompt"])
    assert bfl.requests["submit"] == 1  # neither retried nor asked again
    assert store.fault_counts() == {"flux": {"refused": 1}}


def test_a_task_that_errors_is_a_free_job_failure(bfl, flux, buy, store):
    bfl.outcome["a red circle"] = "Error"
    [purchase] = buy(flux(), ["a red circle"])
    assert purchase.image_hash is None and "job_failed" in purchase.error
    assert row_of(store, "a red circle")["billed"] == 0 and len(bfl.submits) == 1


def test_the_task_is_stored_before_the_first_poll(bfl, flux):
    stored = []

    async def on_submitted(text: str) -> None:
        stored.append((text, bfl.requests["poll"]))

    request = ImageRequest("a red circle", 0, 32)
    result = asyncio.run(flux().call(request, CallContext(idempotency_key("flux", request), on_submitted=on_submitted)))
    assert result.image is not None
    [(text, polls_before)] = stored
    assert polls_before == 0
    assert read_task(text) == ("task-1", f"{bfl.url}/v1/get_result?id=task-1")


def test_a_pending_call_with_a_stored_task_is_collected_by_polling_never_resubmitted(bfl, flux, store, images):
    teacher = flux(retry={"max_attempts": 2, "backoff_s": 0.01, "max_backoff_s": 0.02})
    bfl.fail_next("poll", Reply(503, {"detail": "Service Unavailable"}), times=2)
    request = ImageRequest("a red circle", 0, 32)
    [first] = asyncio.run(Ledger(store, images).buy(teacher, [request], round=0))
    assert first.image_hash is None
    row = row_of(store, "a red circle")
    assert row["status"] == "pending" and json.loads(row["request_id"])["polling_url"].endswith("?id=task-1")
    assert store.spend() == (1, pytest.approx(0.04))  # BFL holds a task we may owe
    assert asyncio.run(Ledger(store, images).settle_pending({"flux": flux()})) == 1
    row = row_of(store, "a red circle")
    assert row["status"] == "done" and row["image_hash"] in images
    assert len(bfl.submits) == 1 and bfl.requests["submit"] == 1 and bfl.billed == 1


def test_a_stored_task_the_api_no_longer_knows_is_a_billed_failure(bfl, flux, store, images):
    request = ImageRequest("a red circle", 0, 32)
    key = idempotency_key("flux", request)
    write_rows(store.path,
               partial(teacher_calls.reserve, key=key, teacher="flux", prompt=request.prompt, seed=0, size=32,
                       cost=0.04, round=0, max_calls=None, max_dollars=None),
               partial(teacher_calls.set_request_id, key=key,
                       request_id=task_record("expired", f"{bfl.url}/v1/get_result?id=expired")))
    asyncio.run(Ledger(store, images).settle_pending({"flux": flux()}))
    row = store.call(key)
    assert row["status"] == "failed" and row["billed"] == 1 and "Task not found" in row["error"]
    assert bfl.requests["submit"] == 0 and bfl.requests["poll"] == 1
    assert store.spend() == (1, pytest.approx(0.04))


def test_a_lost_download_is_fetched_again_never_generated_again(bfl, flux, buy):
    bfl.fail_next("delivery", Reply(503, content=b"busy"))
    [purchase] = buy(flux(), ["a red circle"])
    assert purchase.image_hash is not None
    assert bfl.requests["delivery"] == 2 and len(bfl.submits) == 1 and bfl.billed == 1


def test_an_expired_signed_url_is_a_billed_failure_not_an_auth_fault(bfl, flux, buy, store):
    bfl.fail_next("delivery", Reply(403, content=b"<Error>AuthenticationFailed</Error>"), times=5)
    [purchase] = buy(flux(), ["a red circle"])
    assert purchase.image_hash is None and "bad_response" in purchase.error and "result.sample" in purchase.error
    assert bfl.requests["delivery"] == 1 and len(bfl.submits) == 1
    assert row_of(store, "a red circle")["billed"] == 1


def test_probe_reads_the_credits_with_the_right_key_and_fails_with_a_wrong_one(bfl, flux, monkeypatch):
    assert asyncio.run(flux().probe()) == "GET /v1/credits: 100 credits"
    assert bfl.requests["credits"] == 1 and bfl.submits == [] and bfl.billed == 0
    monkeypatch.setenv("BFL_API_KEY", "wrong-key-abcdef123456")
    with pytest.raises(Fault) as raised:
        asyncio.run(flux().probe())
    assert raised.value.kind == "auth" and "wrong-key-abcdef123456" not in str(raised.value)
    bfl.credits = 0
    monkeypatch.setenv("BFL_API_KEY", KEY)
    with pytest.raises(Fault) as raised:
        asyncio.run(flux().probe())
    assert raised.value.kind == "out_of_credits"

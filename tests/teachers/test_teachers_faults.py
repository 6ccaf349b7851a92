"""Every fault against a real HTTP server on 127.0.0.1: handled, counted per kind, billed right.

OpenAI-style calls: 429 (Retry-After), 5xx, timeouts and resets are retried; a refusal is final
and free; a corrupt image inside a billed answer is final and billed; a corrupt download is
fetched again. Queue-style calls: the same on every step, plus failed and refused jobs, and
polling that gives up (the call stays pending and is collected later, never resubmitted).
"""

import asyncio
import time
from functools import partial

import pytest

from evolvedirector.store import teacher_calls
from evolvedirector.teachers import ImageRequest, Ledger, idempotency_key
from tests.ledger_writes import write_rows

pytestmark = pytest.mark.timeout(30)


def call_row(store, teacher, prompt, seed=0):
    return store.call(idempotency_key(teacher.name, ImageRequest(prompt, seed, 32)))


@pytest.mark.parametrize("fault, kind", [
    ("429", "rate_limited"), ("500", "server_error"), ("503", "server_error"),
    ("timeout", "timeout"), ("reset", "connection"),
])
def test_openai_transient_faults_are_retried_counted_and_paid_once(api, store, openai_teacher, buy, fault, kind):
    teacher = openai_teacher(api, timeout_s=0.3)
    api.inject("generate", fault, times=2, delay=1.0)
    [purchase] = buy(teacher, ["a red circle"])
    assert purchase.image_hash is not None
    assert store.fault_counts() == {"oa": {kind: 2}}
    assert api.requests["generate"] == 3 and api.generated == 1
    assert store.spend() == (1, pytest.approx(0.04))
    assert call_row(store, teacher, "a red circle")["status"] == "done"


def test_retry_after_is_honoured_and_pauses_the_teacher(api, store, openai_teacher, buy):
    teacher = openai_teacher(api, retry={"max_attempts": 3, "backoff_s": 0.0, "max_backoff_s": 5.0})
    api.inject("generate", "429", retry_after=0.6)
    started = time.monotonic()
    purchases = buy(teacher, ["a red circle", "a blue square"])
    assert all(p.image_hash is not None for p in purchases)
    # With no backoff of its own, only the server's Retry-After can explain the wait.
    assert time.monotonic() - started >= 0.55
    assert store.fault_counts()["oa"] == {"rate_limited": 1}


def test_refusal_is_final_free_and_never_asked_again(api, store, openai_teacher, buy):
    teacher = openai_teacher(api)
    api.inject("generate", "refuse")
    [purchase] = buy(teacher, ["a forbidden prompt"])
    assert purchase.image_hash is None and "refused" in purchase.error
    row = call_row(store, teacher, "a forbidden prompt")
    assert row["status"] == "failed" and "refused" in row["error"] and row["cost"] == 0 and row["billed"] == 0
    assert store.spend() == (0, 0)
    [again] = buy(teacher, ["a forbidden prompt"])
    assert again.image_hash is None
    assert api.requests["generate"] == 1  # neither retried nor asked again in a later batch
    assert store.fault_counts() == {"oa": {"refused": 1}}


def test_retries_stop_at_the_cap_and_an_unanswered_call_costs_nothing(api, store, openai_teacher, buy):
    teacher = openai_teacher(api, retry={"max_attempts": 3, "backoff_s": 0.01, "max_backoff_s": 0.02})
    api.inject("generate", "503", times=10)
    [purchase] = buy(teacher, ["a red circle"])
    assert purchase.image_hash is None and "gave up after 3 attempts" in purchase.error
    assert api.requests["generate"] == 3
    assert store.fault_counts() == {"oa": {"server_error": 3}}
    assert store.spend() == (0, 0)


@pytest.mark.parametrize("fault", ["truncated", "corrupt"])
def test_corrupt_image_in_a_billed_answer_is_a_billed_failure_not_a_second_purchase(
        api, store, openai_teacher, buy, fault):
    teacher = openai_teacher(api)
    api.inject("generate", fault)
    [purchase] = buy(teacher, ["a red circle"])
    assert purchase.image_hash is None and "corrupt_image" in purchase.error
    assert api.generated == 1 and api.requests["generate"] == 1  # not generated (and paid) again
    row = call_row(store, teacher, "a red circle")
    assert row["status"] == "failed" and row["billed"] == 1
    assert store.spend() == (1, pytest.approx(0.04))  # the provider billed it: so does the ledger
    assert store.fault_counts() == {"oa": {"corrupt_image": 1}}


@pytest.mark.parametrize("fault", ["truncated", "corrupt", "reset"])
def test_a_bad_download_is_fetched_again_not_generated_again(api, store, openai_teacher, buy, fault):
    teacher = openai_teacher(api, response_format="url")
    api.inject("file", fault)
    [purchase] = buy(teacher, ["a red circle"])
    assert purchase.image_hash is not None
    assert api.generated == 1 and api.requests["file"] == 2
    assert store.spend() == (1, pytest.approx(0.04))


def test_queue_faults_on_every_step_are_retried_and_the_job_submitted_once(api, store, queue_teacher, buy):
    teacher = queue_teacher(api, timeout_s=0.3)
    api.inject("submit", "503")
    api.inject("submit", "reset")
    api.inject("status", "500")
    api.inject("status", "429")
    api.inject("result", "timeout", delay=1.0)
    api.inject("file", "truncated")
    [purchase] = buy(teacher, ["a red circle"])
    assert purchase.image_hash is not None
    assert len(api.jobs) == 1 and api.billed_jobs() == 1
    assert store.fault_counts()["qu"] == {
        "server_error": 2, "connection": 1, "rate_limited": 1, "timeout": 1, "corrupt_image": 1}
    row = call_row(store, teacher, "a red circle")
    assert row["status"] == "done" and row["request_id"] == next(iter(api.jobs))
    assert store.spend() == (1, pytest.approx(0.02))


@pytest.mark.parametrize("fault, kind", [("job_failed", "job_failed"), ("refuse", "refused")])
def test_failed_and_refused_jobs_are_final_and_free(api, store, queue_teacher, buy, fault, kind):
    teacher = queue_teacher(api)
    api.inject("submit", fault)
    [purchase] = buy(teacher, ["a red circle"])
    assert purchase.image_hash is None and purchase.error.startswith(kind)
    [again] = buy(teacher, ["a red circle"])
    assert again.image_hash is None
    assert len(api.submits) == 1  # never resubmitted
    assert store.fault_counts() == {"qu": {kind: 1}}
    assert store.spend() == (0, 0)


def test_a_finished_job_whose_image_never_arrives_intact_is_billed(api, store, queue_teacher, buy):
    teacher = queue_teacher(api)
    api.inject("file", "corrupt", times=10)
    [purchase] = buy(teacher, ["a red circle"])
    assert purchase.image_hash is None and "corrupt_image" in purchase.error
    assert api.requests["file"] == 4 and len(api.submits) == 1
    assert store.spend() == (1, pytest.approx(0.02))
    assert store.fault_counts() == {"qu": {"corrupt_image": 4}}


def test_when_polling_gives_up_the_call_stays_pending_and_is_collected_later(api, store, images, queue_teacher):
    teacher = queue_teacher(api, retry={"max_attempts": 2, "backoff_s": 0.01, "max_backoff_s": 0.02})
    api.inject("status", "503", times=2)
    request = ImageRequest("a red circle", 0, 32)
    [first] = asyncio.run(Ledger(store, images).buy(teacher, [request], round=0))
    assert first.image_hash is None
    row = store.call(idempotency_key("qu", request))
    assert row["status"] == "pending" and row["request_id"] is not None
    assert store.spend() == (1, pytest.approx(0.02))  # the provider holds a job we may owe
    settled = asyncio.run(Ledger(store, images).settle_pending({"qu": teacher}))
    assert settled == 1
    row = store.call(idempotency_key("qu", request))
    assert row["status"] == "done" and row["image_hash"] in images
    assert len(api.submits) == 1  # collected by its id, never submitted again
    assert store.spend() == (1, pytest.approx(0.02))


def test_a_job_the_api_no_longer_knows_is_a_billed_failure(api, store, images, queue_teacher):
    teacher = queue_teacher(api)
    request = ImageRequest("a red circle", 0, 32)
    key = idempotency_key("qu", request)
    # A call left pending by a crash, with an id the API has never heard of (404 on its status).
    write_rows(store.path,
               partial(teacher_calls.reserve, key=key, teacher="qu", prompt=request.prompt, seed=0, size=32,
                       cost=0.02, round=0, max_calls=None, max_dollars=None),
               partial(teacher_calls.set_request_id, key=key, request_id="expired-job"))
    asyncio.run(Ledger(store, images).settle_pending({"qu": teacher}))
    row = store.call(key)
    assert row["status"] == "failed" and row["billed"] == 1 and "HTTP 404" in row["error"]
    assert api.submits == []  # polled by its id, not submitted again
    assert store.spend() == (1, pytest.approx(0.02))


def test_image_references_an_api_may_give(api, queue_teacher):
    from evolvedirector.testing.fake_images_api import fake_image
    from evolvedirector.teachers.faults import Fault

    teacher = queue_teacher(api)
    png = fake_image("p", 0, 8, 8)
    api.files["x.png"] = png

    async def fetch(ref):
        async with teacher.session() as client:
            return await teacher.fetch_image(client, ref)

    import base64

    encoded = base64.b64encode(png).decode()
    for ref in ["/files/x.png", f"{api.url}/files/x.png", f"data:image/png;base64,{encoded}", encoded]:
        assert asyncio.run(fetch(ref)).shape == (8, 8, 3)
    for ref in ["file:///etc/passwd", "data:image/png,rawbytes"]:
        with pytest.raises(Fault, match="bad_response"):
            asyncio.run(fetch(ref))

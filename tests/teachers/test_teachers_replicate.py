"""The `replicate` teacher against a fake of Replicate's predictions API (fakes/replicate_api.py).

A purchase creates one prediction with `Prefer: wait` and downloads its output from the delivery
host at once; a slow one is polled by its id, which the ledger holds before the first poll; a
pending call is collected by that id, never created again. The aspect ratio asked is 1:1 for a
square and the nearest for a bucket; the token goes in the Bearer header to the API only; a 429's
documented wait is honoured; no credit, a safety failure and a failed run are final and free; the
preflight reads the account.
"""

import asyncio
import time

import pytest

from evolvedirector.config import ReplicateTeacherConfig, parse_config
from evolvedirector.teachers import ImageRequest, Ledger, build_teacher, idempotency_key
from evolvedirector.teachers.base import CallContext
from evolvedirector.teachers.faults import Fault
from tests.teachers.conftest import FAST_RETRY, buy_requests, row_of
from tests.teachers.fakes.replicate_api import NSFW, FakeReplicateAPI, problem, throttled
from tests.teachers.fakes.server import Reply

pytestmark = pytest.mark.timeout(30)

KEY = "r8_replicate_secret_0123456789abcdef"
COST = 0.003
VERSION = "5c7d5dc6dd8bf75c1acaa8565735e7986bc5b66206b55cca93cb72c9bf15ccaa"


@pytest.fixture
def fake():
    with FakeReplicateAPI(key=KEY) as server:
        yield server


@pytest.fixture
def replicate(monkeypatch):
    """make(fake, **fields): a `replicate` teacher on the fake, the token in REPLICATE_API_TOKEN."""
    monkeypatch.setenv("REPLICATE_API_TOKEN", KEY)

    def make(fake, **fields):
        return build_teacher(ReplicateTeacherConfig(**{
            "name": "rep", "backend": "replicate", "cost_per_image": COST, "base_url": f"{fake.url}/v1",
            "timeout_s": 5, "wait_s": 2, "poll_interval_s": 0.01, "retry": FAST_RETRY, "rate_limit_rpm": None,
            **fields,
        }))

    return make


def test_a_fast_prediction_is_answered_finished_downloaded_and_billed_once(fake, replicate, store, images, buy):
    teacher = replicate(fake)
    [purchase] = buy(teacher, ["a red circle"], seed=7)
    assert purchase.image_hash is not None and images.get(purchase.image_hash).shape == (32, 32, 3)
    [create] = fake.routes_seen("create")
    assert create.path == "/v1/models/black-forest-labs/flux-schnell/predictions"
    assert create.json == {"input": {"prompt": "a red circle", "seed": 7, "aspect_ratio": "1:1"}}
    assert fake.prefer == ["wait=2"] and fake.requests["get"] == 0  # sync mode: no poll needed
    assert fake.delivery.requests["file"] == 1 and fake.billed == 1 and store.spend() == (1, pytest.approx(COST))
    [again] = buy(teacher, ["a red circle"], seed=7)
    assert again.reused and fake.requests["create"] == 1  # bought once, never asked again


@pytest.mark.parametrize("bucket, ratio", [
    (None, "1:1"), ((32, 32), "1:1"), ((32, 56), "16:9"), ((48, 32), "2:3"), ((40, 32), "4:5"),
    ((24, 56), "21:9"), ((56, 32), "9:16"), ((24, 32), "4:3"),
])
def test_the_nearest_aspect_ratio_is_asked_and_the_image_fits_the_request(
        fake, replicate, store, images, bucket, ratio):
    teacher = replicate(fake)
    [purchase] = buy_requests(store, images, teacher, [ImageRequest("a tall tower", 0, 32, bucket=bucket)])
    assert fake.aspect_ratios == [ratio]
    assert images.get(purchase.image_hash).shape[:2] == (bucket or (32, 32))


def test_a_model_version_is_created_through_predictions_and_a_single_url_output_is_read(replicate, buy):
    with FakeReplicateAPI(key=KEY, single_output=True) as fake:
        teacher = replicate(fake, model=f"someone/some-model:{VERSION}", input={"output_format": "png"})
        [purchase] = buy(teacher, ["a lighthouse"])
        assert purchase.image_hash is not None
        [create] = fake.routes_seen("create")
        assert create.path == "/v1/predictions"
        assert create.json == {"version": VERSION, "input": {"output_format": "png", "prompt": "a lighthouse",
                                                             "seed": 0, "aspect_ratio": "1:1"}}
        assert isinstance(fake.predictions[next(iter(fake.predictions))]["output"], str)


def test_config_checks_the_model_and_the_wait_and_has_the_documented_defaults():
    for model in ("flux-schnell", "a/b/c", "a/b:../x"):
        with pytest.raises(Exception, match="model"):
            ReplicateTeacherConfig(name="r", backend="replicate", cost_per_image=COST, model=model)
    with pytest.raises(Exception, match="must exceed wait_s"):
        ReplicateTeacherConfig(name="r", backend="replicate", cost_per_image=COST, timeout_s=30)
    config = ReplicateTeacherConfig(name="r", backend="replicate", cost_per_image=COST)
    assert config.base_url == "https://api.replicate.com/v1" and config.model == "black-forest-labs/flux-schnell"
    assert config.rate_limit_rpm == 600 and config.wait_s == 60 and config.timeout_s > config.wait_s
    assert "1:1" in config.aspect_ratios and "9:21" in config.aspect_ratios
    parsed = parse_config({"teachers": [{"name": "rep", "backend": "replicate", "cost_per_image": COST}]})
    assert isinstance(parsed.teachers[0], ReplicateTeacherConfig)


def test_a_slow_prediction_is_polled_by_its_id_stored_before_the_first_poll(replicate):
    with FakeReplicateAPI(key=KEY, run_polls=3) as fake:
        teacher = replicate(fake)
        stored = []

        async def on_submitted(request_id):
            stored.append((request_id, fake.requests["get"], fake.delivery.requests["file"]))

        request = ImageRequest("a slow sunset", 0, 32)
        result = asyncio.run(teacher.call(request, CallContext(idempotency_key("rep", request),
                                                               on_submitted=on_submitted)))
        assert result.image is not None and result.image.shape == (32, 32, 3)
        [(request_id, polls, downloads)] = stored
        assert request_id in fake.predictions and polls == 0 and downloads == 0
        gets = fake.routes_seen("get")
        assert len(gets) == 4 and all(call.path == f"/v1/predictions/{request_id}" for call in gets)
        assert fake.requests["create"] == 1 and fake.billed == 1


def test_a_finished_answer_still_stores_the_id_before_the_download(fake, replicate):
    stored = []

    async def on_submitted(request_id):
        stored.append((request_id, fake.delivery.requests["file"]))

    request = ImageRequest("a quick sketch", 0, 32)
    result = asyncio.run(replicate(fake).call(request, CallContext("k", on_submitted=on_submitted)))
    assert result.image is not None and stored == [(next(iter(fake.predictions)), 0)]


def test_when_polling_gives_up_the_call_stays_pending_and_is_collected_later(replicate, store, images):
    with FakeReplicateAPI(key=KEY, run_polls=1) as fake:
        teacher = replicate(fake, retry={"max_attempts": 2, "backoff_s": 0.01, "max_backoff_s": 0.02})
        fake.fail_next("get", problem(503, "Service Unavailable", "try again"), times=2)
        request = ImageRequest("a red circle", 0, 32)
        [first] = asyncio.run(Ledger(store, images).buy(teacher, [request], round=0))
        assert first.image_hash is None
        row = store.call(idempotency_key("rep", request))
        assert row["status"] == "pending" and row["request_id"] in fake.predictions
        assert store.spend() == (1, pytest.approx(COST))  # Replicate holds a prediction we may owe
        settled = asyncio.run(Ledger(store, images).settle_pending({"rep": teacher}))
        assert settled == 1
        row = store.call(idempotency_key("rep", request))
        assert row["status"] == "done" and row["image_hash"] in images
        assert fake.requests["create"] == 1 and fake.billed == 1  # collected by its id, never created again


def test_a_call_with_a_stored_id_polls_it_and_never_creates(fake, replicate):
    teacher = replicate(fake)
    first = asyncio.run(teacher.call(ImageRequest("a crash", 0, 32), CallContext("k")))
    [prediction_id] = fake.predictions
    # As after a crash between the id being stored and the image being kept: collected again.
    resumed = asyncio.run(teacher.call(ImageRequest("a crash", 0, 32), CallContext("k", request_id=prediction_id)))
    assert first.image is not None and (resumed.image == first.image).all()
    assert fake.requests["create"] == 1 and fake.requests["get"] == 1 and fake.billed == 1
    unknown = asyncio.run(teacher.call(ImageRequest("a crash", 0, 32), CallContext("k", request_id="gone")))
    assert unknown.billed and "not_found" in unknown.error and fake.requests["create"] == 1


def test_the_token_goes_to_the_api_only_and_into_no_row_or_error(fake, replicate, store, buy, tmp_path, monkeypatch):
    teacher = replicate(fake)
    # An error body that echoes the token: it must be scrubbed before it reaches the ledger.
    fake.fail_next("create", problem(422, "Input validation failed", f"- input.prompt: rejected for {KEY}"))
    [failed] = buy(teacher, ["an echo"])
    [ok] = buy(teacher, ["a red circle"])
    assert ok.image_hash is not None and "client_error" in failed.error and KEY not in failed.error
    assert all(call.headers["authorization"] == f"Bearer {KEY}" for _, call in fake.calls)
    assert all("authorization" not in call.headers for _, call in fake.delivery.calls)  # another host
    rows = [dict(row) for row in store.conn.execute("SELECT * FROM teacher_calls")]
    assert len(rows) == 2 and KEY not in repr(rows) and KEY not in repr(teacher)
    assert not any(KEY.encode() in path.read_bytes() for path in tmp_path.glob("evolve.db*"))
    monkeypatch.setenv("REPLICATE_API_TOKEN", "r8_wrong")
    [denied] = buy(replicate(fake), ["a blue square"])
    assert "auth" in denied.error and "valid authentication token" in denied.error and "r8_wrong" not in denied.error
    assert fake.billed == 1 and fake.requests["create"] == 3  # 401 is final


@pytest.mark.parametrize("reply", [throttled(seconds=1), throttled(seconds=30, retry_after=0.6)])
def test_429_waits_the_documented_reset_or_retry_after_and_pauses_the_teacher(fake, replicate, store, buy, reply):
    teacher = replicate(fake, retry={"max_attempts": 3, "backoff_s": 0.0, "max_backoff_s": 5})
    fake.fail_next("create", reply)
    started = time.monotonic()
    purchases = buy(teacher, ["a red circle", "a blue square"])
    assert all(p.image_hash is not None for p in purchases)
    # No backoff of the teacher's own: only the server's wait (Retry-After first) explains it.
    assert 0.55 <= time.monotonic() - started < 5
    assert store.fault_counts() == {"rep": {"rate_limited": 1}} and fake.billed == 2 and fake.requests["create"] == 3


def test_out_of_credit_is_final_and_not_billed(replicate, store, buy):
    with FakeReplicateAPI(key=KEY, credit=0.001) as fake:
        [purchase] = buy(replicate(fake), ["a red circle"])
        assert purchase.image_hash is None and "out_of_credits" in purchase.error
        assert "insufficient credit" in purchase.error.lower()
        assert fake.requests["create"] == 1 and fake.billed == 0
    assert store.spend() == (0, 0)
    assert store.fault_counts() == {"rep": {"out_of_credits": 1}}


@pytest.mark.parametrize("reply, kind", [
    # The documented insufficient-credit body is read whatever status carries it.
    (problem(403, "Insufficient credit", "You have insufficient credit to run this model."), "out_of_credits"),
    # A model that screens its input when the prediction is created.
    (problem(422, "Input validation failed", "The input or output was flagged as sensitive. (E005)"), "refused"),
])
def test_create_time_bodies_for_credit_and_safety_are_read(fake, replicate, store, buy, reply, kind):
    fake.fail_next("create", reply)
    [purchase] = buy(replicate(fake), ["a red circle"])
    assert purchase.image_hash is None and purchase.error.startswith(kind)
    assert fake.requests["create"] == 1 and store.spend() == (0, 0)


def test_a_safety_failure_is_refused_free_and_final(fake, replicate, store, buy):
    teacher = replicate(fake)
    [purchase] = buy(teacher, ["a forbidden prompt"])
    assert purchase.image_hash is None and "refused" in purchase.error and NSFW[:30] in purchase.error
    row = row_of(store, teacher, "a forbidden prompt")
    assert row["status"] == "failed" and row["billed"] == 0 and store.spend() == (0, 0)
    [again] = buy(teacher, ["a forbidden prompt"])
    assert again.image_hash is None and fake.requests["create"] == 1 and fake.billed == 0
    assert store.fault_counts() == {"rep": {"refused": 1}}


def test_an_e005_sensitive_failure_while_polling_is_refused_too(replicate, store, buy):
    with FakeReplicateAPI(key=KEY, run_polls=1) as fake:
        sensitive = "The input or output was flagged as sensitive. Please try again with different inputs. (E005)"
        fake.fail_next("get", Reply(200, {"id": "x", "status": "failed", "output": None, "error": sensitive}))
        [purchase] = buy(replicate(fake), ["a harmless prompt"])
        assert purchase.image_hash is None and "refused" in purchase.error and "E005" in purchase.error
        assert store.spend() == (0, 0) and fake.requests["create"] == 1 and fake.requests["get"] == 1


def test_a_failed_run_is_job_failed_free_and_final(fake, replicate, store, buy):
    teacher = replicate(fake)
    [purchase] = buy(teacher, ["an enormous canvas"])
    assert purchase.image_hash is None and "job_failed" in purchase.error and "E1001" in purchase.error
    assert row_of(store, teacher, "an enormous canvas")["billed"] == 0 and store.spend() == (0, 0)
    assert fake.requests["create"] == 1


def test_a_lost_download_is_fetched_again_and_the_prediction_never_made_again(fake, replicate, store, buy):
    teacher = replicate(fake)
    fake.delivery.fail_next("file", problem(500, "Internal Server Error", "oops"))
    fake.delivery.fail_next("file", Reply(200, content=b"\x89PNG truncated", headers={"content-type": "image/png"}))
    [purchase] = buy(teacher, ["a red circle"])
    assert purchase.image_hash is not None and fake.delivery.requests["file"] == 3
    assert fake.requests["create"] == 1 and fake.billed == 1
    # A download that never succeeds: billed (the prediction succeeded), not created again.
    fake.delivery.fail_next("file", problem(500, "Internal Server Error", "oops"), times=10)
    [lost] = buy(teacher, ["a blue square"])
    assert lost.image_hash is None and row_of(store, teacher, "a blue square")["billed"] == 1
    assert fake.requests["create"] == 2 and store.spend() == (2, pytest.approx(2 * COST))


def test_500_is_retried_and_422_is_final(fake, replicate, store, buy):
    teacher = replicate(fake)
    fake.fail_next("create", problem(500, "Internal Server Error", "Something went wrong"), times=2)
    [purchase] = buy(teacher, ["a red circle"])
    assert purchase.image_hash is not None and fake.requests["create"] == 3
    [rejected] = buy(replicate(fake, aspect_ratios=["7:3"]), ["a wide view"])
    assert "client_error" in rejected.error and "aspect_ratio must be one of" in rejected.error
    assert fake.requests["create"] == 4
    assert store.fault_counts() == {"rep": {"server_error": 2, "client_error": 1}}


def test_probe_reads_the_account_and_fails_on_a_wrong_token(fake, replicate, monkeypatch):
    assert asyncio.run(replicate(fake).probe()) == "GET /account: user evolve"
    assert fake.billed == 0 and fake.requests["create"] == 0 and fake.requests["account"] == 1
    monkeypatch.setenv("REPLICATE_API_TOKEN", "r8_wrong")
    with pytest.raises(Fault) as denied:
        asyncio.run(replicate(fake).probe())
    assert denied.value.kind == "auth" and "r8_wrong" not in str(denied.value)
    assert fake.routes_seen("account")[-1].headers["authorization"] == "Bearer r8_wrong"

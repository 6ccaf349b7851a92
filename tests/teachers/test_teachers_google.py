"""The Gemini API's two image backends (`gemini`: generateContent, `imagen`: :predict) against a fake
of the documented protocol: purchases, aspect ratios, the x-goog-api-key header, Google's error
bodies (a bad key is a 400, out of credits a 402 or a zero quota, rate limits with RetryInfo),
verdicts inside a 200 (blocked prompts, filtered images, text-only answers) and the preflight."""

import asyncio
import time

import pytest

from evolvedirector.config import GeminiTeacherConfig, ImagenTeacherConfig
from evolvedirector.teachers import ImageRequest, Ledger, build_teacher, idempotency_key
from evolvedirector.teachers.faults import Fault
from tests.teachers.conftest import FAST_RETRY
from tests.teachers.fakes import google_api
from tests.teachers.fakes.google_api import FakeGoogleAPI, Reply

pytestmark = pytest.mark.timeout(30)

KEY = "AIzaSyFAKE-google-key-0123456789abcdef"
BACKENDS = {"gemini": (GeminiTeacherConfig, "generate", 0.039), "imagen": (ImagenTeacherConfig, "predict", 0.04)}


@pytest.fixture
def api():
    with FakeGoogleAPI(KEY) as server:
        yield server


@pytest.fixture(params=sorted(BACKENDS))
def backend(request):
    return request.param


@pytest.fixture
def make(monkeypatch, api):
    """make(backend, **fields): a teacher on the fake, its key in GEMINI_API_KEY."""
    monkeypatch.setenv("GEMINI_API_KEY", KEY)

    def build(backend: str, **fields):
        config_class, _, price = BACKENDS[backend]
        return build_teacher(config_class(**{
            "name": backend, "backend": backend, "cost_per_image": price, "base_url": f"{api.url}/v1beta",
            "timeout_s": 5, "retry": FAST_RETRY, "rate_limit_rpm": None, **fields}))

    return build


def row(store, teacher, prompt):
    return store.call(idempotency_key(teacher.name, ImageRequest(prompt, 0, 32)))


def test_a_purchase_returns_the_image_and_bills_once(api, store, make, buy, backend):
    teacher = make(backend)
    [purchase] = buy(teacher, ["a red circle"])
    assert purchase.image_hash is not None and purchase.error is None
    assert api.billed == 1 and api.requests[BACKENDS[backend][1]] == 1
    assert store.spend() == (1, pytest.approx(BACKENDS[backend][2]))
    [again] = buy(teacher, ["a red circle"])  # bought once: the ledger reuses it
    assert again.image_hash == purchase.image_hash and api.billed == 1


@pytest.mark.parametrize("bucket, gemini_ratio, imagen_ratio", [
    (None, "1:1", "1:1"), ((32, 64), "16:9", "16:9"), ((64, 32), "9:16", "9:16"), ((48, 32), "2:3", "3:4"),
])
def test_the_nearest_ratio_is_asked_and_the_image_fits_the_request(api, make, backend, bucket, gemini_ratio,
                                                                   imagen_ratio):
    teacher = make(backend)
    [result] = asyncio.run(teacher.generate([ImageRequest("a blue square", 0, 32, bucket=bucket)]))
    assert result.error is None
    assert api.ratios == [gemini_ratio if backend == "gemini" else imagen_ratio]
    assert result.image.shape == (*(bucket or (32, 32)), 3)


def test_the_request_bodies_follow_the_documented_shapes(api, make):
    asyncio.run(make("gemini", generation_config={"imageConfig": {"imageSize": "1K"}}).generate(
        [ImageRequest("a red circle", 7, 32)]))
    asyncio.run(make("imagen", parameters={"personGeneration": "dont_allow"}).generate(
        [ImageRequest("a red circle", 7, 32)]))
    gemini, imagen = api.bodies
    assert gemini["contents"] == [{"parts": [{"text": "a red circle"}]}]
    assert gemini["generationConfig"] == {"responseModalities": ["IMAGE"], "seed": 7,
                                          "imageConfig": {"imageSize": "1K", "aspectRatio": "1:1"}}
    assert imagen == {"instances": [{"prompt": "a red circle"}], "parameters": {
        "includeRaiReason": True, "personGeneration": "dont_allow", "sampleCount": 1, "aspectRatio": "1:1"}}


def test_the_key_goes_in_x_goog_api_key_and_nowhere_else(api, store, make, buy, backend, monkeypatch):
    buy(make(backend), ["a red circle"])
    [call] = api.calls
    route, seen = call
    assert seen.headers["x-goog-api-key"] == KEY
    assert "authorization" not in seen.headers and KEY not in seen.path and not seen.query
    # A wrong key: the documented 400 API_KEY_INVALID is an auth fault, and the key is in no error or row.
    monkeypatch.setenv("GEMINI_API_KEY", KEY[:-4] + "XXXX")
    wrong = make(backend)
    [purchase] = buy(wrong, ["a green star"])
    assert purchase.image_hash is None and purchase.error.startswith("auth:")
    assert api.requests[route] == 2  # a bad key is not retried
    record = row(store, wrong, "a green star")
    assert record["status"] == "failed" and record["billed"] == 0
    assert all(KEY[:-4] not in str(value) for value in record.values())
    assert store.fault_counts()[backend] == {"auth": 1}


def test_429_waits_the_retry_delay_of_its_body(api, store, make, buy, backend):
    teacher = make(backend, retry={"max_attempts": 3, "backoff_s": 0.0, "max_backoff_s": 5.0})
    api.fail_next(BACKENDS[backend][1], google_api.rate_limited(delay="0.5s"))
    started = time.monotonic()
    [purchase] = buy(teacher, ["a red circle"])
    assert purchase.image_hash is not None
    assert time.monotonic() - started >= 0.45  # no backoff of its own: only RetryInfo explains the wait
    assert store.fault_counts()[backend] == {"rate_limited": 1}
    assert api.requests[BACKENDS[backend][1]] == 2 and api.billed == 1


@pytest.mark.parametrize("reply", [google_api.prepay_depleted, google_api.no_billing,
                                   lambda: google_api.rate_limited(delay="0.01s", quota="0")])
def test_an_account_that_cannot_pay_is_out_of_credits_free_and_not_retried(api, store, make, buy, backend, reply):
    teacher = make(backend)
    api.fail_next(BACKENDS[backend][1], reply(), times=5)
    [purchase] = buy(teacher, ["a red circle"])
    assert purchase.image_hash is None and purchase.error.startswith("out_of_credits:")
    assert api.requests[BACKENDS[backend][1]] == 1 and api.billed == 0
    assert store.spend() == (0, 0)
    assert store.fault_counts()[backend] == {"out_of_credits": 1}


@pytest.mark.parametrize("prompt", ["a forbidden prompt", "an unsafe prompt"])
def test_a_moderated_prompt_is_refused_free_and_final(api, store, make, buy, backend, prompt):
    teacher = make(backend)
    [purchase] = buy(teacher, [prompt])
    assert purchase.image_hash is None and purchase.error.startswith("refused:")
    record = row(store, teacher, prompt)
    assert record["status"] == "failed" and record["billed"] == 0 and record["cost"] == 0
    [again] = buy(teacher, [prompt])
    assert again.image_hash is None
    assert api.requests[BACKENDS[backend][1]] == 1  # neither retried nor asked again
    assert store.spend() == (0, 0)


def test_a_gemini_answer_of_text_only_is_refused_never_trained_on(api, store, make, buy):
    teacher = make("gemini")
    [purchase] = buy(teacher, ["a chatty prompt"])
    assert purchase.image_hash is None and "text, no image" in purchase.error
    assert row(store, teacher, "a chatty prompt")["billed"] == 0
    assert api.requests["generate"] == 1 and store.spend() == (0, 0)


def test_503_is_retried_and_the_image_paid_once(api, store, make, buy, backend):
    teacher = make(backend)
    api.fail_next(BACKENDS[backend][1], google_api.unavailable(), times=2)
    [purchase] = buy(teacher, ["a red circle"])
    assert purchase.image_hash is not None
    assert store.fault_counts()[backend] == {"server_error": 2}
    assert api.requests[BACKENDS[backend][1]] == 3 and store.spend() == (1, pytest.approx(BACKENDS[backend][2]))


def test_an_image_that_does_not_decode_is_a_billed_failure_never_asked_again(api, store, make, buy, backend):
    teacher = make(backend)
    garbage = "bm90IGEgcG5n"  # base64 of "not a png"
    answer = ({"candidates": [{"content": {"parts": [{"inlineData": {"mimeType": "image/png", "data": garbage}}]},
                               "finishReason": "STOP"}]} if backend == "gemini"
              else {"predictions": [{"mimeType": "image/png", "bytesBase64Encoded": garbage}]})
    api.fail_next(BACKENDS[backend][1], Reply(200, answer))
    [purchase] = buy(teacher, ["a red circle"])
    assert purchase.image_hash is None and purchase.error.startswith("corrupt_image:")
    assert row(store, teacher, "a red circle")["billed"] == 1
    assert api.requests[BACKENDS[backend][1]] == 1
    assert store.spend() == (1, pytest.approx(BACKENDS[backend][2]))


def test_an_unknown_model_is_not_found(api, make, buy, backend):
    [purchase] = buy(make(backend, model="no-such-model"), ["a red circle"])
    assert purchase.error.startswith("not_found:") and api.billed == 0


def test_probe_reads_the_model_for_free(api, make, backend, monkeypatch):
    teacher = make(backend)
    checked = asyncio.run(teacher.probe())
    assert teacher.model in checked and teacher.method in checked
    assert api.requests == {"get_model": 1} and api.billed == 0
    # The model exists but is served by the other backend's method: not found for this one.
    other = "imagen-4.0-generate-001" if backend == "gemini" else "gemini-2.5-flash-image"
    with pytest.raises(Fault) as mismatch:
        asyncio.run(make(backend, model=other).probe())
    assert mismatch.value.kind == "not_found"
    monkeypatch.setenv("GEMINI_API_KEY", "AIzaSy-wrong-key")
    with pytest.raises(Fault) as wrong:
        asyncio.run(make(backend).probe())
    assert wrong.value.kind == "auth" and "wrong-key" not in str(wrong.value)


def test_without_a_key_the_api_answers_403_an_auth_fault(api, make, backend):
    with pytest.raises(Fault) as missing:
        asyncio.run(make(backend, api_key_env=None).probe())  # no header sent: the API's own 403
    assert missing.value.kind == "auth" and "unregistered callers" in str(missing.value)


def test_calls_in_parallel_each_bill_once(api, store, images, make, backend):
    teacher = make(backend, concurrency=4)
    requests = [ImageRequest(f"prompt {i}", 0, 32) for i in range(6)]
    purchases = asyncio.run(Ledger(store, images).buy(teacher, requests, round=0))
    assert all(p.image_hash is not None for p in purchases)
    assert api.billed == 6 and store.spend() == (6, pytest.approx(6 * BACKENDS[backend][2]))

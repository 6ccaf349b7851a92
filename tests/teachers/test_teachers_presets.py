"""The presets (`backend: fal | recraft | together`, teachers/presets.py) against fakes of each
provider's documented API: the entry expands to the right backend and settings, buys through the
ledger, sends the documented auth header (and the key nowhere else), asks sizes in the provider's
form, and maps the provider's answers (fal's queue and safety checker, out of credits, a bad key)."""

import asyncio
import json

import pytest

from evolvedirector.config import OpenAITeacherConfig, QueueTeacherConfig, parse_config
from evolvedirector.teachers import ImageRequest, Ledger, build_teacher, idempotency_key
from evolvedirector.teachers.base import CallContext
from evolvedirector.teachers.faults import Fault
from evolvedirector.teachers.openai_images import OpenAIImagesTeacher
from evolvedirector.teachers.queue_http import QueueTeacher
from tests.teachers.conftest import FAST_RETRY
from tests.teachers.fakes.fal_api import FakeFal
from tests.teachers.fakes.recraft_api import SIZES, FakeRecraft
from tests.teachers.fakes.server import Reply
from tests.teachers.fakes.together_api import FakeTogether

pytestmark = pytest.mark.timeout(30)

FAL_KEY, RECRAFT_KEY, TOGETHER_KEY = "fal-test-key-0123", "recraft-test-token-4567", "together-test-key-89ab"
SQUARE, WIDE = ImageRequest("a red circle", 3, 32), ImageRequest("a wide field", 4, 32, bucket=(32, 64))


def entry_config(backend: str, url: str, **fields):
    """The config entry a user writes (plus the fake's URL), parsed as a run's config is."""
    entry = {"name": backend, "backend": backend, "cost_per_image": 0.03, "base_url": url, "timeout_s": 5,
             "retry": FAST_RETRY, **fields}
    return parse_config({"teachers": [entry]}).teachers[0]


def no_key_in(store, key: str, teacher: str, prompts, seed: int = 0) -> bool:
    rows = [store.call(idempotency_key(teacher, ImageRequest(p, seed, 32))) for p in prompts]
    return all(row is not None and key not in json.dumps(dict(row)) for row in rows)


@pytest.fixture
def fal(monkeypatch):
    monkeypatch.setenv("FAL_KEY", FAL_KEY)
    with FakeFal(FAL_KEY) as server:
        yield server


@pytest.fixture
def recraft(monkeypatch):
    monkeypatch.setenv("RECRAFT_API_TOKEN", RECRAFT_KEY)
    with FakeRecraft(RECRAFT_KEY) as server:
        yield server


@pytest.fixture
def together(monkeypatch):
    monkeypatch.setenv("TOGETHER_API_KEY", TOGETHER_KEY)
    with FakeTogether(TOGETHER_KEY) as server:
        yield server


def fal_teacher(fal, model="fal-ai/flux/dev", **fields):
    return build_teacher(entry_config("fal", fal.url, model=model, poll_interval_s=0.01, **fields))


# -- fal: the queue backend -------------------------------------------------------------------------


def test_a_fal_entry_is_the_queue_backend_with_the_apps_paths(monkeypatch):
    monkeypatch.setenv("FAL_KEY", FAL_KEY)
    config = entry_config("fal", "https://queue.fal.run", model="fal-ai/flux/dev")
    assert isinstance(config, QueueTeacherConfig) and config.backend == "queue"
    assert (config.submit_path, config.status_path, config.result_path) == (
        "/fal-ai/flux/dev", "/fal-ai/flux/requests/{request_id}/status", "/fal-ai/flux/requests/{request_id}")
    assert (config.auth_header, config.auth_prefix, config.api_key_env) == ("Authorization", "Key ", "FAL_KEY")
    assert (config.size_field, config.aspect_size_format, config.default_size) == (
        "image_size", "object", {"width": 1024, "height": 1024})
    assert config.refusal_field == "has_nsfw_concepts.0" and config.done_statuses == ["COMPLETED"]
    top_level = entry_config("fal", "https://queue.fal.run", model="fal-ai/fast-sdxl")
    assert top_level.status_path == "/fal-ai/fast-sdxl/requests/{request_id}/status"
    assert isinstance(build_teacher(config), QueueTeacher)


def test_fal_buys_through_the_ledger_with_key_auth_and_bills_once(fal, buy, store, images):
    [purchase] = buy(fal_teacher(fal), ["a red circle"])
    assert purchase.image_hash in images and images.get(purchase.image_hash).shape == (32, 32, 3)
    assert len(fal.submits) == 1 and fal.billed == 1 and store.spend() == (1, pytest.approx(0.03))
    for route in ("submit", "status", "result"):
        calls = fal.routes_seen(route)
        assert calls and all(call.headers["authorization"] == f"Key {FAL_KEY}" for call in calls)
    [media] = fal.routes_seen("media")  # the CDN on another host gets no key
    assert media.headers["host"].startswith("localhost:") and "authorization" not in media.headers
    assert no_key_in(store, FAL_KEY, "fal", ["a red circle"])
    [again] = buy(fal_teacher(fal), ["a red circle"])
    assert again.image_hash == purchase.image_hash and len(fal.submits) == 1


def test_fal_asks_image_size_as_width_and_height_with_the_buckets_aspect(fal):
    results = asyncio.run(fal_teacher(fal).generate([SQUARE, WIDE]))
    assert [r.image.shape for r in results] == [(32, 32, 3), (32, 64, 3)]
    asked = {body["prompt"]: body for _, body in fal.submits}
    assert asked["a red circle"]["image_size"] == {"width": 1024, "height": 1024}
    wide = asked["a wide field"]["image_size"]
    assert set(wide) == {"width", "height"} and wide["width"] / wide["height"] == pytest.approx(2, rel=0.1)
    assert wide["width"] * wide["height"] == pytest.approx(1024 * 1024, rel=0.05)
    assert (asked["a red circle"]["seed"], asked["a wide field"]["seed"]) == (3, 4)


def test_fal_polls_status_and_result_under_the_app_id_after_storing_the_request_id(fal):
    stored = []

    async def on_submitted(request_id: str) -> None:
        stored.append((request_id, fal.requests["status"]))

    context = CallContext(idempotency_key("fal", SQUARE), on_submitted=on_submitted)
    result = asyncio.run(fal_teacher(fal).call(SQUARE, context))
    assert result.image is not None
    assert stored == [("req-1", 0)]  # on disk before the first poll
    assert [path for path, _ in fal.submits] == ["/fal-ai/flux/dev"]  # the subpath is for submitting only
    assert {call.path for call in fal.routes_seen("status")} == {"/fal-ai/flux/requests/req-1/status"}
    assert [call.path for call in fal.routes_seen("result")] == ["/fal-ai/flux/requests/req-1"]


def test_a_fal_job_left_pending_is_collected_by_its_id_never_resubmitted(fal, store, images):
    teacher = fal_teacher(fal, retry={"max_attempts": 2, "backoff_s": 0.01, "max_backoff_s": 0.02})
    fal.fail_next("status", Reply(503, {"detail": "No runner could be allocated",
                                        "error_type": "runner_scheduling_failure"}), times=2)
    [first] = asyncio.run(Ledger(store, images).buy(teacher, [SQUARE], round=0))
    row = store.call(idempotency_key("fal", SQUARE))
    assert first.image_hash is None and row["status"] == "pending" and row["request_id"] == "req-1"
    assert asyncio.run(Ledger(store, images).settle_pending({"fal": teacher})) == 1
    row = store.call(idempotency_key("fal", SQUARE))
    assert row["status"] == "done" and row["image_hash"] in images
    assert len(fal.submits) == 1 and fal.billed == 1 and store.spend() == (1, pytest.approx(0.03))


def test_an_image_the_safety_checker_withheld_is_a_billed_refusal_never_stored(fal, buy, store, images):
    fal.nsfw.add("a flagged prompt")
    [purchase] = buy(fal_teacher(fal), ["a flagged prompt"])
    assert purchase.image_hash is None and purchase.error.startswith("refused")
    assert "has_nsfw_concepts" in purchase.error
    row = store.call(idempotency_key("fal", ImageRequest("a flagged prompt", 0, 32)))
    assert row["status"] == "failed" and row["billed"] == 1 and row["image_hash"] is None
    assert fal.billed == 1 and store.spend() == (1, pytest.approx(0.03))  # fal drew it: paid for
    assert fal.requests["media"] == 0  # the black image is never even fetched
    buy(fal_teacher(fal), ["a flagged prompt"])
    assert len(fal.submits) == 1  # final: not asked again


def test_a_fal_content_policy_violation_is_a_free_refusal(fal, buy, store):
    fal.policy_violations.add("a forbidden prompt")
    [purchase] = buy(fal_teacher(fal), ["a forbidden prompt"])
    assert purchase.image_hash is None and purchase.error.startswith("refused")
    assert "content_policy_violation" in purchase.error
    row = store.call(idempotency_key("fal", ImageRequest("a forbidden prompt", 0, 32)))
    assert row["billed"] == 0 and fal.billed == 0 and store.spend() == (0, 0)


def test_a_fal_account_out_of_balance_is_out_of_credits_not_a_bad_key(fal, buy, store):
    # fal answers a spent balance with a 403 (fal-ai/fal issues #1112, #1147), not a 402.
    fal.fail_next("submit", Reply(403, {"detail": "User is locked. Reason: Exhausted balance. Top up your balance "
                                                  "at fal.ai/dashboard/billing."}))
    [purchase] = buy(fal_teacher(fal), ["a red circle"])
    assert purchase.image_hash is None and purchase.error.startswith("out_of_credits: HTTP 403")
    assert store.fault_counts() == {"fal": {"out_of_credits": 1}} and fal.billed == 0


def test_a_wrong_fal_key_is_an_auth_fault_that_never_shows_the_key(fal, buy, monkeypatch):
    monkeypatch.setenv("FAL_KEY", "not-the-fal-key-0123456789")
    [purchase] = buy(fal_teacher(fal), ["a red circle"])
    assert purchase.error.startswith("auth") and "HTTP 401" in purchase.error
    assert "not-the-fal-key-0123456789" not in purchase.error
    assert fal.requests["submit"] == 1 and not fal.submits


# -- Recraft: the openai backend ---------------------------------------------------------------------


def test_a_recraft_entry_is_the_openai_backend_with_recrafts_settings(monkeypatch):
    monkeypatch.setenv("RECRAFT_API_TOKEN", RECRAFT_KEY)
    config = entry_config("recraft", "https://external.api.recraft.ai/v1")
    assert isinstance(config, OpenAITeacherConfig) and config.backend == "openai"
    assert (config.model, config.api_key_env, config.response_format, config.probe_path) == (
        "recraftv3", "RECRAFT_API_TOKEN", "b64_json", "/users/me")
    assert config.size_fields == "size" and config.default_size == "1024x1024"
    assert set(config.aspect_sizes) <= set(SIZES) and "2048x1024" in config.aspect_sizes
    assert entry_config("recraft", "https://external.api.recraft.ai/v1", model="recraftv2").model == "recraftv2"
    assert isinstance(build_teacher(config), OpenAIImagesTeacher)


def test_recraft_buys_with_a_bearer_token_and_bills_once(recraft, buy, store, images):
    teacher = build_teacher(entry_config("recraft", f"{recraft.url}/v1"))
    [purchase] = buy(teacher, ["a red circle"])
    assert purchase.image_hash in images and images.get(purchase.image_hash).shape == (32, 32, 3)
    assert recraft.billed == 1 and store.spend() == (1, pytest.approx(0.03))
    [call] = recraft.routes_seen("generate")
    assert call.headers["authorization"] == f"Bearer {RECRAFT_KEY}"
    assert (call.json["model"], call.json["response_format"], call.json["prompt"]) == (
        "recraftv3", "b64_json", "a red circle")
    assert no_key_in(store, RECRAFT_KEY, "recraft", ["a red circle"])


def test_recraft_asks_a_size_from_its_list(recraft):
    tall = ImageRequest("a tall tower", 0, 32, bucket=(64, 32))
    teacher = build_teacher(entry_config("recraft", f"{recraft.url}/v1"))
    results = asyncio.run(teacher.generate([SQUARE, WIDE, tall]))
    assert [r.image.shape for r in results] == [(32, 32, 3), (32, 64, 3), (64, 32, 3)]
    asked = {body["prompt"]: body["size"] for body in recraft.generations}
    assert asked == {"a red circle": "1024x1024", "a wide field": "2048x1024", "a tall tower": "1024x2048"}
    assert set(asked.values()) <= set(SIZES)


def test_recraft_url_results_are_downloaded_without_the_token(recraft, buy, images):
    teacher = build_teacher(entry_config("recraft", f"{recraft.url}/v1", response_format="url"))  # the entry wins
    [purchase] = buy(teacher, ["a red circle"])
    assert purchase.image_hash in images and recraft.generations[0]["response_format"] == "url"
    [download] = recraft.routes_seen("image")
    assert download.headers["host"].startswith("localhost:") and "authorization" not in download.headers


def test_recraft_probe_reads_the_account_and_a_wrong_token_is_an_auth_fault(recraft, monkeypatch):
    teacher = build_teacher(entry_config("recraft", f"{recraft.url}/v1"))
    assert asyncio.run(teacher.probe()) == "GET /users/me: 1000 credits"
    assert recraft.billed == 0 and recraft.requests["generate"] == 0
    monkeypatch.setenv("RECRAFT_API_TOKEN", "not-the-recraft-token-0123")
    with pytest.raises(Fault) as raised:
        asyncio.run(build_teacher(entry_config("recraft", f"{recraft.url}/v1")).probe())
    assert raised.value.kind == "auth" and "HTTP 401" in str(raised.value)
    assert "not-the-recraft-token-0123" not in str(raised.value)


@pytest.mark.parametrize("reply", [
    Reply(400, {"code": "not_enough_credits", "message": "Not enough credits"}),
    Reply(402, {"code": "payment_required", "message": "Top up your API units"}),
], ids=["400-code", "402"])
def test_recraft_out_of_credits_is_an_out_of_credits_fault_not_billed(recraft, buy, store, reply):
    recraft.credits, recraft.no_credits = 0, reply
    [purchase] = buy(build_teacher(entry_config("recraft", f"{recraft.url}/v1")), ["a red circle"])
    assert purchase.image_hash is None and purchase.error.startswith("out_of_credits")
    assert recraft.requests["generate"] == 1 and recraft.billed == 0 and store.spend() == (0, 0)


# -- Together: the openai backend with width/height -------------------------------------------------


def test_a_together_entry_is_the_openai_backend_with_width_height_and_seed():
    config = entry_config("together", "https://api.together.xyz/v1")
    assert isinstance(config, OpenAITeacherConfig) and config.backend == "openai"
    assert (config.model, config.api_key_env) == ("black-forest-labs/FLUX.1-schnell", "TOGETHER_API_KEY")
    assert (config.size_fields, config.seed_field, config.response_format, config.probe_path) == (
        "width_height", "seed", "base64", "/models")


def test_together_buys_with_a_bearer_key_and_bills_once(together, buy, store, images):
    [purchase] = buy(build_teacher(entry_config("together", f"{together.url}/v1")), ["a red circle"])
    assert purchase.image_hash in images and images.get(purchase.image_hash).shape == (32, 32, 3)
    assert together.billed == 1 and store.spend() == (1, pytest.approx(0.03))
    [call] = together.routes_seen("generate")
    assert call.headers["authorization"] == f"Bearer {TOGETHER_KEY}"
    assert (call.json["model"], call.json["response_format"], call.json["n"]) == (
        "black-forest-labs/FLUX.1-schnell", "base64", 1)
    assert no_key_in(store, TOGETHER_KEY, "together", ["a red circle"])


def test_together_asks_integer_width_height_and_the_seed(together):
    teacher = build_teacher(entry_config("together", f"{together.url}/v1"))
    results = asyncio.run(teacher.generate([SQUARE, WIDE]))
    assert [r.image.shape for r in results] == [(32, 32, 3), (32, 64, 3)]
    asked = {body["prompt"]: body for body in together.generations}
    square, wide = asked["a red circle"], asked["a wide field"]
    assert (square["width"], square["height"], square["seed"]) == (1024, 1024, 3)
    assert type(wide["width"]) is int and type(wide["height"]) is int and wide["seed"] == 4
    assert wide["width"] / wide["height"] == pytest.approx(2, rel=0.1) and wide["width"] % 8 == wide["height"] % 8 == 0
    assert "size" not in wide


def test_together_probe_lists_models_and_a_wrong_key_is_an_auth_fault(together, monkeypatch):
    teacher = build_teacher(entry_config("together", f"{together.url}/v1"))
    assert asyncio.run(teacher.probe()) == "GET /models: HTTP 200"  # a bare JSON array, as documented
    assert together.billed == 0
    monkeypatch.setenv("TOGETHER_API_KEY", "not-the-together-key-0123")
    with pytest.raises(Fault) as raised:
        asyncio.run(build_teacher(entry_config("together", f"{together.url}/v1")).probe())
    assert raised.value.kind == "auth" and "invalid_api_key" in str(raised.value)
    assert "not-the-together-key-0123" not in str(raised.value)


def test_together_at_its_credit_limit_is_an_out_of_credits_fault_not_billed(together, buy, store):
    together.credits = 0
    [purchase] = buy(build_teacher(entry_config("together", f"{together.url}/v1")), ["a red circle"])
    assert purchase.image_hash is None and purchase.error.startswith("out_of_credits") and "HTTP 402" in purchase.error
    assert together.requests["generate"] == 1 and together.billed == 0 and store.spend() == (0, 0)


def test_an_unknown_backend_names_every_backend_and_preset():
    from evolvedirector.config import ConfigError

    with pytest.raises(ConfigError) as caught:
        parse_config({"teachers": [{"name": "x", "backend": "fluxx", "cost_per_image": 0.1}]})
    message = str(caught.value)
    assert "teachers.0.backend 'fluxx' is neither a backend" in message
    assert all(name in message for name in ("bfl", "replicate", "stability", "gemini", "imagen", "fal", "recraft",
                                             "together", "gpt-image-1"))

"""The `stability` teacher against a fake of Stability AI's Stable Image API (fakes/stability_api.py).

A purchase is one multipart POST that answers with the image: it bills once and is never made
again; the aspect ratio asked is 1:1 for a square and the nearest for a bucket; the key goes in
the Bearer header only; a 429 waits the documented time-out (or Retry-After); out of credits,
moderation, and a blurred (CONTENT_FILTERED) image are final, the last one billed; the preflight
reads the balance.
"""

import asyncio
import time

import pytest

from evolvedirector.config import StabilityTeacherConfig, parse_config
from evolvedirector.teachers import ImageRequest, build_teacher
from evolvedirector.teachers.faults import Fault
from tests.teachers.conftest import FAST_RETRY, buy_requests, row_of
from tests.teachers.fakes.server import Reply, png
from tests.teachers.fakes.stability_api import FakeStabilityAPI, error, rate_limited

pytestmark = pytest.mark.timeout(30)

KEY = "sk-stability-secret-0123456789"
COST = 0.03


@pytest.fixture
def fake():
    with FakeStabilityAPI(key=KEY) as server:
        yield server


@pytest.fixture
def stability(monkeypatch):
    """make(fake, **fields): a `stability` teacher on the fake, the key in STABILITY_API_KEY."""
    monkeypatch.setenv("STABILITY_API_KEY", KEY)

    def make(fake, **fields):
        return build_teacher(StabilityTeacherConfig(**{
            "name": "stab", "backend": "stability", "cost_per_image": COST, "base_url": fake.url,
            "timeout_s": 5, "retry": FAST_RETRY, "rate_limit_rpm": None, **fields,
        }))

    return make


def test_a_purchase_is_one_multipart_post_billed_once(fake, stability, store, images, buy):
    teacher = stability(fake)
    [purchase] = buy(teacher, ["a red circle"], seed=7)
    assert purchase.image_hash is not None and images.get(purchase.image_hash).shape == (32, 32, 3)
    [call] = fake.routes_seen("generate")
    assert call.path == "/v2beta/stable-image/generate/core"
    assert call.headers["content-type"].startswith("multipart/form-data")
    assert call.headers["accept"] == "image/*"
    assert fake.forms == [{"prompt": "a red circle", "seed": "7", "aspect_ratio": "1:1"}]
    assert fake.billed == 1 and store.spend() == (1, pytest.approx(COST))
    [again] = buy(teacher, ["a red circle"], seed=7)
    assert again.reused and fake.requests["generate"] == 1  # bought once, never asked again


@pytest.mark.parametrize("bucket, ratio", [
    (None, "1:1"), ((32, 32), "1:1"), ((32, 56), "16:9"), ((48, 32), "2:3"), ((40, 32), "4:5"),
    ((24, 56), "21:9"), ((56, 32), "9:16"),
])
def test_the_nearest_aspect_ratio_is_asked_and_the_image_fits_the_request(
        fake, stability, store, images, bucket, ratio):
    teacher = stability(fake)
    [purchase] = buy_requests(store, images, teacher, [ImageRequest("a tall tower", 0, 32, bucket=bucket)])
    assert fake.aspect_ratios == [ratio]
    assert images.get(purchase.image_hash).shape[:2] == (bucket or (32, 32))


def test_the_model_picks_the_endpoint_and_form_fields_are_sent(fake, stability, buy):
    teacher = stability(fake, model="sd3", form={"model": "sd3.5-large", "output_format": "jpeg", "cfg_scale": 4.5,
                                                "negative_prompt": "blur"})
    [purchase] = buy(teacher, ["a lighthouse"])
    assert purchase.image_hash is not None
    assert fake.routes_seen("generate")[0].path == "/v2beta/stable-image/generate/sd3"
    assert fake.forms[0] == {"model": "sd3.5-large", "output_format": "jpeg", "cfg_scale": "4.5",
                             "negative_prompt": "blur", "prompt": "a lighthouse", "seed": "0", "aspect_ratio": "1:1"}


def test_config_rejects_an_unknown_endpoint_and_has_the_documented_defaults():
    with pytest.raises(Exception, match="core"):
        StabilityTeacherConfig(name="s", backend="stability", cost_per_image=0.03, model="turbo")
    config = StabilityTeacherConfig(name="s", backend="stability", cost_per_image=0.03)
    assert config.base_url == "https://api.stability.ai" and config.model == "core"
    assert config.rate_limit_rpm <= 900 and config.rate_limit_wait_s == 60  # 150 per 10 s, a 60 s time-out
    assert "1:1" in config.aspect_ratios and "21:9" in config.aspect_ratios


def test_parse_config_builds_a_stability_teacher():
    config = parse_config({"teachers": [{"name": "stab", "backend": "stability", "cost_per_image": 0.03,
                                         "model": "ultra"}]})
    [teacher] = config.teachers
    assert isinstance(teacher, StabilityTeacherConfig) and teacher.model == "ultra"


def test_the_key_goes_in_the_bearer_header_and_in_no_row_or_error(fake, stability, store, buy, monkeypatch):
    teacher = stability(fake)
    # An error body that echoes the key: it must be scrubbed before it reaches the ledger.
    fake.fail_next("generate", error(400, "bad_request", f"aspect_ratio: invalid for key {KEY}"))
    [failed] = buy(teacher, ["an echo"])
    [ok] = buy(teacher, ["a red circle"])
    assert ok.image_hash is not None and "client_error" in failed.error and KEY not in failed.error
    assert all(call.headers["authorization"] == f"Bearer {KEY}" for _, call in fake.calls)
    rows = [dict(row) for row in store.conn.execute("SELECT * FROM teacher_calls")]
    assert len(rows) == 2 and KEY not in repr(rows) and KEY not in repr(teacher)
    monkeypatch.setenv("STABILITY_API_KEY", "sk-wrong")
    [denied] = buy(stability(fake), ["a blue square"])
    assert "auth" in denied.error and "sk-wrong" not in denied.error and fake.billed == 1


def test_429_waits_the_documented_time_out_and_pauses_the_teacher(fake, stability, store, buy):
    teacher = stability(fake, rate_limit_wait_s=0.6, retry={"max_attempts": 3, "backoff_s": 0.0, "max_backoff_s": 5})
    fake.fail_next("generate", rate_limited())
    started = time.monotonic()
    purchases = buy(teacher, ["a red circle", "a blue square"])
    assert all(p.image_hash is not None for p in purchases)
    # No backoff of the teacher's own and no Retry-After: only the documented time-out explains it.
    assert time.monotonic() - started >= 0.55
    assert store.fault_counts() == {"stab": {"rate_limited": 1}} and fake.billed == 2


def test_429_retry_after_wins_over_the_default_wait(fake, stability, store, buy):
    teacher = stability(fake, rate_limit_wait_s=60, retry={"max_attempts": 3, "backoff_s": 0.0, "max_backoff_s": 5})
    fake.fail_next("generate", rate_limited(retry_after=0.3))
    started = time.monotonic()
    [purchase] = buy(teacher, ["a red circle"])
    assert purchase.image_hash is not None and 0.25 <= time.monotonic() - started < 10
    assert fake.requests["generate"] == 2


def test_out_of_credits_is_final_and_not_billed(stability, store, buy):
    with FakeStabilityAPI(key=KEY, credits=2.0) as fake:  # Core takes 3 credits
        [purchase] = buy(stability(fake), ["a red circle"])
        assert purchase.image_hash is None and "out_of_credits" in purchase.error
        assert fake.requests["generate"] == 1 and fake.billed == 0
    assert store.spend() == (0, 0)
    assert store.fault_counts() == {"stab": {"out_of_credits": 1}}


def test_a_moderated_prompt_is_refused_free_and_final(fake, stability, store, buy):
    teacher = stability(fake)
    [purchase] = buy(teacher, ["a forbidden prompt"])
    assert purchase.image_hash is None and "refused" in purchase.error
    row = row_of(store, teacher, "a forbidden prompt")
    assert row["status"] == "failed" and row["billed"] == 0 and store.spend() == (0, 0)
    [again] = buy(teacher, ["a forbidden prompt"])
    assert again.image_hash is None and fake.requests["generate"] == 1 and fake.billed == 0


def test_a_blurred_content_filtered_image_is_refused_billed_and_never_kept(fake, stability, store, images, buy):
    teacher = stability(fake)
    [purchase] = buy(teacher, ["a blurry scene"])
    assert purchase.image_hash is None and "refused" in purchase.error and "CONTENT_FILTERED" in purchase.error
    row = row_of(store, teacher, "a blurry scene")
    assert row["status"] == "failed" and row["billed"] == 1 and row["image_hash"] is None
    assert fake.billed == 1 and fake.requests["generate"] == 1  # not generated again
    assert store.spend() == (1, pytest.approx(COST))


@pytest.mark.parametrize("reply, kind", [
    (Reply(200, content=png("x", 8, 8), headers={"content-type": "image/png"}), "bad_response"),  # no verdict
    (Reply(200, content=b"not an image", headers={"content-type": "image/png", "finish-reason": "SUCCESS"}),
     "corrupt_image"),
])
def test_a_200_that_gives_no_usable_image_is_a_billed_failure_not_a_second_purchase(
        fake, stability, store, buy, reply, kind):
    teacher = stability(fake)
    fake.fail_next("generate", reply)
    [purchase] = buy(teacher, ["a red circle"])
    assert purchase.image_hash is None and kind in purchase.error
    assert fake.requests["generate"] == 1 and row_of(store, teacher, "a red circle")["billed"] == 1


def test_500_is_retried_and_400_is_final(fake, stability, store, buy):
    teacher = stability(fake)
    fake.fail_next("generate", error(500, "server_error", "An unexpected server error has occurred"), times=2)
    [purchase] = buy(teacher, ["a red circle"])
    assert purchase.image_hash is not None and fake.requests["generate"] == 3
    fake.fail_next("generate", error(422, "invalid_language", "English is the only supported language"))
    [rejected] = buy(teacher, ["un cercle rouge"])
    assert "client_error" in rejected.error and fake.requests["generate"] == 4
    assert store.fault_counts() == {"stab": {"server_error": 2, "client_error": 1}}


def test_probe_reads_the_balance_and_fails_on_a_wrong_key_or_an_empty_account(fake, stability, monkeypatch):
    assert asyncio.run(stability(fake).probe()) == "GET /v1/user/balance: 1000 credits"
    assert fake.billed == 0 and fake.requests["generate"] == 0
    fake.credits = 1.0
    with pytest.raises(Fault) as empty:
        asyncio.run(stability(fake).probe())
    assert empty.value.kind == "out_of_credits"
    monkeypatch.setenv("STABILITY_API_KEY", "sk-wrong")
    with pytest.raises(Fault) as denied:
        asyncio.run(stability(fake).probe())
    assert denied.value.kind == "auth" and "sk-wrong" not in str(denied.value)
    assert fake.routes_seen("balance")[-1].headers["authorization"] == "Bearer sk-wrong"

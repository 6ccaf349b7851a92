"""A teacher's rate limit: the headers by which an answer says its window is used up pause every
call of the teacher until the reset, without a 429 having to be met first."""

from __future__ import annotations

import asyncio
import base64
import time

import httpx
import pytest

from evolvedirector.config import OpenAITeacherConfig
from evolvedirector.teachers import ImageRequest, build_teacher
from evolvedirector.teachers.ratelimit import parse_reset, window_wait
from tests.teachers.fakes.server import Call, FakeServer, Reply, png


@pytest.mark.parametrize("value, seconds", [("1s", 1.0), ("6m0s", 360.0), ("20ms", 0.02), ("2.5", 2.5),
                                            ("1h2m3s", 3723.0), ("soon", None), ("", None)])
def test_reset_headers_are_read_as_seconds(value, seconds):
    assert parse_reset(value) == seconds


def test_a_reset_given_as_a_unix_time_is_seconds_from_now():
    assert 4.0 <= parse_reset(str(time.time() + 5)) <= 5.0


@pytest.mark.parametrize("headers, wait", [
    ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "2s"}, 2.0),
    ({"RateLimit-Remaining": "0", "RateLimit-Reset": "3"}, 3.0),
    ({"x-ratelimit-remaining": "5", "x-ratelimit-reset": "3"}, None),  # window not used up
    ({"x-ratelimit-remaining": "0"}, None),  # no reset given: nothing to wait for
    ({}, None),
])
def test_only_a_used_up_window_with_a_reset_asks_for_a_wait(headers, wait):
    assert window_wait(httpx.Headers(headers)) == wait


class WindowAPI(FakeServer):
    """OpenAI-style images whose first answer says the window is used up for `reset` seconds."""

    name = "window"

    def __init__(self, reset: float):
        super().__init__()
        self.reset = reset
        self.times: list[float] = []

    def route(self, call: Call) -> str:
        return "generate"

    def handle(self, route: str, call: Call) -> Reply:
        with self.lock:
            self.times.append(time.monotonic())
            first = len(self.times) == 1
        headers = {"x-ratelimit-remaining-requests": "0" if first else "9", "x-ratelimit-reset-requests": f"{self.reset}s"}
        return Reply(json={"data": [{"b64_json": base64.b64encode(png(call.json["prompt"], 32, 32)).decode()}]},
                     headers=headers)


def test_an_answer_that_uses_up_the_window_pauses_the_next_request_until_its_reset():
    reset = 0.6
    with WindowAPI(reset) as api:
        teacher = build_teacher(OpenAITeacherConfig(
            name="oa", backend="openai", cost_per_image=0.0, base_url=f"{api.url}/v1", api_key_env=None,
            default_size="32x32", concurrency=1))
        results = asyncio.run(teacher.generate([ImageRequest("a", 0, 32), ImageRequest("b", 0, 32)]))
    assert all(r.image is not None for r in results)
    first, second = api.times
    assert second - first >= reset * 0.9  # waited out the window, not sent at once

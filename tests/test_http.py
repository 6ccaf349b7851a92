"""The key and the retries every web-API client shares (evolvedirector/http.py), on their own."""

import asyncio
import email.utils
import time

import pytest

from evolvedirector.http import AttemptFailed, GaveUp, RetryPolicy, parse_retry_after, read_api_key, with_retries


def test_the_key_comes_from_the_named_variable_and_its_absence_names_field_and_variable(monkeypatch):
    assert read_api_key("director.api_key_env", None) is None
    monkeypatch.setenv("EVOLVE_TEST_HTTP_KEY", "  sk-abc123\n")
    assert read_api_key("director.api_key_env", "EVOLVE_TEST_HTTP_KEY") == "sk-abc123"
    monkeypatch.setenv("EVOLVE_TEST_HTTP_KEY", " \n")
    with pytest.raises(ValueError, match=r"^teachers.oa.api_key_env: the environment variable "
                                         r"EVOLVE_TEST_HTTP_KEY is not set or is empty"):
        read_api_key("teachers.oa.api_key_env", "EVOLVE_TEST_HTTP_KEY")


def test_retry_after_is_seconds_or_an_http_date():
    assert parse_retry_after(None) is None and parse_retry_after("") is None
    assert parse_retry_after("2.5") == 2.5 and parse_retry_after("-3") == 0.0
    assert parse_retry_after("soon") is None
    in_a_minute = email.utils.formatdate(time.time() + 60, usegmt=True)
    assert 55 <= parse_retry_after(in_a_minute) <= 60
    assert parse_retry_after(email.utils.formatdate(time.time() - 60, usegmt=True)) == 0.0


def test_the_backoff_doubles_with_jitter_up_to_the_cap_and_retry_after_is_kept_exactly():
    policy = RetryPolicy(max_attempts=9, backoff_s=1.0, max_backoff_s=5.0)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0), (8, 5.0)]:
        delays = [policy.delay(attempt) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays) and len(set(delays)) > 1
    assert policy.delay(1, retry_after=0.0) == 0.0
    assert policy.delay(1, retry_after=3.0) == 3.0
    assert policy.delay(1, retry_after=3600.0) == 5.0


def test_the_loop_retries_reports_every_failure_and_gives_up_or_stops_at_a_final_one():
    policy = RetryPolicy(max_attempts=3, backoff_s=0.0, max_backoff_s=0.0)
    seen = []

    def run(outcomes):
        outcomes = iter(outcomes)

        async def attempt():
            outcome = next(outcomes)
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome

        return asyncio.run(with_retries(attempt, policy, seen.append))

    assert run([AttemptFailed("busy"), "ok"]) == "ok" and len(seen) == 1
    seen.clear()
    with pytest.raises(GaveUp) as out:
        run([AttemptFailed("a"), AttemptFailed("b"), AttemptFailed("c"), "never reached"])
    assert out.value.attempts == 3 and str(out.value.last) == "c" and len(seen) == 3
    seen.clear()
    with pytest.raises(AttemptFailed, match="refused"):
        run([AttemptFailed("refused", retryable=False), "never reached"])
    assert len(seen) == 1
    seen.clear()
    with pytest.raises(KeyError):  # not a failed attempt: not retried, not reported
        run([KeyError("bug"), "never reached"])
    assert seen == []

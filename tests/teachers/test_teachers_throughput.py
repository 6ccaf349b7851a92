"""Concurrency per teacher, requests per minute, budgets under concurrency, and the benchmark."""

import re
import time

import pytest
from typer.testing import CliRunner

from evolvedirector.testing.fake_images_api import FakeImageAPI

pytestmark = pytest.mark.timeout(30)

PROMPTS = [f"prompt {i}" for i in range(24)]


def test_no_more_calls_in_flight_than_the_teacher_allows(store, openai_teacher, buy):
    with FakeImageAPI(latency=0.15) as api:
        teacher = openai_teacher(api, concurrency=3)
        purchases = buy(teacher, PROMPTS[:12], concurrency=50)  # the teacher's own bound wins
    assert all(p.image_hash is not None for p in purchases)
    assert api.max_in_flight == 3


def test_requests_per_minute_are_spaced(store, openai_teacher, buy, api):
    teacher = openai_teacher(api, concurrency=8, rate_limit_rpm=600)  # one request every 0.1 s
    started = time.monotonic()
    purchases = buy(teacher, PROMPTS[:6])
    elapsed = time.monotonic() - started
    assert all(p.image_hash is not None for p in purchases)
    assert elapsed >= 0.45  # six starts, 0.1 s apart: at least 0.5 s minus timer slack


@pytest.mark.parametrize("budget, expected", [({"max_calls": 5}, 5), ({"max_dollars": 0.2}, 5)])
def test_budgets_hold_under_concurrency_and_the_provider_is_asked_only_that_often(
        store, openai_teacher, buy, budget, expected):
    with FakeImageAPI(latency=0.05) as api:
        teacher = openai_teacher(api, concurrency=8)  # $0.04 a call
        purchases = buy(teacher, PROMPTS[:20], **budget)
    assert sum(p.image_hash is not None for p in purchases) == expected
    assert api.generated == expected and api.requests["generate"] == expected
    calls, dollars = store.spend()
    assert calls == expected and dollars == pytest.approx(0.04 * expected)
    assert sum("budget" in (p.error or "") for p in purchases) == 20 - expected


def test_a_key_asked_for_twice_at_once_is_bought_once(store, openai_teacher, buy, api):
    teacher = openai_teacher(api)
    purchases = buy(teacher, ["a red circle"] * 4)
    assert len({p.image_hash for p in purchases}) == 1 and None not in {p.image_hash for p in purchases}
    assert [p.reused for p in purchases].count(False) == 1
    assert api.generated == 1 and store.spend() == (1, pytest.approx(0.04))


def test_bench_teachers_prints_its_figures_and_utilization_last():
    from evolvedirector.cli import app

    result = CliRunner().invoke(app, ["bench", "teachers", "--concurrency", "4", "--calls", "8", "--latency", "0.3"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert "calls=8 bought=8 ledger_calls=8" in result.output and "concurrency=4" in result.output
    assert re.fullmatch(r"utilization=\d+\.\d{3}", lines[-1])
    # One call at a time could reach at best 1 / 0.3 calls a second, a utilization of 1/4 of the ideal
    # 4 / 0.3; a busy machine only adds time, so anything above 1/4 shows that the calls overlapped
    # (idle, it reads about 0.67).
    assert float(lines[-1].split("=")[1]) > 0.25

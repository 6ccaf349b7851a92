"""A teacher that cannot answer is given up on for the round after a few calls (teachers/health.py),
against real HTTP servers on 127.0.0.1: a port nothing listens on, a refused key (401), an account
out of credits (402), a wrong path (404). Its calls still to come are not made, and its unbilled
failures are forgotten by the ledger, so a later buy asks again. A teacher that answered before
keeps every retry for transient faults."""

import asyncio

import pytest

from evolvedirector.config import OpenAITeacherConfig
from evolvedirector.teachers import ImageRequest, Ledger, build_teacher
from evolvedirector.teachers import health as health_module
from evolvedirector.teachers.health import CALLS_BEFORE_GIVING_UP, describe_failure
from tests.helpers import free_port

pytestmark = pytest.mark.timeout(60)
CONCURRENCY = 4  # the openai teacher's default
PROMPTS = [f"a prompt number {i}" for i in range(30)]


def buy_round(ledger, teacher, prompts, round=0):
    requests = [ImageRequest(p, 0, 32) for p in prompts]

    async def each():  # one buy per prompt, all in flight at once, as a round buys
        return await asyncio.gather(*(ledger.buy(teacher, [r], round) for r in requests))

    return [purchase for [purchase] in asyncio.run(each())]


def ledger_rows(store):
    return [dict(row) for row in store.conn.execute("SELECT * FROM teacher_calls")]


@pytest.mark.parametrize("fault, kind", [("401", "auth"), ("402", "out_of_credits"), ("404", "not_found")])
def test_a_setup_fault_gives_the_teacher_up_after_a_few_calls_and_nothing_is_kept(
        api, store, images, openai_teacher, fault, kind):
    teacher = openai_teacher(api)
    api.fail_from("generate", fault)
    ledger = Ledger(store, images)
    purchases = buy_round(ledger, teacher, PROMPTS)
    assert all(p.image_hash is None for p in purchases)
    # Never retried, and not asked past the first few calls (those in flight when it was given up):
    # out of credits, past the first (no later call could be paid).
    first = 1 if kind == "out_of_credits" else CALLS_BEFORE_GIVING_UP
    assert first <= api.requests["generate"] < first + CONCURRENCY
    assert sum(p.error.startswith("not_tried") for p in purchases) == len(PROMPTS) - api.requests["generate"]
    assert store.fault_counts() == {"oa": {kind: api.requests["generate"]}}
    assert ledger_rows(store) == []  # forgotten: nothing billed, nothing to keep from asking again
    [health] = ledger.round_health(0)
    assert health.failed_every_call() and health.made == api.requests["generate"]
    line = describe_failure(health, teacher_config(api), 0, then="then run it again")
    assert line.startswith(f"teacher oa at 127.0.0.1:{api.url.rsplit(':', 1)[1]} failed every call of round 0 "
                           f"(faults: {kind} {health.made}; {health.made} calls made, {len(PROMPTS) - health.made} "
                           f"not tried; last: {kind}: HTTP {fault} ")
    assert line.endswith(", then run it again")
    # Healed, the same prompts are bought in the next round: none was kept as failed.
    api.heal()
    assert all(p.image_hash is not None for p in buy_round(ledger, teacher, PROMPTS, round=1))


def teacher_config(api, **fields):
    return OpenAITeacherConfig(**{"name": "oa", "backend": "openai", "cost_per_image": 0.04,
                                  "base_url": f"{api.url}/v1", "api_key_env": None, **fields})


def test_a_port_nothing_listens_on_is_given_up_on_within_a_few_calls(store, images):
    port = free_port()
    config = OpenAITeacherConfig(
        name="down", backend="openai", cost_per_image=0.04, base_url=f"http://127.0.0.1:{port}/v1",
        api_key_env=None, retry={"max_attempts": 3, "backoff_s": 0.01, "max_backoff_s": 0.02})
    teacher = build_teacher(config)
    ledger = Ledger(store, images)
    purchases = buy_round(ledger, teacher, PROMPTS)
    [health] = ledger.round_health(0)
    assert all(p.image_hash is None for p in purchases)
    assert CALLS_BEFORE_GIVING_UP <= health.made < CALLS_BEFORE_GIVING_UP + CONCURRENCY
    assert health.made + health.not_tried == len(PROMPTS)
    # Each call made had its retries; none past them.
    attempts = store.fault_counts()["down"]["connection"]
    assert attempts == sum(health.faults.values()) <= 3 * (CALLS_BEFORE_GIVING_UP + CONCURRENCY)
    assert ledger_rows(store) == []
    line = describe_failure(health, config, 2, then="then run it again")
    assert f"teacher down at 127.0.0.1:{port} failed every call of round 0 (faults: connection {attempts}; " in line
    assert (f"check teachers.2.base_url (http://127.0.0.1:{port}/v1) and that its server at 127.0.0.1:{port} is up"
            in line)


def test_a_teacher_that_answered_keeps_its_retries_and_is_given_up_on_only_after_calls_in_a_row_fail(
        api, store, images, openai_teacher):
    teacher = openai_teacher(api)  # 4 attempts a call
    ledger = Ledger(store, images)
    assert all(p.image_hash is not None for p in buy_round(ledger, teacher, PROMPTS[:2]))
    api.fail_from("generate", "500", after=2)
    few = buy_round(ledger, teacher, PROMPTS[2:5], round=1)
    assert all(p.image_hash is None and p.error.startswith("server_error") for p in few)
    assert api.requests["generate"] == 2 + 3 * 4  # every attempt its config gives it
    [health] = ledger.round_health(1)
    assert health.given_up is None and health.failed_every_call()
    # Failed calls of a round the loop will not commit are forgotten on its word, and only then.
    assert {row["status"] for row in ledger_rows(store) if row["round"] == 1} == {"failed"}
    asyncio.run(ledger.forget_failures(1, ["oa"]))
    assert [row["round"] for row in ledger_rows(store)] == [0, 0]
    # Many calls in a row failing give it up, though it answered before.
    many = buy_round(ledger, teacher, PROMPTS[5:], round=2)
    [later] = ledger.round_health(2)
    assert later.given_up == f"its last {CALLS_BEFORE_GIVING_UP} calls failed"
    assert CALLS_BEFORE_GIVING_UP <= later.made < CALLS_BEFORE_GIVING_UP + CONCURRENCY
    assert sum(p.error.startswith("not_tried") for p in many) == len(many) - later.made


def test_transient_faults_before_the_first_answer_are_retried_and_give_nothing_up(api, store, images, openai_teacher):
    teacher = openai_teacher(api)
    api.inject("generate", "503", times=6)  # fewer than the attempts of the calls in flight
    ledger = Ledger(store, images)
    assert all(p.image_hash is not None for p in buy_round(ledger, teacher, PROMPTS))
    [health] = ledger.round_health(0)
    assert health.given_up is None and health.succeeded == len(PROMPTS)


def test_failures_among_answers_are_the_prompts_and_are_kept(api, store, images, openai_teacher):
    teacher = openai_teacher(api, retry={"max_attempts": 1})
    api.inject("generate", "500", times=2)
    ledger = Ledger(store, images)
    purchases = buy_round(ledger, teacher, PROMPTS[:12])
    assert sum(p.image_hash is None for p in purchases) == 2
    [health] = ledger.round_health(0)
    assert health.given_up is None and not health.failed_every_call()
    assert sum(row["status"] == "failed" for row in ledger_rows(store)) == 2


def test_a_teacher_that_never_answered_is_given_up_on_after_a_while_of_failed_attempts(
        monkeypatch, api, store, images, openai_teacher):
    """Calls that each take their whole timeout (a host that drops packets) fail too slowly for
    the count of calls: time decides."""
    monkeypatch.setattr(health_module, "SECONDS_BEFORE_GIVING_UP", 0.5)
    monkeypatch.setattr(health_module, "ATTEMPTS_BEFORE_GIVING_UP", 4)
    teacher = openai_teacher(api, timeout_s=0.2, retry={"max_attempts": 50, "backoff_s": 0.01, "max_backoff_s": 0.01})
    api.fail_from("generate", "timeout")
    ledger = Ledger(store, images)
    purchases = buy_round(ledger, teacher, PROMPTS[:8])
    [health] = ledger.round_health(0)
    assert health.given_up.startswith("no call answered in ")
    assert health.made < CALLS_BEFORE_GIVING_UP and all(p.image_hash is None for p in purchases)
    assert api.requests["generate"] < 8 * 50 / 4  # far from every attempt of every call
    assert ledger_rows(store) == []

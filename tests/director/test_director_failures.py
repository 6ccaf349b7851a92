"""Director failures: counted by kind, per round, in the store, the round line, `status` and the
report; an unusable verdict is no verdict (no coin flip, no action); a director that never
answers stops the run with one line."""

import asyncio
import itertools
import math
import threading

import pytest
import yaml
from typer.testing import CliRunner

from evolvedirector.cli import app
from evolvedirector.director import build_director
from evolvedirector.director.openai_server import NO_LOGPROBS_ADVICE
from evolvedirector.store import Store
from evolvedirector.testing.chat_server import OpenWorldChatServer
from evolvedirector.worlds.shapes.chat_server import ShapesChatServer
from test_director_openai import pairs
from tests.helpers import tiny_config

runner = CliRunner()


def every_nth_unusable(n: int):
    """A reply hook: every nth reply is one no parser can read (a model that rambles now and then)."""
    counter, lock = itertools.count(1), threading.Lock()

    def reply(body, content):
        with lock:
            return "I would rather not say." if next(counter) % n == 0 else content

    return reply


def test_an_unusable_verdict_is_no_verdict_and_each_failure_is_counted_by_kind(openai_config):
    with ShapesChatServer(fault=lambda body: (500, "down")) as server:
        director = build_director(openai_config(server, retries=1), seed=0)
        [(prompt, good, bad)] = pairs(1)
        verdict = asyncio.run(director.compare(prompt, good, bad))
        assert asyncio.run(director.expand(prompt, 3)) == []
    assert (verdict.winner, verdict.failure) == (None, "http_5xx") and "HTTP 500" in verdict.explanation
    tally = director.take_tally()
    assert tally.calls == {"compare": 1, "expand": 1}
    assert tally.failures == {("compare", "http_5xx"): 1, ("expand", "http_5xx"): 1}
    assert tally.failed_every_call() and director.take_tally().calls == {}  # taken: a fresh tally


def test_a_refused_key_is_not_tried_again(openai_config):
    with ShapesChatServer(fault=lambda body: (401, '{"error": "invalid API key"}')) as server:
        director = build_director(openai_config(server), seed=0)
        items = pairs(5)

        async def judge_one_by_one():
            return [await director.compare(p, good, bad) for p, good, bad in items]

        judged = asyncio.run(judge_one_by_one())
        assert len(server.requests) == 1  # the first 401 answered for all five
    assert all(v.winner is None and v.failure == "auth" for v in judged)
    assert director.take_tally().failures == {("compare", "auth"): 5}


def run_with_director(tmp_path, server, rounds: int = 2, **fields) -> tuple[object, object]:
    data = tiny_config(tmp_path / "run", max_rounds=rounds)
    data["evolve"]["seed_prompts"] = 40  # 8 verdicts a round
    data["director"] = {"backend": "openai", "base_url": server.base_url, "model": server.model, "panel_size": 64,
                        "structured_output": "structured_outputs", "backoff_s": 0.01, "max_backoff_s": 0.02,
                        **fields}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(data))
    # --no-check: these are the run's own answers to a failing director, past the preflight (which
    # asks its own question first: tests/test_check.py).
    return runner.invoke(app, ["run", str(config), "--no-check"]), tmp_path / "run"


def test_one_reply_in_eight_unusable_is_counted_and_never_stored_as_a_verdict(tmp_path):
    with ShapesChatServer(judge_accuracy=1.0, reply=every_nth_unusable(8)) as server:
        result, run_dir = run_with_director(tmp_path, server, retries=0)
    assert result.exit_code == 0, result.output
    store = Store(run_dir / "evolve.db")
    rounds = store.rounds()
    failures = store.conn.execute("SELECT * FROM director_failures").fetchall()
    assert {f["kind"] for f in failures} == {"unparseable"}
    judge_failures = {f["round"]: f["count"] for f in failures if f["operation"] == "judge"}
    for r in rounds[1:]:
        number = r["round"]
        verdicts = {v["sample_id"] for v in store.all_verdicts() if v["round"] == number}
        unjudged = store.unjudged(number)
        # The unusable ones are no verdicts: recorded apart, by sample and kind, and counted.
        assert r["judged"] == len(verdicts) and not verdicts & unjudged
        assert len(unjudged) == judge_failures.get(number, 0) >= 1  # 8 requests in a row: one unusable
        # Judged: a select_ratio share of the set before the round, and those left unjudged before it.
        selected = math.ceil(0.2 * len(store.active_samples(at_round=number - 1)))
        again = store.unjudged(number - 1)
        assert again <= verdicts | unjudged
        assert selected <= len(verdicts | unjudged) <= selected + len(again)
    # The seed round's selections (3 teachers, 2 comparisons a prompt) met unusable replies too.
    assert any(f["round"] == 0 and f["operation"] == "select" for f in failures)
    # Shown in the round lines, `status` and the report.
    lines = [line for line in result.output.splitlines() if line.startswith("round")]
    assert all("director failed" in line and "unparseable" in line for line in lines[1:])
    status = runner.invoke(app, ["status", str(run_dir)])
    total = sum(f["count"] for f in failures)
    assert f"director calls with no usable answer: {total} (round 0: unparseable" in status.output
    report = (run_dir / "report.html").read_text()
    assert "director failed" in report and "unparseable" in report
    store.close()


@pytest.mark.parametrize("status, kind", [(500, "http_5xx"), (401, "auth")])
def test_a_director_that_never_answers_stops_the_run_with_one_line(tmp_path, status, kind):
    with ShapesChatServer(fault=lambda body: (status, '{"error": "no"}')) as server:
        result, run_dir = run_with_director(tmp_path, server, retries=1)
    assert result.exit_code == 1  # a part failed at run time, as when no teacher answers; 2 is bad input
    last = result.output.splitlines()[-1]
    assert last.startswith(f"error: the director at {server.base_url}/chat/completions failed every call "
                           f"of round 0 ({kind} ")
    assert f"HTTP {status}" in last and "Traceback" not in result.output
    round_line = next(line for line in result.output.splitlines() if line.startswith("round   0"))
    assert f"director failed 80 of 80 calls ({kind} 80)" in round_line  # 40 seed prompts, 2 selections each
    assert result.exception is None or isinstance(result.exception, SystemExit)
    # The round it happened in is committed with its failures: `status` shows them.
    store = Store(run_dir / "evolve.db")
    assert store.last_round() == 0 and set(store.director_failures()[0]) == {kind}
    store.close()


def test_a_pointwise_director_on_a_server_without_logprobs_stops_the_run_saying_why(tmp_path):
    """Against a server that ignores `logprobs` (as `transformers serve` does), the run stops with
    one line that names the cause and what to change, once round 0 is committed; with the run
    folder's config.yaml set to pairwise, the same command resumes."""
    with OpenWorldChatServer(logprobs=False) as server:
        result, run_dir = run_with_director(tmp_path, server, rounds=1, mode="pointwise", retries=2)
        asked = server.requests["pointwise"]
        saved = run_dir / "config.yaml"
        saved.write_text(saved.read_text().replace("mode: pointwise", "mode: pairwise"))
        again, _ = run_with_director(tmp_path, server, rounds=1, mode="pointwise", retries=2)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert result.output.splitlines()[-1] == (
        f"error: the director at {server.base_url}/chat/completions failed every call of round 0 (no_logprobs 80): "
        f"{NO_LOGPROBS_ADVICE}, then run the same command again to resume")
    assert asked == 160  # 80 comparisons, one request per image, none asked again
    round_line = next(line for line in result.output.splitlines() if line.startswith("round   0"))
    assert "director failed 80 of 80 calls (no_logprobs 80)" in round_line
    assert again.exit_code == 0, again.output
    store = Store(run_dir / "evolve.db")
    assert store.last_round() == 1 and set(store.director_failures()[0]) == {"no_logprobs"}
    assert 1 not in store.director_failures() or "no_logprobs" not in store.director_failures()[1]
    store.close()

"""The `openai` director against a real HTTP server on 127.0.0.1 that judges with the world's rules."""

import asyncio
import random
import threading

import pytest

from evolvedirector.director import DirectorError, build_director
from evolvedirector.director import openai_server
from evolvedirector.director.canvas import decode_data_url, split
from evolvedirector.testing.chat_server import OpenWorldChatServer
from evolvedirector.worlds.shapes.chat_server import ShapesChatServer
from evolvedirector.worlds.shapes import grammar
from evolvedirector.worlds.shapes.render import render, render_mistake

HELDOUT = "a green square at the top"


def pairs(count: int, seed: int = 0):
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        prompt = grammar.random_prompt(rng)
        out.append((prompt, render(prompt, 32, rng), render_mistake(prompt, 32, rng)))
    return out


async def verdicts(director, items):
    return [v.winner for v in await asyncio.gather(*(director.compare(p, good, bad) for p, good, bad in items))]


@pytest.mark.parametrize("fields", [
    {},
    {"structured_output": "structured_outputs"},
    {"structured_output": "guided_choice", "both_orders": True},
    {"structured_output": "response_format", "mode": "pointwise"},
])
def test_judges_and_proposes_through_the_server(server, openai_config, fields):
    director = build_director(openai_config(server, **fields), seed=1, exclude=[HELDOUT])
    items = pairs(12)

    async def run():
        judged = await verdicts(director, items)
        swapped = [v.winner for v in await asyncio.gather(*(director.compare(p, bad, good) for p, good, bad in items))]
        expanded = await director.expand("a green square on the left", 3)
        mutated = await director.mutate("a green square on the left")
        return judged, swapped, expanded, mutated

    judged, swapped, expanded, mutated = asyncio.run(run())
    # The server is always right, so the correct image wins in either position.
    assert judged == ["A"] * 12 and swapped == ["B"] * 12
    assert len(expanded) == 3 and len(set(expanded)) == 3 and HELDOUT not in expanded
    for prompt in expanded:
        assert grammar.parse(prompt).domain == "object" and prompt != "a green square on the left"
    assert grammar.parse(mutated).domain != "object"
    assert director.stats["parse_failures"] == 0 and director.stats["skipped"] == 0
    bodies = list(server.requests)
    images = [b for b in bodies if isinstance(b["messages"][0]["content"], list)]
    texts = [b for b in bodies if isinstance(b["messages"][0]["content"], str)]
    assert images and len(texts) == 2
    kind = fields.get("structured_output", "none")
    if fields.get("mode") == "pointwise":
        assert all(b["logprobs"] is True and b["max_tokens"] == 1 and b["top_logprobs"] == 20 for b in images)
        assert all(split(decode_data_url(b["messages"][0]["content"][0]["image_url"]["url"])) is None for b in images)
    else:
        canvas = decode_data_url(images[0]["messages"][0]["content"][0]["image_url"]["url"])
        assert split(canvas) is not None  # one image: both candidates side by side
        expected = {"none": None, "structured_outputs": "structured_outputs", "guided_choice": "guided_choice"}[kind]
        assert all((expected in b) if expected else not any(
            k in b for k in ("structured_outputs", "guided_choice", "response_format")) for b in images)
    if kind == "response_format":
        assert all(b["response_format"]["type"] == "json_schema" for b in texts)
    if fields.get("both_orders"):
        assert len(images) == 2 * 24  # every comparison asked in both orders
    else:
        assert len(images) == 24 * (2 if fields.get("mode") == "pointwise" else 1)


def test_pairwise_order_is_random_on_the_canvas(server, openai_config):
    director = build_director(openai_config(server), seed=0)
    items = pairs(16, seed=3)
    assert asyncio.run(verdicts(director, items)) == ["A"] * 16
    explanations = []

    async def run():
        for prompt, good, bad in items:
            explanations.append((await director.compare(prompt, good, bad)).explanation)

    asyncio.run(run())
    swapped = sum("swapped" in e for e in explanations)
    assert 3 <= swapped <= 13  # both orders occur


def test_both_orders_cancel_a_position_bias(openai_config):
    items = pairs(16, seed=5)
    with ShapesChatServer(position_bias=1.0) as biased:  # always answers (A)
        plain = build_director(openai_config(biased, shuffle=False), seed=0)
        assert asyncio.run(verdicts(plain, items)) == ["A"] * 16
        swapped = [(p, bad, good) for p, good, bad in items]
        assert asyncio.run(verdicts(plain, swapped)) == ["A"] * 16  # the wrong image wins when shown first
        both = build_director(openai_config(biased, both_orders=True), seed=0)
        results = asyncio.run(verdicts(both, items + swapped))
    # Every pair is inconsistent across the orders, so the bias no longer decides: coin flips.
    assert both.stats["inconsistent"] == 32
    assert 8 <= results.count("A") <= 24


def test_pointwise_reads_p_yes_from_logprobs(openai_config):
    prompt = "two purple triangles"
    with ShapesChatServer() as server:
        director = build_director(openai_config(server, mode="pointwise"), seed=0)

        async def both():
            return await asyncio.gather(director.score(prompt, render(prompt, 32)),
                                        director.score(prompt, render_mistake(prompt, 32)))

        good, bad = asyncio.run(both())
    assert good == pytest.approx(0.98) and 0.02 <= bad < good


@pytest.mark.parametrize("logprobs", [True, False])
def test_pointwise_on_a_server_without_logprobs_fails_saying_so_and_is_not_retried(openai_config, logprobs):
    """`transformers serve` ignores `logprobs`: its bare Yes or No is no P("Yes"). The call fails
    with a kind and a message of its own, not as an unparseable reply asked again and again."""
    [(prompt, good, bad)] = pairs(1)
    with OpenWorldChatServer(logprobs=logprobs) as server:
        director = build_director(openai_config(server, mode="pointwise", retries=3), seed=0)
        verdict = asyncio.run(director.compare(prompt, good, bad))
        asked = server.requests["pointwise"]
    if logprobs:  # the same fake with its numbers: judged
        assert verdict.winner in ("A", "B") and verdict.explanation.startswith("P(yes) A ")
        assert asked == 2
        return
    assert (verdict.winner, verdict.failure) == (None, "no_logprobs")
    assert verdict.explanation == f"no usable answer (no_logprobs): {openai_server.NO_LOGPROBS_ADVICE}"
    assert "pointwise judging needs a server that returns them (vLLM, SGLang)" in verdict.explanation
    assert "director.mode: pairwise" in verdict.explanation
    assert asked == 2  # one request per image, none retried
    tally = director.take_tally()
    assert tally.failures == {("compare", "no_logprobs"): 1} and director.stats["parse_failures"] == 0


def test_transient_failures_are_retried_with_backoff(openai_config):
    failures = iter([(503, "busy"), (429, '{"error": "slow down"}'), None])
    lock = threading.Lock()

    def fault(body):
        with lock:
            return next(failures, None)

    with ShapesChatServer(fault=fault) as server:
        director = build_director(openai_config(server), seed=0)
        [(prompt, good, bad)] = pairs(1)
        assert asyncio.run(director.compare(prompt, good, bad)).winner == "A"
    assert director.stats["retries"] == 2 and director.stats["requests"] == 3


def test_a_server_that_stays_down_fails_the_call_after_the_retries_and_counts_it(openai_config):
    with ShapesChatServer(fault=lambda body: (503, "down")) as server:
        director = build_director(openai_config(server, retries=2), seed=0)
        assert asyncio.run(director.expand("three red circles", 3)) == []
        assert len(server.requests) == 3
    tally = director.take_tally()
    assert tally.failures == {("expand", "http_5xx"): 1} and "HTTP 503" in tally.last_failure
    # Nothing listens on the port any more: connection errors are retried the same way.
    director = build_director(openai_config(server, retries=1), seed=0)
    assert asyncio.run(director.mutate("three red circles")) == ""
    tally = director.take_tally()
    assert tally.failures == {("mutate", "connection"): 1} and "connection failed" in tally.last_failure
    assert tally.failed_every_call()


def test_timeouts_are_retried_then_counted(openai_config):
    with ShapesChatServer(delay_s=1.0) as server:
        director = build_director(openai_config(server, timeout_s=0.2, retries=1), seed=0)
        assert asyncio.run(director.expand("three red circles", 3)) == []
    tally = director.take_tally()
    assert tally.failures == {("expand", "timeout"): 1} and "no answer within 0.2 s" in tally.last_failure


def test_the_api_key_is_sent_but_never_shown(monkeypatch, openai_config):
    key = "test-key-3b9f0c2e71"
    monkeypatch.setenv("SHAPES_JUDGE_KEY", key)
    with ShapesChatServer(api_key=key) as server:
        director = build_director(openai_config(server, api_key_env="SHAPES_JUDGE_KEY"), seed=0)
        assert len(asyncio.run(director.expand("three red circles", 2))) == 2  # accepted: the header was right
        assert key not in repr(director) and key not in str(vars(director.config))
        monkeypatch.setenv("SHAPES_JUDGE_KEY", "wrong")
        refused = build_director(openai_config(server, api_key_env="SHAPES_JUDGE_KEY"), seed=0)
        assert asyncio.run(refused.mutate("x")) == ""
        tally = refused.take_tally()
        assert tally.failures == {("mutate", "auth"): 1} and "HTTP 401" in tally.last_failure
        assert "wrong" not in tally.last_failure
    # A server that echoes the key in an error: the message blanks it out.
    monkeypatch.setenv("SHAPES_JUDGE_KEY", key)
    with ShapesChatServer(fault=lambda body: (400, f"bad request from Bearer {key}")) as server:
        director = build_director(openai_config(server, api_key_env="SHAPES_JUDGE_KEY"), seed=0)
        assert asyncio.run(director.expand("three red circles", 2)) == []
    failure = director.take_tally().last_failure
    assert key not in failure and "[api key]" in failure
    monkeypatch.delenv("SHAPES_JUDGE_KEY")
    with pytest.raises(DirectorError, match="SHAPES_JUDGE_KEY is not set"):
        build_director(openai_config(server, api_key_env="SHAPES_JUDGE_KEY"), seed=0)


def test_requests_run_concurrently_up_to_the_bound(openai_config):
    with ShapesChatServer(delay_s=0.15) as server:
        director = build_director(openai_config(server, concurrency=3, mode="pointwise"), seed=0)
        assert asyncio.run(verdicts(director, pairs(6))) == ["A"] * 6
    assert server.max_in_flight == 3  # 12 requests, never more than 3 at once, and 3 were


HOSTILE_REPLIES = [
    "", "I refuse.", "```python\nimport os; os.system('echo PWNED')\n```", "[" * 10_000, '["x", "y"' * 500,
    '{"answer": "C"}', "(A) and (B)", "null", '[1, 2, 3]', "Z" * 100_000, "\x00\x01", '{"prompts": 7}',
]


def test_hostile_replies_are_retried_skipped_and_counted_never_fatal(openai_config):
    rng = random.Random(0)
    lock = threading.Lock()

    def hostile(body, content):
        with lock:
            return rng.choice(HOSTILE_REPLIES)

    with ShapesChatServer(reply=hostile) as server:
        director = build_director(openai_config(server, retries=2), seed=0)
        items = pairs(4)

        async def run():
            judged = await asyncio.gather(*(director.compare(p, good, bad) for p, good, bad in items))
            expanded = await asyncio.gather(*(director.expand(p, 3) for p, _, _ in items))
            mutated = await asyncio.gather(*(director.mutate(p) for p, _, _ in items))
            return judged, expanded, mutated

        judged, expanded, mutated = asyncio.run(run())
    assert all(v.winner is None and v.failure == "unparseable" for v in judged)  # unusable, not coin flips
    assert all(isinstance(e, list) and all(isinstance(p, str) for p in e) for e in expanded)
    assert all(isinstance(m, str) for m in mutated)
    # No hostile reply holds a verdict or a prompt list: each such item was tried 1 + 2 times,
    # then skipped. A one-line reply may pass as a mutation, which the loop's grammar then refuses.
    assert all(e == [] for e in expanded) and all("no usable answer" in v.explanation for v in judged)
    skipped_mutations = mutated.count("")
    assert director.stats["skipped"] == 8 + skipped_mutations
    assert director.stats["parse_failures"] >= 3 * director.stats["skipped"]
    assert not any(m in grammar.all_prompts() for m in mutated)


def test_an_oversized_answer_is_not_read(monkeypatch, openai_config):
    monkeypatch.setattr(openai_server, "MAX_RESPONSE_BYTES", 2_000)
    with ShapesChatServer(reply=lambda body, content: '["' + "a" * 5_000 + '"]') as server:
        director = build_director(openai_config(server, retries=1), seed=0)
        assert asyncio.run(director.expand("three red circles", 3)) == []
    assert director.stats["parse_failures"] == 2 and director.stats["skipped"] == 1


def test_retries_sample_so_a_model_can_answer_differently(openai_config):
    replies = iter(["no idea", "still no idea"])
    lock = threading.Lock()

    def first_two_unusable(body, content):
        with lock:
            return next(replies, content)

    with ShapesChatServer(reply=first_two_unusable) as server:
        director = build_director(openai_config(server, temperature=0.0, retry_temperature=0.8), seed=0)
        assert len(asyncio.run(director.expand("three red circles", 2))) == 2
    assert [b["temperature"] for b in server.requests] == [0.0, 0.8, 0.8]
    assert director.stats["parse_failures"] == 2 and director.stats["skipped"] == 0

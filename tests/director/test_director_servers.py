"""`director.base_url` as a list of servers: requests spread over them, a dead server is skipped
once it failed, its failures are counted per server, and every verdict still comes."""

import asyncio

import pytest

from evolvedirector.config import OpenAIDirectorConfig, parse_config
from evolvedirector.director import build_director
from evolvedirector.worlds.shapes.chat_server import ShapesChatServer
from tests.director.test_director_openai import pairs, verdicts
from tests.helpers import free_port


def config(urls, **fields) -> OpenAIDirectorConfig:
    return OpenAIDirectorConfig(**{"backend": "openai", "base_url": urls, "model": "shapes-judge", "backoff_s": 0.01,
                                   "max_backoff_s": 0.05, "timeout_s": 10, "panel_size": 64, "concurrency": 4,
                                   **fields})


def test_requests_spread_over_the_servers_and_a_dead_one_is_skipped():
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with ShapesChatServer(judge_accuracy=1.0) as one, ShapesChatServer(judge_accuracy=1.0) as two:
        director = build_director(config([one.base_url, dead, two.base_url], model=one.model), seed=0)
        items = pairs(40)

        async def judge():
            try:
                return await verdicts(director, items)
            finally:
                await director.aclose()

        winners = asyncio.run(judge())
        served = (len(one.requests), len(two.requests))
    assert winners == ["A"] * len(items)  # every verdict came, and right
    assert min(served) >= 10 and sum(served) == len(items)  # both live servers took a share
    # The dead one failed the few requests sent before it was known dead, then sat out.
    assert 1 <= director.server_failures[dead] <= 4 and director.server_failures[one.base_url] == 0


def test_when_every_server_is_down_the_failure_names_each_with_its_count():
    dead = [f"http://127.0.0.1:{free_port()}/v1" for _ in range(2)]
    director = build_director(config(dead, retries=3), seed=0)
    prompt, good, bad = pairs(1)[0]

    async def judge():
        try:
            return await director.compare(prompt, good, bad)
        finally:
            await director.aclose()

    verdict = asyncio.run(judge())
    assert verdict.winner is None  # unusable, not a coin flip
    assert "failed requests by server" in director.take_tally().last_failure
    assert sum(director.server_failures[url.rstrip("/")] for url in dead) == 4  # 1 + 3 retries
    assert all(director.server_failures[url] >= 1 for url in dead)  # both were tried


@pytest.mark.parametrize("value, message", [
    ([], "needs base_url"),
    (["http://127.0.0.1:1/v1", "http://127.0.0.1:1/v1"], "each once"),
    (["http://127.0.0.1:1/v1", "ftp://x"], "base_url.1 must start with http"),
])
def test_a_bad_list_of_servers_is_refused_naming_it(value, message):
    from evolvedirector.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        parse_config({"director": {"backend": "openai", "base_url": value, "model": "m"}})


def test_a_single_server_is_still_a_string_in_the_saved_config():
    parsed = parse_config({"director": {"backend": "openai", "base_url": "http://127.0.0.1:1/v1", "model": "m"}})
    assert parsed.director.base_url == "http://127.0.0.1:1/v1" and parsed.director.servers == ["http://127.0.0.1:1/v1"]

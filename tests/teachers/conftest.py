"""Fixtures of the teacher tests: a fake image API on a free 127.0.0.1 port, a store, teachers
pointed at the API with quick retries, and a helper that buys through a fresh ledger."""

from __future__ import annotations

import asyncio

import pytest

from evolvedirector.config import OpenAITeacherConfig, QueueTeacherConfig
from evolvedirector.store import ImageStore, Store
from evolvedirector.teachers import ImageRequest, Ledger, build_teacher, idempotency_key
from evolvedirector.testing.fake_images_api import FakeImageAPI

FAST_RETRY = {"max_attempts": 4, "backoff_s": 0.01, "max_backoff_s": 0.05}


@pytest.fixture
def api():
    """The fake API, answering at once; stopped (all its threads released) after the test."""
    with FakeImageAPI(latency=0.0) as server:
        yield server


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "evolve.db")
    yield s
    s.close()


@pytest.fixture
def images(tmp_path):
    return ImageStore(tmp_path / "images")


@pytest.fixture
def openai_teacher():
    """make(api, **fields): an `openai` teacher on the fake API (32x32 images, no key)."""

    def make(api: FakeImageAPI, **fields):
        return build_teacher(OpenAITeacherConfig(**{
            "name": "oa", "backend": "openai", "cost_per_image": 0.04, "base_url": f"{api.url}/v1",
            "api_key_env": None, "default_size": "32x32", "timeout_s": 5, "retry": FAST_RETRY, **fields,
        }))

    return make


@pytest.fixture
def queue_teacher():
    """make(api, **fields): a `queue` teacher on the fake API (polls every 10 ms, no key)."""

    def make(api: FakeImageAPI, **fields):
        return build_teacher(QueueTeacherConfig(**{
            "name": "qu", "backend": "queue", "cost_per_image": 0.02, "base_url": f"{api.url}/queue",
            "default_size": "32x32", "timeout_s": 5, "poll_interval_s": 0.01, "retry": FAST_RETRY, **fields,
        }))

    return make


@pytest.fixture
def buy(store, images):
    """buy(teacher, prompts, **ledger options) -> purchases, through a fresh ledger on the store."""

    def run(teacher, prompts, seed: int = 0, **options):
        ledger = Ledger(store, images, **options)
        requests = [ImageRequest(p, seed, 32) for p in prompts]
        return asyncio.run(ledger.buy(teacher, requests, round=0))

    return run



def row_of(store, teacher, prompt):
    """The ledger's row of a square request for `prompt` at seed 0."""
    return store.call(idempotency_key(teacher.name, ImageRequest(prompt, 0, 32)))


def buy_requests(store, images, teacher, requests):
    """buy(), with the requests as given (buckets, seeds)."""
    return asyncio.run(Ledger(store, images).buy(teacher, requests, round=0))

"""Fixtures of the director tests: the shapes-world chat server on 127.0.0.1, tiny random VLMs."""

from __future__ import annotations

import pytest

from evolvedirector.config import OpenAIDirectorConfig
from evolvedirector.worlds.shapes.chat_server import ShapesChatServer


@pytest.fixture
def server():
    """A judge that is always right, on a free port; stopped after the test."""
    with ShapesChatServer(judge_accuracy=1.0) as running:
        yield running


@pytest.fixture
def openai_config():
    """make(server, **fields): an `openai` director config pointed at the server, quick retries."""

    def make(server: ShapesChatServer, **fields) -> OpenAIDirectorConfig:
        return OpenAIDirectorConfig(**{
            "backend": "openai", "base_url": server.base_url, "model": server.model, "backoff_s": 0.01,
            "max_backoff_s": 0.05, "timeout_s": 10, "panel_size": 64, **fields,
        })

    return make


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory):
    from director_tiny_vlm import build_tiny_llava_next

    return build_tiny_llava_next(tmp_path_factory.mktemp("tiny-llava-next"))

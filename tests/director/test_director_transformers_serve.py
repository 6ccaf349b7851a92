"""`transformers serve MODEL_FOLDER` as the director's server, for real: the tiny LLaVA-NeXT the
tests build from a config, served by the `transformers serve` command this test starts on
127.0.0.1. It answers pairwise questions about a canvas; it ignores logprobs and structured
output, so `check` and `run` refuse pointwise mode and structured_output there with a sentence
saying so, before anything is bought."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from open_world_helpers import write_prompt_file
from typer.testing import CliRunner

from evolvedirector.cli import app
from evolvedirector.config import OpenAIDirectorConfig
from evolvedirector.director import build_director
from evolvedirector.testing.fake_images_api import FakeImageAPI
from tests.director.director_tiny_vlm import build_tiny_llava_next
from tests.helpers import free_port

try:
    from transformers.utils.import_utils import is_serve_available
except ImportError:  # an older transformers without the check: try the command itself
    def is_serve_available() -> bool:
        return True

pytestmark = [pytest.mark.timeout(600), pytest.mark.skipif(
    not is_serve_available() or shutil.which("transformers", path=str(Path(sys.executable).parent)) is None,
    reason="`transformers serve` needs transformers[serving] (fastapi, uvicorn, openai): pip install -e .[test]")]
runner = CliRunner()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(base_url, model name) of `transformers serve` on the tiny LLaVA-NeXT; stopped after the module."""
    folder = build_tiny_llava_next(tmp_path_factory.mktemp("llava") / "tiny-llava-next")
    port = free_port()
    command = [str(Path(sys.executable).parent / "transformers"), "serve", str(folder), "--host", "127.0.0.1",
               "--port", str(port)]
    log = open(tmp_path_factory.mktemp("serve") / "serve.log", "w+")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                if httpx.get(f"{base_url}/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                pytest.fail(f"transformers serve did not start:\n{log.read()[-3000:]}")
            time.sleep(0.5)
        yield base_url, str(folder)
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def test_it_answers_pairwise_questions_about_a_canvas(served):
    base_url, model = served
    director = build_director(OpenAIDirectorConfig(backend="openai", base_url=base_url, model=model, panel_size=32,
                                                   retries=1, backoff_s=0.01, timeout_s=120), seed=0)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(4)]

    async def judge():
        try:
            return [await director.compare("a red circle", images[i], images[i + 1]) for i in (0, 2)]
        finally:
            await director.aclose()

    verdicts = asyncio.run(judge())
    tally = director.take_tally()
    assert len(verdicts) == 2 and tally.calls["compare"] == 2
    # A random model's replies are noise: unusable at worst, never an HTTP or connection failure.
    assert set(kind for _, kind in tally.failures) <= {"unparseable"}, tally.failures
    assert director.stats["requests"] >= 2


def config_file(tmp_path, base_url: str, model: str, api_url: str, **director) -> str:
    data = {
        "out": str(tmp_path / "run"), "device": "cpu", "threads": 1,
        "world": {"name": "prompts", "prompts": str(write_prompt_file(tmp_path / "prompts.jsonl"))},
        "teachers": [{"name": "api", "backend": "openai", "base_url": f"{api_url}/v1", "model": "fake-image",
                      "api_key_env": None, "cost_per_image": 0.01, "default_size": "32x32"}],
        "director": {"backend": "openai", "base_url": base_url, "model": model, "panel_size": 32, "retries": 1,
                     "timeout_s": 120, **director},
        "student": {"size": "tiny"}, "budget": {"max_rounds": 1},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.mark.parametrize("director, sentence", [
    ({}, None),
    ({"mode": "pointwise"}, "the server returned no logprobs; pointwise judging needs a server that returns them"),
    ({"structured_output": "response_format"}, "the server ignored director.structured_output (transformers serve "
                                               "ignores response_format and guided decoding)"),
])
def test_check_passes_pairwise_and_check_and_run_refuse_what_it_ignores(served, tmp_path, director, sentence):
    base_url, model = served
    with FakeImageAPI() as api:
        path = config_file(tmp_path, base_url, model, api.url, **director)
        checked = runner.invoke(app, ["check", path])
        ran = runner.invoke(app, ["run", path]) if sentence else None
        bought = api.generated
    if sentence is None:
        assert checked.exit_code == 0, checked.output
        # The model list and the judge question passed; the fake images API has no free call.
        assert checked.output.splitlines()[-1] == "all 2 checks passed, 1 not checked", checked.output
        return
    assert checked.exit_code == 1 and sentence in " ".join(checked.output.split()), checked.output
    assert ran.exit_code == 1 and sentence in " ".join(ran.output.split()), ran.output
    assert bought == 0  # refused before anything was bought

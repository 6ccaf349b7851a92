"""The multi-aspect stage in the open world: every new prompt (seed, expansion, mutation) draws one
of PixArt's aspect buckets, its teacher request carries it (the API is asked for the nearest size
it draws) and the image it trains on has the bucket's shape."""

from __future__ import annotations

import sqlite3

import pytest
from open_world_helpers import build_prompt_t5, write_prompt_file
from rich.console import Console
from tiny_models import build_tiny_vae

from evolvedirector.config import parse_config
from evolvedirector.evaluation.evaluate import EvalOptions, run_eval
from evolvedirector.loop import Evolution
from evolvedirector.store import ImageStore
from evolvedirector.store.db import parse_bucket
from evolvedirector.student.buckets import buckets_at
from evolvedirector.teachers.aspect import closest_by_aspect
from evolvedirector.teachers.image_bytes import parse_size
from evolvedirector.testing.chat_server import OpenWorldChatServer
from evolvedirector.testing.fake_images_api import FakeImageAPI

SIDE = 128  # the smallest base whose buckets fit the tiny VAE's 2-px cell times patch 4
API_SIZES = ["1024x1024", "1536x1024", "1024x1536"]


@pytest.mark.timeout(300)
def test_new_prompts_draw_buckets_and_their_images_have_the_buckets_shape(tmp_path, monkeypatch):
    monkeypatch.setenv("EVOLVEDIRECTOR_TEST_KEY", "sk-test-buckets")
    t5, vae = build_prompt_t5(tmp_path / "t5"), build_tiny_vae(tmp_path / "vae")
    with FakeImageAPI(api_key="sk-test-buckets") as api, OpenWorldChatServer(seed=3) as chat:
        config = parse_config({
            "out": str(tmp_path / "run"), "seed": 2, "device": "cpu", "threads": 1,
            "world": {"name": "prompts", "prompts": str(write_prompt_file(tmp_path / "p.jsonl")),
                      "heldout_share": 0.2, "image_size": SIDE},
            "teachers": [{"name": "api", "backend": "openai", "base_url": f"{api.url}/v1", "model": "fake-image",
                          "api_key_env": "EVOLVEDIRECTOR_TEST_KEY", "cost_per_image": 0.01,
                          "aspect_sizes": API_SIZES}],
            "director": {"backend": "openai", "base_url": chat.base_url, "model": "open-world-director", "retries": 1,
                         "backoff_s": 0.01, "panel_size": 32, "concurrency": 1},
            "student": {"size": "tiny", "text_encoder": str(t5), "vae": str(vae), "max_tokens": 40,
                        "sample_steps": 2, "guidance": 2.0},
            "train": {"batch_size": 4, "lr": 1e-3, "warmup_steps": 1, "steps_per_round": 2, "multi_aspect": True},
            "evolve": {"seed_prompts": 8, "select_ratio": 0.5, "mutation_ratio": 1.0, "render_steps": 2,
                       "heldout_judged": 0},  # its references are square, as `eval` asks held-out prompts
            "budget": {"max_rounds": 1},
        })
        Evolution(config).run()
        asked = [body["size"] for route, body in api.bodies if route == "generate"]
        # `eval` on the training prompts asks at their buckets, so it reuses every image bought.
        results = run_eval(tmp_path / "run", EvalOptions(prompt_set="train", resamples=10), console=Console(quiet=True))
        assert len(api.bodies) == len(asked)

    conn = sqlite3.connect(tmp_path / "run" / "evolve.db")
    conn.row_factory = sqlite3.Row
    samples = [dict(row) for row in conn.execute("SELECT * FROM samples")]
    calls = [dict(row) for row in conn.execute("SELECT * FROM teacher_calls")]
    conn.close()
    images = ImageStore(tmp_path / "run" / "images")
    allowed = set(buckets_at(SIDE))
    written = [s for s in samples if s["operation"] != "seed"]
    assert written, "the run added no director-written prompt; nothing below would check expansions"
    for sample in samples:
        bucket = parse_bucket(sample["bucket"])
        assert bucket in allowed, sample
        assert images.get(sample["image_hash"]).shape[:2] == bucket
    # Drawn at random: a set of this size does not land in one bucket.
    assert len({s["bucket"] for s in samples}) >= 3
    assert len({s["bucket"] for s in written}) >= 2
    # The ledger keys each call by its bucket, and the API was asked for the size nearest to it.
    assert all(c["bucket"] is not None for c in calls)
    bought = {(c["prompt"], c["bucket"], c["image_hash"]) for c in calls}
    assert all((s["prompt"], s["bucket"], s["image_hash"]) in bought for s in samples)
    expected = sorted(
        "{}x{}".format(*closest_by_aspect([parse_size(s) for s in API_SIZES], parse_bucket(c["bucket"])))
        for c in calls
    )
    assert sorted(asked) == expected
    assert len(set(asked)) >= 2, "every bucket mapped to one API size: the mapping was not exercised"
    assert results["purchases"]["new"] == 0 and results["purchases"]["reused"] == results["n_prompts"] > 0

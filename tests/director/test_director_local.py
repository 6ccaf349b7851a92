"""The `local` director on tiny random vision-language models built from configs (no download)."""

import asyncio
import random

import pytest

from evolvedirector.config import LocalDirectorConfig
from evolvedirector.director import DirectorError, build_director
from evolvedirector.worlds.shapes import grammar
from evolvedirector.worlds.shapes.render import render, render_mistake


def local_config(model, **fields) -> LocalDirectorConfig:
    return LocalDirectorConfig(**{"backend": "local", "model": str(model), "device": "cpu", "max_tokens": 16,
                                  "retries": 1, "panel_size": 64, **fields})


def pairs(count: int, seed: int = 0):
    rng = random.Random(seed)
    prompts = [grammar.random_prompt(rng) for _ in range(count)]
    return [(p, render(p, 32, rng), render_mistake(p, 32, rng)) for p in prompts]


def test_pairwise_verdicts_are_batched_and_repeatable(tiny_llava):
    items = pairs(6)

    async def judge(director):
        return [v.winner for v in await asyncio.gather(*(director.compare(p, a, b) for p, a, b in items))]

    first = build_director(local_config(tiny_llava, batch_size=4), seed=0)
    winners = asyncio.run(judge(first))
    assert set(winners) <= {"A", "B"} and len(winners) == 6
    assert first.batcher.batches == 2  # six requests in flight together ran as batches of 4 and 2
    # A verdict is read from the logits of "A" and "B": never unreadable, never a coin flip.
    assert first.stats["parse_failures"] == 0 and first.stats["skipped"] == 0
    again = build_director(local_config(tiny_llava, batch_size=1), seed=0)
    assert asyncio.run(judge(again)) == winners  # the same seed, batched or not, gives the same verdicts
    assert again.batcher.batches == 6


def test_pointwise_p_yes_does_not_depend_on_batching(tiny_llava):
    images = [(p, image) for p, good, bad in pairs(3, seed=1) for image in (good, bad)]

    async def scores(director):
        return await asyncio.gather(*(director.score(p, image) for p, image in images))

    batched = asyncio.run(scores(build_director(local_config(tiny_llava, mode="pointwise", batch_size=6), seed=0)))
    alone = asyncio.run(scores(build_director(local_config(tiny_llava, mode="pointwise", batch_size=1), seed=0)))
    assert all(0.0 <= s <= 1.0 for s in batched)
    # Left padding keeps every row's next token in the last column: the same numbers either way.
    assert batched == pytest.approx(alone, rel=1e-4, abs=1e-9)
    assert len(set(batched)) > 1  # the images differ, so do their scores


def test_noise_from_a_random_model_is_retried_then_skipped(tiny_llava):
    director = build_director(local_config(tiny_llava, retries=1), seed=0)

    async def run():
        return await asyncio.gather(director.expand("three red circles", 3), director.mutate("three red circles"))

    expanded, mutated = asyncio.run(run())
    assert isinstance(expanded, list) and all(isinstance(p, str) and p for p in expanded)
    assert isinstance(mutated, str)
    assert not any(p in grammar.all_prompts() for p in [*expanded, mutated])  # noise is no prompt of the world
    # Every attempt that gave nothing usable was counted; an item with none usable was skipped.
    attempts = 2 * (1 + 1)
    assert director.stats["parse_failures"] + (len(expanded) > 0) + (mutated != "") >= 2
    assert director.stats["parse_failures"] <= attempts
    assert director.stats["skipped"] == (expanded == []) + (mutated == "")


def test_qwen2_vl_loads_with_an_images_only_processor(tmp_path):
    from director_tiny_vlm import build_tiny_qwen2_vl

    folder = build_tiny_qwen2_vl(tmp_path / "tiny-qwen2-vl")
    director = build_director(local_config(folder, mode="pointwise"), seed=0)
    assert type(director.processor).__name__ == "ImagesOnlyQwen2VLProcessor"
    prompt, good, bad = pairs(1, seed=2)[0]
    verdict = asyncio.run(director.compare(prompt, good, bad))
    assert verdict.winner in ("A", "B") and verdict.explanation.startswith("P(yes)")
    pairwise = build_director(local_config(folder), seed=0)
    assert asyncio.run(pairwise.compare(prompt, good, bad)).winner in ("A", "B")


def test_a_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(DirectorError, match="director.model: cannot load"):
        build_director(local_config(tmp_path / "nothing-here"), seed=0)

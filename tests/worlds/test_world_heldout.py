import random
from collections import Counter

import pytest

from evolvedirector.worlds.shapes.grammar import DOMAINS, parse
from evolvedirector.worlds.shapes.heldout import accuracy, heldout_prompts
from evolvedirector.worlds.shapes.render import render, render_mistake


def test_heldout_is_grouped_per_domain_without_repeats():
    prompts = heldout_prompts()
    assert len(prompts) == 40 and len(set(prompts)) == 40
    assert [parse(p).domain for p in prompts] == [d for d in DOMAINS for _ in range(10)]
    assert Counter(parse(p).domain for p in heldout_prompts(per_domain=25)) == {d: 25 for d in DOMAINS}


def test_heldout_is_deterministic_and_depends_on_seed():
    assert heldout_prompts() == heldout_prompts(10, 1234)
    assert heldout_prompts(seed=1) != heldout_prompts(seed=2)
    with pytest.raises(ValueError):
        heldout_prompts(per_domain=49)  # only 48 text prompts


def test_accuracy_of_renders_and_of_mistakes():
    prompts = heldout_prompts()
    rng = random.Random(0)
    perfect = accuracy(prompts, [render(p, rng=rng) for p in prompts])
    assert perfect == {**{d: 1.0 for d in DOMAINS}, "mean": 1.0}
    wrong = accuracy(prompts, [render_mistake(p, rng=rng) for p in prompts])
    assert wrong == {**{d: 0.0 for d in DOMAINS}, "mean": 0.0}


def test_accuracy_weighs_domains_equally_and_lists_only_those_present():
    prompts = heldout_prompts()
    objects = [p for p in prompts if parse(p).domain == "object"]
    texts = [p for p in prompts if parse(p).domain == "text"][:2]
    images = [render(p) for p in objects] + [render(texts[0]), render_mistake(texts[1])]
    result = accuracy(objects + texts, images)
    assert result == {"object": 1.0, "text": 0.5, "mean": 0.75}
    with pytest.raises(ValueError):
        accuracy(objects, images)

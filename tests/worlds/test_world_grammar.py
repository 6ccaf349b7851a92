import random
from collections import Counter

import pytest

from evolvedirector.worlds.shapes.grammar import (
    DOMAINS,
    SLOTS,
    Spec,
    all_prompts,
    expand,
    mutate,
    parse,
    random_prompt,
)


def _slots_changed(a: Spec, b: Spec) -> int:
    return sum(x != y for x, y in zip(a.slot_values(), b.slot_values()))


def test_prompt_counts_per_domain_and_in_all():
    counts = {domain: len(all_prompts(domain)) for domain in DOMAINS}
    assert counts == {"object": 90, "relation": 1080, "count": 54, "text": 48}
    everything = all_prompts()
    assert len(everything) == 1272
    assert len(set(everything)) == 1272


def test_all_prompts_order_is_fixed_and_grouped_by_domain():
    assert all_prompts() == all_prompts()
    assert [parse(p).domain for p in all_prompts()] == [d for d in DOMAINS for _ in all_prompts(d)]


def test_parse_and_text_round_trip_for_every_prompt():
    for prompt in all_prompts():
        spec = parse(prompt)
        assert spec.text == prompt
        assert spec.domain in DOMAINS


def test_exact_wording_of_each_template():
    assert parse("a red circle on the left") == Spec("object", color="red", shape="circle", where="on the left")
    assert parse("a blue square to the left of a red triangle") == Spec(
        "relation", color="blue", shape="square", relation="to the left of", color2="red", shape2="triangle"
    )
    assert parse("three green triangles") == Spec("count", color="green", shape="triangle", count=3)
    assert parse("the letter X in black") == Spec("text", color="black", letter="X")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "a red circle",
        "A red circle on the left",
        "a red circle on the left.",
        "a pink circle on the left",
        "a red circle to the left of a red square",  # the two colours must differ
        "one red circles",
        "five red circles",
        "two red circle",
        "the letter B in red",
        "the letter a in red",
        "a red  circle on the left",
    ],
)
def test_parse_rejects_text_outside_the_grammar(text):
    with pytest.raises(ValueError, match="not a prompt"):
        parse(text)


def test_random_prompt_picks_domains_uniformly():
    rng = random.Random(0)
    draws = 4000
    counts = Counter(parse(random_prompt(rng)).domain for _ in range(draws))
    # Binomial sd of a share near 0.25 over 4000 draws is 0.0068; 0.03 is over 4 sd.
    for domain in DOMAINS:
        assert abs(counts[domain] / draws - 0.25) < 0.03, counts


def test_random_prompt_within_a_domain_and_with_exclusions():
    rng = random.Random(1)
    texts = all_prompts("text")
    allowed = set(texts[:3])
    for _ in range(200):
        prompt = random_prompt(rng, "text", exclude=set(texts[3:]))
        assert prompt in allowed
    with pytest.raises(ValueError):
        random_prompt(rng, "text", exclude=texts)
    with pytest.raises(ValueError):
        random_prompt(rng, "poetry")


def test_random_prompt_skips_a_fully_excluded_domain():
    rng = random.Random(2)
    domains = {parse(random_prompt(rng, exclude=all_prompts("count"))).domain for _ in range(300)}
    assert domains == {"object", "relation", "text"}


@pytest.mark.parametrize("domain", DOMAINS)
def test_expand_gives_distinct_same_domain_neighbours(domain):
    rng = random.Random(3)
    for source in rng.sample(all_prompts(domain), 10):
        new = expand(source, 8, rng)
        assert len(new) == 8
        assert len(set(new)) == 8
        assert source not in new
        for prompt in new:
            spec = parse(prompt)
            assert spec.domain == domain
            assert 1 <= _slots_changed(parse(source), spec) <= 2


def test_expand_respects_exclude_and_runs_out_gracefully():
    rng = random.Random(4)
    source = "the letter A in red"
    # Text has two slots, so every other text prompt differs in one or two of them.
    everything_else = expand(source, 1000, rng)
    assert len(everything_else) == 47
    excluded = set(everything_else[:40])
    rest = expand(source, 1000, rng, exclude=excluded)
    assert len(rest) == 7
    assert not excluded & set(rest)
    assert expand(source, 0, rng) == []


def test_expand_is_deterministic_given_the_rng():
    source = "a red circle to the left of a blue square"
    assert expand(source, 5, random.Random(9)) == expand(source, 5, random.Random(9))


def test_mutate_changes_domain_uniformly_among_the_others():
    rng = random.Random(5)
    source = "two red circles"
    counts = Counter(parse(mutate(source, rng)).domain for _ in range(3000))
    assert "count" not in counts
    # Each of the three others expects 1000 draws (sd about 26).
    assert all(abs(counts[d] - 1000) < 120 for d in ("object", "relation", "text")), counts


def test_mutate_respects_exclude():
    rng = random.Random(6)
    excluded = set(all_prompts("object")) | set(all_prompts("relation")) | set(all_prompts("text")[1:])
    for _ in range(20):
        assert mutate("two red circles", rng, exclude=excluded) == all_prompts("text")[0]


def test_slots_cover_the_template_of_each_domain():
    for domain in DOMAINS:
        for spec in map(parse, all_prompts(domain)):
            unused = set(Spec.__dataclass_fields__) - {"domain", *SLOTS[domain]}
            assert all(getattr(spec, name) is None for name in unused)
            assert all(value is not None for value in spec.slot_values())

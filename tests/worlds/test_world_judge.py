import random

import pytest

from evolvedirector.worlds.shapes.grammar import DOMAINS, random_prompt
from evolvedirector.worlds.shapes.judge import judge_pair
from evolvedirector.worlds.shapes.render import render, render_mistake


@pytest.mark.parametrize("domain", DOMAINS)
def test_perfect_judge_always_prefers_the_correct_image(domain):
    rng = random.Random(domain)
    for _ in range(50):
        prompt = random_prompt(rng, domain)
        good, bad = render(prompt, rng=rng), render_mistake(prompt, rng=rng)
        assert judge_pair(prompt, good, bad, rng, judge_accuracy=1.0) == "A"
        assert judge_pair(prompt, bad, good, rng, judge_accuracy=1.0) == "B"


def test_imperfect_judge_is_right_at_its_accuracy():
    rng = random.Random(1)
    prompt = "a green triangle below a purple circle"
    good, bad = render(prompt), render_mistake(prompt)
    trials = 2000
    wins = sum(judge_pair(prompt, good, bad, rng) == "A" for _ in range(trials))
    # sd of the share is sqrt(0.9 * 0.1 / 2000) = 0.0067; 0.03 is 4.5 sd.
    assert abs(wins / trials - 0.9) < 0.03
    never = sum(judge_pair(prompt, good, bad, rng, judge_accuracy=0.0) == "A" for _ in range(200))
    assert never == 0


def test_partial_credit_ranks_two_wrong_images():
    prompt = "three red squares"
    closer = render("four red squares")  # right colour and shape, one too many
    farther = render("the letter T in blue")  # nothing red at all
    rng = random.Random(2)
    assert all(judge_pair(prompt, closer, farther, rng, 1.0) == "A" for _ in range(20))


def test_ties_split_evenly():
    rng = random.Random(3)
    prompt = "the letter C in yellow"
    image = render(prompt)
    trials = 2000
    share = sum(judge_pair(prompt, image, image, rng, 1.0) == "A" for _ in range(trials)) / trials
    # sd of the share is 0.011; 0.05 is 4.5 sd.
    assert abs(share - 0.5) < 0.05


def test_judge_is_deterministic_given_the_rng():
    prompt = "two black circles"
    good, bad = render(prompt), render_mistake(prompt)

    def verdicts(seed: int) -> list[str]:
        rng = random.Random(seed)
        return [judge_pair(prompt, good, bad, rng) for _ in range(100)]

    assert verdicts(5) == verdicts(5)
    assert "B" in verdicts(5)  # at 0.9 about ten of a hundred verdicts are flipped

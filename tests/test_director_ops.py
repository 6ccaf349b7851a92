"""The loop's use of a director: discrimination in random order, selection, expansion, mutation."""

import asyncio
import random

from evolvedirector.director import discriminate, select_best
from evolvedirector.worlds.shapes import grammar
from evolvedirector.worlds.shapes.director import ShapesDirector
from evolvedirector.worlds.shapes.render import render, render_mistake


def test_discrimination_maps_the_random_order_back_to_student_and_teacher():
    director = ShapesDirector(judge_accuracy=1.0, seed=0)
    prompt = "a red circle above a blue square"
    right, wrong = render(prompt), render_mistake(prompt)
    rng = random.Random(0)
    outcomes = [asyncio.run(discriminate(director, prompt, right, wrong, rng)) for _ in range(40)]
    assert {o.winner for o in outcomes} == {"student"}
    assert {o.student_shown_first for o in outcomes} == {True, False}
    outcomes = [asyncio.run(discriminate(director, prompt, wrong, right, rng)) for _ in range(40)]
    assert {o.winner for o in outcomes} == {"teacher"}


def test_selection_finds_the_one_correct_image_wherever_it_stands():
    director = ShapesDirector(judge_accuracy=1.0, seed=0)
    prompt = "three green triangles"
    rng = random.Random(1)
    for position in range(3):
        images = [render_mistake(prompt, rng=rng) for _ in range(3)]
        images[position] = render(prompt, rng=rng)
        assert asyncio.run(select_best(director, prompt, images, rng)) == position


def test_an_imperfect_judge_is_wrong_about_as_often_as_configured():
    director = ShapesDirector(judge_accuracy=0.75, seed=3)
    prompt = "the letter E in purple"
    right, wrong = render(prompt), render_mistake(prompt)
    rng = random.Random(2)
    wins = sum(asyncio.run(discriminate(director, prompt, right, wrong, rng)).winner == "student" for _ in range(800))
    assert 0.70 < wins / 800 < 0.80  # 0.75 +- 3.3 standard deviations


def test_expansion_and_mutation_stay_in_the_grammar_and_avoid_excluded_prompts():
    heldout = set(grammar.all_prompts("text")[:40])
    director = ShapesDirector(seed=0, exclude=heldout)
    source = "the letter A in red"
    for _ in range(20):
        new = asyncio.run(director.expand(source, 3))
        assert len(new) == 3 and len(set(new)) == 3 and source not in new
        assert all(grammar.parse(p).domain == "text" and p not in heldout for p in new)
        mutated = asyncio.run(director.mutate(source))
        assert grammar.parse(mutated).domain != "text"


def test_reseeding_repeats_the_same_choices():
    director = ShapesDirector(seed=0)
    director.reseed(11)
    first = asyncio.run(director.expand("two red circles", 3))
    director.reseed(11)
    assert asyncio.run(director.expand("two red circles", 3)) == first


def test_the_shapes_world_accepts_only_grammar_prompts_not_yet_taken_forgiving_case_and_a_period():
    from evolvedirector.worlds import Accepted, Refused
    from evolvedirector.worlds.shapes.world import ShapesWorld

    world = ShapesWorld(heldout_per_domain=2)
    heldout = world.heldout[0]
    taken = {"a red circle on the left", "a blue square on the right"}
    assert world.accept("  A blue square on the left. ", taken) == Accepted("a blue square on the left", "object")
    assert world.accept("the letter a in red", taken) == Accepted("the letter A in red", "text")
    assert world.accept("A blue square on the right", taken) == Refused("already in the set", "a blue square on the right")
    assert world.accept(heldout.upper(), taken) == Refused("held out", heldout)
    for hostile in ("__import__('os').system('echo hi')", "a red circle on the left " * 100, None, ["a"]):
        outcome = world.accept(hostile, taken)
        assert isinstance(outcome, Refused) and outcome.reason == "not a prompt of the world"

import random
import time

import numpy as np
import pytest

from evolvedirector.worlds.shapes.grammar import ANCHORS, DOMAINS, PALETTE, all_prompts, parse, random_prompt
from evolvedirector.worlds.shapes.render import COUNT_LAYOUTS, _count_scene, _paint, render, render_mistake
from evolvedirector.worlds.shapes.rules import (
    MIN_RELATION_OFFSET,
    check,
    classify_pixels,
    components,
    is_correct,
    shape_class,
)

RED, GREEN, BLUE = PALETTE["red"], PALETTE["green"], PALETTE["blue"]


def blank(size: int = 32) -> np.ndarray:
    return np.full((size, size, 3), 255, dtype=np.uint8)


def fill(image: np.ndarray, top: int, left: int, height: int, width: int, color) -> np.ndarray:
    image[top : top + height, left : left + width] = color
    return image


# ---- the renderer is faithful ----------------------------------------------------------------


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("jitter", [False, True])
def test_every_prompt_renders_correctly(size, jitter):
    rng = random.Random(size) if jitter else None
    wrong = [p for p in all_prompts() if not check(p, render(p, size, rng)).correct]
    assert wrong == []


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("jitter", [False, True])
def test_every_mistake_is_incorrect(size, jitter):
    rng = random.Random(100 + size) if jitter else None
    for prompt in all_prompts():
        verdict = check(prompt, render_mistake(prompt, size, rng))
        assert not verdict.correct, prompt
        assert verdict.score < 1.0, prompt


def test_render_format_and_determinism():
    image = render("a red circle in the center")
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    assert (image[0, 0] == 255).all()  # white background
    assert render("a red circle in the center", 64).shape == (64, 64, 3)
    for prompt in ["two blue squares", "the letter T in green", "a red circle above a black square"]:
        assert np.array_equal(render(prompt), render(prompt))
        assert np.array_equal(render_mistake(prompt), render_mistake(prompt))
        assert np.array_equal(render(prompt, rng=random.Random(7)), render(prompt, rng=random.Random(7)))
    jittered = {render("a red circle in the center", rng=random.Random(s)).tobytes() for s in range(10)}
    assert len(jittered) > 1
    assert np.array_equal(render(parse("two blue squares")), render("two blue squares"))


def test_unjittered_object_sits_on_its_anchor():
    for where, (x, y) in ANCHORS.items():
        (found,) = components(render(f"a blue square {where}", 64))
        assert found.centroid == pytest.approx((x, y), abs=1 / 64)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_count_layouts_keep_gap_and_margin(n):
    rng = random.Random(n)
    layouts = [_count_scene(n, "red", "square", None)] + [_count_scene(n, "red", "square", rng) for _ in range(200)]
    for shapes in layouts:
        assert len(shapes) == n
        for i, a in enumerate(shapes):
            assert 0.09 - 1e-9 <= a.s <= 0.11 + 1e-9
            assert min(a.cx - a.s, a.cy - a.s, 1 - a.cx - a.s, 1 - a.cy - a.s) >= 0.03 - 1e-9
            for b in shapes[i + 1 :]:
                gap = max(abs(a.cx - b.cx), abs(a.cy - b.cy)) - a.s - b.s
                assert gap >= 0.04 - 1e-9
        # Jittered like every other domain: each object within 0.04 of its place in the layout.
        for a, (x, y) in zip(shapes, COUNT_LAYOUTS[n]):
            assert abs(a.cx - x) <= 0.04 + 1e-9 and abs(a.cy - y) <= 0.04 + 1e-9
    assert set(COUNT_LAYOUTS) == {1, 2, 3, 4, 5}


@pytest.mark.parametrize("size", [32, 64])
def test_count_images_show_n_separate_objects_for_one_to_five(size):
    rng = random.Random(size)
    for n in range(1, 6):
        for shape in ["circle", "square", "triangle"]:
            for trial in range(20):
                found = components(_paint(_count_scene(n, "purple", shape, rng if trial else None), size))
                assert len(found) == n
                # The pixel grid may turn a tiny jittered circle into a block; render redraws those.
                assert sum(c.shape == shape for c in found) >= n - 1


def test_mistakes_are_of_the_listed_kinds():
    rng = random.Random(11)
    for _ in range(40):
        found = components(render_mistake("a red circle in the center", 64, rng))
        assert len(found) == 1 and found[0].color == "red"
        moved = abs(found[0].centroid[0] - 0.5) > 0.1 or abs(found[0].centroid[1] - 0.5) > 0.1
        assert moved != (found[0].shape != "circle")  # another anchor or another shape, not both

        found = components(render_mistake("a red circle to the left of a blue square", 64, rng))
        colors = {c.color: c for c in found}
        if set(colors) == {"red", "blue"}:  # swapped
            assert colors["red"].centroid[0] > colors["blue"].centroid[0]
        else:  # one object in a third colour
            assert len(colors) == 2 and len(set(colors) & {"red", "blue"}) == 1

        assert len(components(render_mistake("three green triangles", 64, rng))) in (2, 4)
        assert len(components(render_mistake("two green triangles", 64, rng))) in (1, 3)

        image = render_mistake("the letter H in black", 64, rng)
        assert sum(check(f"the letter {L} in black", image).correct for L in "ACELOTX") == 1


# ---- the rules, on hand-built images --------------------------------------------------------


def test_pixel_classes():
    image = np.array(
        [
            [RED, GREEN, BLUE, PALETTE["yellow"], PALETTE["purple"], PALETTE["black"]],
            [(255, 255, 255), (128, 128, 128), (220, 40, 120), (220, 40, 119), (240, 240, 240), (250, 250, 250)],
        ],
        dtype=np.uint8,
    )
    classes = classify_pixels(image)
    assert classes[0].tolist() == [0, 1, 2, 3, 4, 5]
    # white; grey is >= 80 from every colour; (220, 40, 120) is exactly 80 from red, not below it;
    # one step nearer is red; off-whites are nearest to white.
    assert classes[1].tolist() == [-1, -1, -1, 0, -1, -1]
    assert classify_pixels(image.astype(np.float64)).tolist() == classes.tolist()


def test_components_are_4_connected_and_small_ones_are_ignored():
    image = fill(blank(), 2, 2, 3, 3, RED)  # 9 pixels: 0.006 * 32 * 32 = 6.1
    fill(image, 20, 20, 2, 2, RED)  # 4 pixels: ignored
    fill(image, 10, 10, 4, 4, BLUE)
    fill(image, 14, 14, 4, 4, BLUE)  # touches the other blue block only at a corner
    found = components(image)
    assert sorted((c.color, c.area) for c in found) == [("blue", 16), ("blue", 16), ("red", 9)]
    assert check("two blue squares", image).correct


def test_shape_class_thresholds():
    assert shape_class(0.95, 0.5) == "square"
    assert shape_class(0.94, 0.575) == "triangle"
    assert shape_class(0.94, 0.574) == "circle"
    assert shape_class(0.6, 0.5) == "circle"
    assert shape_class(0.59, 0.5) is None


def test_extra_speckle_breaks_an_object_but_a_tiny_one_does_not():
    image = render("a red circle in the center")
    assert is_correct("a red circle in the center", image)
    tiny = fill(image.copy(), 1, 1, 2, 2, GREEN)  # 4 pixels, below the area threshold
    assert is_correct("a red circle in the center", tiny)
    speckle = fill(image.copy(), 1, 1, 3, 3, GREEN)  # 9 pixels: a second component
    verdict = check("a red circle in the center", speckle)
    assert not verdict.correct and verdict.score == 0.75


def test_ragged_square_is_not_a_square():
    image = fill(blank(), 10, 10, 12, 12, BLUE)
    assert is_correct("a blue square in the center", image)
    for top, left in [(10, 10), (10, 20), (20, 10), (20, 20)]:
        image[top : top + 2, left : left + 2] = 255  # bite off the corners: f = 128 / 144
    (found,) = components(image)
    assert found.fill_ratio < 0.95 and found.shape == "circle"
    assert not is_correct("a blue square in the center", image)


def test_triangle_and_circle_are_told_apart_by_mass_height():
    triangle = components(render("a red triangle in the center", 64))[0]
    circle = components(render("a red circle in the center", 64))[0]
    assert triangle.mass_height > 0.6 and triangle.shape == "triangle"
    assert abs(circle.mass_height - 0.5) < 0.03 and circle.shape == "circle"


def test_relation_needs_an_offset_of_at_least_0_15_along_its_axis():
    prompt = "a red square to the left of a blue square"
    # 6-pixel squares on a 64 canvas; centroid offset = column difference / 64.
    for shift, expected in [(9, False), (10, True), (-20, False)]:
        image = fill(fill(blank(64), 29, 20, 6, 6, RED), 29, 20 + shift, 6, 6, BLUE)
        assert is_correct(prompt, image) == expected, shift
        assert (shift / 64 >= MIN_RELATION_OFFSET) == expected
    # Far enough along x, but farther still along y: the axis does not dominate.
    image = fill(fill(blank(64), 5, 10, 6, 6, RED), 50, 30, 6, 6, BLUE)
    verdict = check(prompt, image)
    assert not verdict.correct and verdict.score == 0.75
    assert is_correct("a red square above a blue square", image)


def test_relation_uses_the_largest_component_of_each_colour():
    image = render("a red circle above a blue triangle", 64)
    assert is_correct("a red circle above a blue triangle", image)
    fill(image, 58, 58, 5, 5, RED)  # a smaller red square far below does not change the verdict
    assert is_correct("a red circle above a blue triangle", image)


def _glyph_image(rows: list[str], color=RED, cell: int = 4, size: int = 64) -> np.ndarray:
    image = blank(size)
    top, left = (size - 7 * cell) // 2, (size - 5 * cell) // 2
    for r, line in enumerate(rows):
        for c, ch in enumerate(line):
            if ch == "#":
                fill(image, top + r * cell, left + c * cell, cell, cell, color)
    return image


def test_glyph_agreement_needs_30_of_35_cells():
    letter_o = [".###.", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."]
    assert is_correct("the letter O in red", _glyph_image(letter_o))
    flipped = [list(row) for row in letter_o]
    for r, c in [(1, 1), (1, 3), (5, 1), (5, 3), (3, 2)]:  # five interior cells: 30 agree
        flipped[r][c] = "#"
    assert is_correct("the letter O in red", _glyph_image(["".join(row) for row in flipped]))
    flipped[2][2] = "#"  # a sixth: 29 agree
    verdict = check("the letter O in red", _glyph_image(["".join(row) for row in flipped]))
    assert not verdict.correct and verdict.score == pytest.approx((1 + 29 / 30 + 1) / 3)


def test_wrong_glyph_or_colour_fails_text():
    image = render("the letter E in blue")
    assert is_correct("the letter E in blue", image)
    assert not is_correct("the letter L in blue", image)  # L agrees in fewer cells than E
    assert not is_correct("the letter E in red", image)
    assert check("the letter E in red", image).score == 0.0


def test_count_needs_exactly_n_of_the_shape():
    image = render("three yellow squares")
    assert is_correct("three yellow squares", image)
    assert not is_correct("two yellow squares", image)
    assert not is_correct("three yellow circles", image)
    assert check("four yellow squares", image).score == pytest.approx(2 / 3)
    # Components of other colours do not matter to a count.
    assert is_correct("three yellow squares", fill(image.copy(), 0, 0, 3, 3, BLUE))


@pytest.mark.parametrize("domain", DOMAINS)
def test_score_is_one_exactly_when_correct_and_partial_otherwise(domain):
    rng = random.Random(21)
    for _ in range(50):
        prompt = random_prompt(rng, domain)
        other = random_prompt(rng, domain)
        for image in (render(prompt, rng=rng), render_mistake(prompt, rng=rng), render(other, rng=rng), blank()):
            verdict = check(prompt, image)
            assert 0.0 <= verdict.score <= 1.0
            assert (verdict.score == 1.0) == verdict.correct
        assert check(prompt, blank()).score == 0.0
        assert check(prompt, render_mistake(prompt, rng=rng)).score > 0.0


def test_checking_is_fast():
    rng = random.Random(0)
    prompts = [random_prompt(rng) for _ in range(1000)]
    images = [render(p, rng=rng) for p in prompts]
    start = time.perf_counter()
    for prompt, image in zip(prompts, images):
        check(prompt, image)
    assert time.perf_counter() - start < 2.0

"""The side-by-side canvas, data URLs, prompt templates, and the director's config fields."""

import numpy as np
import pytest

from evolvedirector.config import (
    ConfigError, LocalDirectorConfig, OpenAIDirectorConfig, RunConfig, ShapesDirectorConfig, dump_config, parse_config,
)
from evolvedirector.director import templates
from evolvedirector.director.canvas import Layout, decode_data_url, png_data_url, side_by_side, split
from evolvedirector.worlds.shapes.render import render, render_mistake
from evolvedirector.worlds.shapes.rules import is_correct


def test_canvas_holds_both_images_exactly_under_their_labels():
    prompt = "three blue squares"
    good, bad = render(prompt, 32), render_mistake(prompt, 32)
    canvas = side_by_side(good, bad, panel=128)
    layout = Layout.for_panel(128)
    assert canvas.size == layout.size
    left, right = split(canvas)
    # Nearest-neighbour enlargement keeps every pixel's colour: the rules read the same verdicts.
    assert np.array_equal(left[::4, ::4], good) and np.array_equal(right[::4, ::4], bad)
    assert is_correct(prompt, left) and not is_correct(prompt, right)
    # The labels are drawn in the header strip above each panel, in ink, and differ from each other.
    pixels = np.asarray(canvas)
    headers = [pixels[: layout.header, l:r] for l, _, r, _ in (layout.box(0), layout.box(1))]
    assert all((h < 128).any() for h in headers) and not np.array_equal(headers[0], headers[1])
    assert split(np.zeros((40, 40, 3), np.uint8)) is None


def test_canvas_fits_images_of_any_aspect():
    wide = np.zeros((20, 80, 3), np.uint8)
    left, right = split(side_by_side(wide, render("a red circle on the left", 32), panel=64))
    assert left.shape == right.shape == (64, 64, 3)
    assert (left[0] == 255).all() and (left[32] == 0).all()  # letterboxed on white, centred


def test_data_url_round_trip_and_refusals():
    image = render("the letter T in green", 32)
    url = png_data_url(image)
    assert url.startswith("data:image/png;base64,")
    assert np.array_equal(decode_data_url(url), image)
    for bad in ("http://example.invalid/x.png", "data:image/png;base64,@@@", "data:image/png;base64,aGVsbG8=", 3):
        with pytest.raises(ValueError):
            decode_data_url(bad)


def test_templates_carry_the_papers_questions_and_fill_in_one_pass():
    assert "better aligned with the text" in templates.COMPARE
    assert "nouns" in templates.EXPAND and "colours" in templates.EXPAND and "styles" in templates.EXPAND
    assert len(templates.LENGTH_HINTS) == 4
    text = templates.fill(templates.EXPAND, prompt="a {n} of {length}", n=3)
    assert '"a {n} of {length}"' in text and "3 new prompts" in text  # the prompt is not filled again
    assert templates.fill('{"winner": "A"} for {prompt}', prompt="x") == '{"winner": "A"} for x'


def test_director_config_defaults_follow_the_paper():
    assert RunConfig().director == ShapesDirectorConfig(backend="shapes", judge_accuracy=0.9)
    config = LocalDirectorConfig(backend="local", model="m")
    assert config.retries == 5 and config.mode == "pairwise"
    assert config.templates.compare == templates.COMPARE
    assert config.templates.length_hints == list(templates.LENGTH_HINTS)


OPENAI = {"backend": "openai", "base_url": "http://127.0.0.1:8000/v1", "model": "m"}
LOCAL = {"backend": "local", "model": "m"}


@pytest.mark.parametrize("director, field, reason", [
    ({"backend": "openai"}, "director", "needs base_url"),
    ({"backend": "openai", "base_url": "http://127.0.0.1:8000/v1"}, "director", "needs model"),
    ({"backend": "openai", "base_url": "ftp://x", "model": "m"}, "director", "http:// or https://"),
    ({"backend": "openai", "base_url": "https://u:pw@host/v1", "model": "m"}, "director", "must not hold credentials"),
    ({"backend": "local"}, "director", "needs model"),
    ({"backend": "telepathy"}, "director", "'shapes', 'openai', 'local'"),
    ({"base_url": "http://127.0.0.1:8000/v1"}, "director", "only used by backend 'openai'"),
    ({**LOCAL, "mode": "listwise"}, "director.mode", "'pairwise' or 'pointwise'"),
    ({**OPENAI, "structured_output": "grammar"}, "director.structured_output", "'structured_outputs'"),
    ({**LOCAL, "retries": -1}, "director.retries", "greater than or equal to 0"),
    ({**OPENAI, "concurrency": 0}, "director.concurrency", "greater than or equal to 1"),
    ({**LOCAL, "templates": {"expand": "more like {prompt}"}}, "director.templates", "must contain {n}"),
    ({**OPENAI, "templates": {"length_hints": []}}, "director.templates.length_hints", "at least 1"),
    ({"api_ky_env": "X"}, "director.api_ky_env", "Extra inputs are not permitted"),
    ({**OPENAI, "api_ky_env": "X"}, "director.api_ky_env", "Extra inputs are not permitted"),
])
def test_bad_director_config_names_the_field(director, field, reason):
    with pytest.raises(ConfigError) as error:
        parse_config({"director": director}, "bad.yaml")
    assert f"{field}:" in str(error.value) and reason in str(error.value)


@pytest.mark.parametrize("director, reason", [
    ({"mode": "pointwise"}, "mode is only used by backends 'openai' and 'local'"),
    ({"judge_accuracy": 0.8, "retries": 2}, "retries is only used by backends 'openai' and 'local'"),
    ({**LOCAL, "base_url": "http://127.0.0.1:8000/v1"}, "base_url is only used by backend 'openai'"),
    ({**LOCAL, "concurrency": 4}, "concurrency is only used by backend 'openai'"),
    ({**OPENAI, "judge_accuracy": 0.5}, "judge_accuracy is only used by backend 'shapes'"),
    ({**OPENAI, "batch_size": 4, "device": "cuda"},
     "batch_size is only used by backend 'local'; device is only used by backend 'local'"),
])
def test_a_field_given_to_the_wrong_backend_is_refused_naming_who_reads_it(director, reason):
    with pytest.raises(ConfigError) as error:
        parse_config({"director": director}, "bad.yaml")
    assert f"director: Value error, {reason}" in str(error.value), str(error.value)


# How a director was saved before each backend had its own fields: every field, the other
# backends' unset or at their defaults.
SAVED_BEFORE = {
    "backend": "shapes", "judge_accuracy": 0.9, "mode": "pairwise", "both_orders": False, "shuffle": True,
    "panel_size": 256, "retries": 5, "temperature": 0.0, "retry_temperature": 0.7, "max_tokens": 512,
    "judge_max_tokens": 32, "model": None, "base_url": None, "api_key_env": None, "structured_output": "none",
    "top_logprobs": 20, "concurrency": 8, "timeout_s": 120.0, "backoff_s": 1.0, "max_backoff_s": 30.0,
    "extra_body": {}, "device": "auto", "dtype": "auto", "batch_size": 8,
    "templates": {"compare": templates.COMPARE, "pointwise": templates.POINTWISE, "expand": templates.EXPAND,
                  "mutate": templates.MUTATE, "categorize": templates.CATEGORIZE,
                  "length_hints": list(templates.LENGTH_HINTS)},
}


def test_a_director_saved_with_every_backends_fields_still_resumes():
    shapes = parse_config({"director": {**SAVED_BEFORE, "judge_accuracy": 0.75}}).director
    assert shapes == ShapesDirectorConfig(backend="shapes", judge_accuracy=0.75)
    openai = parse_config({"director": {**SAVED_BEFORE, **OPENAI, "concurrency": 3}}).director
    assert openai == OpenAIDirectorConfig(**OPENAI, concurrency=3)
    assert parse_config({"director": {**SAVED_BEFORE, **LOCAL}}).director == LocalDirectorConfig(**LOCAL)
    # A setting the backend would not read is still refused: it was ignored before, without a word.
    with pytest.raises(ConfigError, match="shuffle is only used by backends 'openai' and 'local'"):
        parse_config({"director": {**SAVED_BEFORE, "shuffle": False}})


def test_a_pasted_key_is_refused_without_being_echoed():
    key = "sk-proj-Zx81Qa_kk29"
    with pytest.raises(ConfigError) as error:
        parse_config({"director": {"backend": "openai", "base_url": "http://h/v1", "model": "m", "api_key_env": key}})
    assert "api_key_env" in str(error.value) and key not in str(error.value)


def test_saved_config_names_the_variable_not_the_key(monkeypatch):
    monkeypatch.setenv("DIRECTOR_KEY", "very-secret-value")
    config = parse_config({"director": {"backend": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m",
                                        "api_key_env": "DIRECTOR_KEY"}})
    text = dump_config(config)
    assert "DIRECTOR_KEY" in text and "very-secret-value" not in text
    assert parse_config(__import__("yaml").safe_load(text)).director == config.director  # round trip

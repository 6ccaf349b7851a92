from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from evolvedirector.worlds.base import Accepted, Refused
from evolvedirector.worlds.prompts import read_prompt_file
from evolvedirector.worlds.prompts.proposals import (
    DUPLICATE, EMPTY, HELD_OUT, META, NOT_TEXT, REASONS, TOO_LONG, TOO_MANY_TOKENS, UNPRINTABLE, clean, normalise,
    validate,
)

PARTI = Path(__file__).resolve().parents[2] / "prompts" / "PartiPrompts.tsv"
MAX_CHARS = 60
WORDS = ("a", "red", "cube", "owl", "on", "the", "mat", "tiny", "glass", "café", "Straße", "over", "2", "moon")
TAKEN = frozenset(map(normalise, ("a red cube", "an owl on the mat", "café au lait")))
HELDOUT = frozenset(map(normalise, ("a tiny glass moon",)))
FUZZ = settings(deadline=None, max_examples=200)


def _validate(proposal, **kwargs):
    return validate(proposal, taken=TAKEN, heldout=HELDOUT, max_chars=MAX_CHARS, **kwargs)


# Text of every kind, plus taken and held-out prompts and model-ish wrappers around them.
proposals = st.one_of(
    st.text(),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=200),
    st.builds(" ".join, st.lists(st.sampled_from(WORDS), min_size=1, max_size=12)),
    st.sampled_from(["A red cube!", '"a  tiny GLASS moon."', "Prompt: café-au-lait", "\x00", "- - -", "`` ``"]),
)


@FUZZ
@given(proposals)
def test_validate_never_raises_and_only_accepts_fresh_printable_prompts(proposal):
    result = _validate(proposal)
    assert isinstance(result, (Accepted, Refused))
    if isinstance(result, Refused):
        assert result.reason in REASONS
        assert len(result.detail) <= 200
    else:
        assert result.prompt and result.prompt.isprintable() and len(result.prompt) <= MAX_CHARS
        assert result.prompt == result.prompt.strip() and "  " not in result.prompt
        assert normalise(result.prompt) and normalise(result.prompt) not in TAKEN | HELDOUT
        assert result.category is None


@FUZZ
@given(st.text())
def test_normalise_is_idempotent(text):
    assert normalise(normalise(text)) == normalise(text)


@FUZZ
@given(
    st.sampled_from(["a red cube", "an owl on the mat", "café au lait"]),
    st.lists(st.booleans(), min_size=20, max_size=20),
    st.lists(st.sampled_from(["", " ", "  ", ", ", " - ", "\t"]), min_size=5, max_size=5),
    st.sampled_from(["", ".", "!", "?!", "...", ";"]),
    st.sampled_from(["{}", '"{}"', "'{}'", "`{}`", "1. {}", "- {}", "Prompt: {}", "  {}\n"]),
)
def test_case_space_and_punctuation_variants_of_a_taken_prompt_are_duplicates(prompt, upper, gaps, end, wrapper):
    words = [w.upper() if u else w for w, u in zip(prompt.split(), upper)]
    variant = words[0] + "".join((gap or " ") + word for gap, word in zip(gaps, words[1:]))
    assert _validate(wrapper.format(variant + end)).reason == DUPLICATE


@FUZZ
@given(st.one_of(st.none(), st.integers(), st.floats(), st.binary(), st.lists(st.text()),
                 st.dictionaries(st.text(), st.text()), st.tuples(st.text())))
def test_anything_but_a_string_is_not_text(proposal):
    assert _validate(proposal).reason == NOT_TEXT


@pytest.mark.parametrize("proposal", [
    "I'm sorry, but I can't help with that.",
    "I am sorry, I cannot do that",
    "i cannot generate that prompt",
    "I can’t create images of real people",
    "I won't write that",
    "As an AI language model, I cannot see images.",
    "As a language model I have no eyes",
    "I'm unable to comply",
    "I apologize for the confusion",
    "Sorry, but I can't do that",
    "Here are three prompts:",
    "Here is a prompt for you",
    "Here's a new prompt inspired by the original",
    "The following prompts explore lighting",
    "See the prompt below",
    "Sure!",
    "Sure, here it is",
    "Sure here you go",
    "Certainly! A red cube on a mat",
    "Of course.",
    "A new variation on the theme:",
])
def test_meta_answers_are_refused(proposal):
    assert _validate(proposal).reason == META


@pytest.mark.parametrize("proposal, prompt", [
    ("a sign that reads 'sorry, we are closed'", "a sign that reads 'sorry, we are closed'"),
    ("A photo of a cat: close-up", "A photo of a cat: close-up"),
    ("a robot who says I cannot lie", "a robot who says I cannot lie"),
    ("a surely steady hand holding a brush", "a surely steady hand holding a brush"),
    ('"a cat\'s toy on a mat"', "a cat's toy on a mat"),
    ("1. Prompt: `a teleprompter in a studio`", "a teleprompter in a studio"),
    ('"G I G G L E" painted on a wall', '"G I G G L E" painted on a wall'),
    ("  a   red\n\tsphere  ", "a red sphere"),
])
def test_ordinary_prompts_are_accepted_as_cleaned(proposal, prompt):
    assert _validate(proposal) == Accepted(prompt)


def test_every_partiprompts_prompt_would_be_accepted():
    # PartiPrompts is full of ordinary prompts the meta patterns must not catch.
    for record in read_prompt_file(PARTI):
        assert isinstance(validate(record.prompt, taken=(), heldout=(), max_chars=400), Accepted), record.prompt


@pytest.mark.parametrize("proposal, reason", [
    ("", EMPTY),
    ("   ", EMPTY),
    ('"?!" ...', EMPTY),
    ("Prompt:", EMPTY),
    ("a red\x00 cube", UNPRINTABLE),
    ("a zero\u200bwidth space", UNPRINTABLE),
    ("x" * (MAX_CHARS + 1), TOO_LONG),
    ("A tiny glass-moon", HELD_OUT),
    ("Café au lait!", DUPLICATE),
])
def test_each_refusal(proposal, reason):
    result = _validate(proposal)
    assert result == Refused(reason, proposal)


def _words(text: str) -> int:
    return len(text.split())


def test_the_token_limit_refuses_rather_than_truncates():
    assert _validate("a big green owl", max_tokens=4, count_tokens=_words) == Accepted("a big green owl")
    assert _validate("a big green owl today", max_tokens=4, count_tokens=_words).reason == TOO_MANY_TOKENS
    assert _validate("a big green owl today") == Accepted("a big green owl today")  # no counter: no limit


def test_clean_keeps_case_and_inner_punctuation():
    assert clean('  "Prompt 2: A Red-Cube, on (the) MAT!"  ') == "A Red-Cube, on (the) MAT!"
    assert clean("* 'Hello' and 'bye'") == "'Hello' and 'bye'"
    assert clean('"quoted" and "again"') == '"quoted" and "again"'


def test_detail_is_clipped():
    assert len(_validate("x" * 5000).detail) == 200

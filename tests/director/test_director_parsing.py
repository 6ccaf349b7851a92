"""Reading model replies: the tolerant parsers, and fuzzing them with random and hostile output."""

import builtins
import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evolvedirector.director.openai_server import first_token_candidates, message_content, structured_fields
from evolvedirector.director.parsing import (
    MAX_PROMPT_CHARS, parse_category, parse_choice, parse_prompt_list, parse_single_prompt, yes_probability,
)


@pytest.mark.parametrize("reply, label", [
    ("A", "A"), (" (B) ", "B"), ("Answer: (A)", "A"), ("Image (B) is better aligned with the text.", "B"),
    ("B is better.", "B"), ('{"winner": "B"}', "B"), ('```json\n{"answer": "A"}\n```', "A"),
    ("Image A shows a square, image B the circle asked for. Answer: B", "B"), ("[A]", "A"),
    ("The answer is A.", "A"), ('"B"', "B"),
    # No usable verdict: the article "A", both labels without a final answer, nothing at all.
    ("A red circle is on the left.", None), ("(A) and (B) are both fine", None), ("", None),
    ("In the image a red circle", None), ("C", None), (None, None), (42, None),
])
def test_parse_choice(reply, label):
    assert parse_choice(reply) == label


def test_parse_prompt_list_reads_json_fences_objects_and_numbered_lists():
    assert parse_prompt_list('["a red circle", "a blue square"]', 3) == ["a red circle", "a blue square"]
    assert parse_prompt_list('Sure!\n```json\n["x", "y", "z", "w"]\n```', 3) == ["x", "y", "z"]  # too many: cut
    assert parse_prompt_list('{"prompts": ["x", 3, null, "x", " y "]}', 5) == ["x", "y"]  # non-strings, duplicates
    assert parse_prompt_list("1. a cat\n2) \"a dog\"\n- a bird\nnot an item", 5) == ["a cat", "a dog", "a bird"]
    assert parse_prompt_list('prefix ["only", "these"] suffix ["not", "these"]', 5) == ["only", "these"]
    assert parse_prompt_list("[]", 3) == [] and parse_prompt_list("no list here", 3) == []
    assert parse_prompt_list('["x"]', 0) == []
    assert parse_prompt_list(json.dumps(["a" * (MAX_PROMPT_CHARS + 1), "ok"]), 3) == ["ok"]


def test_parse_single_prompt():
    assert parse_single_prompt('["three red circles"]') == "three red circles"
    assert parse_single_prompt("the letter T in green") == "the letter T in green"
    assert parse_single_prompt("line one\nline two") is None
    assert parse_single_prompt("[unbalanced") is None


def test_yes_probability_sums_spellings_and_needs_an_answer():
    log = math.log
    p = yes_probability([("Yes", log(0.6)), (" yes", log(0.1)), ("No", log(0.3)), ("Yes", log(0.6))])
    assert p == pytest.approx(0.7)
    assert yes_probability([("No", 0.0)]) == 0.0
    assert yes_probability([("Maybe", -0.1), ("The", -2.0)]) is None
    assert yes_probability([("Yes", "high"), (None, -1.0), ("Yes", float("nan"))]) is None
    assert yes_probability([("Yes", 5.0)]) == 1.0  # a logprob above 0 is clipped, not trusted


def test_reading_answers_of_any_shape():
    good = {"choices": [{"message": {"content": "A"}, "logprobs": {"content": [
        {"token": "Yes", "logprob": -0.1,
         "top_logprobs": [{"token": "Yes", "logprob": -0.1}, {"token": "No", "logprob": -2.4}]}
    ]}}]}
    assert message_content(good) == "A"
    assert first_token_candidates(good) == [("Yes", -0.1), ("Yes", -0.1), ("No", -2.4)]
    legacy = {"choices": [{"logprobs": {"top_logprobs": [{"Yes": -0.2, "No": -1.7}]}}]}
    assert first_token_candidates(legacy) == [("Yes", -0.2), ("No", -1.7)]
    for broken in ({}, {"choices": []}, {"choices": "x"}, {"choices": [None]}, {"choices": [{"message": 3}]},
                   {"choices": [{"message": {"content": None}, "logprobs": {"content": "x"}}]}, [], None):
        assert message_content(broken) == "" and first_token_candidates(broken) == []


def test_structured_output_fields_per_server_kind():
    schema = {"type": "array", "items": {"type": "string"}}
    assert structured_fields("none", choice=("A", "B")) == {}
    assert structured_fields("structured_outputs", choice=("A", "B")) == {"structured_outputs": {"choice": ["A", "B"]}}
    assert structured_fields("structured_outputs", schema=schema) == {"structured_outputs": {"json": schema}}
    assert structured_fields("guided_choice", choice=("A", "B")) == {"guided_choice": ["A", "B"]}
    assert structured_fields("guided_choice", schema=schema) == {"guided_json": schema}
    verdict = structured_fields("response_format", choice=("A", "B"))["response_format"]
    assert verdict["type"] == "json_schema"
    assert verdict["json_schema"]["schema"]["properties"]["answer"]["enum"] == ["A", "B"]
    listing = structured_fields("response_format", schema=schema)["response_format"]["json_schema"]["schema"]
    assert listing["required"] == ["prompts"] and listing["additionalProperties"] is False


# ---- fuzzing -------------------------------------------------------------------------------------

HOSTILE = [
    "__import__('builtins').__dict__.__setitem__('PWNED', 1)",
    "```python\nimport builtins; builtins.PWNED = 1\n```",
    "eval(\"__import__('builtins').__setattr__('PWNED', 1)\")",
    "[" * 5000 + "]" * 4000,
    "{" * 3000,
    '["a", "b"' * 2000,
    '{"winner": ' * 1000,
    "A" * 200_000,
    '["' + "x" * 100_000 + '"]',
    "\x00\x01\x02(A)\x7f",
    '{"prompts": {"prompts": {"prompts": []}}}',
    '[["nested"], ["lists"]]',
    "[1, 2, 3, true, null]",
    "",
    "   \n\t  ",
    "NaN",
    '{"__class__": "os.system", "args": ["rm -rf /"]}',
    "!!python/object/apply:os.system ['echo PWNED']",
    "<script>alert('A')</script>",
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20,
)
replies = st.one_of(
    st.text(max_size=400),
    st.sampled_from(HOSTILE),
    json_values.map(json.dumps),
    st.lists(st.text(max_size=40), max_size=12).map(json.dumps),
    st.tuples(st.text(max_size=50), st.sampled_from(HOSTILE), st.text(max_size=50)).map("".join),
    st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
)
# No example database: the fuzz writes nothing into the work tree.
FUZZ = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(reply=replies, limit=st.integers(min_value=-2, max_value=6))
def test_parsers_never_crash_and_return_only_well_formed_data(reply, limit):
    assert parse_choice(reply) in (None, "A", "B")
    prompts = parse_prompt_list(reply, limit)
    assert isinstance(prompts, list) and len(prompts) <= max(limit, 0)
    assert len(set(prompts)) == len(prompts)
    for prompt in prompts:
        assert isinstance(prompt, str) and 0 < len(prompt) <= MAX_PROMPT_CHARS and prompt == prompt.strip()
        assert not any(ord(ch) < 32 for ch in prompt)
    single = parse_single_prompt(reply)
    assert single is None or (isinstance(single, str) and 0 < len(single) <= MAX_PROMPT_CHARS)
    assert not hasattr(builtins, "PWNED")  # a reply is data: nothing in it ever ran


@FUZZ
@given(candidates=st.lists(st.tuples(st.one_of(st.text(max_size=8), st.none(), st.integers()),
                                     st.one_of(st.floats(allow_nan=True), st.integers(), st.text(max_size=3))),
                           max_size=30))
def test_yes_probability_is_a_probability_or_none(candidates):
    p = yes_probability(candidates)
    assert p is None or 0.0 <= p <= 1.0


@FUZZ
@given(response=json_values)
def test_answer_readers_accept_any_json(response):
    assert isinstance(message_content(response), str)
    candidates = first_token_candidates(response)
    assert isinstance(candidates, list) and len(candidates) <= 64


@pytest.mark.parametrize("reply, expected", [
    ("Animals", "Animals"),
    ('"food & beverage"', "Food & Beverage"),
    ("Category: Arts.", "Arts"),
    ('{"category": "Animals"}', "Animals"),
    ('["Arts"]', "Arts"),
    ("Animals or Arts, hard to say", None),  # two named: no answer
    ("Vehicles", None),  # not one of the file's categories
    ("", None),
    (None, None),
])
def test_a_category_is_one_of_the_files_or_none(reply, expected):
    assert parse_category(reply, ("Animals", "Food & Beverage", "Arts")) == expected

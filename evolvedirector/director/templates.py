"""What a vision-language director is asked, as configurable text (the paper's wording by default).

Five questions: which of two side-by-side images is better aligned with a prompt (pairwise), does
one image show a prompt (pointwise, read as P("Yes")), which prompts are like this one (expansion:
replace its nouns), which prompt is unlike it (mutation, with one of four length hints), and which
of a prompt file's categories a new prompt belongs to (categorize).

Placeholders are `{prompt}`, `{n}`, `{length}` and `{categories}`. They are filled in one pass by name, so a
prompt that itself contains braces is inserted as it is and never filled again, and a template
may hold literal braces (a JSON example) without escaping.
"""

from __future__ import annotations

import re

COMPARE = (
    "The left image is (A) and the right image is (B). "
    "Which image is better aligned with the text: \"{prompt}\"? "
    "Consider the objects, their colours, shapes, counts, positions and any written text. "
    # A bare letter, not "(A)": a local model's verdict is read from the first token's logits.
    "Answer with the letter A or B only."
)

POINTWISE = "Does this image show \"{prompt}\"? Answer Yes or No."

EXPAND = (
    "You write prompts for a text-to-image model. Here is a prompt: \"{prompt}\". "
    "Write {n} new prompts like it by replacing its nouns: the objects, characters, backgrounds, "
    "names, colours and styles, keeping its structure and wording otherwise. "
    "Each new prompt must differ from the given one and from each other. "
    "Answer with a JSON list of {n} strings and nothing else."
)

MUTATE = (
    "You write prompts for a text-to-image model. Here is a prompt: \"{prompt}\". "
    "Write one new prompt whose content is completely different from it, as {length}. "
    "Answer with a JSON list of 1 string and nothing else."
)

CATEGORIZE = (
    "Which category fits this text-to-image prompt best: \"{prompt}\"? "
    "The categories are: {categories}. Answer with one category name only."
)

# The paper picks one of four lengths at random for each mutation, so new prompts vary in detail.
LENGTH_HINTS = (
    "a short prompt description",
    "a medium-length prompt description",
    "a long prompt description",
    "a very detailed prompt description",
)

# Which placeholders each template must contain for its question to make sense.
REQUIRED = {
    "compare": ("prompt",),
    "pointwise": ("prompt",),
    "expand": ("prompt", "n"),
    "mutate": ("prompt", "length"),
    "categorize": ("prompt", "categories"),
}

_PLACEHOLDER = re.compile(r"\{(prompt|n|length|categories)\}")


def missing_placeholders(name: str, template: str) -> list[str]:
    """The required placeholders that `template` (the template called `name`) lacks."""
    return [key for key in REQUIRED[name] if "{" + key + "}" not in template]


def fill(template: str, **values: object) -> str:
    """The template with each `{prompt}`, `{n}`, `{length}` replaced by its value, in one pass."""

    def replace(match: re.Match) -> str:
        key = match.group(1)
        return str(values[key]) if key in values else match.group(0)

    return _PLACEHOLDER.sub(replace, template)

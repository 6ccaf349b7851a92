"""Checking a director's proposed prompt before the open world adds it to the set.

A proposal is model output, so untrusted data: it is read as a string and matched with regular
expressions, never evaluated. `clean` takes off what models wrap around a prompt (quotes, a list
marker, a "Prompt:" label); `validate` then accepts the prompt or refuses it with one of REASONS,
short stable labels the loop counts and reports. Two prompts are the same prompt when their
`normalise` keys are equal: case, punctuation and spacing do not make a new prompt.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Collection

from evolvedirector.worlds.base import Accepted, Refused

NOT_TEXT = "not text"
EMPTY = "empty"
UNPRINTABLE = "unprintable"
TOO_LONG = "too long"
META = "refusal or meta-answer"
HELD_OUT = "held out"
DUPLICATE = "duplicate"
TOO_MANY_TOKENS = "over the token limit"
REASONS = (NOT_TEXT, EMPTY, UNPRINTABLE, TOO_LONG, META, HELD_OUT, DUPLICATE, TOO_MANY_TOKENS)
DETAIL_CHARS = 200  # of the proposal kept in a refusal, for the report

# A prompt wholly inside one pair of quotes or backticks that it does not use inside.
_WRAPPED = re.compile(r"""^(?:"([^"]*)"|'([^']*)'|`+([^`]*)`+|“([^“”]*)”|‘([^‘’]*)’)$""")
_LIST_MARKER = re.compile(r"^(?:\d{1,3}[.)]|[-*\u2022])\s+")
_LABEL = re.compile(r"^(?:[a-z]+\s+)?prompts?\s*#?\d{0,3}\s*:\s*", re.IGNORECASE)
_A = "['’]"  # models write either apostrophe
# Refusals, apologies and preambles are matched at the start only, so a prompt may still show
# "a sign that reads 'sorry, we are closed'"; a text ending with ":" announces what follows it.
_META = re.compile(
    "|".join((
        rf"^(?:i{_A}m|i am)\s+(?:sorry|unable|not able)\b",
        rf"^i\s+(?:cannot|can{_A}?t|can not|won{_A}?t|will not|apologi[sz]e)\b",
        r"^sorry\b\W*(?:but\s+)?i\b",
        r"^(?:my\s+)?apologies\b",
        r"^as an?\s+(?:ai|(?:large\s+)?language model)\b",
        r"^(?:sure|certainly|of course)(?:\s*[!.,:]|$|\s+here\b)",
        r":$",
    )),
    re.IGNORECASE,
)
# "Here is a prompt", "the following prompts", "prompt below": talk about prompts, not one.
_PROMPT_WORD = re.compile(r"\bprompts?\b", re.IGNORECASE)
_POINTER_WORD = re.compile(r"\b(?:here|below|following)\b", re.IGNORECASE)


def normalise(text: str) -> str:
    """The duplicate key: NFKC, casefolded, punctuation and symbols dropped, spaces collapsed."""
    # NFKC again after casefold: casefolding can leave text that NFKC would still change, and the
    # key must be a fixed point (normalise(normalise(x)) == normalise(x)).
    text = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    return " ".join("".join(" " if unicodedata.category(ch)[0] in "PS" else ch for ch in text).split())


def clean(proposal: str) -> str:
    """The prompt inside a proposal: wrapping quotes, a list marker and a "Prompt:" label taken
    off (in any order and nesting), whitespace runs collapsed; case and inner punctuation kept."""
    text = " ".join(proposal.split())
    while True:
        if match := _WRAPPED.match(text):
            inner = next(group for group in match.groups() if group is not None)
        else:
            inner = text
        inner = _LABEL.sub("", _LIST_MARKER.sub("", inner.strip(), count=1), count=1).strip()
        if inner == text:
            return text
        text = inner  # each pass is shorter, so the loop ends


def is_meta(prompt: str) -> bool:
    """Whether a cleaned proposal is a refusal, an apology or talk about prompts, not a prompt."""
    return bool(_META.search(prompt) or (_PROMPT_WORD.search(prompt) and _POINTER_WORD.search(prompt)))


def validate(
    proposal: object,
    *,
    taken: Collection[str],
    heldout: Collection[str],
    max_chars: int,
    max_tokens: int | None = None,
    count_tokens: Callable[[str], int] | None = None,
) -> Accepted | Refused:
    """The cleaned prompt (category None: the caller decides it), or the first reason it is
    refused. `taken` and `heldout` hold `normalise` keys."""
    if not isinstance(proposal, str):
        return Refused(NOT_TEXT, type(proposal).__name__)
    detail = proposal[:DETAIL_CHARS]
    prompt = clean(proposal)
    key = normalise(prompt)
    if not key:
        return Refused(EMPTY, detail)
    if not prompt.isprintable():
        return Refused(UNPRINTABLE, detail)
    if len(prompt) > max_chars:
        return Refused(TOO_LONG, detail)
    if is_meta(prompt):
        return Refused(META, detail)
    if key in heldout:
        return Refused(HELD_OUT, detail)
    if key in taken:
        return Refused(DUPLICATE, detail)
    # Refused, not truncated: the text encoder would cut the prompt, and the student would learn
    # an image drawn for words it never reads.
    if max_tokens is not None and count_tokens is not None and count_tokens(prompt) > max_tokens:
        return Refused(TOO_MANY_TOKENS, detail)
    return Accepted(prompt)

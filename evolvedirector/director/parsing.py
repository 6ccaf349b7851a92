"""Reading a model's replies: a verdict, a list of prompts, or P("Yes") from log-probabilities.

A reply is data from an untrusted source. It is read with `json` and regular expressions only,
never evaluated, and only its first MAX_REPLY_CHARS characters are looked at, so a huge or
hostile reply costs bounded time. Every reader returns None (or an empty list) when the reply
holds no usable answer; the caller then retries or skips the item and counts it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable

MAX_REPLY_CHARS = 20_000  # longer replies are cut: an answer sits near the start
MAX_PROMPT_CHARS = 1_000  # a proposed prompt longer than this is refused
MAX_JSON_STARTS = 64  # at most this many "[" or "{" positions are tried as the start of JSON

_FENCE = re.compile(r"```[A-Za-z0-9_-]{0,20}\s*\n?(.*?)```", re.DOTALL)
# Label mentions that cannot be the article "a": "(A)", "[B]", "image A", "answer: B", "option (A)".
_PAREN_LABEL = re.compile(r"[(\[]\s*([AB])\s*[)\]]")
# The keywords match in any case, the label only as a capital, so "image a red..." names nothing.
_NAMED_LABEL = re.compile(r"\b(?i:image|picture|answer|option|choice|panel)\s*[:=]?\s*\(?\s*([AB])\b")
_ANSWER_LABEL = re.compile(r"\b(?i:answer|verdict|choice)\s*(?i:is)?\s*[:=]?\s*[(\[\"']?\s*([AB])\b")
# A reply that is nothing but a label, or that opens with one followed by punctuation or "is".
_BARE_LABEL = re.compile(r"^\W{0,3}([AB])\W{0,3}$")
_LEADING_LABEL = re.compile(r"^\W{0,3}([AB])[)\]]?(?:\s*[.:,;]|\s+is\b|\s*$)")
_LIST_ITEM = re.compile(r"^\s*(?:\d{1,3}\s*[.):]|[-*\u2022])\s+(.+?)\s*$")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_LABEL_KEYS = ("winner", "answer", "choice", "better", "verdict", "image")
_LIST_KEYS = ("prompts", "prompt", "items", "list", "new_prompts")
_YES, _NO = "yes", "no"


def parse_choice(reply: object) -> str | None:
    """"A" or "B" from a pairwise reply, or None when it names neither or both without a marker."""
    text = _clip(reply)
    if not text:
        return None
    for value in _json_values(text):
        if isinstance(value, dict):
            for key in _LABEL_KEYS:
                label = _label_of(value.get(key))
                if label:
                    return label
        label = _label_of(value)
        if label:
            return label
    for body in (_unfenced(text), text):
        if match := _BARE_LABEL.match(body):
            return match.group(1)
        # An explicit "Answer: B" settles a reply that discusses both images.
        answers = {m.group(1) for m in _ANSWER_LABEL.finditer(body)}
        if len(answers) == 1:
            return answers.pop()
        mentioned = {m.group(1) for m in _PAREN_LABEL.finditer(body)}
        mentioned |= {m.group(1) for m in _NAMED_LABEL.finditer(body)}
        if len(mentioned) == 1:
            return mentioned.pop()
        if match := _LEADING_LABEL.match(body):
            return match.group(1)
    return None


def parse_prompt_list(reply: object, limit: int) -> list[str]:
    """Up to `limit` distinct, non-empty prompts from a reply (a JSON list, a JSON object holding
    one, or a numbered or bulleted list). Too many are cut to `limit`; non-strings are dropped."""
    if limit <= 0:
        return []
    text = _clip(reply)
    if not text:
        return []
    items: list[object] | None = None
    for value in _json_values(text):
        if isinstance(value, dict):
            value = next((value[k] for k in _LIST_KEYS if isinstance(value.get(k), (list, str))), None)
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list) and any(isinstance(v, str) for v in value):
            items = value
            break
    if items is None:
        items = [m.group(1) for line in _unfenced(text).splitlines() if (m := _LIST_ITEM.match(line))]
    return _clean_prompts(items, limit)


def parse_single_prompt(reply: object) -> str | None:
    """One prompt: the first of a list, or else a short reply that is one line of plain text."""
    prompts = parse_prompt_list(reply, 1)
    if prompts:
        return prompts[0]
    text = _unfenced(_clip(reply)).strip()
    if text and "\n" not in text and not any(ch in text for ch in "[]{}"):
        cleaned = _clean_prompts([text], 1)
        return cleaned[0] if cleaned else None
    return None


def parse_category(reply: object, categories: Iterable[str]) -> str | None:
    """The one category of `categories` a reply names (as JSON, bare, or mentioned once as a
    whole word, in any case), or None when it names none or several."""
    text = _clip(reply)
    by_lower = {c.lower(): c for c in categories}
    for value in (*_json_values(text), text):
        if isinstance(value, dict):
            value = next((v for v in value.values() if isinstance(v, str)), None)
        if isinstance(value, list) and value:
            value = value[0]
        if isinstance(value, str) and (found := by_lower.get(value.strip().strip("\"'`.").strip().lower())):
            return found
    mentioned = {c for lower, c in by_lower.items() if re.search(rf"(?<!\w){re.escape(lower)}(?!\w)", text.lower())}
    return mentioned.pop() if len(mentioned) == 1 else None


def yes_probability(candidates: Iterable[tuple[object, object]]) -> float | None:
    """P("Yes") from (token, logprob) pairs of the first answer token (VQAScore style).

    Tokens are compared after trimming spaces and punctuation and lowercasing, so "Yes", " yes"
    and "YES" all count; their probabilities add up. None when neither yes nor no is among them:
    the model did not answer the question.
    """
    seen: dict[str, float] = {}
    p_yes = 0.0
    answered = False
    for token, logprob in candidates:
        if not isinstance(token, str) or not isinstance(logprob, (int, float)) or isinstance(logprob, bool):
            continue
        if not math.isfinite(logprob) and logprob != -math.inf:
            continue
        word = token.strip().strip(".,!?:;\"'").lower()
        if word not in (_YES, _NO) or token in seen:
            continue  # the chosen token is often listed again among the top ones
        probability = math.exp(min(float(logprob), 0.0))
        seen[token] = probability
        answered = True
        if word == _YES:
            p_yes += probability
    return min(p_yes, 1.0) if answered else None


# ---- helpers ---------------------------------------------------------------------------------


def _clip(reply: object) -> str:
    return reply[:MAX_REPLY_CHARS] if isinstance(reply, str) else ""


def _unfenced(text: str) -> str:
    """The inside of the first ``` fence, or the text itself."""
    match = _FENCE.search(text)
    return match.group(1) if match else text


def _json_values(text: str) -> Iterable[object]:
    """JSON values found in the text: the whole (or fenced) text first, then from each of the
    first MAX_JSON_STARTS opening brackets. Deeply nested input stops at the recursion limit."""
    decoder = json.JSONDecoder()
    tried = 0
    for body in dict.fromkeys((_unfenced(text).strip(), text.strip())):
        try:
            yield json.loads(body)
            return
        except (ValueError, RecursionError):
            pass
    for index, char in enumerate(text):
        if char not in "[{":
            continue
        tried += 1
        if tried > MAX_JSON_STARTS:
            return
        try:
            value, _ = decoder.raw_decode(text, index)
        except (ValueError, RecursionError):
            continue
        yield value


def _label_of(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    match = re.fullmatch(r"\W{0,3}(?:image\s*)?([AB])\W{0,3}", value.strip(), re.IGNORECASE)
    return match.group(1).upper() if match else None


def _clean_prompts(items: Iterable[object], limit: int) -> list[str]:
    prompts: list[str] = []
    for item in items:
        if not isinstance(item, str):
            continue
        prompt = re.sub(r"\s+", " ", _unquote(_CONTROL.sub(" ", item).strip()))
        if not prompt or len(prompt) > MAX_PROMPT_CHARS or prompt in prompts:
            continue
        prompts.append(prompt)
        if len(prompts) == limit:
            break
    return prompts


def _unquote(text: str) -> str:
    """Without one pair of wrapping quotes; a quote that opens or ends a prompt's own words
    ("\"G I G G L E\" painted on a wall") stays, so no prompt is left with half a pair."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'`" and text[0] not in text[1:-1]:
        return text[1:-1].strip()
    return text

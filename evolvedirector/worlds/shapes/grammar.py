"""The prompt grammar of the shapes world: four domains, 1272 prompts, and ways to draw from them.

Every prompt is one filling of a domain's template (WORLD.md, "Prompts"). The whole space is small
enough to enumerate once at import, so parsing is a dictionary look-up and sampling is a choice
from a list.
"""

from __future__ import annotations

import json
import random
from collections.abc import Collection
from dataclasses import dataclass
from importlib import resources

DOMAINS = ("object", "relation", "count", "text")

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 70, 220),
    "yellow": (235, 195, 30),
    "purple": (150, 60, 190),
    "black": (30, 30, 30),
}

SHAPES = ("circle", "square", "triangle")

# where-phrase -> normalised (x, y) centre of an `object` prompt's shape.
ANCHORS: dict[str, tuple[float, float]] = {
    "on the left": (0.25, 0.5),
    "on the right": (0.75, 0.5),
    "at the top": (0.5, 0.25),
    "at the bottom": (0.5, 0.75),
    "in the center": (0.5, 0.5),
}

RELATIONS = ("to the left of", "to the right of", "above", "below")

COUNT_WORDS: dict[str, int] = {"two": 2, "three": 3, "four": 4}

LETTERS = ("A", "C", "E", "H", "L", "O", "T", "X")

# The slots each domain's template fills. Expansion changes one or two of these.
SLOTS: dict[str, tuple[str, ...]] = {
    "object": ("color", "shape", "where"),
    "relation": ("color", "shape", "relation", "color2", "shape2"),
    "count": ("count", "color", "shape"),
    "text": ("letter", "color"),
}


def _load_glyphs() -> dict[str, tuple[str, ...]]:
    data = json.loads(resources.files(__package__).joinpath("glyphs.json").read_text())
    glyphs = {letter: tuple(rows) for letter, rows in data["glyphs"].items()}
    assert set(glyphs) == set(LETTERS), "glyphs.json must define exactly the letters of the grammar"
    return glyphs


# letter -> 7 rows of 5 characters, "#" for ink (the contract's glyphs.json).
GLYPHS: dict[str, tuple[str, ...]] = _load_glyphs()


@dataclass(frozen=True)
class Spec:
    """One prompt as slot values; the slots its domain does not use stay None.

    For a relation, `color`/`shape` name the first object and `color2`/`shape2` the second.
    """

    domain: str
    color: str
    shape: str | None = None
    where: str | None = None
    relation: str | None = None
    color2: str | None = None
    shape2: str | None = None
    count: int | None = None
    letter: str | None = None

    @property
    def text(self) -> str:
        """The exact prompt string."""
        if self.domain == "object":
            return f"a {self.color} {self.shape} {self.where}"
        if self.domain == "relation":
            return f"a {self.color} {self.shape} {self.relation} a {self.color2} {self.shape2}"
        if self.domain == "count":
            word = next(w for w, n in COUNT_WORDS.items() if n == self.count)
            return f"{word} {self.color} {self.shape}s"
        if self.domain == "text":
            return f"the letter {self.letter} in {self.color}"
        raise ValueError(f"unknown domain {self.domain!r}")

    def slot_values(self) -> tuple:
        """The values of this domain's slots, in template order."""
        return tuple(getattr(self, slot) for slot in SLOTS[self.domain])


def _enumerate(domain: str) -> list[Spec]:
    if domain == "object":
        return [
            Spec("object", color=c, shape=s, where=w) for c in PALETTE for s in SHAPES for w in ANCHORS
        ]
    if domain == "relation":
        return [
            Spec("relation", color=c1, shape=s1, relation=rel, color2=c2, shape2=s2)
            for c1 in PALETTE
            for s1 in SHAPES
            for rel in RELATIONS
            for c2 in PALETTE
            if c2 != c1
            for s2 in SHAPES
        ]
    if domain == "count":
        return [
            Spec("count", color=c, shape=s, count=n) for n in COUNT_WORDS.values() for c in PALETTE for s in SHAPES
        ]
    if domain == "text":
        return [Spec("text", color=c, letter=letter) for letter in LETTERS for c in PALETTE]
    raise ValueError(f"unknown domain {domain!r}; choose from {DOMAINS}")


_SPECS: dict[str, tuple[Spec, ...]] = {domain: tuple(_enumerate(domain)) for domain in DOMAINS}
_PROMPTS: dict[str, tuple[str, ...]] = {domain: tuple(s.text for s in specs) for domain, specs in _SPECS.items()}
_BY_TEXT: dict[str, Spec] = {spec.text: spec for specs in _SPECS.values() for spec in specs}


def parse(text: str) -> Spec:
    """The Spec of a prompt; ValueError if `text` is not exactly a prompt of the grammar."""
    try:
        return _BY_TEXT[text]
    except (KeyError, TypeError):
        raise ValueError(f"not a prompt of the shapes-world grammar: {text!r}") from None


def all_prompts(domain: str | None = None) -> list[str]:
    """Every prompt (of one domain, or of all four in DOMAINS order), in a fixed order."""
    if domain is None:
        return [p for d in DOMAINS for p in _PROMPTS[d]]
    _check_domain(domain)
    return list(_PROMPTS[domain])


def random_prompt(rng: random.Random, domain: str | None = None, exclude: Collection[str] = ()) -> str:
    """A domain uniformly (unless given), then a prompt uniformly within it, never one in `exclude`."""
    domains = DOMAINS if domain is None else (_check_domain(domain),)
    return _draw(rng, domains, exclude)


def expand(prompt: str, n: int, rng: random.Random, exclude: Collection[str] = ()) -> list[str]:
    """Up to n distinct prompts of the same domain, each differing from `prompt` in one or two slots."""
    source = parse(prompt)
    excluded = _as_set(exclude)
    values = source.slot_values()
    neighbours = [
        spec.text
        for spec in _SPECS[source.domain]
        if 1 <= sum(a != b for a, b in zip(values, spec.slot_values())) <= 2 and spec.text not in excluded
    ]
    return rng.sample(neighbours, min(max(n, 0), len(neighbours)))


def mutate(prompt: str, rng: random.Random, exclude: Collection[str] = ()) -> str:
    """A random prompt from one of the other three domains (chosen uniformly), uniform within it."""
    source = parse(prompt)
    return _draw(rng, tuple(d for d in DOMAINS if d != source.domain), exclude)


def _draw(rng: random.Random, domains: tuple[str, ...], exclude: Collection[str]) -> str:
    excluded = _as_set(exclude)
    pools = {d: [p for p in _PROMPTS[d] if p not in excluded] if excluded else _PROMPTS[d] for d in domains}
    # A domain whose every prompt is excluded cannot be drawn; the others stay equally likely.
    open_domains = [d for d in domains if pools[d]]
    if not open_domains:
        raise ValueError(f"every prompt of the domains {domains} is excluded")
    return rng.choice(pools[rng.choice(open_domains)])


def _as_set(items: Collection[str]) -> Collection[str]:
    # Membership tests on a list would make every draw linear in the size of `exclude`.
    return items if isinstance(items, (set, frozenset, dict)) else set(items)


def _check_domain(domain: str) -> str:
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; choose from {DOMAINS}")
    return domain

"""The open world behind the loop's `World` contract: the user's own prompts, from a file.

Its vocabulary is the file's prompts plus whatever a director writes that passes
`proposals.validate`; a prompt's identity is its `normalise` key, its category the file's (or
`other`, or the loop's choice for a new one). Held-out prompts come from a second file or are
drawn from the first, per category. There are no exact rules, so `grade` stays None.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Collection

from evolvedirector.worlds.base import OTHER, Accepted, Refused, World
from evolvedirector.worlds.prompts.files import PromptRecord, read_prompt_file
from evolvedirector.worlds.prompts.proposals import normalise, validate

log = logging.getLogger(__name__)


def split_heldout(records: list[PromptRecord], share: float,
                  seed: int) -> tuple[list[PromptRecord], list[PromptRecord]]:
    """(training, held-out) records, both in file order: round(share * n) of each category's n
    held out, drawn with `seed`; at least one where share > 0 and n >= 2, and never a category's
    last one, so every category is still trained on."""
    rng = random.Random(seed)
    by_category: dict[str, list[PromptRecord]] = {}
    for record in records:
        by_category.setdefault(record.category, []).append(record)
    held: set[PromptRecord] = set()
    for group in by_category.values():
        k = min(round(share * len(group)), len(group) - 1)
        if share > 0 and len(group) >= 2:
            k = max(k, 1)
        held.update(rng.sample(group, k))
    return [r for r in records if r not in held], [r for r in records if r in held]


class PromptsWorld(World):
    name = "prompts"

    def __init__(self, prompts: list[PromptRecord], heldout: list[PromptRecord], *, image_size: int,
                 buckets: tuple[tuple[int, int], ...] = (), max_chars: int = 400, max_tokens: int | None = None,
                 count_tokens: Callable[[str], int] | None = None):
        if not prompts:
            raise ValueError("the open world needs at least one training prompt")
        if (max_tokens is None) != (count_tokens is None):
            raise ValueError("max_tokens and count_tokens go together: a limit needs a counter")
        self._training = {normalise(r.prompt): r for r in prompts}
        for record in heldout:
            if (same := self._training.get(normalise(record.prompt))) is not None:
                raise ValueError(f'held-out prompt "{record.prompt}" (line {record.line}) is also a training '
                                 f'prompt (line {same.line})')
        self.image_size = image_size
        self.buckets = tuple(buckets)
        self.max_chars = max_chars
        self.max_tokens = max_tokens
        self.count_tokens = count_tokens
        self.categories = tuple(dict.fromkeys([*(r.category for r in (*prompts, *heldout)), OTHER]))
        self._heldout = [r.prompt for c in self.categories for r in heldout if r.category == c]
        self._heldout_keys = frozenset(normalise(r.prompt) for r in heldout)
        self._category_of = {normalise(r.prompt): r.category for r in heldout} | {
            key: r.category for key, r in self._training.items()
        }
        self._pools = {c: [r.prompt for r in self._training.values() if r.category == c] for c in self.categories}
        if count_tokens is not None:
            # A director's prompt past the limit is refused; the file's own are the user's choice,
            # so they stay, but the user learns that the student reads only their beginning.
            long = [r for r in (*prompts, *heldout) if count_tokens(r.prompt) > max_tokens]
            if long:
                log.warning("%d prompts of the file are longer than the student's %d text tokens (the first on "
                            "line %d); the student reads only their first %d tokens", len(long), max_tokens,
                            long[0].line, max_tokens)

    @classmethod
    def from_config(cls, config, buckets=(), text_encoder=None) -> PromptsWorld:
        """The world of a RunConfig: `world.prompts`, held out by `world.heldout` or a share of it;
        with the student's `text_encoder`, proposals past its token limit are refused."""
        world = config.world
        prompts = read_prompt_file(world.prompts)
        if world.heldout is not None:
            heldout = read_prompt_file(world.heldout)
        else:
            prompts, heldout = split_heldout(prompts, world.heldout_share, world.heldout_seed)
        return cls(prompts, heldout, image_size=world.image_size, buckets=buckets, max_chars=world.max_prompt_chars,
                   max_tokens=None if text_encoder is None else text_encoder.max_tokens,
                   count_tokens=None if text_encoder is None else text_encoder.count_tokens)

    @property
    def heldout(self) -> list[str]:
        return list(self._heldout)

    def seed_prompts(self, n: int, rng: random.Random) -> list[str]:
        # A category first, then a prompt of it: a file with 300 animal prompts and 40 indoor
        # scenes still seeds both.
        pools = {c: list(pool) for c, pool in self._pools.items() if pool}
        prompts: list[str] = []
        while pools and len(prompts) < n:
            category = rng.choice(list(pools))
            pool = pools[category]
            prompts.append(pool.pop(rng.randrange(len(pool))))
            if not pool:
                del pools[category]
        return prompts

    def key(self, prompt: str) -> str:
        return normalise(prompt)

    def accept(self, proposal: object, taken: Collection[str]) -> Accepted | Refused:
        result = validate(proposal, taken=taken, heldout=self._heldout_keys, max_chars=self.max_chars,
                          max_tokens=self.max_tokens, count_tokens=self.count_tokens)
        if isinstance(result, Accepted) and (record := self._training.get(self.key(result.prompt))) is not None:
            return Accepted(record.prompt, record.category)  # the file's spelling and category
        return result

    def category(self, prompt: str) -> str:
        return self._category_of.get(self.key(prompt), OTHER)

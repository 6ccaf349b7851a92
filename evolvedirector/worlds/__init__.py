"""Worlds: the prompts a run works on, given to the loop through one small contract (base.py).

| world     | prompts                                    | grading                     | folder       |
|-----------|--------------------------------------------|-----------------------------|--------------|
| `shapes`  | the 1272 prompts of WORLD.md's grammar     | exact (the world's rules)   | `shapes/`    |
| `prompts` | a user's prompt file (PartiPrompts, ...)   | none: the director judges   | `prompts/`   |

Everything a world needs (the shapes world's grammar, renderer, rules, synthetic teachers and
judge, and its test chat server; the open world's file reader and proposal checks) lives in its
folder; the loop sees only `World`.
"""

from __future__ import annotations

from evolvedirector.worlds.base import OTHER, Accepted, Refused, World
from evolvedirector.worlds.prompts import PromptsWorld
from evolvedirector.worlds.shapes.world import ShapesWorld

WORLDS: dict[str, type[World]] = {"shapes": ShapesWorld, "prompts": PromptsWorld}


def build_world(config, *, buckets: tuple[tuple[int, int], ...] = (), text_encoder=None) -> World:
    """The world a RunConfig names. `buckets`: the aspect buckets of a multi-aspect run;
    `text_encoder`: the student's, whose token limit bounds what the open world accepts."""
    if config.world.name not in WORLDS:
        raise ValueError(f"unknown world {config.world.name!r}; choose from {sorted(WORLDS)}")
    return WORLDS[config.world.name].from_config(config, buckets, text_encoder)


__all__ = ["OTHER", "WORLDS", "Accepted", "Refused", "World", "build_world"]

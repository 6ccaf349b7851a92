"""The shapes world: a small text-to-image world whose every image can be checked exactly.

grammar (the 1272 prompts), render (correct and mistaken images), rules (the exact checker),
profiles (the teachers), judge (the synthetic director's comparisons) and heldout (the
benchmark) follow the contract in WORLD.md.
"""

from evolvedirector.world.grammar import (
    ANCHORS,
    COUNT_WORDS,
    DOMAINS,
    LETTERS,
    PALETTE,
    RELATIONS,
    SHAPES,
    Spec,
    all_prompts,
    expand,
    mutate,
    parse,
    random_prompt,
)
from evolvedirector.world.heldout import accuracy, heldout_prompts
from evolvedirector.world.judge import judge_pair
from evolvedirector.world.profiles import TEACHER_PROFILES, TeacherProfile, teacher_image
from evolvedirector.world.render import render, render_mistake
from evolvedirector.world.rules import Check, Component, check, classify_pixels, components, is_correct

__all__ = [
    "ANCHORS",
    "COUNT_WORDS",
    "DOMAINS",
    "LETTERS",
    "PALETTE",
    "RELATIONS",
    "SHAPES",
    "Spec",
    "all_prompts",
    "expand",
    "mutate",
    "parse",
    "random_prompt",
    "render",
    "render_mistake",
    "classify_pixels",
    "Component",
    "components",
    "Check",
    "check",
    "is_correct",
    "TeacherProfile",
    "TEACHER_PROFILES",
    "teacher_image",
    "judge_pair",
    "heldout_prompts",
    "accuracy",
]

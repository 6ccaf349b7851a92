"""Buying teacher images for the round's new prompts, and choosing one image per prompt.

Every call goes through the ledger (never paid twice, budgets checked before each call); all
calls are in flight at once and the ledger bounds their concurrency. Where several teachers
drew a prompt, the director picks the best image (selection), every selection in flight at once
(the director bounds its concurrency).
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

from rich.console import Console

from evolvedirector.director import Director, select_best
from evolvedirector.loop.console import progress_bar
from evolvedirector.store import ImageStore, NewSample
from evolvedirector.teachers import ImageRequest, Ledger, Teacher
from evolvedirector.teachers.seeding import TEACHER_SEED


@dataclass
class Proposal:
    """A prompt the round wants to add, before its teacher images are bought."""

    prompt: str
    operation: str  # seed, expand or mutate
    category: str
    teacher_names: list[str]
    parent_id: int | None = None
    bucket: tuple[int, int] | None = None  # (height, width) to ask for; None: the square image size
    seed: int = TEACHER_SEED  # the teachers' seed; a redraw of a prompt in the set asks with the next one


async def buy_and_select(
    proposals: list[Proposal], *, round: int, rng: random.Random, size: int, ledger: Ledger,
    teachers: dict[str, Teacher], images: ImageStore, director: Director, console: Console,
) -> list[NewSample]:
    if not proposals:
        return []
    with progress_bar(console) as progress:
        task = progress.add_task(f"round {round}: teachers", total=len(proposals), info="")

        async def buy_all(proposal: Proposal) -> list:
            request = ImageRequest(proposal.prompt, proposal.seed, size, proposal.bucket)
            bought = await asyncio.gather(*(
                ledger.buy(teachers[name], [request], round) for name in proposal.teacher_names
            ))
            progress.update(task, advance=1)
            return [purchase for [purchase] in bought if purchase.image_hash is not None]

        purchases = await asyncio.gather(*(buy_all(p) for p in proposals))
        bought = [(proposal, images_bought) for proposal, images_bought in zip(proposals, purchases)
                  if images_bought]  # none: the budget was spent before this prompt could be bought
        task = progress.add_task(f"round {round}: selection", total=len(bought), info="")

        async def choose(proposal: Proposal, candidates: list) -> NewSample:
            chosen = candidates[0]
            if len(candidates) > 1:
                pictures = [images.get(p.image_hash) for p in candidates]
                chosen = candidates[await select_best(director, proposal.prompt, pictures, rng)]
            progress.update(task, advance=1)
            return NewSample(
                prompt=proposal.prompt, domain=proposal.category, operation=proposal.operation,
                teacher=chosen.teacher, image_hash=chosen.image_hash, parent_id=proposal.parent_id,
                candidates=[(p.teacher, p.image_hash) for p in candidates] if len(candidates) > 1 else [],
                bucket=proposal.bucket,
            )

        # Every selection in flight at once, started in proposal order (each draws from rng first).
        new_samples = await asyncio.gather(*(choose(proposal, candidates) for proposal, candidates in bought))
    return list(new_samples)

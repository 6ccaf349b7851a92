"""Every teacher call goes through the ledger: bought once, paid once, within budget.

For each request the ledger looks up its idempotency key in the store:
- `done`: the image was paid for already (this run, or before a crash): reuse it, free.
- `pending`: a call was reserved but its result never recorded (a crash mid-call): make it
  again under the same key, without charging the budget a second time.
- absent: reserve it (budget checked and the row written in one transaction), then call.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from evolvedirector.store import BudgetExceeded, ImageStore, Store
from evolvedirector.teachers.base import ImageRequest, Teacher, idempotency_key


@dataclass
class Purchase:
    teacher: str
    request: ImageRequest
    image_hash: str | None  # None: not bought (budget spent, or the call failed)
    reused: bool = False


class Ledger:
    def __init__(
        self, store: Store, images: ImageStore, *, max_calls: int | None = None,
        max_dollars: float | None = None, concurrency: int = 8,
    ):
        self.store = store
        self.images = images
        self.max_calls = max_calls
        self.max_dollars = max_dollars
        self.exhausted = False  # set once a call was refused for budget
        self._slots = asyncio.Semaphore(concurrency)

    async def buy(self, teacher: Teacher, requests: list[ImageRequest], round: int) -> list[Purchase]:
        return list(await asyncio.gather(*(self._buy_one(teacher, r, round) for r in requests)))

    async def _buy_one(self, teacher: Teacher, request: ImageRequest, round: int) -> Purchase:
        key = idempotency_key(teacher.name, request)
        row = self.store.call(key)
        if row is not None and row["status"] == "done" and row["image_hash"] in self.images:
            return Purchase(teacher.name, request, row["image_hash"], reused=True)
        if row is not None and row["status"] == "failed":
            return Purchase(teacher.name, request, None)
        if row is None:
            try:
                self.store.reserve_call(
                    key=key, teacher=teacher.name, prompt=request.prompt, seed=request.seed,
                    size=request.size, cost=teacher.cost_per_image, round=round,
                    max_calls=self.max_calls, max_dollars=self.max_dollars,
                )
            except BudgetExceeded:
                self.exhausted = True
                return Purchase(teacher.name, request, None)
        async with self._slots:
            [result] = await teacher.generate([request])
        if result.error is not None or result.image is None:
            self.store.finish_call(key, error=result.error or "no image returned")
            return Purchase(teacher.name, request, None)
        image_hash = self.images.put(result.image)
        self.store.finish_call(key, image_hash=image_hash)
        return Purchase(teacher.name, request, image_hash)

    async def settle_pending(self, teachers: dict[str, Teacher]) -> int:
        """Finish the calls a crash left pending, under their own keys (charged once, already)."""
        pending = [row for row in self.store.pending_calls() if row["teacher"] in teachers]
        await asyncio.gather(*(
            self._buy_one(teachers[row["teacher"]], ImageRequest(row["prompt"], row["seed"], row["size"]), row["round"])
            for row in pending
        ))
        return len(pending)

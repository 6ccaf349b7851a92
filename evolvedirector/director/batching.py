"""Gathering concurrent requests into batches for one model that runs one batch at a time.

Callers await `submit(kind, item)` as if each request ran alone. Requests that arrive while a
batch runs wait together and go into the next one (up to `batch_size`, grouped by `kind`, since
only requests of one kind share a forward pass). The model runs in a worker thread, so the event
loop keeps serving the HTTP servers, teachers and timers of the run meanwhile.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Hashable
from typing import Any


class MicroBatcher:
    def __init__(self, run: Callable[[Hashable, list[Any]], list[Any]], batch_size: int):
        """`run(kind, items)` returns one result per item, in order; it runs in a worker thread."""
        self.run = run
        self.batch_size = batch_size
        self._waiting: dict[Hashable, list[tuple[Any, asyncio.Future]]] = defaultdict(list)
        self._worker: asyncio.Task | None = None
        self.batches = 0  # batches run so far (tests check that requests were batched)

    async def submit(self, kind: Hashable, item: Any) -> Any:
        future = asyncio.get_running_loop().create_future()
        self._waiting[kind].append((item, future))
        if self._worker is None or self._worker.done() or self._worker.get_loop() is not asyncio.get_running_loop():
            self._worker = asyncio.create_task(self._work())
        return await future

    async def _work(self) -> None:
        await asyncio.sleep(0)  # let the callers that start together all enqueue first
        while self._waiting:
            kind = next(iter(self._waiting))
            queue = self._waiting[kind]
            batch, self._waiting[kind] = queue[: self.batch_size], queue[self.batch_size :]
            if not self._waiting[kind]:
                del self._waiting[kind]
            try:
                results = await asyncio.to_thread(self.run, kind, [item for item, _ in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"a batch of {len(batch)} gave {len(results)} results")
            except Exception as error:  # every caller of the batch sees the failure
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
            else:
                for (_, future), result in zip(batch, results):
                    if not future.done():
                        future.set_result(result)
            self.batches += 1

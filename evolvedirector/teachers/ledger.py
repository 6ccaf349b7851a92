"""Every teacher call goes through the ledger: bought once, paid once, within budget.

For each request the ledger looks up its idempotency key in the store:
- `done`: the image was paid for already (this run, or before a crash): reuse it, free. If its
  file is gone, it is bought again at its price, and the lost purchase stays in the spend.
- `failed`: the call failed for good (a refusal, a job the API failed, faults past every retry):
  not made again, so a refused prompt is never paid for or retried forever.
- `pending`: a call was reserved but its result never recorded (a crash mid-call, or a queued
  job that polling gave up on). A queue API's job is collected by its stored request id, never
  submitted again. Without one, the call is made again. If the dead run had handed it to the
  teacher (`sent`, written once a slot is free, before the call), that attempt may have been
  billed: it stays in the spend as possibly billed (`TeacherCalls.possibly_billed`) beside the new one.
- absent: reserve it (budget checked and the row written in one transaction), then call.

The provider gets the key too (`CallContext.key`, an Idempotency-Key header over HTTP): one that
deduplicates by it bills a call made again after a crash once. A rebuy of a lost image sends the
key with its purchase number, since the provider must make that image anew.

Concurrency: at most `teacher.concurrency` calls of a teacher in flight (the ledger's
`concurrency` for teachers that set none), and one call per key at a time: a key asked for twice
at once is bought once, and the second asker reuses the image.

Money: a row counts as spend while pending and once done; a failed call counts only when the
provider billed it anyway (its result was lost after the API accepted the work). Every fault a
teacher meets is counted per teacher and kind in the store (`TeacherCalls.fault_counts`).

Health: each teacher's calls of a round are watched (`teachers/health.py`); a teacher that keeps
failing is given up on for the round: its calls still to come are not made (`not_tried`), and
its unbilled failures are forgotten (the rows deleted, as if never reserved) instead of kept as
failed, so that the round, run again once the teacher answers, buys them after all.
`round_health(round)` tells the loop who failed; `forget_failures` forgets the failures of a
round the loop will not commit.

The rows and their SQL are store/teacher_calls.py's: the ledger reads them through `store.calls`
and writes them through a `LedgerWriter` (one thread, many writes per commit); images are written
in worker threads, so the event loop keeps every call in flight while the disk syncs.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial

from evolvedirector.store import BudgetExceeded, ImageStore, Store, teacher_calls
from evolvedirector.store.buckets import parse_bucket
from evolvedirector.teachers.base import CallContext, ImageRequest, ImageResult, Teacher, idempotency_key
from evolvedirector.teachers.faults import NOT_TRIED
from evolvedirector.teachers.health import ANSWERS, TeacherRound
from evolvedirector.teachers.ledger_writer import LedgerWriter

log = logging.getLogger(__name__)

UNEXPECTED = "unexpected_error"  # fault kind for a teacher that raised instead of returning a result


@dataclass
class Purchase:
    teacher: str
    request: ImageRequest
    image_hash: str | None  # None: not bought (budget spent, or the call failed)
    reused: bool = False
    error: str | None = None  # why there is no image, when the call failed


class Ledger:
    def __init__(
        self, store: Store, images: ImageStore, *, max_calls: int | None = None,
        max_dollars: float | None = None, concurrency: int = 8,
    ):
        self.store = store
        self.images = images
        self.max_calls = max_calls
        self.max_dollars = max_dollars
        self.concurrency = concurrency  # per teacher, for teachers that do not set their own
        self.exhausted = False  # set once a call was refused for budget
        # asyncio primitives belong to one event loop; they are made afresh for each loop.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._keys: dict[str, list] = {}  # key -> [lock, holders and waiters]
        self._writer: LedgerWriter | None = None  # open while any buy is in flight
        self._writer_users = 0
        self._health: dict[tuple[str, int], TeacherRound] = {}
        self._proven: set[str] = set()  # teachers that answered a call in this ledger's life

    @classmethod
    def for_run(
        cls, store: Store, images: ImageStore, budget, *, max_new_calls: int | None = None,
        max_new_dollars: float | None = None,
    ) -> Ledger:
        """The ledger of every command that buys for a run: the run's budget (`budget.max_teacher_calls`,
        `budget.max_dollars`) caps the run's whole spend, whichever command adds to it; a command's
        own caps on what it adds (`eval --max-calls / --max-dollars`) can only lower that."""
        calls, dollars = store.calls.spend()
        max_calls = _lowest(budget.max_teacher_calls, None if max_new_calls is None else calls + max_new_calls)
        max_dollars = _lowest(budget.max_dollars, None if max_new_dollars is None else dollars + max_new_dollars)
        return cls(store, images, max_calls=max_calls, max_dollars=max_dollars)

    async def buy(self, teacher: Teacher, requests: list[ImageRequest], round: int) -> list[Purchase]:
        async with self._writing():
            return list(await asyncio.gather(*(self._buy_one(teacher, r, round) for r in requests)))

    async def settle_pending(self, teachers: dict[str, Teacher]) -> int:
        """Finish the calls a crash left pending, under their own keys; one the dead run had sent,
        and that has no request id to collect, is made again (its lost attempt possibly billed)."""
        pending = [row for row in self.store.calls.pending() if row["teacher"] in teachers]
        async with self._writing():
            await asyncio.gather(*(
                self._buy_one(teachers[row["teacher"]], ImageRequest(
                    row["prompt"], row["seed"], row["size"], parse_bucket(row["bucket"])), row["round"])
                for row in pending
            ))
        return len(pending)

    # -- one key --------------------------------------------------------------------------------

    async def _buy_one(self, teacher: Teacher, request: ImageRequest, round: int) -> Purchase:
        key = idempotency_key(teacher.name, request)
        health = self._health_of(teacher.name, round)
        async with self._one_at_a_time(key):
            row = self.store.calls.call(key)
            if row is not None and row["status"] == "done" and row["image_hash"] in self.images:
                return Purchase(teacher.name, request, row["image_hash"], reused=True)
            if row is not None and row["status"] == "failed":
                return Purchase(teacher.name, request, None, error=row["error"])
            if (reason := health.check()) is not None:  # nothing reserved, nothing sent
                health.not_tried += 1
                return Purchase(teacher.name, request, None, error=f"{NOT_TRIED}: {reason}")
            budget = dict(cost=teacher.cost_per_image, max_calls=self.max_calls, max_dollars=self.max_dollars)
            if row is None:
                # Reserved (budget checked, row on disk) while waiting for a slot, so that a freed
                # slot has only `sent` to write before its call.
                write = partial(teacher_calls.reserve, key=key, teacher=teacher.name, prompt=request.prompt,
                                seed=request.seed, size=request.size, round=round, bucket=request.bucket, **budget)
            elif row["status"] == "done":  # paid for, but its file is gone
                write = partial(teacher_calls.rebuy, key=key, **budget)
            elif row["request_id"] is None and row["sent"] != 0:  # in flight when a run died: made again
                write = partial(teacher_calls.remake, key=key, **budget)
            else:  # a queued job, collected by its id, or a call the dead run never made: nothing new to pay
                write = None
            if write is not None:
                try:
                    await self._writer.run(write)
                except BudgetExceeded as error:
                    self.exhausted = True
                    return Purchase(teacher.name, request, None, error=str(error))
            # Buying a lost image again is a new purchase: the provider gets a key of its own.
            rebought = 0 if row is None else row["rebought"] + (row["status"] == "done")
            async with self._slot(teacher):
                if (reason := health.check()) is not None:  # given up on while this call waited for a slot
                    health.not_tried += 1
                    if row is None or row["request_id"] is None:  # a queued job stays the provider's, pending
                        await self._writer.run(partial(teacher_calls.forget, key=key))
                    return Purchase(teacher.name, request, None, error=f"{NOT_TRIED}: {reason}")
                if row is None or row["request_id"] is None:  # on disk before the teacher may bill it
                    await self._writer.run(partial(teacher_calls.mark_sent, key=key))
                result = await self._call(teacher, request, key, row["request_id"] if row else None,
                                          sent_key=provider_key(key, rebought), health=health)
                successes = health.succeeded  # a failure with none after it is in the teacher's failing streak
            return await self._record(teacher, request, key, result, health, successes)

    async def _call(self, teacher: Teacher, request: ImageRequest, key: str, request_id: str | None, *,
                    sent_key: str, health: TeacherRound) -> ImageResult:
        writer = self._writer

        async def on_submitted(new_id: str) -> None:
            await writer.run(partial(teacher_calls.set_request_id, key=key, request_id=new_id))

        def on_fault(kind: str) -> None:
            # Not awaited: a count need not be on disk before the retry; the FIFO queue commits it
            # no later than this call's result.
            writer.submit(partial(teacher_calls.count_fault, teacher=teacher.name, kind=kind))
            health.attempt_failed(kind)
            self._forget_if_given_up(health)

        def given_up() -> str | None:
            reason = health.check()
            self._forget_if_given_up(health)
            return reason

        context = CallContext(key=sent_key, request_id=request_id, on_submitted=on_submitted, on_fault=on_fault,
                              given_up=given_up)
        try:
            result = await teacher.call(request, context)
        except Exception as error:  # a bug or a surprise in a backend: the loop goes on
            log.exception("teacher %s raised on a call", teacher.name)
            context.on_fault(UNEXPECTED)
            # Whether the provider charged it is unknown: count it, so the budget is never overshot.
            result = ImageResult(request, error=f"{UNEXPECTED}: {type(error).__name__}", billed=True, kind=UNEXPECTED)
        # Counted before the slot is free: the next call to take it sees a teacher given up on.
        failed = result.error is not None or result.image is None
        if failed and _kind_of(result) == NOT_TRIED:
            health.not_tried += 1
        else:
            health.call_ended(_kind_of(result) if failed else None, result.error)
        if not failed:
            self._proven.add(teacher.name)
        self._forget_if_given_up(health)
        return result

    async def _record(self, teacher: Teacher, request: ImageRequest, key: str, result: ImageResult,
                      health: TeacherRound, successes: int) -> Purchase:
        if result.error is None and result.image is not None:
            # The image is on disk (atomically) before the row that names it says `done`.
            image_hash = await self._writer.put_image(self.images, result.image)
            await self._writer.run(partial(teacher_calls.finish, key=key, image_hash=image_hash))
            return Purchase(teacher.name, request, image_hash)
        error = result.error or "no image returned"
        if result.retry_later:  # the row stays pending: the provider still holds the job
            return Purchase(teacher.name, request, None, error=error)
        forgettable = not result.billed and _kind_of(result) not in ANSWERS
        if forgettable and health.given_up is not None:
            await self._writer.run(partial(teacher_calls.forget, key=key))
        else:
            await self._writer.run(partial(teacher_calls.finish, key=key, error=error, billed=result.billed))
            if forgettable and health.succeeded == successes:  # no success since: forgotten if it is given up on
                health.forgettable.append(key)
                self._forget_if_given_up(health)
        return Purchase(teacher.name, request, None, error=error)

    # -- health ---------------------------------------------------------------------------------

    def round_health(self, round: int) -> list[TeacherRound]:
        """Each teacher this ledger asked for images in `round`, and how its calls went."""
        return [health for (_, number), health in self._health.items() if number == round and health.asked]

    async def forget_failures(self, round: int, teachers: list[str]) -> None:
        """Forget these teachers' unbilled failures of a round that will not be committed: the
        round, run again, asks for those images anew."""
        keys = []
        for (name, number), health in self._health.items():
            if number == round and name in teachers:
                keys += health.forgettable
                health.forgettable = []
        if keys:
            async with self._writing():
                await asyncio.gather(*(self._writer.run(partial(teacher_calls.forget, key=key)) for key in keys))

    def _health_of(self, teacher: str, round: int) -> TeacherRound:
        health = self._health.setdefault((teacher, round), TeacherRound(teacher, round))
        health.proven = health.proven or teacher in self._proven
        return health

    def _forget_if_given_up(self, health: TeacherRound) -> None:
        """Once a teacher is given up on, its failures so far this round are forgotten. Not
        awaited: queued after their own `failed` writes (FIFO), committed before the buy ends."""
        if health.given_up is None or not health.forgettable or self._writer is None:
            return
        for key in health.forgettable:
            self._writer.submit(partial(teacher_calls.forget, key=key))
        health.forgettable = []

    # -- concurrency ----------------------------------------------------------------------------

    def _bind_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop, self._slots, self._keys = loop, {}, {}

    @asynccontextmanager
    async def _writing(self):
        """A writer thread while any buy is in flight, closed (its writes committed) after the last."""
        self._bind_loop()
        if self._writer is None:
            self._writer = LedgerWriter(self.store.path)
        writer = self._writer
        self._writer_users += 1
        try:
            yield
        finally:
            self._writer_users -= 1
            if self._writer_users == 0 and self._writer is writer:
                self._writer = None
                await asyncio.to_thread(writer.close)

    def _slot(self, teacher: Teacher) -> asyncio.Semaphore:
        self._bind_loop()
        if teacher.name not in self._slots:
            self._slots[teacher.name] = asyncio.Semaphore(teacher.concurrency or self.concurrency)
        return self._slots[teacher.name]

    @asynccontextmanager
    async def _one_at_a_time(self, key: str):
        """A lock per idempotency key, dropped once nobody holds or waits for it."""
        self._bind_loop()
        entry = self._keys.setdefault(key, [asyncio.Lock(), 0])
        entry[1] += 1
        try:
            async with entry[0]:
                yield
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                del self._keys[key]


def _kind_of(result: ImageResult) -> str:
    """A failed result's fault kind; a backend that sets none writes it first in the error."""
    if result.kind is not None:
        return result.kind
    return (result.error or "").split(":", 1)[0].strip() or UNEXPECTED


def _lowest(*caps):
    """The tightest of the caps that are set (None: no cap)."""
    return min((cap for cap in caps if cap is not None), default=None)


def provider_key(key: str, rebought: int) -> str:
    """The idempotency key sent to the provider: the ledger's key, with `-N` for the Nth rebuy of
    a lost image (the first purchase's key would only fetch, or be refused, what was lost)."""
    return key if rebought == 0 else f"{key}-{rebought}"


def describe_spend(store: Store) -> str:
    """The run's spend as `status`, the report and a resumed run show it: "$X", and what part of
    it a provider may not have billed."""
    text = f"${store.calls.spend()[1]:.2f}"
    possible_calls, possible_dollars = store.calls.possibly_billed()
    if possible_calls:
        text += (f" (of which up to ${possible_dollars:.2f} possibly billed: {possible_calls} calls in flight"
                 " when a run died, made again on resume)")
    return text

"""The ledger's writes, on a thread of their own, many to a transaction (group commit).

Every ledger write must be on disk before the ledger goes on: a reservation before its call, a
request id before the first poll, a result before it is reported. Where a commit costs
milliseconds (an fsync), one transaction per write on the event loop would stall every call in
flight. So the writes go to one thread with its own connection, which commits whatever has queued
up in a single transaction. Each write runs in a savepoint, so a refused reservation (budget
spent) undoes only itself, and later writes in the same transaction see the earlier ones: the
budget is still checked against every reservation before it. A write's future resolves only
after its transaction has committed.

Image files are written (and synced) by a few threads of its own too: in the event loop's shared
pool they would queue ahead of the decoding that calls in flight are waiting for.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np

from evolvedirector.store import ImageStore

T = TypeVar("T")
_CLOSE = None  # queued by close(): finish what is queued, then stop


class LedgerWriter:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="ledger-writer", daemon=True)
        self._thread.start()
        self._files = ThreadPoolExecutor(max_workers=4, thread_name_prefix="ledger-images")

    def submit(self, write: Callable[[sqlite3.Connection], T]) -> concurrent.futures.Future:
        """Queue a write (a function of the connection); its future resolves once committed."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._queue.put((write, future))
        return future

    async def run(self, write: Callable[[sqlite3.Connection], T]) -> T:
        """Queue a write and wait until it is committed; its exception, if any, is raised here."""
        return await asyncio.wrap_future(self.submit(write))

    async def put_image(self, images: ImageStore, image: np.ndarray) -> str:
        """Write an image file (atomically, synced); return its hash."""
        return await asyncio.wrap_future(self._files.submit(images.put, image))

    def close(self) -> None:
        """Finish the image files, commit what is queued, then stop the threads (blocking)."""
        self._files.shutdown(wait=True)
        self._queue.put(_CLOSE)
        self._thread.join()

    # -- the thread -----------------------------------------------------------------------------

    def _run(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        conn.execute("PRAGMA synchronous=FULL")  # as durable as the store's own connection
        try:
            while True:
                batch = [self._queue.get()]
                while True:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                writes = [item for item in batch if item is not _CLOSE]
                if writes:
                    self._commit(conn, writes)
                if len(writes) < len(batch):
                    return
        finally:
            conn.close()

    @staticmethod
    def _commit(conn: sqlite3.Connection, writes: list) -> None:
        outcomes = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for write, future in writes:
                conn.execute("SAVEPOINT ledger_write")
                try:
                    outcomes.append((future, write(conn), None))
                except Exception as error:  # BudgetExceeded, or a constraint: this write only
                    conn.execute("ROLLBACK TO ledger_write")
                    outcomes.append((future, None, error))
                conn.execute("RELEASE ledger_write")
            conn.execute("COMMIT")
        except Exception as error:  # the transaction itself failed: none of it is on disk
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for _, future in writes:
                future.set_exception(error)
            return
        for future, result, error in outcomes:
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)

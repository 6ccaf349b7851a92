"""Run by test_teachers_crash in a child process: buy a batch from a queue API until killed.

    python teachers_crash_worker.py RUN_FOLDER API_URL CALLS
"""

import asyncio
import sys
from pathlib import Path

from evolvedirector.config import QueueTeacherConfig
from evolvedirector.store import ImageStore, Store
from evolvedirector.teachers import ImageRequest, Ledger, build_teacher


def crash_teacher(url: str):
    return build_teacher(QueueTeacherConfig(
        name="qu", backend="queue", cost_per_image=0.02, base_url=f"{url}/queue", default_size="32x32",
        concurrency=6, poll_interval_s=0.02, timeout_s=5, idempotency_header="Idempotency-Key",
    ))


def crash_requests(calls: int) -> list[ImageRequest]:
    return [ImageRequest(f"prompt {i}", 0, 32) for i in range(calls)]


if __name__ == "__main__":
    folder, url, calls = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    ledger = Ledger(Store(folder / "evolve.db"), ImageStore(folder / "images"))
    asyncio.run(ledger.buy(crash_teacher(url), crash_requests(calls), round=0))
    print("finished the whole batch", flush=True)

"""Run by test_teachers_crash in a child process: buy a batch from a queue API (or the OpenAI
images API) until killed.

    python teachers_crash_worker.py RUN_FOLDER API_URL CALLS [queue|openai]
"""

import asyncio
import sys
from pathlib import Path

from evolvedirector.config import OpenAITeacherConfig, QueueTeacherConfig
from evolvedirector.store import ImageStore, Store
from evolvedirector.teachers import ImageRequest, Ledger, build_teacher

SLOTS = 6  # calls in flight at once, per teacher


def crash_teacher(url: str):
    return build_teacher(QueueTeacherConfig(
        name="qu", backend="queue", cost_per_image=0.02, base_url=f"{url}/queue", default_size="32x32",
        concurrency=SLOTS, poll_interval_s=0.02, timeout_s=5, idempotency_header="Idempotency-Key",
    ))


def crash_openai_teacher(url: str):
    return build_teacher(OpenAITeacherConfig(
        name="oa", backend="openai", cost_per_image=0.04, base_url=f"{url}/v1", api_key_env=None,
        default_size="32x32", concurrency=SLOTS, timeout_s=5,
    ))


def crash_requests(calls: int) -> list[ImageRequest]:
    return [ImageRequest(f"prompt {i}", 0, 32) for i in range(calls)]


if __name__ == "__main__":
    folder, url, calls = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    teacher = crash_openai_teacher(url) if sys.argv[4:] == ["openai"] else crash_teacher(url)
    ledger = Ledger(Store(folder / "evolve.db"), ImageStore(folder / "images"))
    asyncio.run(ledger.buy(teacher, crash_requests(calls), round=0))
    print("finished the whole batch", flush=True)

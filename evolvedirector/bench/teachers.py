"""`evolvedirector bench teachers`: how close the teacher path comes to its ideal throughput.

A fake image API on 127.0.0.1 answers every image after `latency` seconds (1 s by default). It
runs in a process of its own, as a real API runs elsewhere, so that its work does not share this
process's interpreter lock. A batch of calls goes through a real HTTP backend and the ledger
(budget check and reservation in the store, the call, image validation, the content-addressed
image write, the finished row), `concurrency` calls at a time. Ideally that is concurrency /
latency calls per second; the last line printed is `utilization=<achieved / ideal>`.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import typer

from evolvedirector.bench import bench_app


@contextmanager
def fake_api_process(latency: float) -> Iterator[str]:
    """The fake API in a child process; yields its URL and stops it on the way out."""
    process = subprocess.Popen(
        [sys.executable, "-m", "evolvedirector.testing.fake_images_api", "--latency", str(latency),
         "--stop-on-stdin-close"],  # tied to this process: it stops if the bench dies
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        url = process.stdout.readline().strip()
        if not url.startswith("http://127.0.0.1:"):
            raise RuntimeError("the fake API did not start")
        yield url
    finally:
        process.stdin.close()  # its signal to stop
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_bench(backend: str, concurrency: int, calls: int, latency: float) -> dict:
    """Buy `calls` images through `backend` and the ledger; return the figures."""
    from evolvedirector.config import OpenAITeacherConfig, QueueTeacherConfig
    from evolvedirector.store import ImageStore, Store
    from evolvedirector.teachers import ImageRequest, Ledger, build_teacher

    with fake_api_process(latency) as url, tempfile.TemporaryDirectory(prefix="bench-teachers-") as folder:
        if backend == "openai":
            config = OpenAITeacherConfig(
                name="bench", backend="openai", cost_per_image=0.04, base_url=f"{url}/v1", api_key_env=None,
                default_size="32x32", concurrency=concurrency, timeout_s=30,
            )
        else:
            # Polls every 20 ms: a queue call cannot finish before the poll after its job does.
            config = QueueTeacherConfig(
                name="bench", backend="queue", cost_per_image=0.04, base_url=f"{url}/queue",
                default_size="32x32", concurrency=concurrency, timeout_s=30, poll_interval_s=0.02,
            )
        teacher = build_teacher(config)
        store = Store(Path(folder) / "evolve.db")
        ledger = Ledger(store, ImageStore(Path(folder) / "images"))
        requests = [ImageRequest(f"bench prompt {i}", 0, 32) for i in range(calls)]
        started = time.perf_counter()
        purchases = asyncio.run(ledger.buy(teacher, requests, round=0))
        seconds = time.perf_counter() - started
        spent_calls, dollars = store.spend()
        store.close()
    bought = sum(p.image_hash is not None for p in purchases)
    return {
        "url": url, "calls": calls, "bought": bought, "seconds": seconds, "concurrency": concurrency,
        "latency": latency, "spent_calls": spent_calls, "dollars": dollars,
        "achieved": bought / seconds, "ideal": concurrency / latency,
    }


@bench_app.command("teachers")
def teachers(
    quick: bool = typer.Option(False, "--quick", help="16 calls at once, 64 calls (about 5 s)"),
    concurrency: int | None = typer.Option(None, "--concurrency", min=1, help="calls in flight (default 32; quick 16)"),
    calls: int | None = typer.Option(None, "--calls", min=1, help="calls in the batch (default 10 x concurrency; quick 4 x)"),
    latency: float = typer.Option(1.0, "--latency", min=0.01, help="seconds the fake API takes per image"),
    backend: str = typer.Option("openai", "--backend", help="openai (one request per image) or queue (submit, poll, download)"),
) -> None:
    """Teacher-call throughput against a local fake API: prints calls, seconds, concurrency, then utilization."""
    if backend not in ("openai", "queue"):
        raise typer.BadParameter("--backend must be openai or queue")
    concurrency = concurrency or (16 if quick else 32)
    calls = calls or concurrency * (4 if quick else 10)
    figures = run_bench(backend, concurrency, calls, latency)
    print(f"bench teachers: {backend} backend + ledger against a fake API on {figures['url']} "
          f"({latency:g} s per image)")
    print(f"calls={figures['calls']} bought={figures['bought']} ledger_calls={figures['spent_calls']} "
          f"spend=${figures['dollars']:.2f}")
    print(f"seconds={figures['seconds']:.2f}")
    print(f"concurrency={concurrency}")
    print(f"calls_per_second={figures['achieved']:.2f} ideal={figures['ideal']:.2f}")
    print(f"utilization={figures['achieved'] / figures['ideal']:.3f}")

"""A requests-per-minute limit for one teacher, shared by all its concurrent calls.

Requests are spaced evenly (one every 60/rpm seconds) rather than allowed in bursts: the average
rate is the limit and the provider never sees a spike. A 429 pauses every call of the teacher,
not only the one that got it, since the limit the server enforces is shared too. No asyncio
primitives are held, so one limiter serves any event loop.
"""

from __future__ import annotations

import asyncio
import time


class RateLimiter:
    def __init__(self, requests_per_minute: float | None):
        self.interval = 0.0 if not requests_per_minute else 60.0 / requests_per_minute
        self._next = 0.0  # monotonic time at which the next request may start

    async def acquire(self) -> None:
        """Wait for this request's turn (reserved at once, so concurrent callers queue up)."""
        now = time.monotonic()
        start = max(now, self._next)
        self._next = start + self.interval
        if start > now:
            await asyncio.sleep(start - now)

    def pause(self, seconds: float) -> None:
        """No request starts in the next `seconds` (a server asked us to back off)."""
        self._next = max(self._next, time.monotonic() + seconds)

"""A requests-per-minute limit for one teacher, shared by all its concurrent calls.

Requests are spaced evenly (one every 60/rpm seconds) rather than allowed in bursts: the average
rate is the limit and the provider never sees a spike. A 429 pauses every call of the teacher,
not only the one that got it, since the limit the server enforces is shared too; so does an answer
whose rate-limit headers say the window is used up (`window_wait`). No asyncio primitives are
held, so one limiter serves any event loop.
"""

from __future__ import annotations

import asyncio
import re
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


# Headers by which APIs say how much of a rate window is left and when it resets: the IETF draft's
# RateLimit-Remaining/-Reset, and the X-RateLimit-* family (OpenAI and Together add -requests).
REMAINING_HEADERS = ("ratelimit-remaining", "x-ratelimit-remaining", "x-ratelimit-remaining-requests")
RESET_HEADERS = ("ratelimit-reset", "x-ratelimit-reset", "x-ratelimit-reset-requests")
_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+(?:\.\d+)?)ms)?")
EPOCH_AFTER = 1e9  # a reset this large is a Unix time, not a number of seconds


def parse_reset(value: str) -> float | None:
    """A reset header as seconds from now: a number of seconds, a Unix time, or a duration like
    '1s', '6m0s', '20ms' (OpenAI's spelling)."""
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        match = _DURATION.fullmatch(value)
        if not value or match is None:
            return None
        hours, minutes, secs, millis = (float(part) if part else 0.0 for part in match.groups())
        seconds = hours * 3600 + minutes * 60 + secs + millis / 1000
    if seconds > EPOCH_AFTER:
        seconds -= time.time()
    return max(0.0, seconds)


def window_wait(headers) -> float | None:
    """Seconds to wait before the next request when an answer says its window is used up
    (remaining 0 and a reset given); None otherwise."""
    remaining = next((headers[name] for name in REMAINING_HEADERS if name in headers), None)
    if remaining is None or remaining.strip() not in ("0", "0.0"):
        return None
    reset = next((headers[name] for name in RESET_HEADERS if name in headers), None)
    return None if reset is None else parse_reset(reset)

"""What every client of a paid or rate-limited web API shares: its key, and how it retries.

The teachers (image APIs) and the `openai` director (a chat server) both read their API key from
the environment variable a config field names (the config itself never holds a key), and both
retry transient failures the same way: exponential backoff with jitter, or the server's own
Retry-After, never longer than a cap. What a failure is called, how it is counted and what the
caller finally raises stay with each caller: `teachers/faults.py` and the ledger's fault counts,
`director/openai_server.py` and DirectorError.

A key lives in one private attribute of its client. Nothing here puts it in a message: the error
for a missing key names the config field and the variable, never a value.
"""

from __future__ import annotations

import asyncio
import email.utils
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


def read_api_key(field: str, variable: str | None) -> str | None:
    """The key held by the environment variable `variable` (None: the API needs no key).

    `field` is where the config names the variable (e.g. `director.api_key_env`), so that the
    error tells the user what to fix. Surrounding white space (a pasted newline) is dropped.
    """
    if variable is None:
        return None
    value = os.environ.get(variable, "").strip()
    if not value:
        raise ValueError(f"{field}: the environment variable {variable} is not set or is empty; "
                         "it must hold the API key")
    return value


def parse_retry_after(value: str | None) -> float | None:
    """A Retry-After header as seconds: it holds either a number of seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class AttemptFailed(Exception):
    """One failed attempt. `retryable`: another attempt may succeed; `retry_after`: the server's
    own wait before it, in seconds."""

    def __init__(self, message: str, *, retryable: bool = True, retry_after: float | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


class GaveUp(Exception):
    """Every attempt failed, each retryably; `last` is the last attempt's failure."""

    def __init__(self, last: AttemptFailed, attempts: int):
        super().__init__(f"{last} (gave up after {attempts} attempts)")
        self.last = last
        self.attempts = attempts


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    backoff_s: float = 0.5  # the wait before the second attempt; doubles after each failure
    max_backoff_s: float = 30.0  # no wait is longer, not even a server's Retry-After

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """The wait after failed attempt number `attempt` (1-based)."""
        if retry_after is not None:
            # The server's own wait, not jittered: retrying sooner would only be refused again.
            return min(retry_after, self.max_backoff_s)
        ceiling = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
        # Jitter in [ceiling/2, ceiling]: calls that failed together do not retry in lockstep.
        return ceiling * (0.5 + random.random() / 2)


async def with_retries(attempt: Callable[[], Awaitable[T]], policy: RetryPolicy,
                       on_failure: Callable[[AttemptFailed], None] | None = None) -> T:
    """Run `attempt` until it succeeds, fails for good, or the attempts run out.

    Every AttemptFailed is passed to `on_failure` first, retried or not, so that a caller can
    count each one. A final one (retryable False) propagates as it is; when the attempts run out,
    GaveUp holds the last. Anything else `attempt` raises is not a failed attempt and propagates.
    """
    for number in range(1, policy.max_attempts + 1):
        try:
            return await attempt()
        except AttemptFailed as failure:
            if on_failure is not None:
                on_failure(failure)
            if not failure.retryable:
                raise
            if number == policy.max_attempts:
                raise GaveUp(failure, number) from failure
            await asyncio.sleep(policy.delay(number, failure.retry_after))
    raise AssertionError("unreachable: max_attempts >= 1")

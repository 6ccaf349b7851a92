"""Retries with capped exponential backoff, honouring a server's Retry-After.

Every failed attempt is reported (so the store counts each fault, retried or not); a final fault
or the last attempt's fault is raised to the caller, which turns it into a failed result.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Awaitable, Callable, TypeVar

from evolvedirector.teachers.faults import Fault

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    backoff_s: float = 0.5  # the wait before the second attempt; doubles after each failure
    max_backoff_s: float = 30.0  # no wait is longer, not even a server's Retry-After

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """The wait after failed attempt number `attempt` (1-based)."""
        if retry_after is not None:
            return min(retry_after, self.max_backoff_s)
        ceiling = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
        # Jitter in [ceiling/2, ceiling]: concurrent calls that failed together do not retry in lockstep.
        return ceiling * (0.5 + random.random() / 2)


async def with_retries(
    attempt: Callable[[], Awaitable[T]], policy: RetryPolicy, on_fault: Callable[[Fault], None],
) -> T:
    """Run `attempt` until it succeeds, a final fault occurs, or the attempts run out."""
    for number in range(1, policy.max_attempts + 1):
        try:
            return await attempt()
        except Fault as fault:
            on_fault(fault)
            if not fault.retryable:
                raise
            if number == policy.max_attempts:
                raise Fault(fault.kind, f"{fault.message} (gave up after {number} attempts)") from fault
            await asyncio.sleep(policy.delay(number, fault.retry_after))
    raise AssertionError("unreachable: max_attempts >= 1")

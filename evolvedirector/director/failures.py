"""Director calls that got no usable answer: what kind of failure, and how many per round.

A call (one comparison, expansion, mutation or category) fails when none of its attempts gave a
usable reply: the server refused it or kept failing, or nothing it said could be read. The call
then answers nothing (a comparison is unusable, not a coin flip; an expansion adds no prompt) and
is counted in the director's `Tally` by operation and kind. The loop stores each round's tally
and stops the run when a round's every call failed: a director that never answers is a setup to
fix, not a run to go on with.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

AUTH = "auth"  # 401 / 403: the key or the account; no retry will help
HTTP_4XX = "http_4xx"  # any other refusal of the request (a bad parameter, say)
HTTP_5XX = "http_5xx"  # the server failed, past every retry
RATE_LIMITED = "rate_limited"  # 429, past every retry
TIMEOUT = "timeout"
CONNECTION = "connection"
UNPARSEABLE = "unparseable"  # it answered, but no reply held a usable answer
NO_LOGPROBS = "no_logprobs"  # pointwise: it answered without the log-probabilities P("Yes") is read from
# Met by the preflight (`evolvedirector check`) only:
NOT_SERVED = "not_served"  # the server's model list lacks director.model
IGNORED_STRUCTURE = "ignored_structure"  # structured_output set, and the reply was not held to it

# Failures whose message already says what to change; for any other kind the settings to check
# are named.
SELF_EXPLAINED = frozenset({NO_LOGPROBS, NOT_SERVED, IGNORED_STRUCTURE})


class DirectorError(RuntimeError):
    """The director cannot work at all (a server that never answers, a refused key, a missing
    model): the run stops with this message, and resumes once it is fixed."""


class DirectorCallFailed(DirectorError):
    """One call to the director's server failed for good (after the retries that could help)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def kind_of_status(status: int) -> str:
    if status in (401, 403):
        return AUTH
    if status == 429:
        return RATE_LIMITED
    if status == 408:
        return TIMEOUT
    return HTTP_5XX if status >= 500 else HTTP_4XX


@dataclass(frozen=True)
class Unanswered:
    """No usable answer to one question: why (a kind above) and the last message about it."""

    kind: str
    detail: str


@dataclass
class Tally:
    """Calls made and calls failed, by operation (compare, score, expand, mutate, categorize) and kind."""

    calls: Counter[str] = field(default_factory=Counter)
    failures: Counter[tuple[str, str]] = field(default_factory=Counter)
    last_failure: str = ""

    def failed(self, operation: str, unanswered: Unanswered) -> None:
        self.failures[operation, unanswered.kind] += 1
        self.last_failure = unanswered.detail

    def add(self, other: Tally, rename: Callable[[str], str] = lambda operation: operation) -> None:
        """Count `other`'s calls and failures here too, each operation under `rename(operation)`."""
        for operation, count in other.calls.items():
            self.calls[rename(operation)] += count
        for (operation, kind), count in other.failures.items():
            self.failures[rename(operation), kind] += count
        self.last_failure = other.last_failure or self.last_failure

    def by_kind(self) -> Counter[str]:
        kinds: Counter[str] = Counter()
        for (_, kind), count in self.failures.items():
            kinds[kind] += count
        return kinds

    def failed_every_call(self) -> bool:
        return sum(self.calls.values()) > 0 and sum(self.failures.values()) == sum(self.calls.values())


def describe_kinds(kinds: Counter[str] | dict[str, int]) -> str:
    """"unparseable 4, http_5xx 1", most frequent first."""
    return ", ".join(f"{kind} {count}" for kind, count in sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0])))


def never_answered(where: str, stage: str, tally: Tally) -> DirectorError:
    """The error that stops a run (or an evaluation) whose director failed every call of a stage
    ("round 3")."""
    kinds = tally.by_kind()
    if set(kinds) <= SELF_EXPLAINED:
        return DirectorError(f"the director {where} failed every call of {stage} ({describe_kinds(kinds)}): "
                             f"{tally.last_failure}, then run the same command again to resume")
    return DirectorError(
        f"the director {where} failed every call of {stage} ({describe_kinds(tally.by_kind())}; last: "
        f"{tally.last_failure}): check director.base_url, director.model and the key that director.api_key_env "
        "names, then run the same command again to resume"
    )

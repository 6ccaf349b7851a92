"""Whether a teacher answers at all: judged per round from its calls, so that a wrong URL, a
server that is down, a refused key or an account out of credits stops a run in seconds with one
line naming the cause, instead of every call of the round retried to its end and an empty round
committed as if nothing had happened.

A teacher is given up on for the rest of a round (`TeacherRound.given_up`) when

- `CALLS_BEFORE_GIVING_UP` of its calls in a row failed this round, each past the retries it was
  owed (a 401, 402, 403 or 404 is never retried: it will not fix itself), or
- one call failed because the account is out of credits (no later call could be paid), or
- it has never answered in this run (this process) and, `SECONDS_BEFORE_GIVING_UP` after its first failed
  attempt, at least `ATTEMPTS_BEFORE_GIVING_UP` attempts have failed and none succeeded (a host
  that drops packets fails each attempt only at its connect timeout).

Its other calls of the round are then not made (`not_tried`), and its failures since its last
answer that the provider billed nothing for are forgotten by the ledger rather than kept as failed
calls, so that the next round, or the same command run again once the setup is fixed, asks for
those images again. A
teacher that has answered before keeps every retry its config gives it for transient faults;
only whole calls failing one after another give it up. A content refusal or a job the API
failed is an answer about one prompt: it counts for nothing here.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

from evolvedirector.teachers.faults import (
    AUTH, BAD_RESPONSE, CLIENT_ERROR, CONNECTION, CORRUPT_IMAGE, JOB_FAILED, NOT_FOUND, NOT_TRIED, OUT_OF_CREDITS,
    PIPELINE_ERROR, RATE_LIMITED, REFUSED, SERVER_ERROR, TIMEOUT,
)

CALLS_BEFORE_GIVING_UP = 8
ATTEMPTS_BEFORE_GIVING_UP = 8
SECONDS_BEFORE_GIVING_UP = 30.0
# Failures that are the teacher's answer about one prompt, not a sign that it cannot answer.
ANSWERS = frozenset({REFUSED, JOB_FAILED})
LAST_ERROR_CHARS = 160


class TeachersFailed(RuntimeError):
    """Every teacher asked in a round failed every call of it: the round is not committed; the run
    stops with one line per teacher (`lines`) and resumes at that round once they answer."""

    def __init__(self, lines: list[str]):
        super().__init__("; ".join(lines))
        self.lines = lines


@dataclass
class TeacherRound:
    """One teacher's calls in one round, as far as its health goes."""

    teacher: str
    round: int
    proven: bool = False  # a call of it succeeded earlier in this run (this process)
    made: int = 0  # calls handed to the teacher
    succeeded: int = 0
    answered_no: int = 0  # refusals and failed jobs: answers about a prompt
    failed: int = 0  # calls that failed otherwise
    not_tried: int = 0  # calls not made once it was given up on
    in_a_row: int = 0  # calls failed since its last success this round
    faults: Counter[str] = field(default_factory=Counter)  # failed attempts this round, by kind
    last_error: str = ""
    given_up: str | None = None  # why, once it is
    forgettable: list[str] = field(default_factory=list)  # ledger keys of unbilled failures since its last success
    _first_fault_at: float | None = None

    # -- what the ledger tells it ---------------------------------------------------------------

    def attempt_failed(self, kind: str) -> None:
        if kind in ANSWERS:
            return
        self.faults[kind] += 1
        if self._first_fault_at is None:
            self._first_fault_at = time.monotonic()
        self._check_time()

    def call_ended(self, kind: str | None, error: str | None) -> None:
        """A call made returned: `kind` None for an image, else its fault kind."""
        self.made += 1
        if kind is None:
            self.succeeded += 1
            self.proven = True
            self.in_a_row = 0
            self.forgettable.clear()  # failures among successes: the prompt's, kept as failed calls
            return
        self.last_error = " ".join((error or kind).split())[:LAST_ERROR_CHARS]
        if kind in ANSWERS:
            self.answered_no += 1
            return
        self.failed += 1
        self.in_a_row += 1
        if self.given_up is None and kind == OUT_OF_CREDITS:  # every call would be refused the same way
            self.given_up = "its account is out of credits"
        if self.given_up is None and self.in_a_row >= CALLS_BEFORE_GIVING_UP:
            self.given_up = f"its last {self.in_a_row} calls failed"
        self._check_time()

    def check(self) -> str | None:
        """Asked before each call and each attempt that starts new work: why it is not asked, or None."""
        self._check_time()
        if self.given_up is None:
            return None
        return f"teacher {self.teacher} is given up on for round {self.round} ({self.given_up})"

    def _check_time(self) -> None:
        if self.given_up is not None or self.proven or self._first_fault_at is None:
            return
        waited = time.monotonic() - self._first_fault_at
        if sum(self.faults.values()) >= ATTEMPTS_BEFORE_GIVING_UP and waited >= SECONDS_BEFORE_GIVING_UP:
            self.given_up = f"no call answered in {waited:.0f} s"

    # -- what the round asks of it --------------------------------------------------------------

    @property
    def asked(self) -> bool:
        return self.made + self.not_tried > 0

    def failed_every_call(self) -> bool:
        """Asked this round, never answered, and not merely refusing prompts."""
        return self.asked and self.succeeded == 0 and (self.failed > 0 or self.not_tried > 0)

    def describe_faults(self) -> str:
        """"connection 40" or "auth 8", most frequent first; the calls' own kinds where no attempt
        was counted."""
        kinds = self.faults or Counter({NOT_TRIED: self.not_tried})
        return ", ".join(f"{kind} {n}" for kind, n in sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0])))


def host_of(config) -> str:
    """HOST:PORT of a teacher's base_url (or of a URL given as it is); "local" for a teacher that is
    not reached over HTTP."""
    url = config if isinstance(config, str) else getattr(config, "base_url", None)
    if not url:
        return "local"
    parsed = httpx.URL(url)
    return f"{parsed.host}:{parsed.port}" if parsed.port else parsed.host


def describe_failure(health: TeacherRound, config, index: int, *, then: str, resumed_config=None) -> str:
    """One line for a teacher that failed a round: who, where, what went wrong how often, what to
    check, and `then` what happens. `resumed_config`: the run folder's config.yaml, which the next
    run reads instead of the command's file once the run has bought or trained anything."""
    what = (f"failed every call of round {health.round}" if health.succeeded == 0
            else f"failed {health.in_a_row} calls in a row in round {health.round}")
    calls = f"{health.made} call{'s' if health.made != 1 else ''} made"
    if health.not_tried:
        calls += f", {health.not_tried} not tried"
    last = f"; last: {health.last_error}" if health.last_error else ""
    kind = health.faults.most_common(1)[0][0] if health.faults else ""
    where = f" (settings: {resumed_config})" if resumed_config else ""
    return (f"teacher {health.teacher} at {host_of(config)} {what} "
            f"(faults: {health.describe_faults()}; {calls}{last}): "
            f"{advice(kind, config, f'teachers.{index}')}{where}, {then}")


def advice(kind: str, config, field: str) -> str:
    """What to check for the most frequent fault kind of a teacher (`field`: teachers.N)."""
    url = getattr(config, "base_url", "")
    host = host_of(config)
    variable = getattr(config, "api_key_env", None)
    key = (f"the API key in the environment variable {variable} ({field}.api_key_env)" if variable
           else f"{field}.api_key_env (unset: no key is sent)")
    if kind == CONNECTION:
        return f"check {field}.base_url ({url}) and that its server at {host} is up"
    if kind == TIMEOUT:
        return (f"check that the server at {host} answers ({field}.base_url) and {field}.timeout_s "
                f"({getattr(config, 'timeout_s', 0):g} s)")
    if kind == AUTH:
        return f"check {key} and that its account may use {field}.model"
    if kind == OUT_OF_CREDITS:
        return f"the account is out of credits: add credits at the provider, or check {key}"
    if kind == NOT_FOUND:
        paths = f"{field}.base_url ({url})"
        if getattr(config, "backend", "") == "queue":
            paths += f", {field}.submit_path, {field}.status_path"
        return f"check {paths} and {field}.model: the API has no such path or model"
    if kind == RATE_LIMITED:
        return (f"the API kept answering 429: lower {field}.concurrency or set {field}.rate_limit_rpm, or raise "
                "the account's rate limit")
    if kind == SERVER_ERROR:
        return f"the server at {host} kept failing (HTTP 5xx): check that it is healthy"
    if kind in (BAD_RESPONSE, CORRUPT_IMAGE):
        return f"it answered without a usable image: check that {field}.base_url serves the {config.backend} API"
    if kind == CLIENT_ERROR:
        return f"the API refused the requests: check {field}.model and the request fields ({field}.sizes, extra, ...)"
    if kind == PIPELINE_ERROR:
        return f"check {field}.model and {field}.devices"
    return f"check {field} ({config.backend}) and the log"

"""What can go wrong in a teacher call, named once, so every backend counts the same kinds.

Each fault has a kind (the name counted per teacher in the store's `teacher_faults` table) and
is either retryable (transient: worth another attempt after a backoff) or final (another attempt
would get the same answer, or cost money for nothing):

| kind            | cause                                                      | retried |
|-----------------|------------------------------------------------------------|---------|
| `rate_limited`  | HTTP 429; its Retry-After is honoured                      | yes     |
| `server_error`  | HTTP 5xx                                                   | yes     |
| `timeout`       | no answer within the configured timeout (or HTTP 408)      | yes     |
| `connection`    | refused, reset or dropped connections                      | yes     |
| `corrupt_image` | image bytes that do not decode (truncated, garbage)        | yes (*) |
| `bad_response`  | a success status whose body lacks what the API promises    | yes (*) |
| `refused`       | a content-policy refusal (request or job)                  | no      |
| `auth`          | HTTP 401 / 403: the key, or what the account may use       | no      |
| `out_of_credits`| HTTP 402, or a body that says the balance is spent         | no      |
| `not_found`     | HTTP 404: the URL (base_url, a path) or the model          | no      |
| `client_error`  | any other 4xx (a bad parameter, say)                       | no      |
| `job_failed`    | a queued job the API reports as failed                     | no      |
| `pipeline_error`| a local pipeline raised                                    | no      |
| `not_tried`     | not sent: the teacher kept failing this round (health.py)  | no      |

(*) A retry never buys a second image: a corrupt download is fetched again (free), but anything
wrong inside a generation answer the provider already billed (HTTP 200) is final, a billed
failure. The ledger adds `unexpected_error` for a backend that raised instead of answering.

`auth`, `out_of_credits` and `not_found` are told apart from other 4xx because they say nothing
about the prompt: every call will get the same answer until the setup is fixed
(`teachers/health.py` stops asking such a teacher, and says what to check).
"""

from __future__ import annotations

import httpx

from evolvedirector.http import AttemptFailed, parse_retry_after

RATE_LIMITED = "rate_limited"
SERVER_ERROR = "server_error"
TIMEOUT = "timeout"
CONNECTION = "connection"
CORRUPT_IMAGE = "corrupt_image"
BAD_RESPONSE = "bad_response"
REFUSED = "refused"
AUTH = "auth"
OUT_OF_CREDITS = "out_of_credits"
NOT_FOUND = "not_found"
CLIENT_ERROR = "client_error"
JOB_FAILED = "job_failed"
PIPELINE_ERROR = "pipeline_error"
NOT_TRIED = "not_tried"

RETRYABLE = frozenset({RATE_LIMITED, SERVER_ERROR, TIMEOUT, CONNECTION, CORRUPT_IMAGE, BAD_RESPONSE})

# Words by which image APIs say "this prompt breaks our content policy" (OpenAI:
# content_policy_violation, moderation_blocked, "safety system"; queue APIs: NSFW, safety checker;
# BFL: Request Moderated; Replicate: "flagged as sensitive").
REFUSAL_MARKERS = ("content_policy", "content policy", "moderation", "moderated", "safety", "nsfw",
                   "flagged as sensitive")


class Fault(AttemptFailed):
    """One failed attempt, with its kind; `retry_after` is the server's own wait, in seconds.

    `retryable` overrides the kind's default where another attempt could buy a second image
    (a corrupt image inside a generation the provider already billed).
    """

    def __init__(self, kind: str, message: str, *, retry_after: float | None = None,
                 retryable: bool | None = None):
        super().__init__(f"{kind}: {message}", retry_after=retry_after,
                         retryable=kind in RETRYABLE if retryable is None else retryable)
        self.kind = kind
        self.message = message


# 403 is left to the refusal markers first: some APIs answer a moderated prompt with it.
SETUP_STATUSES = {401: AUTH, 402: OUT_OF_CREDITS, 404: NOT_FOUND}


# Words by which APIs say the account cannot pay behind a status other than 402 (fal: 403 "User is
# locked. Reason: Exhausted balance"; Replicate: "Insufficient credit").
OUT_OF_CREDITS_MARKERS = ("exhausted balance", "insufficient credit", "not enough credits", "out of credits")


def is_out_of_credits(text: str) -> bool:
    lowered = text.lower()
    return any(marker in lowered for marker in OUT_OF_CREDITS_MARKERS)


def is_refusal(text: str) -> bool:
    lowered = text.lower()
    return any(marker in lowered for marker in REFUSAL_MARKERS)


def check_response(response: httpx.Response) -> None:
    """Raise the Fault an HTTP error status means; return quietly on success."""
    status = response.status_code
    if status < 400:
        return
    # The body is the API's data: only a short, printable snippet goes into the message.
    snippet = " ".join(response.text[:300].split())
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    if status == 429:
        raise Fault(RATE_LIMITED, f"HTTP 429 {snippet}", retry_after=retry_after)
    if status == 408:
        raise Fault(TIMEOUT, f"HTTP 408 {snippet}")
    if status >= 500:
        raise Fault(SERVER_ERROR, f"HTTP {status} {snippet}", retry_after=retry_after)
    # Before the refusal markers: a 401 or 404 body may well mention the API's "safety" pages.
    if status in SETUP_STATUSES:
        raise Fault(SETUP_STATUSES[status], f"HTTP {status} {snippet}")
    if is_out_of_credits(snippet):
        raise Fault(OUT_OF_CREDITS, f"HTTP {status} {snippet}")
    if is_refusal(snippet):
        raise Fault(REFUSED, f"HTTP {status} {snippet}")
    if status == 403:
        raise Fault(AUTH, f"HTTP {status} {snippet}")
    raise Fault(CLIENT_ERROR, f"HTTP {status} {snippet}")


def transport_fault(error: httpx.TransportError) -> Fault:
    """A fault from an exception httpx raised before any response arrived."""
    if isinstance(error, httpx.TimeoutException):
        return Fault(TIMEOUT, f"{type(error).__name__} {error}".strip())
    return Fault(CONNECTION, f"{type(error).__name__} {error}".strip())

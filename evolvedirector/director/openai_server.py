"""A director served over the OpenAI chat-completions protocol: vLLM, SGLang, Ollama, hosted models.

`base_url` may list several servers of the same model (how judging scales past one GPU server):
requests take them in turn, a server whose request failed (no answer, 5xx) sits out
`SKIP_FAILED_S` while the others answer, and failed requests are counted per server and named
when a call fails for good.

Images travel inline as PNG data URLs. Pointwise judging asks for one reply token with its top
log-probabilities and reads P("Yes") from them; a server that answers without any (`transformers
serve` ignores the request for them) fails the call as `no_logprobs`, not retried: a bare Yes or
No would make nearly every comparison a tie, and so a coin flip. Where the server can constrain
its output (`structured_output`), verdicts are forced to "A"/"B" and prompt lists to JSON;
otherwise the tolerant parser reads free text.

Failures: a dropped connection, a timeout, or a 408/429/5xx answer is retried with exponential
backoff (honouring Retry-After), up to `retries` times, as the teachers retry (both use
`evolvedirector.http`); any other refusal (a 400 for a bad parameter) is not retried. Either way
the call fails with its kind (director/failures.py) and answers nothing; the loop counts it. A
401 or 403 (a bad key) fails every later call at once too, without asking the server again. A
well-formed answer that holds no usable reply is the caller's to retry (see VLMDirector).

The API key is read from the environment variable that `api_key_env` names, kept in one private
attribute, sent only in the Authorization header, and blanked out of every error message.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Collection

import httpx
from PIL import Image

from evolvedirector.director.canvas import png_data_url
from evolvedirector.director.parsing import parse_choice, yes_probability
from evolvedirector.director.failures import (
    AUTH, CONNECTION, IGNORED_STRUCTURE, NO_LOGPROBS, NOT_SERVED, TIMEOUT, DirectorCallFailed, kind_of_status,
)
from evolvedirector.director.vlm import CHOICES, DirectorError, VLMDirector
from evolvedirector.http import AttemptFailed, GaveUp, RetryPolicy, parse_retry_after, read_api_key, with_retries

RETRIABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
MAX_RESPONSE_BYTES = 8 * 1024 * 1024  # a larger answer is read no further and counts as unusable
MAX_LOGPROB_CANDIDATES = 64
SKIP_FAILED_S = 30.0  # with several servers, one that failed a request is not asked for this long
IGNORED_STRUCTURE_ADVICE = (
    "the server ignored director.structured_output (transformers serve ignores response_format and guided "
    "decoding); set director.structured_output: none, or serve the model with vLLM or SGLang"
)
NO_LOGPROBS_ADVICE = (
    "the server returned no logprobs; pointwise judging needs a server that returns them (vLLM, SGLang), "
    "or set director.mode: pairwise (in the config.yaml of the run's folder once a run has started)"
)


class OpenAIDirector(VLMDirector):
    name = "openai"

    def __init__(self, config, seed: int = 0, exclude: Collection[str] = ()):
        super().__init__(config, seed=seed, exclude=exclude)
        try:
            self._key = read_api_key("director.api_key_env", config.api_key_env)
        except ValueError as error:
            raise DirectorError(str(error)) from None
        self.servers = config.servers  # requests go round them; one that fails sits out SKIP_FAILED_S
        self.url = self.servers[0] + "/chat/completions"
        self.server_failures: Counter[str] = Counter()  # failed requests (no answer, 5xx) per server
        self._skip_until = dict.fromkeys(self.servers, 0.0)
        self._turn = 0
        self.retry_policy = RetryPolicy(1 + config.retries, config.backoff_s, config.max_backoff_s)
        # The client and the semaphore belong to one event loop; they are made in the first one
        # that uses them, and again if a later asyncio.run brings another.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: httpx.AsyncClient | None = None
        self._slots: asyncio.Semaphore | None = None
        self._refused: str | None = None  # the server's answer to our key (401/403), once it gave one

    def __repr__(self) -> str:
        return f"OpenAIDirector(model={self.config.model!r}, url={self.url!r})"

    def where(self) -> str:
        if len(self.servers) == 1:
            return f"at {self.url}"
        return f"at {len(self.servers)} servers ({', '.join(self.servers)})"

    # ---- servers --------------------------------------------------------------------------------

    def _pick_server(self) -> str:
        """The next server in turn among those not sitting out a failure; if all are, the one
        whose time out ends first (a server that came back is found by being asked)."""
        now = time.monotonic()
        up = [server for server in self.servers if self._skip_until[server] <= now]
        if not up:
            up = [min(self.servers, key=self._skip_until.__getitem__)]
        self._turn += 1
        return up[self._turn % len(up)]

    def _server_failed(self, server: str) -> None:
        self.server_failures[server] += 1
        if len(self.servers) > 1:
            self._skip_until[server] = time.monotonic() + SKIP_FAILED_S

    def _failures_by_server(self) -> str:
        if len(self.servers) == 1:
            return ""
        return "; failed requests by server: " + ", ".join(f"{s} {self.server_failures[s]}" for s in self.servers)

    # ---- the three primitives -------------------------------------------------------------------

    async def _ask_choice(self, text: str, canvas: Image.Image, attempt: int) -> str | None:
        body = self._body(text, canvas, self.config.judge_max_tokens, attempt)
        body.update(structured_fields(self.config.structured_output, choice=CHOICES))
        return parse_choice(message_content(await self._chat(body)))

    async def _ask_yes(self, text: str, image: Image.Image, attempt: int) -> float | None:
        # One token is the whole answer; its alternatives carry P("Yes").
        body = self._body(text, image, 1, attempt)
        body.update({"logprobs": True, "top_logprobs": self.config.top_logprobs})
        response = await self._chat(body)
        candidates = first_token_candidates(response)
        if not candidates and _first_choice(response):  # an answer, but none of the numbers asked for
            raise DirectorCallFailed(NO_LOGPROBS, NO_LOGPROBS_ADVICE)
        return yes_probability(candidates)

    async def _ask_text(self, text: str, schema: dict, attempt: int) -> str:
        body = self._body(text, None, self.config.max_tokens, attempt)
        body.update(structured_fields(self.config.structured_output, schema=schema))
        return message_content(await self._chat(body))

    # ---- the preflight (`evolvedirector check`, and `run` as it starts) --------------------------
    # Each step returns what it saw in a few words, or raises DirectorCallFailed saying what to fix.

    async def probe_models(self, server: str) -> str:
        """GET SERVER/models: the server answers, takes the key, and serves director.model."""
        client, _ = self._connection()
        url = server + "/models"
        try:
            response = await client.get(url)
        except httpx.TimeoutException:
            raise DirectorCallFailed(TIMEOUT, f"GET /models: no answer within {self.config.timeout_s:g} s") from None
        except httpx.TransportError as error:
            raise DirectorCallFailed(CONNECTION, f"GET /models: connection failed ({type(error).__name__})") from None
        if response.status_code != 200:
            kind = kind_of_status(response.status_code)
            raise DirectorCallFailed(kind, self._redact(f"GET /models: HTTP {response.status_code}: "
                                                        f"{_snippet(response.content)}"))
        data = _json_object(response.content).get("data")
        served = [m.get("id") for m in data if isinstance(m, dict)] if isinstance(data, list) else []
        if self.config.model not in served:
            listed = ", ".join(str(m) for m in served[:5]) + (" ..." if len(served) > 5 else "")
            raise DirectorCallFailed(NOT_SERVED, f"the server does not serve {self.config.model!r} "
                                                 f"(it serves: {listed or 'nothing'}): set director.model to one of them")
        return f"serves {self.config.model}"

    async def probe_judge(self, text: str, canvas: Image.Image) -> str:
        """One real pairwise question about a canvas; with structured_output set, the reply must be
        exactly A or B, or the server ignored the constraint."""
        body = self._body(text, canvas, self.config.judge_max_tokens, 0)
        body.update(structured_fields(self.config.structured_output, choice=CHOICES))
        reply = message_content(await self._chat(body))
        if self.config.structured_output != "none" and not held_to_choice(reply, self.config.structured_output):
            expected = '{"answer": "A" or "B"}' if self.config.structured_output == "response_format" else "A or B"
            raise DirectorCallFailed(IGNORED_STRUCTURE, f"the reply {reply[:40]!r} is not {expected}: "
                                                        f"{IGNORED_STRUCTURE_ADVICE}")
        return f"judged a canvas: {reply.strip()[:20]!r}"

    async def probe_logprobs(self, text: str, image: Image.Image) -> str:
        """Pointwise mode: one yes/no question whose first token must come with its logprobs."""
        probability = await self._ask_yes(text, image, 0)  # raises no_logprobs with its advice
        return "logprobs returned" + ("" if probability is None else f": P(yes) {probability:.2f}")

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
        self._client = self._loop = self._slots = None

    # ---- requests -------------------------------------------------------------------------------

    def _body(self, text: str, image: Image.Image | None, max_tokens: int, attempt: int) -> dict:
        if image is None:
            content: str | list = text
        else:
            content = [{"type": "image_url", "image_url": {"url": png_data_url(image)}}, {"type": "text", "text": text}]
        return {
            **self.config.extra_body,
            "model": self.config.model,
            "messages": [{"role": "user", "content": content}],
            "max_tokens": max_tokens,
            "temperature": self.temperature(attempt),
        }

    def _connection(self) -> tuple[httpx.AsyncClient, asyncio.Semaphore]:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            headers = {"Authorization": f"Bearer {self._key}"} if self._key else {}
            limit = self.config.concurrency
            self._client = httpx.AsyncClient(
                headers=headers, timeout=httpx.Timeout(self.config.timeout_s),
                limits=httpx.Limits(max_connections=limit, max_keepalive_connections=limit),
            )
            self._slots = asyncio.Semaphore(limit)
            self._loop = loop
        return self._client, self._slots

    async def _chat(self, body: dict) -> dict:
        """The server's answer as a JSON object ({} when it is not one), after retries; raises
        DirectorCallFailed, with the failure's kind, when no answer came."""
        if self._refused is not None:  # a refused key stays refused: no need to ask again
            raise DirectorCallFailed(AUTH, self._refused)
        client, slots = self._connection()
        requests = 0
        kind = CONNECTION

        async def attempt() -> dict:
            nonlocal requests, kind
            async with slots:  # held for the request only, not while waiting to retry
                requests += 1
                server = self._pick_server()
                try:
                    status, payload, retry_after = await self._post(client, server + "/chat/completions", body)
                except httpx.TimeoutException:
                    kind = TIMEOUT
                    self._server_failed(server)
                    raise AttemptFailed(f"no answer within {self.config.timeout_s:g} s") from None
                except httpx.TransportError as error:
                    kind = CONNECTION
                    self._server_failed(server)
                    raise AttemptFailed(f"connection failed ({type(error).__name__})") from None
            if status == 200:
                return _json_object(payload)
            if status >= 500:
                self._server_failed(server)
            kind = kind_of_status(status)
            failure = self._redact(f"HTTP {status}: {_snippet(payload)}")
            if status not in RETRIABLE_STATUS:
                if kind == AUTH:
                    self._refused = failure
                raise DirectorCallFailed(kind, failure)
            raise AttemptFailed(failure, retry_after=retry_after)

        try:
            return await with_retries(attempt, self.retry_policy)
        except GaveUp as out:
            raise DirectorCallFailed(kind, self._redact(f"{out.last} ({out.attempts} attempts"
                                                        f"{self._failures_by_server()})")) from None
        finally:
            self.stats["requests"] += requests
            self.stats["retries"] += max(0, requests - 1)  # every request after the first

    async def _post(self, client: httpx.AsyncClient, url: str, body: dict) -> tuple[int, bytes | None, float | None]:
        """(status, body or None when it was too large, Retry-After seconds)."""
        async with client.stream("POST", url, json=body) as response:
            received = bytearray()
            async for chunk in response.aiter_bytes():
                received += chunk
                if len(received) > MAX_RESPONSE_BYTES:
                    return response.status_code, None, None
            return response.status_code, bytes(received), parse_retry_after(response.headers.get("retry-after"))

    def _redact(self, text: str) -> str:
        return text.replace(self._key, "[api key]") if self._key else text


# ---- structured output ---------------------------------------------------------------------------


def structured_fields(kind: str, *, choice: tuple[str, ...] | None = None, schema: dict | None = None) -> dict:
    """Request fields that constrain the reply to one of `choice`, or to JSON matching `schema`."""
    if kind == "none":
        return {}
    if kind == "structured_outputs":  # vLLM >= 0.10
        return {"structured_outputs": {"choice": list(choice)} if choice else {"json": schema}}
    if kind == "guided_choice":  # older vLLM and compatible servers
        return {"guided_choice": list(choice)} if choice else {"guided_json": schema}
    if kind == "response_format":  # OpenAI's json_schema; strict mode wants an object at the top
        if choice:
            name, properties = "verdict", {"answer": {"type": "string", "enum": list(choice)}}
        else:
            name, properties = "prompts", {"prompts": {"type": "array", "items": {"type": "string"}}}
        return {"response_format": {"type": "json_schema", "json_schema": {
            "name": name, "strict": True, "schema": {
                "type": "object", "properties": properties, "required": list(properties),
                "additionalProperties": False,
            },
        }}}
    raise ValueError(f"unknown structured_output {kind!r}")


def held_to_choice(reply: str, kind: str) -> bool:
    """Whether a verdict reply is what `structured_fields(kind, choice=CHOICES)` constrains it to:
    exactly one letter, or (response_format) a JSON object whose answer is one."""
    if kind != "response_format":
        return reply.strip() in CHOICES
    try:
        value = json.loads(reply)
    except ValueError:
        return False
    return isinstance(value, dict) and value.get("answer") in CHOICES


# ---- reading an answer ---------------------------------------------------------------------------


def message_content(response: dict) -> str:
    """The first choice's message text, or "" when the answer has none."""
    choice = _first_choice(response)
    message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    content = message.get("content")
    if isinstance(content, list):  # some servers answer in parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return content if isinstance(content, str) else ""


def first_token_candidates(response: dict) -> list[tuple[object, object]]:
    """(token, logprob) of the first reply token and its listed alternatives; [] if none came."""
    logprobs = _first_choice(response).get("logprobs")
    if not isinstance(logprobs, dict):
        return []
    content = logprobs.get("content")
    if isinstance(content, list) and content and isinstance(content[0], dict):
        first = content[0]
        pairs = [(first.get("token"), first.get("logprob"))]
        alternatives = first.get("top_logprobs")
        if isinstance(alternatives, list):
            pairs += [(a.get("token"), a.get("logprob")) for a in alternatives if isinstance(a, dict)]
        return pairs[:MAX_LOGPROB_CANDIDATES]
    top = logprobs.get("top_logprobs")  # the legacy completions shape: [{token: logprob}, ...]
    if isinstance(top, list) and top and isinstance(top[0], dict):
        return list(top[0].items())[:MAX_LOGPROB_CANDIDATES]
    return []


def _first_choice(response: dict) -> dict:
    choices = response.get("choices") if isinstance(response, dict) else None
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        return choices[0]
    return {}


def _json_object(payload: bytes | None) -> dict:
    if payload is None:
        return {}
    try:
        value = json.loads(payload)
    except (ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def _snippet(payload: bytes | None, limit: int = 300) -> str:
    if payload is None:
        return "(answer too large)"
    text = payload[: limit * 4].decode("utf-8", errors="replace")
    text = " ".join(text.split())
    return text[:limit] + ("..." if len(text) > limit else "")

"""A scripted OpenAI-compatible chat server on 127.0.0.1 that plays a careless director for the open world.

Tests point the `openai` director at it to drive a prompt-file run end to end over real HTTP. It
does not look at images or understand prompts; it tells the director's questions apart by the
default templates' wording (director/templates.py) and answers in free text, the way a model
without structured output does, including replies the product must refuse or skip:

- a request with an image (the pairwise canvas): "A" with probability `a_rate`, else "B", in
  several phrasings ("A", "Answer: (B)", "Image (A) is better aligned ...");
- a request with an image that asks for Yes or No (pointwise): "Yes" or "No" for a random
  P("Yes"), with the first token's log-probabilities when asked for them; with `logprobs=False`
  it leaves them out, as `transformers serve` does (it ignores `logprobs` and `top_logprobs`);
- expansion ("Write {n} new prompts"): a cycle of scripted replies. Most hold new prompts
  ("a watercolor of <last word of the prompt> number 17": unique by a counter); the others are a
  refusal, the parent again in other case and punctuation, a held-out prompt (when told them),
  a 2000- and a 500-character prompt, a control character, "As an AI language model, I ...";
- mutation ("completely different"): one prompt, plain, labelled, as JSON, or hostile;
- categorize ("The categories are: X, Y."): "Category: X", now and then a category not listed.

Every answer takes `latency` seconds (0 by default), as a served model's would.

Books (thread-safe): `requests[kind]` per kind (verdict, pointwise, expand, mutate, categorize, unknown),
`replies`, every (kind, reply text) in order, and `spans`, each request's (start, end) in
time.time() seconds. It serves tests and `evolvedirector bench loop`; a run never starts it.
"""

from __future__ import annotations

import json
import math
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERDICTS = ("{w}", "Answer: ({w})", "Image ({w}) is better aligned with the text.", "({w}) fits the prompt better.")
STYLES = ("watercolor", "photo", "pencil sketch", "oil painting", "pixel art image")
SCENES = ("a lighthouse on a cliff at dusk", "a bowl of ramen on a wooden table", "a vintage bicycle by a brick wall",
          "a snowy mountain village at night", "a robot watering tomato plants")
REFUSAL = "I'm sorry, but I can't help with that."
_PROMPT = re.compile(r'Here is a prompt: "(.*?)"\. Write', re.DOTALL)
_CATEGORIES = re.compile(r"The categories are: (.*?)\. Answer", re.DOTALL)
_YES_OR_NO = re.compile(r"Answer Yes or No", re.IGNORECASE)


class OpenWorldChatServer:
    """`with OpenWorldChatServer(heldout=...) as server:` serves on a free port; `server.base_url` is /v1."""

    def __init__(self, seed: int = 0, a_rate: float = 0.7, heldout: Iterable[str] = (), off_list_every: int = 4,
                 model: str = "open-world-director", port: int = 0, latency: float = 0.0, logprobs: bool = True):
        self.port = port  # 0: a free one
        self.logprobs = logprobs  # False: never any log-probabilities, whatever the request asks
        self.latency = latency
        self.spans: list[tuple[float, float]] = []
        self.rng = random.Random(seed)
        self.a_rate = a_rate
        self.heldout = list(heldout)
        self.off_list_every = off_list_every  # every n-th categorize reply names no listed category
        self.model = model
        self.requests: Counter[str] = Counter()
        self.replies: list[tuple[str, str]] = []
        self.counter = 0  # makes every new prompt unique
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> OpenWorldChatServer:
        self._httpd = _Server(("127.0.0.1", self.port), _handler_for(self))
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    # ---- answering ------------------------------------------------------------------------------

    def answer(self, text: str, has_image: bool, logprobs: bool = False) -> tuple[str, dict | None]:
        """The reply text, and the `logprobs` of its choice (None: none sent) when asked for them."""
        with self._lock:
            if has_image and _YES_OR_NO.search(text):
                p_yes = self.rng.random()
                reply = "Yes" if p_yes >= 0.5 else "No"
                self.requests["pointwise"] += 1
                self.replies.append(("pointwise", reply))
                return reply, _logprobs(reply, p_yes) if logprobs and self.logprobs else None
            if has_image:
                kind, reply = "verdict", self._verdict()
            elif (match := _CATEGORIES.search(text)) is not None:
                kind, reply = "categorize", self._category(match.group(1).split(", "))
            elif (match := _PROMPT.search(text)) is not None and "completely different" in text:
                kind, reply = "mutate", self._mutation()
            elif match is not None and (count := re.search(r"Write (\d+) new prompts", text)) is not None:
                kind, reply = "expand", self._expansion(match.group(1), int(count.group(1)))
            else:
                kind, reply = "unknown", "I cannot tell what you are asking."
            self.requests[kind] += 1
            self.replies.append((kind, reply))
            return reply, None

    def _new(self, noun: str) -> str:
        self.counter += 1
        return f"a {STYLES[self.counter % len(STYLES)]} of {noun} number {self.counter}"

    def _verdict(self) -> str:
        winner = "A" if self.rng.random() < self.a_rate else "B"
        return self.rng.choice(VERDICTS).format(w=winner)

    def _expansion(self, parent: str, n: int) -> str:
        words = [w.lower() for w in re.findall(r"[A-Za-z]+", parent) if w.lower() not in ("number", "scene")]
        noun = words[-1] if words else "things"
        fresh = [self._new(noun) for _ in range(max(1, n))]
        step = self.requests["expand"] % 8
        if step == 0:
            return f"Here are {n} prompts:\n" + "\n".join(f"{i}. {p}" for i, p in enumerate(fresh, 1))
        if step == 1:  # the parent again, in other case and punctuation
            return json.dumps([parent.upper().rstrip(".!") + "!!", *fresh[1:]])
        if step == 2 and self.heldout:
            return json.dumps([self.rng.choice(self.heldout).capitalize().rstrip(".") + ".", *fresh[1:]])
        if step == 3:  # too long for the parser (dropped), too long for the world (refused)
            return json.dumps([f"{fresh[0]}, " + "with ever more detail " * 90, f"{fresh[-1]}, " + "and more " * 55,
                               *fresh[1:-1]])
        if step == 4:  # a C1 control character (CSI), past the parser's ASCII control filter
            return "\n".join(f"- {p}" for p in [fresh[0].replace(" of ", " of\x9b "), *fresh[1:]])
        if step == 5:
            return "1. As an AI language model, I cannot draw, but I can suggest.\n" + \
                "\n".join(f"{i}. {p}" for i, p in enumerate(fresh[1:], 2))
        if step == 6:
            return REFUSAL  # nothing to read: the director asks again
        if step == 7:
            return json.dumps(fresh)
        return "\n".join(f"* {p}" for p in fresh)

    def _mutation(self) -> str:
        self.counter += 1
        scene = f"{SCENES[self.counter % len(SCENES)]}, scene {self.counter}"
        step = self.requests["mutate"] % 6
        return (scene, f'Prompt: "{scene}"', json.dumps([scene]), REFUSAL, f"Sure! Here is a prompt: {scene}",
                f"```json\n[\"{scene}\"]\n```")[step]

    def _category(self, categories: list[str]) -> str:
        if self.off_list_every and self.requests["categorize"] % self.off_list_every == self.off_list_every - 1:
            return "Category: Vehicles and Transport"  # none of the listed ones: the director asks again
        return f"Category: {self.rng.choice(categories).title()}"


def _logprobs(answer: str, p_yes: float) -> dict:
    """The chat-completions `logprobs` of a one-token answer: the token and both alternatives."""
    entries = [{"token": token, "logprob": math.log(max(p, 1e-12))}
               for token, p in (("Yes", p_yes), ("No", 1.0 - p_yes))]
    chosen = next(e for e in entries if e["token"] == answer)
    return {"content": [{**chosen, "top_logprobs": entries}]}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64  # a director's concurrent requests connect at once; a short backlog drops SYNs


def _read(body: dict) -> tuple[str, bool]:
    """All text of the request's messages, and whether any part is an image."""
    texts, has_image = [], False
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        for part in [{"type": "text", "text": content}] if isinstance(content, str) else content or []:
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif isinstance(part, dict) and part.get("type") == "image_url":
                has_image = True
    return "\n".join(texts), has_image


def _handler_for(server: OpenWorldChatServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            # OpenAI's model list (GET /v1/models), which the preflight reads: the one model served.
            if self.path.rstrip("/").endswith("/models"):
                return self._send(200, {"object": "list", "data": [
                    {"id": server.model, "object": "model", "created": 0, "owned_by": "evolvedirector"}]})
            return self._send(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                body = json.loads(raw)
                assert isinstance(body, dict) and self.path.rstrip("/").endswith("/chat/completions")
            except (ValueError, AssertionError):
                return self._send(400, {"error": {"message": "bad request"}})
            started = time.time()
            time.sleep(server.latency)  # the model's time to answer
            content, logprobs = server.answer(*_read(body), logprobs=bool(body.get("logprobs")))
            with server._lock:
                server.spans.append((started, time.time()))
            choice = {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}
            if logprobs is not None:
                choice["logprobs"] = logprobs
            self._send(200, {
                "id": f"chatcmpl-{time.monotonic_ns():x}", "object": "chat.completion", "created": int(time.time()),
                "model": server.model, "usage": {"prompt_tokens": 1, "completion_tokens": 1}, "choices": [choice],
            })

        def _send(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


def main() -> None:
    """`python -m evolvedirector.testing.chat_server [--port 8802] [--seed 0]`: serve until SIGINT
    or SIGTERM (`kill`, Ctrl-C), then exit 0 with one line on stderr. Prints the base URL
    (`http://127.0.0.1:PORT/v1`) on the first line of stdout once it serves and handles those signals."""
    import argparse

    from evolvedirector.testing.serve import add_lifetime_option, say_stopped, serve_until_stopped

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per answer")
    parser.add_argument("--no-logprobs", action="store_true",
                        help="never send log-probabilities, as `transformers serve` does")
    add_lifetime_option(parser)
    args = parser.parse_args()
    with OpenWorldChatServer(seed=args.seed, port=args.port, latency=args.latency,
                             logprobs=not args.no_logprobs) as server:
        reason = serve_until_stopped(lambda: print(server.base_url, flush=True), args.stop_on_stdin_close)
    say_stopped(f"scripted chat director on {server.base_url}", reason)


if __name__ == "__main__":
    main()

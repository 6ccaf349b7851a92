"""The shapes-world judge behind the OpenAI chat-completions protocol, on 127.0.0.1.

It stands in for a vLLM server in tests and offline benches: the `openai` director talks to it
over real HTTP exactly as it would to a served VLM, and its answers mean something because it
judges images with the world's rules. It reads a request the way a model would read its text:

- one side-by-side canvas (see canvas.py): split it, score both panels with `rules.check`, and
  answer (A) or (B) (wrong with probability 1 - judge_accuracy, "A" regardless with probability
  position_bias);
- one plain image: answer Yes or No, with log-probabilities P("Yes") = 0.02 + 0.96 * score;
- no image: a JSON list of prompts: `n` neighbours of the prompt it names (the first number in
  the text is n), or, when the text asks for something "different", one prompt of another domain.

The prompt is the longest prompt of the world's grammar that the text contains. Replies follow
the structured-output fields of the request (structured_outputs, guided_choice / guided_json,
response_format) or, without them, come as free text in a few phrasings, as a model's would.
"""

from __future__ import annotations

import json
import math
import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from evolvedirector.director.canvas import decode_data_url, split
from evolvedirector.worlds.shapes import grammar
from evolvedirector.worlds.shapes.rules import check

MAX_REQUEST_BYTES = 64 * 1024 * 1024
_PROMPTS_LONGEST_FIRST = sorted(grammar.all_prompts(), key=len, reverse=True)
_FREE_TEXT_VERDICTS = ("{w}", "Answer: ({w})", "Image ({w}) is better aligned with the text.", "({w})")

# A fault hook sees each request body and may answer instead: (HTTP status, body text) or None.
Fault = Callable[[dict], "tuple[int, str] | None"]
# A reply hook may rewrite the reply text the judge wrote (to play a careless or hostile model).
Reply = Callable[[dict, str], str]


class ShapesChatServer:
    """`with ShapesChatServer() as server:` serves on a free port; `server.base_url` is the /v1 URL."""

    def __init__(
        self,
        judge_accuracy: float = 1.0,
        position_bias: float = 0.0,
        seed: int = 0,
        model: str = "shapes-judge",
        api_key: str | None = None,
        delay_s: float = 0.0,
        fault: Fault | None = None,
        reply: Reply | None = None,
    ):
        self.judge_accuracy = judge_accuracy
        self.position_bias = position_bias
        self.model = model
        self.api_key = api_key
        self.delay_s = delay_s
        self.fault = fault
        self.reply = reply
        self.rng = random.Random(seed)
        self.requests: deque[dict] = deque(maxlen=512)  # the latest request bodies, for tests
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._port = 0
        self._thread: threading.Thread | None = None

    # ---- lifecycle ------------------------------------------------------------------------------

    def start(self) -> ShapesChatServer:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))  # port 0: a free one
        self._port = self._httpd.server_address[1]  # kept after stop(), to show nothing listens there
        self._httpd.daemon_threads = True
        # A short poll interval makes stop() quick; tests start and stop many servers.
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="shapes-chat-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)
            self._httpd = self._thread = None

    def __enter__(self) -> ShapesChatServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # ---- answering ------------------------------------------------------------------------------

    def complete(self, body: dict) -> dict:
        """The chat-completions answer to one request body."""
        text, images = _read_messages(body.get("messages"))
        prompt = next((p for p in _PROMPTS_LONGEST_FIRST if p in text), None)
        logprobs = None
        if images and prompt is not None:
            panels = split(images[0])
            if panels is not None:
                content = self._format_choice(body, self._judge_pair(prompt, *panels))
            else:
                p_yes = 0.02 + 0.96 * check(prompt, images[0]).score
                content = "Yes" if p_yes >= 0.5 else "No"
                if body.get("logprobs"):
                    logprobs = _logprobs(content, p_yes, int(body.get("top_logprobs") or 2))
        elif not images and prompt is not None:
            content = self._format_list(body, self._propose(prompt, text))
        else:
            content = "I cannot tell which prompt you mean."
        if self.reply is not None:
            content = self.reply(body, content)
        choice = {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        if logprobs is not None:
            choice["logprobs"] = logprobs
        return {
            "id": f"chatcmpl-{self.rng.getrandbits(48):012x}", "object": "chat.completion",
            "created": int(time.time()), "model": self.model, "choices": [choice],
            "usage": {"prompt_tokens": len(text.split()), "completion_tokens": 1},
        }

    def _judge_pair(self, prompt: str, left: np.ndarray, right: np.ndarray) -> str:
        score_a, score_b = check(prompt, left).score, check(prompt, right).score
        with self._lock:
            if self.rng.random() < self.position_bias:
                return "A"
            winner = self.rng.choice("AB") if score_a == score_b else ("A" if score_a > score_b else "B")
            if self.rng.random() >= self.judge_accuracy:
                winner = "B" if winner == "A" else "A"
            return winner

    def _propose(self, prompt: str, text: str) -> list[str]:
        with self._lock:
            if re.search(r"\b(different|unrelated|unlike)\b", text, re.IGNORECASE):
                return [grammar.mutate(prompt, self.rng)]
            count = re.search(r"\b(\d{1,2})\b", text)
            return grammar.expand(prompt, int(count.group(1)) if count else 1, self.rng)

    def _format_choice(self, body: dict, winner: str) -> str:
        if _schema_kind(body) == "choice":
            return winner
        if _schema_kind(body) == "object":
            return json.dumps({"answer": winner})
        with self._lock:
            return self.rng.choice(_FREE_TEXT_VERDICTS).format(w=winner)

    def _format_list(self, body: dict, prompts: list[str]) -> str:
        kind = _schema_kind(body)
        if kind == "json":
            return json.dumps(prompts)
        if kind == "object":
            return json.dumps({"prompts": prompts})
        return "Here are the prompts:\n```json\n" + json.dumps(prompts, indent=1) + "\n```"


def _schema_kind(body: dict) -> str | None:
    """How the request constrains its reply: "choice", "json" (a bare value), "object", or None."""
    structured = body.get("structured_outputs")
    if isinstance(structured, dict):
        return "choice" if "choice" in structured else "json" if "json" in structured else None
    if "guided_choice" in body:
        return "choice"
    if "guided_json" in body:
        return "json"
    if isinstance(body.get("response_format"), dict):
        return "object"
    return None


def _read_messages(messages: object) -> tuple[str, list[np.ndarray]]:
    """All text of the messages, and their images (data URLs only: nothing is fetched)."""
    texts: list[str] = []
    images: list[np.ndarray] = []
    for message in messages if isinstance(messages, list) else []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            texts.append(content)
            continue
        for part in content if isinstance(content, list) else []:
            if not isinstance(part, dict):
                continue
            if part.get("type") == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif part.get("type") == "image_url":
                url = part.get("image_url", {}).get("url") if isinstance(part.get("image_url"), dict) else None
                images.append(decode_data_url(url))
    return "\n".join(texts), images


def _logprobs(answer: str, p_yes: float, top: int) -> dict:
    alternatives = [("Yes", p_yes), ("No", 1.0 - p_yes)]
    alternatives.sort(key=lambda pair: pair[1], reverse=True)
    entries = [{"token": t, "logprob": math.log(max(p, 1e-12)), "bytes": list(t.encode())} for t, p in alternatives]
    chosen = next(e for e in entries if e["token"] == answer)
    return {"content": [{**chosen, "top_logprobs": entries[: max(1, top)]}]}


def _handler_for(server: ShapesChatServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as clients pool connections

        def log_message(self, format: str, *args) -> None:  # quiet: tests read their own output
            pass

        def do_GET(self) -> None:
            if self.path.rstrip("/").endswith("/models"):
                self._send(200, {"object": "list", "data": [{"id": server.model, "object": "model"}]})
            else:
                self._send(404, {"error": {"message": "not found"}})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_REQUEST_BYTES:
                self._send(413, {"error": {"message": "request too large"}}, close=True)
                return
            raw = self.rfile.read(length)
            if not self.path.rstrip("/").endswith("/chat/completions"):
                self._send(404, {"error": {"message": "not found"}})
                return
            if server.api_key is not None and self.headers.get("Authorization") != f"Bearer {server.api_key}":
                self._send(401, {"error": {"message": "invalid API key"}})
                return
            try:
                body = json.loads(raw)
                if not isinstance(body, dict):
                    raise ValueError("the body is not a JSON object")
            except ValueError as error:
                self._send(400, {"error": {"message": f"bad request: {error}"}})
                return
            with server._lock:
                server.requests.append(body)
                server.in_flight += 1
                server.max_in_flight = max(server.max_in_flight, server.in_flight)
            try:
                if server.delay_s:
                    time.sleep(server.delay_s)
                fault = server.fault(body) if server.fault is not None else None
                if fault is not None:
                    status, text = fault
                    self._send_raw(status, text.encode())
                    return
                try:
                    answer = server.complete(body)
                except ValueError as error:  # an unreadable image, for one
                    self._send(400, {"error": {"message": str(error)}})
                    return
                self._send(200, answer)
            finally:
                with server._lock:
                    server.in_flight -= 1

        def _send(self, status: int, payload: dict, close: bool = False) -> None:
            self._send_raw(status, json.dumps(payload).encode(), close)

        def _send_raw(self, status: int, data: bytes, close: bool = False) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if close:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self.wfile.write(data)

    return Handler

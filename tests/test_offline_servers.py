"""The offline servers' command lines (the fake images API, the scripted chat director, both at
once) serve until SIGINT or SIGTERM, whatever their stdin: started as a script starts them (stdin
/dev/null) they still answer after a second, and a signal stops them cleanly, exit code 0, one
line. `--stop-on-stdin-close` ties one to a parent's pipe instead."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

pytestmark = pytest.mark.timeout(120)
SERVING_AT_LEAST_S = 1.0  # an old server, reading /dev/null, had exited long before
DEADLINE_S = 60  # to start (imports on a slow, busy machine) and to stop


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
        return json.load(response)


def generate_image(images_url: str) -> None:
    answer = post(f"{images_url}/v1/images/generations", {"prompt": "a red fox", "size": "32x32"})
    assert answer["data"][0]["b64_json"]


def chat(chat_url: str) -> None:
    answer = post(f"{chat_url}/chat/completions", {"messages": [{"role": "user", "content": "hello"}]})
    assert answer["choices"][0]["message"]["content"]


def default_stop_signals() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_DFL)


class Server:
    """A server's command line as a child process; its stdout lines arrive on a queue (a blocking
    read must not outlive the deadline)."""

    def __init__(self, module: str, *args: str, stdin=subprocess.DEVNULL):
        self.started = time.monotonic()
        # Started as a terminal starts it: a suite launched in the background of a script inherits
        # SIGINT ignored, and a server keeps an ignored signal ignored (evolvedirector/testing/serve.py).
        self.process = subprocess.Popen([sys.executable, "-m", f"evolvedirector.testing.{module}", *args],
                                        stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                        preexec_fn=default_stop_signals)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [self.lines.put(line) for line in self.process.stdout], daemon=True).start()

    def line(self) -> str:
        try:
            return self.lines.get(timeout=DEADLINE_S).strip()
        except queue.Empty:
            pytest.fail(f"no address printed within {DEADLINE_S} s")

    def answers_after_a_while(self, ask) -> None:
        """`ask()` succeeds at least SERVING_AT_LEAST_S after the start: polled until then."""
        deadline = self.started + DEADLINE_S
        while True:
            assert self.process.poll() is None, f"the server exited ({self.process.returncode}): {self.stderr()}"
            try:
                ask()
                if time.monotonic() - self.started >= SERVING_AT_LEAST_S:
                    return
            except OSError:  # not listening yet
                pass
            assert time.monotonic() < deadline, "the server never answered"
            time.sleep(0.05)

    def stop(self, signum: int) -> None:
        self.process.send_signal(signum)
        self.process.wait(timeout=DEADLINE_S)

    def stderr(self) -> str:
        return self.process.stderr.read() if self.process.poll() is not None else ""

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()
        self.process.stderr.close()


@pytest.fixture
def start():
    servers: list[Server] = []

    def make(module: str, *args: str, **options) -> Server:
        servers.append(Server(module, *args, **options))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def assert_stopped_cleanly(server: Server, reason: str) -> None:
    assert server.process.returncode == 0
    lines = server.stderr().splitlines()
    assert len(lines) == 1 and lines[0].endswith(f" stopped ({reason})"), lines


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_the_fake_images_api_serves_with_stdin_at_dev_null_until_a_signal(start, signum):
    server = start("fake_images_api", "--port", "0")
    url = server.line()
    assert url.startswith("http://127.0.0.1:")
    server.answers_after_a_while(lambda: generate_image(url))
    server.stop(signum)
    assert_stopped_cleanly(server, signum.name)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_the_chat_server_serves_with_stdin_at_dev_null_until_a_signal(start, signum):
    server = start("chat_server", "--port", "0")
    url = server.line()
    assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
    server.answers_after_a_while(lambda: chat(url))
    server.stop(signum)
    assert_stopped_cleanly(server, signum.name)


def test_one_command_serves_both_and_prints_their_urls(start):
    server = start("offline_servers", "--images-port", "0", "--chat-port", "0")
    images, chat_line = server.line(), server.line()
    assert images.startswith("images: http://127.0.0.1:") and chat_line.startswith("chat: http://127.0.0.1:")
    images_url, chat_url = images.removeprefix("images: "), chat_line.removeprefix("chat: ")
    server.answers_after_a_while(lambda: (generate_image(images_url), chat(chat_url)))
    server.stop(signal.SIGTERM)
    assert_stopped_cleanly(server, "SIGTERM")


@pytest.mark.parametrize("module", ["fake_images_api", "chat_server"])
def test_a_parent_that_asks_for_it_stops_a_server_by_closing_its_stdin(start, module):
    server = start(module, "--port", "0", "--stop-on-stdin-close", stdin=subprocess.PIPE)
    assert server.line().startswith("http://127.0.0.1:")
    server.process.stdin.close()
    server.process.wait(timeout=DEADLINE_S)
    assert_stopped_cleanly(server, "stdin closed")

"""How the test servers' command lines live and end: until SIGINT or SIGTERM, and nothing else.

A server started with `&` from a script has /dev/null on stdin, and one started with `&` from an
interactive shell is stopped by the terminal (SIGTTIN) the moment it reads stdin; so stdin says
nothing about when to stop. A parent that wants a server tied to its own lifetime asks for it with
`--stop-on-stdin-close`, keeps the write end of a pipe and closes it (or dies) to stop it; any
parent can simply send SIGTERM.

A signal ignored when the server starts stays ignored: a non-interactive shell ignores SIGINT for
its background jobs, so that Ctrl-C stops a script and not the servers it started (its
`trap 'kill ...' EXIT` stops them).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _Stop(BaseException):
    """Raised in the main thread by a stop signal's handler, so that it leaves any wait at once.
    (A handler that set an Event instead could deadlock on the Event's own lock.)"""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def add_lifetime_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stop-on-stdin-close", action="store_true",
                        help="also stop when stdin reaches its end (a parent closing its pipe, or dying)")


def serve_until_stopped(announce: Callable[[], None], stop_on_stdin_close: bool = False) -> str:
    """Call `announce` (which prints the address) once the stop signals are handled, so that a
    parent that has read the address may signal at once; then block the main thread until SIGINT
    or SIGTERM (or, when asked, the end of stdin). Returns what stopped it ("SIGTERM", "stdin
    closed"); the signals' previous handlers are back by then."""
    stdin_closed = threading.Event()

    def stop(signum: int, _frame) -> None:
        raise _Stop(signal.Signals(signum).name)

    previous = {s: signal.getsignal(s) for s in SIGNALS}
    try:
        for number, handler in previous.items():
            if handler is not signal.SIG_IGN:
                signal.signal(number, stop)
        announce()
        if stop_on_stdin_close:
            threading.Thread(target=_read_to_end, args=(stdin_closed,), name="stdin-watch", daemon=True).start()
        stdin_closed.wait()  # forever, unless stdin is watched
        return "stdin closed"
    except _Stop as stopped:
        return stopped.reason
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _read_to_end(closed: threading.Event) -> None:
    try:
        fd = sys.stdin.fileno()
        while os.read(fd, 65536):
            pass
    except (AttributeError, OSError, ValueError):  # no stdin at all: closed already
        pass
    closed.set()


def say_stopped(what: str, reason: str) -> None:
    """The one line a server writes when it stops (stderr: stdout holds only its address)."""
    print(f"{what} stopped ({reason})", file=sys.stderr, flush=True)

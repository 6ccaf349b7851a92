"""Helpers for the evaluation tests: a live A/B server."""

import threading
from contextlib import contextmanager


@contextmanager
def live_server(app_):
    """A real uvicorn server on 127.0.0.1, on a free port, in a thread; yields its base URL."""
    from evolvedirector.evaluation.ab_server import bind, make_server, wait_started

    sock = bind("127.0.0.1", 0)
    server = make_server(app_)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_started(server)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()

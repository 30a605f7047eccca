"""An ASGI app served by uvicorn on a free loopback port, in a thread of the test process, as
`tally serve` runs it (the HTTP and console suites' session servers)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from tally.http.wire import SERVE_OPTIONS  # as `tally serve` runs it

SERVER_START_TIMEOUT_S = 20


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextmanager
def served(app: Any) -> Iterator[str]:
    """`app` listening until the block ends; yields its base URL."""
    sock = _free_socket()
    config = uvicorn.Config(app, ws="none", lifespan="on", log_level="warning", **SERVE_OPTIONS)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=SERVER_START_TIMEOUT_S)
        sock.close()

"""One SQLite connection per thread, for the SQLite stores (sqlite3 connections are not to
be shared between threads that use them at once)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable

# How long a statement waits for another connection's write lock before it fails.
busy_timeout_ms = 30_000


def connect(path: str) -> sqlite3.Connection:
    """A connection in autocommit mode (tally says BEGIN itself) that waits for a busy
    database up to `busy_timeout_ms`; usable from any thread, one at a time."""
    connection = sqlite3.connect(
        path, isolation_level=None, timeout=busy_timeout_ms / 1000, check_same_thread=False
    )
    connection.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
    return connection


class ThreadConnections:
    """Each thread's own connection, opened by `connect` on first use and closed by
    `close()`. A connection outlives its thread (threads come and go: a replay's fold, a
    writer closed and reopened), so those of finished threads are closed whenever a new
    thread opens one."""

    def __init__(self, connect: Callable[[], sqlite3.Connection]) -> None:
        self._connect = connect
        self._local = threading.local()
        self._opened: list[tuple[threading.Thread, sqlite3.Connection]] = []
        self._lock = threading.Lock()

    def get(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._connect()
            self._local.connection = connection
            with self._lock:
                ended = [c for t, c in self._opened if not t.is_alive()]
                self._opened = [(t, c) for t, c in self._opened if t.is_alive()]
                self._opened.append((threading.current_thread(), connection))
            for old in ended:
                old.close()
        return connection

    def close(self) -> None:
        with self._lock:
            opened, self._opened = self._opened, []
        for _, connection in opened:
            connection.close()
        self._local = threading.local()

"""The composition root: the one place that picks adapters."""

from __future__ import annotations

import gc
import sqlite3
import sys
from pathlib import Path

from tally.api_keys import KeyStore
from tally.engine.engine import Engine
from tally.engine.ports import Store, StoreUnavailable
from tally.money import currencies
from tally.store.sqlite import SqliteStore
from tally.store.sqlite_keys import SqliteKeyStore

# Runtime tuning for a process that runs writers, applied once by `open_engine`; measured in
# docs/benchmarks.md. A writer allocates a few small objects per transfer and keeps a large
# live state, so CPython's default collector (a young collection every 700 allocations)
# costs about a fifth of the writer's CPU; collecting every 100,000 allocations costs little
# memory and almost no time. The thread that streams a batch to the database (PostgreSQL's
# COPY through the store's loop) needs the GIL back often; a 0.1 ms switch interval (default
# 5 ms) lets it overlap with deciding. The HTTP server is different: its event loop runs
# thousands of short requests a second and each commit takes the GIL back only a few times
# (one statement), so a forced switch every 0.1 ms only cost CPU; 1 ms measured best there
# (single expenses +10-15% on both stores, docs/benchmarks.md).
gc_thresholds = (100_000, 50, 100)
switch_interval_s = 0.0001
serve_switch_interval_s = 0.001


def tune_runtime(switch_interval: float = switch_interval_s) -> None:
    gc.set_threshold(*gc_thresholds)
    sys.setswitchinterval(switch_interval)


def open_store(db: str | Path) -> Store:
    """A store for `db`: a `postgresql://` URL, or else a SQLite file path.

    Raises `StoreUnavailable` when `db` names nothing tally can open or reach (a directory,
    a file that is not SQLite, a server down, a role or database refused)."""
    text = str(db)
    if text.startswith(("postgres://", "postgresql://")):
        import asyncpg  # loads only when used

        from tally.store.postgres import PostgresStore

        try:
            return PostgresStore(text)
        except (asyncpg.PostgresError, OSError) as error:
            raise StoreUnavailable(f"cannot open {text}: {error}") from error
    try:
        return SqliteStore(text)
    except (sqlite3.Error, OSError) as error:
        raise StoreUnavailable(f"cannot open {text}: {error}") from error


def open_key_store(store: Store) -> KeyStore:
    """The API key store living beside `store` (same file or database)."""
    if isinstance(store, SqliteStore):
        return SqliteKeyStore(store.path)
    from tally.store.postgres import PostgresStore
    from tally.store.postgres_keys import PostgresKeyStore

    if isinstance(store, PostgresStore):
        return PostgresKeyStore(store)
    raise TypeError(f"no key store for {type(store).__name__}")


def open_engine(
    db: str | Path,
    *,
    batch_commands_max: int | None = None,
    switch_interval: float = switch_interval_s,
) -> Engine:
    tune_runtime(switch_interval)
    store = open_store(db)
    if batch_commands_max is None:
        return Engine(store, currencies=currencies())
    return Engine(store, currencies=currencies(), batch_commands_max=batch_commands_max)

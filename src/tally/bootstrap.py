"""The composition root: the one place that picks adapters."""

from __future__ import annotations

import gc
import sys
from pathlib import Path

from tally.api_keys import KeyStore
from tally.engine.engine import Engine
from tally.engine.ports import Store
from tally.money import currencies
from tally.store.sqlite import SqliteStore
from tally.store.sqlite_keys import SqliteKeyStore

# Runtime tuning for a process that runs writers, applied once by `open_engine`; measured in
# docs/benchmarks.md. A writer allocates a few small objects per transfer and keeps a large
# live state, so CPython's default collector (a young collection every 700 allocations)
# costs about a fifth of the writer's CPU; collecting every 100,000 allocations costs little
# memory and almost no time. The writer's committer thread needs the GIL back between SQL
# statements; a 0.1 ms switch interval (default 5 ms) lets it overlap with deciding.
gc_thresholds = (100_000, 50, 100)
switch_interval_s = 0.0001


def tune_runtime() -> None:
    gc.set_threshold(*gc_thresholds)
    sys.setswitchinterval(switch_interval_s)


def open_store(db: str | Path) -> Store:
    """A store for `db`: a `postgresql://` URL, or else a SQLite file path."""
    text = str(db)
    if text.startswith(("postgres://", "postgresql://")):
        from tally.store.postgres import PostgresStore  # asyncpg loads only when used

        return PostgresStore(text)
    return SqliteStore(text)


def open_key_store(store: Store) -> KeyStore:
    """The API key store living beside `store` (same file or database)."""
    if isinstance(store, SqliteStore):
        return SqliteKeyStore(store.path)
    from tally.store.postgres import PostgresStore
    from tally.store.postgres_keys import PostgresKeyStore

    if isinstance(store, PostgresStore):
        return PostgresKeyStore(store)
    raise TypeError(f"no key store for {type(store).__name__}")


def open_engine(db: str | Path, *, batch_commands_max: int | None = None) -> Engine:
    tune_runtime()
    store = open_store(db)
    if batch_commands_max is None:
        return Engine(store, currencies=currencies())
    return Engine(store, currencies=currencies(), batch_commands_max=batch_commands_max)

"""The composition root: the one place that picks adapters."""

from __future__ import annotations

from pathlib import Path

from tally.api_keys import KeyStore
from tally.engine.engine import Engine
from tally.engine.ports import Store
from tally.money import currencies
from tally.store.sqlite import SqliteStore
from tally.store.sqlite_keys import SqliteKeyStore


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
    store = open_store(db)
    if batch_commands_max is None:
        return Engine(store, currencies=currencies())
    return Engine(store, currencies=currencies(), batch_commands_max=batch_commands_max)

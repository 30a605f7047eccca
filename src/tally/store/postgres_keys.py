"""API keys in the ledger's PostgreSQL database (table `api_keys`, migration 0002).

It shares the ledger store's connection pool and event loop, so open the ledger store first
(bootstrap does); the semantics are those of store/sqlite_keys.py.
"""

from __future__ import annotations

import time

from tally.api_keys import (
    ApiKey,
    IssuedKey,
    KeyRefused,
    Scope,
    key_from_row,
    new_secret,
    scopes_text,
    secret_digest,
)
from tally.store.postgres import PostgresStore

_COLUMNS = "key_id, ledger, scopes, created_at_us, revoked_at_us"


class PostgresKeyStore:
    """`KeyStore` on PostgreSQL."""

    def __init__(self, store: PostgresStore) -> None:
        self._store = store

    def close(self) -> None:
        """The pool belongs to the ledger store, which closes it."""

    def ledger_exists(self, ledger: str) -> bool:
        return bool(self._store.rows("SELECT 1 FROM ledgers WHERE name = $1", ledger))

    def create(self, ledger: str, scopes: frozenset[Scope]) -> IssuedKey:
        if not self.ledger_exists(ledger):
            raise KeyRefused(f"no ledger {ledger!r}: create it with `tally ledger create`")
        key_id, secret = new_secret()
        key = ApiKey(
            key_id=key_id, ledger=ledger, scopes=scopes, created_at_us=time.time_ns() // 1000
        )
        self._store.rows(
            "INSERT INTO api_keys VALUES ($1, $2, $3, $4, $5, NULL)",
            key_id,
            ledger,
            secret_digest(secret),
            scopes_text(scopes),
            key.created_at_us,
        )
        return IssuedKey(key=key, secret=secret)

    def revoke(self, key_id: str) -> ApiKey:
        rows = self._store.rows(
            "UPDATE api_keys SET revoked_at_us = COALESCE(revoked_at_us, $1) "
            f"WHERE key_id = $2 RETURNING {_COLUMNS}",
            time.time_ns() // 1000,
            key_id,
        )
        if not rows:
            raise KeyRefused(f"no key {key_id!r}")
        return key_from_row(tuple(rows[0]))

    def keys(self, ledger: str) -> list[ApiKey]:
        rows = self._store.rows(
            f"SELECT {_COLUMNS} FROM api_keys WHERE ledger = $1 ORDER BY created_at_us, key_id",
            ledger,
        )
        return [key_from_row(tuple(row)) for row in rows]

    def authenticate(self, secret: str) -> ApiKey | None:
        rows = self._store.rows(
            f"SELECT {_COLUMNS} FROM api_keys WHERE secret_sha256 = $1 AND revoked_at_us IS NULL",
            secret_digest(secret),
        )
        return key_from_row(tuple(rows[0])) if rows else None

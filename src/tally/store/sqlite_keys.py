"""API keys in the ledger's SQLite file (table `api_keys`, migration 0002).

Its own connection per thread, stdlib sqlite3 only. The tables are created by the ledger
store's migrations, so open the ledger store on the file first (bootstrap does).
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

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
from tally.store.sqlite_threads import ThreadConnections, connect

_COLUMNS = "key_id, ledger, scopes, created_at_us, revoked_at_us"


class SqliteKeyStore:
    """`KeyStore` on a SQLite file."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._connections = ThreadConnections(self._connect)
        found = self._db().execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'api_keys'"
        )
        if found.fetchone() is None:
            raise RuntimeError(f"{self.path} has no api_keys table: open the ledger store first")

    def _connect(self) -> sqlite3.Connection:
        return connect(self.path)

    def _db(self) -> sqlite3.Connection:
        return self._connections.get()

    def close(self) -> None:
        self._connections.close()

    def ledger_exists(self, ledger: str) -> bool:
        row = self._db().execute("SELECT 1 FROM ledgers WHERE name = ?", (ledger,)).fetchone()
        return row is not None

    def create(self, ledger: str, scopes: frozenset[Scope]) -> IssuedKey:
        if not self.ledger_exists(ledger):
            raise KeyRefused(f"no ledger {ledger!r}: create it with `tally ledger create`")
        key_id, secret = new_secret()
        key = ApiKey(
            key_id=key_id, ledger=ledger, scopes=scopes, created_at_us=time.time_ns() // 1000
        )
        self._db().execute(
            "INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, NULL)",
            (key_id, ledger, secret_digest(secret), scopes_text(scopes), key.created_at_us),
        )
        return IssuedKey(key=key, secret=secret)

    def revoke(self, key_id: str) -> ApiKey:
        db = self._db()
        db.execute(
            "UPDATE api_keys SET revoked_at_us = ? WHERE key_id = ? AND revoked_at_us IS NULL",
            (time.time_ns() // 1000, key_id),
        )
        row = db.execute(f"SELECT {_COLUMNS} FROM api_keys WHERE key_id = ?", (key_id,)).fetchone()
        if row is None:
            raise KeyRefused(f"no key {key_id!r}")
        return key_from_row(row)

    def keys(self, ledger: str) -> list[ApiKey]:
        rows = self._db().execute(
            f"SELECT {_COLUMNS} FROM api_keys WHERE ledger = ? ORDER BY created_at_us, key_id",
            (ledger,),
        )
        return [key_from_row(row) for row in rows]

    def authenticate(self, secret: str) -> ApiKey | None:
        row = (
            self._db()
            .execute(
                f"SELECT {_COLUMNS} FROM api_keys WHERE secret_sha256 = ? "
                "AND revoked_at_us IS NULL",
                (secret_digest(secret),),
            )
            .fetchone()
        )
        return None if row is None else key_from_row(row)

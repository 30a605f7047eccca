"""Raw SQL on either store's database, behind tally's back: for tests that tamper and peek.

`connect(db)` gives the same tiny synchronous handle on a SQLite file (sqlite3) and on a
PostgreSQL database (asyncpg on a private event loop): `execute(sql, params)` with SQLite's
`?` placeholders, returning `Rows` (`fetchone`, `fetchall`, iteration, `rowcount`). For
PostgreSQL, `?` becomes `$1, $2, ...` and `zeroblob(32)` a bytea of 32 zero bytes; with
`replica=True` the session runs with `session_replication_role = replica`, so the log's
insert-only triggers do not fire (what a superuser tampering with the database would do);
SQLite has no such switch, and `tamper` drops its triggers in the tampering transaction.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

import asyncpg

_ZEROBLOB = re.compile(r"zeroblob\((\d+)\)", re.IGNORECASE)


def is_postgres(db: str) -> bool:
    return db.startswith(("postgres://", "postgresql://"))


class Rows:
    """What a statement returned: its rows as tuples, and how many rows it changed."""

    def __init__(self, rows: list[tuple[Any, ...]], rowcount: int) -> None:
        self.rows = rows
        self.rowcount = rowcount

    def fetchone(self) -> Any:
        return self.rows[0] if self.rows else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        return list(self.rows)

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self.rows)


class RawDb(Protocol):
    postgres: bool

    def execute(self, sql: str, params: Sequence[object] = ()) -> Rows: ...


class SqliteRaw:
    postgres = False

    def __init__(self, path: str) -> None:
        self.connection = sqlite3.connect(path, isolation_level=None)

    def execute(self, sql: str, params: Sequence[object] = ()) -> Rows:
        cursor = self.connection.execute(sql, tuple(params))
        rows = [tuple(row) for row in cursor.fetchall()]
        return Rows(rows, cursor.rowcount)

    def close(self) -> None:
        self.connection.close()


def to_postgres(sql: str) -> str:
    """SQLite's dialect of the statements tests use, in PostgreSQL's."""
    counter = iter(range(1, sql.count("?") + 1))
    sql = re.sub(r"\?", lambda _: f"${next(counter)}", sql)
    return _ZEROBLOB.sub(lambda m: f"'\\x{'00' * int(m.group(1))}'::bytea", sql)


class PostgresRaw:
    postgres = True

    def __init__(self, url: str, *, replica: bool = False) -> None:
        self._runner = asyncio.Runner()
        try:
            self.connection: asyncpg.Connection = self._runner.run(asyncpg.connect(url))
            if replica:
                self._runner.run(self.connection.execute("SET session_replication_role = replica"))
        except BaseException:
            self._runner.close()
            raise

    def execute(self, sql: str, params: Sequence[object] = ()) -> Rows:
        return self._runner.run(self._execute(to_postgres(sql), params))

    async def _execute(self, sql: str, params: Sequence[object]) -> Rows:
        statement = await self.connection.prepare(sql)
        records = await statement.fetch(*params)
        status = statement.get_statusmsg() or ""  # "UPDATE 2", "INSERT 0 1", "SELECT 7"
        last = status.rsplit(" ", 1)[-1]
        return Rows([tuple(record) for record in records], int(last) if last.isdigit() else -1)

    def close(self) -> None:
        try:
            self._runner.run(self.connection.close())
        finally:
            self._runner.close()


@contextmanager
def connect(db: str, *, replica: bool = False) -> Iterator[RawDb]:
    """A raw handle on `db` (a SQLite path or a PostgreSQL URL), in autocommit mode."""
    raw: SqliteRaw | PostgresRaw = (
        PostgresRaw(db, replica=replica) if is_postgres(db) else (SqliteRaw(db))
    )
    try:
        yield raw
    finally:
        raw.close()


def tamper(db: str, edit: Callable[[RawDb], None]) -> None:
    """Switch the log's insert-only triggers off and apply `edit`, in one transaction.

    SQLite: drop the triggers inside the transaction. PostgreSQL: a session in replica mode,
    in which ordinary triggers do not fire (the migration's triggers stay in place).
    """
    with connect(db, replica=True) as raw:
        if raw.postgres:
            raw.execute("BEGIN")
        else:
            raw.execute("BEGIN IMMEDIATE")
            raw.execute("DROP TRIGGER events_refuse_update")
            raw.execute("DROP TRIGGER events_refuse_delete")
        edit(raw)
        raw.execute("COMMIT")

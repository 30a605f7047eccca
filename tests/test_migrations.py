"""Migrations: each applied once, also when several processes open a new database at once
(two `tally serve` started together on a fresh file or database)."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from pg import empty_database
from tally.bootstrap import open_store
from tally.store.migrate import migrations
from tally.store.postgres import run_sync

OPENERS = 4
ROUNDS = 5


def _open_together(db: str) -> list[BaseException]:
    """`OPENERS` stores opened on `db` at the same moment, from threads (each store has
    connections of its own, as a process would); what each raised."""
    start = threading.Barrier(OPENERS)
    failures: list[BaseException] = []

    def opener() -> None:
        start.wait()
        try:
            store = open_store(db)
        except BaseException as error:  # collected for the assertion
            failures.append(error)
            return
        store.close()

    threads = [threading.Thread(target=opener) for _ in range(OPENERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return failures


def _applied(db: str) -> list[tuple[Any, ...]]:
    query = "SELECT version, name FROM schema_migrations ORDER BY version"
    if db.startswith("postgresql://"):
        return [tuple(row) for row in run_sync(_fetch(db, query))]
    with contextlib.closing(sqlite3.connect(db)) as connection:
        return connection.execute(query).fetchall()


async def _fetch(url: str, query: str) -> list[Any]:
    db = await asyncpg.connect(url)
    try:
        return list(await db.fetch(query))
    finally:
        await db.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_stores_opening_a_new_database_together_each_migrate_it_once(
    kind: str, tmp_path: Path
) -> None:
    for round_ in range(ROUNDS):
        with empty_database(kind, tmp_path, f"new-{round_}") as db:
            assert _open_together(db) == []
            expected = [(m.version, m.name) for m in migrations(kind)]
            assert _applied(db) == expected

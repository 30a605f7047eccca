"""Throwaway PostgreSQL databases for tests: created fresh, dropped afterwards.

The server is the local PostgreSQL 15 (127.0.0.1:5432, trust auth) that .ci/run starts when
it is down; TALLY_TEST_PG overrides the admin URL.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import asyncpg

from tally.store.postgres import run_sync

ADMIN_URL = os.environ.get("TALLY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def _server_part(url: str) -> str:
    return url.rsplit("/", 1)[0]


@contextmanager
def fresh_database() -> Iterator[str]:
    """The URL of a new, empty database, dropped (with its connections) on exit."""
    name = f"tally_test_{uuid.uuid4().hex[:16]}"

    async def admin(sql: str) -> None:
        db = await asyncpg.connect(ADMIN_URL)
        try:
            await db.execute(sql)
        finally:
            await db.close()

    run_sync(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{_server_part(ADMIN_URL)}/{name}"
    finally:
        run_sync(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextmanager
def empty_database(store: str, tmp_path: Any, name: str) -> Iterator[str]:
    """A fresh, empty database of `store` ("sqlite": a file under `tmp_path`; "postgresql":
    a database of its own, dropped afterwards)."""
    if store == "sqlite":
        yield str(tmp_path / f"{name}.db")
    else:
        with fresh_database() as url:
            yield url

"""Server settings tally does not leave to chance on PostgreSQL."""

from __future__ import annotations

import asyncpg
import pytest

from pg import fresh_database
from tally.store.postgres import PostgresStore, run_sync


async def _run(url: str, sql: str) -> object:
    db = await asyncpg.connect(url)
    try:
        return await db.fetchval(sql)
    finally:
        await db.close()


@pytest.mark.parametrize(
    ("database_default", "tally_sees"),
    [("off", "on"), ("on", "on"), ("local", "local"), ("remote_apply", "remote_apply")],
)
def test_tally_never_commits_with_synchronous_commit_off(
    database_default: str, tally_sees: str
) -> None:
    with fresh_database() as url:
        name = url.rsplit("/", 1)[1]
        run_sync(_run(url, f'ALTER DATABASE "{name}" SET synchronous_commit = {database_default}'))
        assert run_sync(_run(url, "SHOW synchronous_commit")) == database_default
        store = PostgresStore(url)
        try:
            # Every connection of the pool, not just the first one borrowed.
            async def settings() -> list[object]:
                async with store.pool.acquire() as a, store.pool.acquire() as b:
                    return [await db.fetchval("SHOW synchronous_commit") for db in (a, b)]

            assert store._call(settings()) == [tally_sees, tally_sees]
        finally:
            store.close()


def test_sessions_opened_after_the_setting_changes_are_checked_too() -> None:
    with fresh_database() as url:
        name = url.rsplit("/", 1)[1]
        store = PostgresStore(url)  # opened while the server's default is on
        try:
            run_sync(_run(url, f'ALTER DATABASE "{name}" SET synchronous_commit = off'))

            async def settings() -> list[object]:
                # More sessions than the pool holds yet: new ones, opened under `off`.
                async with (
                    store.pool.acquire() as a,
                    store.pool.acquire() as b,
                    store.pool.acquire() as c,
                ):
                    return [await db.fetchval("SHOW synchronous_commit") for db in (a, b, c)]

            assert store._call(settings()) == ["on", "on", "on"]
        finally:
            store.close()

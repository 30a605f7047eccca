"""Server settings tally does not leave to chance on PostgreSQL."""

from __future__ import annotations

import asyncpg
import pytest

from pg import fresh_database
from tally.store import postgres
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


_REFUND_UPDATE = "PREPARE refund_update(text, text[], bigint[]) AS " + postgres._UPDATE_ORDERS
_EXECUTE = "EXECUTE refund_update('shop', ARRAY['o3', 'o7'], ARRAY[1, 2]::bigint[])"


async def _plan_after_growth(db: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy) -> str:
    """The plan a session uses for a refund's order update, prepared and run while `orders`
    is small (as in the first minute of a new database), after the table has grown."""
    await db.execute(
        "INSERT INTO orders SELECT 'shop', 'o' || g, 'txn_' || g, 'u', 'USD', 'm', 100, 0 "
        "FROM generate_series(1, 20) AS g"
    )
    await db.execute(_REFUND_UPDATE)
    for _ in range(8):  # past the five custom plans after which a generic one may be kept
        await db.execute(_EXECUTE)
    await db.execute(
        "INSERT INTO orders SELECT 'shop', 'o' || g, 'txn_' || g, 'u', 'USD', 'm', 100, 0 "
        "FROM generate_series(21, 20000) AS g"
    )
    rows = await db.fetch("EXPLAIN " + _EXECUTE)
    await db.execute("DEALLOCATE refund_update")
    await db.execute("TRUNCATE orders")
    return "\n".join(row[0] for row in rows)


def test_plans_are_made_for_the_tables_as_they_are_now() -> None:
    """A generic plan made while `orders` was small scans every order of the ledger to
    update two; tally's sessions plan each execution, so they look the two up by key."""
    with fresh_database() as url:
        store = PostgresStore(url)
        try:

            async def tallys_session() -> tuple[object, str]:
                async with store.pool.acquire() as db:
                    return await db.fetchval("SHOW plan_cache_mode"), await _plan_after_growth(db)

            mode, plan = store._call(tallys_session())

            async def default_session() -> str:
                db = await asyncpg.connect(url)
                try:
                    await db.execute("SET plan_cache_mode = auto")  # PostgreSQL's default
                    return await _plan_after_growth(db)
                finally:
                    await db.close()

            stale = run_sync(default_session())
        finally:
            store.close()
    by_key = "Index Cond: ((ledger = 'shop'::text) AND (order_id = u.order_id))"
    assert by_key in plan, plan
    assert mode == "force_custom_plan"
    # The control: what PostgreSQL's default does with the same statement (should it plan
    # this well too one day, the setting is no longer needed).
    assert by_key.replace("'shop'::text", "$1") not in stale, stale


def test_a_server_without_autovacuum_is_named_in_the_warnings_tally_serve_logs() -> None:
    with fresh_database() as url:
        autovacuum = run_sync(_run(url, "SHOW autovacuum"))
        store = PostgresStore(url)
        try:
            warnings = store.server_warnings()
        finally:
            store.close()
    named = [warning for warning in warnings if warning.startswith("autovacuum is off")]
    assert len(named) == (1 if autovacuum == "off" else 0)


class _Session:
    """A connection whose `SET` fails with `error` (as asyncpg raises it)."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.shown: list[str] = []

    async def execute(self, sql: str) -> None:
        raise self.error

    async def fetchval(self, sql: str) -> str:
        self.shown.append(sql)
        return "on"


def test_a_lost_connection_while_a_session_is_set_up_is_no_refused_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A refusal is warned about once and the session goes on; a lost connection is
    neither: it propagates (the pool's caller sees the server as unavailable, a 503) and
    leaves the one-time warning for a real refusal."""
    monkeypatch.setattr(postgres, "_warnings_given", set())
    lost = _Session(asyncpg.ConnectionDoesNotExistError("connection was closed"))
    with pytest.raises(asyncpg.ConnectionDoesNotExistError):
        run_sync(postgres._session_settings(lost))  # type: ignore[arg-type]
    assert lost.shown == []
    assert postgres._warnings_given == set()
    refused = _Session(asyncpg.InvalidParameterValueError("unrecognized parameter"))
    run_sync(postgres._session_settings(refused))  # type: ignore[arg-type]
    assert refused.shown == ["SHOW synchronous_commit"]
    assert postgres._warnings_given == {"plan_cache_mode"}

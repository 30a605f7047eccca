"""The log is insert-only for the role tally runs as (docs/postgresql.md's grants)."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import asyncpg
import pytest

from pg import ADMIN_URL, fresh_database
from tally.api_keys import Scope
from tally.bootstrap import open_engine, open_key_store
from tally.cli.demo import run_demo
from tally.domain.commands import (
    Capture,
    Command,
    Envelope,
    Hold,
    OrderLine,
    Recharge,
    Refund,
    Release,
)
from tally.engine.engine import Engine
from tally.engine.results import Committed
from tally.store import migrate, postgres
from tally.store.postgres import run_sync

DOC = Path(__file__).resolve().parents[1] / "docs" / "postgresql.md"


def grants(role: str) -> str:
    match = re.search(r"```sql role-grants\n(.*?)```", DOC.read_text(), re.S)
    assert match is not None, "docs/postgresql.md lost its role-grants block"
    return match.group(1).replace("ROLE", f'"{role}"')


async def _as(url: str, *statements: str) -> None:
    db = await asyncpg.connect(url)
    try:
        for statement in statements:
            await db.execute(statement)
    finally:
        await db.close()


async def _fetchval(url: str, sql: str, *args: object) -> object:
    db = await asyncpg.connect(url)
    try:
        return await db.fetchval(sql, *args)
    finally:
        await db.close()


def test_the_application_role_may_append_but_never_change_the_log() -> None:
    role = f"tally_app_{uuid.uuid4().hex[:10]}"
    run_sync(_as(ADMIN_URL, f'CREATE ROLE "{role}" LOGIN'))
    try:
        with fresh_database() as owner_url:
            owner = open_engine(owner_url)  # migrates as the owner
            owner.store.ensure_ledger("default")
            issued = open_key_store(owner.store).create("default", frozenset({Scope.READ}))
            owner.close()
            owner.store.close()
            run_sync(_as(owner_url, grants(role)))
            app_url = owner_url.replace("postgres@", f"{role}@", 1)

            engine = open_engine(app_url)
            try:
                outcome = run_demo(engine, "default")
                assert outcome.verification.ok
                # a hold placed (the holds table's insert), then released (its update)
                placed = Hold(user_id="alice", amount=100, currency="USD", hold_id="h-1")
                engine.execute("default", Envelope(idempotency_key="h", command=placed))
                released = Release(hold_id="h-1")
                engine.execute("default", Envelope(idempotency_key="x", command=released))
                assert engine.projection_differences("default") == []
                engine.close()
                engine.replay("default")  # projections are disposable: rewritable
                key = open_key_store(engine.store).authenticate(issued.secret)  # as `tally serve`
                assert key is not None
                assert key.key_id == issued.key.key_id
            finally:
                engine.close()
                engine.store.close()

            for statement in (
                "UPDATE events SET body = body WHERE seq = 1",
                "DELETE FROM events WHERE seq = 1",
                "TRUNCATE events",
            ):
                with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
                    run_sync(_as(app_url, statement))
                # Even the owner is refused by the trigger.
                with pytest.raises(asyncpg.PostgresError, match="events are insert-only"):
                    run_sync(_as(owner_url, statement))
    finally:
        run_sync(_as(ADMIN_URL, f'DROP ROLE IF EXISTS "{role}"'))


def test_an_application_role_granted_before_the_holds_table_writes_holds_after_the_upgrade(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A role given the grants as they were before migration 0005 (the projections without
    `holds`): once the owner has migrated, the role places and settles holds, as migration
    0005 grants it on `holds` what it has on `orders`; and no other role gains anything."""
    role = f"tally_app_{uuid.uuid4().hex[:10]}"
    bystander = f"tally_other_{uuid.uuid4().hex[:10]}"
    run_sync(_as(ADMIN_URL, f'CREATE ROLE "{role}" LOGIN', f'CREATE ROLE "{bystander}" LOGIN'))
    try:
        with fresh_database() as owner_url:
            _migrate_before_holds(owner_url, monkeypatch)
            old_grants = grants(role).replace(", idempotency_keys, holds", ", idempotency_keys")
            assert old_grants != grants(role)
            run_sync(_as(owner_url, old_grants))

            upgraded = open_engine(owner_url)  # migration 0005 and later, as the owner
            upgraded.close()
            upgraded.store.close()

            engine = open_engine(owner_url.replace("postgres@", f"{role}@", 1))
            try:
                recharge = Recharge(user_id="alice", amount=500, currency="USD", gateway="pp")
                engine.execute("default", Envelope(idempotency_key="r", command=recharge))
                placed = Hold(user_id="alice", amount=100, currency="USD", hold_id="h-1")
                engine.execute("default", Envelope(idempotency_key="h", command=placed))
                released = Release(hold_id="h-1")
                engine.execute("default", Envelope(idempotency_key="x", command=released))
                assert engine.projection_differences("default") == []
            finally:
                engine.close()
                engine.store.close()

            bystander_url = owner_url.replace("postgres@", f"{bystander}@", 1)
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
                run_sync(_as(bystander_url, "SELECT 1 FROM holds"))
    finally:
        run_sync(
            _as(ADMIN_URL, f'DROP ROLE IF EXISTS "{role}"', f'DROP ROLE IF EXISTS "{bystander}"')
        )


def _migrated_before_holds(admin_url: str, owner: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The database at `admin_url` migrated up to 0004 (before `holds`) by `owner`, with a
    ledger; returns the owner's URL."""
    run_sync(_as(admin_url, f'GRANT CREATE ON SCHEMA public TO "{owner}"'))
    owner_url = admin_url.replace("postgres@", f"{owner}@", 1)
    _migrate_before_holds(owner_url, monkeypatch)
    return owner_url


def _migrate_before_holds(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Migrations 0001-0004 (before `holds`) as the role of `url`, and a ledger."""
    before_holds = [m for m in migrate.migrations("postgresql") if m.version < 5]
    with monkeypatch.context() as patch:
        patch.setattr(postgres, "migrations", lambda engine: before_holds)
        old = open_engine(url)
        old.store.ensure_ledger("default")
        old.close()
        old.store.close()


def _place_capture_refund_release(engine: Engine, suffix: str) -> None:
    """A hold captured into an order that is then refunded in part, and a hold released:
    every write a hold or an order row gets, each command's ids ending in `suffix`."""

    def do(key: str, command: Command) -> Committed:
        envelope = Envelope(idempotency_key=f"{key}-{suffix}", command=command)
        outcome = engine.execute("default", envelope)
        assert isinstance(outcome, Committed), outcome
        return outcome

    do("r", Recharge(user_id="alice", amount=500, currency="USD", gateway="pp"))
    do("h1", Hold(user_id="alice", amount=100, currency="USD", hold_id=f"h1-{suffix}"))
    line = OrderLine(f"o-{suffix}", 60)
    captured = do("c1", Capture(hold_id=f"h1-{suffix}", currency="USD", orders=(line,)))
    expense_id = captured.event.transaction_id
    do("f1", Refund(expense_id=expense_id, order_id=line.order_id, amount=10, currency="USD"))
    do("h2", Hold(user_id="alice", amount=50, currency="USD", hold_id=f"h2-{suffix}"))
    do("x2", Release(hold_id=f"h2-{suffix}"))


def test_migration_0005_copies_column_grants_and_gives_holds_to_the_owner_of_orders(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Migrations 0001-0004 run as one role (which owns `orders`), 0005 as a superuser; the
    application role was granted UPDATE on `orders` for its `refunded` column alone. After
    the upgrade the owner of `orders` owns `holds` (it indexes it, as a later migration
    would, and grants a new role the documented list); that owner, the application role and
    the new role all place, capture and release holds, and the application role may update
    a hold's `settled_by` and nothing else of it."""
    owner = f"tally_owner_{uuid.uuid4().hex[:10]}"
    role = f"tally_app_{uuid.uuid4().hex[:10]}"
    newcomer = f"tally_new_{uuid.uuid4().hex[:10]}"
    run_sync(
        _as(
            ADMIN_URL,
            f'CREATE ROLE "{owner}" LOGIN',
            f'CREATE ROLE "{role}" LOGIN',
            f'CREATE ROLE "{newcomer}" LOGIN',
        )
    )
    try:
        with fresh_database() as admin_url:
            owner_url = _migrated_before_holds(admin_url, owner, monkeypatch)
            projections = "accounts, entries, orders, idempotency_keys, holds"
            old_grants = grants(role).replace(
                f"GRANT SELECT, INSERT, UPDATE, DELETE ON {projections} TO",
                "GRANT SELECT, INSERT, DELETE ON orders TO"
                f' "{role}";\nGRANT UPDATE (refunded) ON orders TO'
                f' "{role}";\nGRANT SELECT, INSERT, UPDATE, DELETE ON accounts, entries,'
                " idempotency_keys TO",
            )
            assert "UPDATE (refunded)" in old_grants
            run_sync(_as(owner_url, old_grants))

            upgraded = open_engine(admin_url)  # migration 0005 as a superuser
            upgraded.close()
            upgraded.store.close()
            owner_of_holds = "SELECT tableowner FROM pg_tables WHERE tablename = 'holds'"
            assert run_sync(_fetchval(admin_url, owner_of_holds)) == owner
            run_sync(_as(owner_url, "CREATE INDEX holds_probe ON holds (currency)"))
            run_sync(_as(owner_url, grants(newcomer)))

            app_url = admin_url.replace("postgres@", f"{role}@", 1)
            newcomer_url = admin_url.replace("postgres@", f"{newcomer}@", 1)
            for url, suffix in ((owner_url, "o"), (app_url, "a"), (newcomer_url, "n")):
                engine = open_engine(url)
                try:
                    _place_capture_refund_release(engine, suffix)
                    assert engine.projection_differences("default") == []
                finally:
                    engine.close()
                    engine.store.close()

            check = "SELECT has_column_privilege($1, 'holds', $2, 'UPDATE')"
            assert run_sync(_fetchval(admin_url, check, role, "settled_by")) is True
            assert run_sync(_fetchval(admin_url, check, role, "amount")) is False
            assert run_sync(_fetchval(admin_url, check, owner, "amount")) is True
    finally:
        run_sync(
            _as(
                ADMIN_URL,
                f'DROP ROLE IF EXISTS "{owner}"',
                f'DROP ROLE IF EXISTS "{role}"',
                f'DROP ROLE IF EXISTS "{newcomer}"',
            )
        )


def test_migration_0005_by_a_role_that_may_not_give_holds_away_grants_the_owner_all_of_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Migration 0005 run by a role that is no superuser and no member of the owner's role
    (it may create tables and read the log, no more): `holds` stays its own, and the owner
    of `orders` gets every privilege on it with the grant option, so that the owner still
    grants a new role the documented list, under which the new role places and settles
    holds."""
    owner = f"tally_owner_{uuid.uuid4().hex[:10]}"
    migrator = f"tally_mig_{uuid.uuid4().hex[:10]}"
    newcomer = f"tally_new_{uuid.uuid4().hex[:10]}"
    roles = (owner, migrator, newcomer)
    run_sync(_as(ADMIN_URL, *(f'CREATE ROLE "{name}" LOGIN' for name in roles)))
    try:
        with fresh_database() as admin_url:
            run_sync(_as(admin_url, f'GRANT CREATE ON SCHEMA public TO "{migrator}"'))
            owner_url = _migrated_before_holds(admin_url, owner, monkeypatch)
            run_sync(
                _as(
                    owner_url,
                    f'GRANT SELECT ON events TO "{migrator}"',
                    f'GRANT SELECT, INSERT, UPDATE ON schema_migrations TO "{migrator}"',
                )
            )
            migrator_url = admin_url.replace("postgres@", f"{migrator}@", 1)
            every = migrate.migrations("postgresql")
            with monkeypatch.context() as patch:  # 0005 alone, as the migrator
                patch.setattr(postgres, "migrations", lambda engine: every[:5])
                upgraded = open_engine(migrator_url)
                upgraded.close()
                upgraded.store.close()

            owner_of_holds = "SELECT tableowner FROM pg_tables WHERE tablename = 'holds'"
            assert run_sync(_fetchval(admin_url, owner_of_holds)) == migrator
            grantable = "SELECT has_table_privilege($1, 'holds', 'UPDATE WITH GRANT OPTION')"
            assert run_sync(_fetchval(admin_url, grantable, owner)) is True
            run_sync(_as(owner_url, grants(newcomer)))  # holds included, not skipped
            engine = open_engine(admin_url.replace("postgres@", f"{newcomer}@", 1))
            try:
                _place_capture_refund_release(engine, "n")
                assert engine.projection_differences("default") == []
            finally:
                engine.close()
                engine.store.close()
    finally:
        run_sync(_as(ADMIN_URL, *(f'DROP ROLE IF EXISTS "{name}"' for name in roles)))

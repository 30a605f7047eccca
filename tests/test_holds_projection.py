"""The holds projection (DESIGN decision 5), on both stores: one row per hold mirroring
`HoldState` (the placement's transaction id and seq, its user, currency, amount and expiry,
and `settled_by`, the capture's or release's transaction id, None while it is open).

The writer puts new holds in `BatchWrite.projections.holds` (a hold placed and settled in one
batch is one insert of its final row) and the holds it settles that existed before the batch
in `BatchWrite.hold_updates`; every write path stores both (SQLite's batch view trigger and
its chunked form, PostgreSQL's one statement and its long form). Replay rebuilds the table,
verify compares it, migration 0005 backfills it from the log, and `Store.holds_of` reads a
user's holds in the order they were placed, with their events' canonical bytes.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

import rawdb
from conftest import TallyRunner
from pg import fresh_database
from rawdb import RawDb, is_postgres
from tally.audit.canonical import decode_event, encode_event
from tally.bootstrap import open_engine, open_store
from tally.domain import limits
from tally.domain.commands import (
    Capture,
    Command,
    Envelope,
    Hold,
    Metadata,
    OrderLine,
    Recharge,
    Release,
)
from tally.domain.events import HoldCaptured, HoldPlaced, HoldReleased
from tally.domain.rejections import Rejected, Rejection
from tally.engine.engine import Engine
from tally.engine.ports import BatchWrite, EventRow, Head, HoldRow, Projections, Store
from tally.engine.results import Committed
from tally.store import postgres, sqlite
from tally.store.postgres import PostgresStore
from tally.store.sqlite import SqliteStore
from tally.verification import verify

LEDGER = "shop"
OTHER = "other"  # a second ledger in the same database, whose holds must never mix in
CURRENCIES = frozenset({"USD", "EUR"})
DAY_US = 86_400_000_000
WAIT_S = 60  # a bound on waits for commits that take milliseconds


# -- commands and the rows they should leave ---------------------------------------------


def _now_us() -> int:
    return time.time_ns() // 1000


def recharge(user: str, amount: int, currency: str = "USD") -> Recharge:
    return Recharge(user_id=user, amount=amount, currency=currency, gateway="pp")


def hold(
    user: str,
    hold_id: str,
    amount: int,
    *,
    currency: str = "USD",
    expires_at_us: int | None = None,
    metadata: Metadata = (),
) -> Hold:
    return Hold(
        user_id=user,
        amount=amount,
        currency=currency,
        hold_id=hold_id,
        expires_at_us=expires_at_us,
        metadata=metadata,
    )


def capture(
    hold_id: str, *orders: tuple[str, int], currency: str = "USD", metadata: Metadata = ()
) -> Capture:
    lines = tuple(OrderLine(order_id, amount) for order_id, amount in orders)
    return Capture(hold_id=hold_id, currency=currency, orders=lines, metadata=metadata)


def release(hold_id: str, reason: str = "") -> Release:
    return Release(hold_id=hold_id, reason=reason)


def run(engine: Engine, ledger: str, key: str, command: Command) -> Committed:
    """One command, in a batch of its own (`execute` waits for its commit)."""
    return engine.execute(ledger, Envelope(idempotency_key=key, command=command))


def batch(engine: Engine, ledger: str, *commands: tuple[str, Command]) -> list[Committed]:
    """Commands submitted together (one batch while there are no more than the engine's
    `batch_commands_max`), each of which must commit."""
    outcomes = engine.execute_many(
        ledger, [Envelope(idempotency_key=key, command=command) for key, command in commands]
    )
    committed = [o for o in outcomes if isinstance(o, Committed)]
    assert committed == outcomes, outcomes
    return committed


def row_of(placed: Committed, settled: Committed | None = None) -> HoldRow:
    """The row a hold placed by `placed` (and settled by `settled`) should have."""
    event = placed.event
    assert isinstance(event, HoldPlaced)
    if settled is not None:
        assert isinstance(settled.event, HoldCaptured | HoldReleased)
        assert settled.event.hold_id == event.hold_id
    return HoldRow(
        hold_id=event.hold_id,
        transaction_id=event.transaction_id,
        seq=event.seq,
        user_id=event.user_id,
        currency=event.currency,
        amount=event.amount,
        expires_at_us=event.expires_at_us,
        settled_by=None if settled is None else settled.event.transaction_id,
    )


def by_hold_id(rows: Sequence[HoldRow]) -> list[HoldRow]:
    """Rows in the order the stores list the table (`Projections.holds`): by hold id."""
    return sorted(rows, key=lambda row: row.hold_id)


def new_ledger(store: Store) -> Head:
    """Create the ledger `LEDGER` in `store`; returns its genesis head."""
    store.ensure_ledger(LEDGER)
    genesis = store.head(LEDGER)
    assert genesis is not None
    return genesis


def stored_holds(engine: Engine, ledger: str = LEDGER) -> list[HoldRow]:
    return engine.store.projections(ledger).holds


def replayed_holds(engine: Engine, ledger: str = LEDGER) -> list[HoldRow]:
    projections, _ = engine.rebuild(ledger)
    return projections.holds


# -- 1. the rows, field by field -----------------------------------------------------------


def test_the_table_holds_each_hold_as_placed_then_as_settled(engine: Engine) -> None:
    """Holds of two users, some placed in one batch, some in batches of their own; one
    captured, one released, one released after it expired (its capture refused first): the
    table holds exactly the rows those events make, and verify finds nothing."""
    batch(engine, LEDGER, ("r-alice", recharge("alice", 100_00)), ("r-bob", recharge("bob", 50_00)))
    far = _now_us() + DAY_US
    a1, a2, b1 = batch(
        engine,
        LEDGER,
        ("h-a1", hold("alice", "a-1", 10_00)),
        ("h-a2", hold("alice", "a-2", 20_00, expires_at_us=far)),
        ("h-b1", hold("bob", "b-1", 5_00)),
    )
    assert len({a1.event.seq, a2.event.seq, b1.event.seq}) == 3
    # Placed, nothing settled yet: each row open.
    assert stored_holds(engine) == by_hold_id([row_of(a1), row_of(a2), row_of(b1)])

    soon = _now_us() + 250_000
    a3 = run(engine, LEDGER, "h-a3", hold("alice", "a-3", 3_00, expires_at_us=soon))
    b2 = run(engine, LEDGER, "h-b2", hold("bob", "b-2", 7_00))
    captured = run(engine, LEDGER, "c-a1", capture("a-1", ("o-1", 6_00)))
    released = run(engine, LEDGER, "x-b1", release("b-1", reason="cancelled"))

    while _now_us() <= soon:
        time.sleep(0.02)
    with pytest.raises(Rejected) as refused:
        run(engine, LEDGER, "c-a3", capture("a-3", ("o-2", 1_00)))
    assert refused.value.reason == Rejection.HOLD_EXPIRED
    # The refused capture changed nothing: a-3 is still open.
    (a3_row,) = [row for row in stored_holds(engine) if row.hold_id == "a-3"]
    assert a3_row == row_of(a3)
    expired_released = run(engine, LEDGER, "x-a3", release("a-3"))

    expected = by_hold_id(
        [
            row_of(a1, captured),
            row_of(a2),
            row_of(a3, expired_released),
            row_of(b1, released),
            row_of(b2),
        ]
    )
    stored = stored_holds(engine)
    assert stored == expected
    # Field by field: a settled hold names its settling transaction, the rest is its
    # placement's.
    assert [(r.hold_id, r.user_id, r.amount, r.expires_at_us) for r in stored] == [
        ("a-1", "alice", 10_00, None),
        ("a-2", "alice", 20_00, far),
        ("a-3", "alice", 3_00, soon),
        ("b-1", "bob", 5_00, None),
        ("b-2", "bob", 7_00, None),
    ]
    assert [r.settled_by for r in stored] == [
        captured.event.transaction_id,
        None,
        expired_released.event.transaction_id,
        released.event.transaction_id,
        None,
    ]
    assert [(r.transaction_id, r.seq) for r in stored] == [
        (p.event.transaction_id, p.event.seq) for p in (a1, a2, a3, b1, b2)
    ]
    assert engine.projection_differences(LEDGER) == []
    assert replayed_holds(engine) == stored


# -- 2. every write path ----------------------------------------------------------------------


class RecordingStore:
    """A real store (either kind) that keeps every batch the writer hands it."""

    def __init__(self, db: str) -> None:
        self.inner = open_store(db)
        self.batches: list[BatchWrite] = []

    def commit_soon(self, batch: BatchWrite) -> Future[None] | None:
        self.batches.append(batch)  # the writer asks here first, then maybe calls `commit`
        return self.inner.commit_soon(batch)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


WRITE_PATHS = ("one-statement", "split")  # split: SQLite's chunks, PostgreSQL's long form


def spy_on_write_paths(db: str, path: str, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Force `path` on `db`'s store, and list the path each batch took (PostgreSQL: also
    "missed" for a statement whose snapshot missed a row to update, then written again)."""
    taken: list[str] = []
    if is_postgres(db):
        if path == "split":
            monkeypatch.setattr(postgres, "one_statement_events_max", 0)
        statement = PostgresStore._commit_in_one_statement

        async def one_statement(store: PostgresStore, batch: BatchWrite) -> None:
            taken.append("one-statement")
            try:
                await statement(store, batch)
            except postgres._OrdersNotSeen:
                taken.append("missed")
                raise

        update = postgres._update

        async def long_form_update(db: Any, sql: str, ledger: str, rows: Sequence[Any]) -> None:
            if sql is postgres._UPDATE_ORDERS:  # once per long-form batch, rows or none
                taken.append("split")
            await update(db, sql, ledger, rows)

        monkeypatch.setattr(PostgresStore, "_commit_in_one_statement", one_statement)
        monkeypatch.setattr(postgres, "_update", long_form_update)
    else:
        if path == "split":
            monkeypatch.setattr(sqlite, "json_chunk_rows", 1)
        in_one = sqlite._write_in_one_statement

        def one_statement_sqlite(connection: Any, batch: BatchWrite) -> None:
            taken.append("one-statement")
            in_one(connection, batch)

        in_chunks = SqliteStore._write_in_chunks

        def chunks(store: SqliteStore, connection: Any, batch: BatchWrite) -> None:
            taken.append("split")
            in_chunks(store, connection, batch)

        monkeypatch.setattr(sqlite, "_write_in_one_statement", one_statement_sqlite)
        monkeypatch.setattr(SqliteStore, "_write_in_chunks", chunks)
    return taken


@pytest.mark.parametrize("path", WRITE_PATHS)
def test_every_write_path_writes_the_rows_a_replay_makes(
    db: str, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same history through each store's two write paths, in batches of two commands
    (the last three submitted at once, so on PostgreSQL each is written while the one
    before still commits): holds settled in a later batch (`hold_updates`, hold ids with
    `.` and `@` included), holds placed and settled in one batch (one insert of the final
    row, no update). The rows are those of the events, and those of a replay."""
    taken = spy_on_write_paths(db, path, monkeypatch)
    store = RecordingStore(db)
    engine = Engine(store, currencies=CURRENCIES, batch_commands_max=2)
    try:
        far = _now_us() + DAY_US
        batch(engine, LEDGER, ("r-a", recharge("alice", 100_00)), ("r-b", recharge("bob", 100_00)))
        a1, b1 = batch(
            engine,
            LEDGER,
            ("h-a1", hold("alice", "a-1", 10_00)),
            ("h-b1", hold("bob", "b-1", 5_00, expires_at_us=far)),
        )
        a1_captured, a2 = batch(
            engine,
            LEDGER,
            ("c-a1", capture("a-1", ("o-1", 4_00))),
            ("h-a2", hold("alice", "a-2", 7_00)),
        )
        a3, a3_released = batch(
            engine, LEDGER, ("h-a3", hold("alice", "a-3", 3_00)), ("x-a3", release("a-3"))
        )
        a4, a4_captured = batch(
            engine,
            LEDGER,
            ("h-a4", hold("alice", "a.4@x-y", 2_00)),
            ("c-a4", capture("a.4@x-y", ("o-2", 2_00))),
        )
        s5 = run(engine, LEDGER, "h-s5", hold("alice", "s.5@x-y", 1_00))
        p1, s5_captured, p1_captured, a2_released, b1_released, p2 = batch(
            engine,
            LEDGER,
            ("h-p1", hold("bob", "p-1", 1_00)),
            ("c-s5", capture("s.5@x-y", ("o-3", 1_00))),
            ("c-p1", capture("p-1", ("o-4", 50))),
            ("x-a2", release("a-2", reason="changed their mind")),
            ("x-b1", release("b-1")),
            ("h-p2", hold("bob", "p-2", 1_00, expires_at_us=far)),
        )

        written = [b for b in store.batches if b.events]
        # What each batch handed the store: placed holds, and holds settled that it did
        # not place. A hold placed and settled in one batch is only placed, as settled.
        assert [
            (
                sorted(h.hold_id for h in b.projections.holds),
                sorted(h.hold_id for h in b.hold_updates),
            )
            for b in written
        ] == [
            ([], []),
            (["a-1", "b-1"], []),
            (["a-2"], ["a-1"]),
            (["a-3"], []),
            (["a.4@x-y"], []),
            (["s.5@x-y"], []),
            (["p-1"], ["s.5@x-y"]),
            ([], ["a-2", "p-1"]),
            (["p-2"], ["b-1"]),
        ]
        assert written[3].projections.holds == [row_of(a3, a3_released)]
        assert written[4].projections.holds == [row_of(a4, a4_captured)]
        assert written[2].hold_updates == [row_of(a1, a1_captured)]
        # Each batch took the path asked for, and no statement missed a row to update.
        assert taken == [path] * len(written)

        expected = by_hold_id(
            [
                row_of(a1, a1_captured),
                row_of(a2, a2_released),
                row_of(a3, a3_released),
                row_of(a4, a4_captured),
                row_of(b1, b1_released),
                row_of(p1, p1_captured),
                row_of(p2),
                row_of(s5, s5_captured),
            ]
        )
        assert stored_holds(engine) == expected
        assert replayed_holds(engine) == expected
        assert engine.projection_differences(LEDGER) == []
        engine.close()
        engine.replay(LEDGER)  # the replay writes the same rows back
        assert stored_holds(engine) == expected
        verification = verify(engine, LEDGER)
        assert verification.ok, verification
    finally:
        engine.close()
        store.close()


def synthetic_events(after: Head, count: int) -> list[EventRow]:
    """`count` events after `after` (the store checks neither their bodies nor the chain)."""
    seqs = range(after.seq + 1, after.seq + 1 + count)
    return [EventRow(s, f"txn-{s}", "hold", b"{}", s.to_bytes(32, "big")) for s in seqs]


def synthetic_batch(
    base: Head, count: int, *, holds: list[HoldRow], hold_updates: list[HoldRow]
) -> BatchWrite:
    events = synthetic_events(base, count)
    return BatchWrite(
        ledger=LEDGER,
        base=base,
        head=Head(events[-1].seq, events[-1].hash),
        events=events,
        projections=Projections(accounts=[], entries=[], orders=[], keys=[], holds=holds),
        hold_updates=hold_updates,
    )


@pytest.mark.parametrize("path", WRITE_PATHS)
def test_a_batch_settling_a_hold_whose_row_is_missing_writes_the_row(
    db: str, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hold a tally older than the holds projection placed has no row (a rolling upgrade:
    the old process wrote on after the new one migrated). Settling it writes its whole row,
    on every path and in one go (PostgreSQL's statement does not miss it), beside the hold
    the batch places and the one it settles that is there."""
    taken = spy_on_write_paths(db, path, monkeypatch)
    store = open_store(db)
    try:
        genesis = new_ledger(store)
        h1 = HoldRow("h-1", "txn-1", 1, "alice", "USD", 5_00, None, None)
        placing = synthetic_batch(genesis, 2, holds=[h1], hold_updates=[])
        store.commit(placing)
        assert store.projections(LEDGER).holds == [h1]

        unseen = HoldRow("h-0", "txn-0", 2, "alice", "USD", 1, None, "txn-4")
        h5 = HoldRow("h-5", "txn-5", 5, "alice", "USD", 1_00, None, None)
        settled = h1._replace(settled_by="txn-3")
        settling = synthetic_batch(placing.head, 3, holds=[h5], hold_updates=[settled, unseen])
        store.commit(settling)
        assert store.head(LEDGER) == settling.head
        assert [e.seq for e in store.events(LEDGER, after_seq=0, limit=10)] == [1, 2, 3, 4, 5]
        assert store.projections(LEDGER).holds == [unseen, settled, h5]
        assert taken == [path, path]
    finally:
        store.close()


@pytest.mark.parametrize("path", WRITE_PATHS)
def test_a_batch_placing_a_hold_whose_row_is_already_there_writes_nothing(
    db: str, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hold the batch places is a new row, as a new order is: a row already there under
    its id (a stale or forged one; the writer never places a hold id twice) fails the batch
    on every path, and nothing of it is written. Only settling a hold may write over."""
    taken = spy_on_write_paths(db, path, monkeypatch)
    store = open_store(db)
    try:
        genesis = new_ledger(store)
        stale = HoldRow("h-1", "txn-0", 0, "mallory", "USD", 9_00, None, None)
        with rawdb.connect(db) as raw:
            raw.execute("INSERT INTO holds VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", (LEDGER, *stale))
        h1 = HoldRow("h-1", "txn-1", 1, "alice", "USD", 5_00, None, None)
        h2 = HoldRow("h-2", "txn-2", 2, "alice", "USD", 1_00, None, None)
        placing = synthetic_batch(genesis, 2, holds=[h1, h2], hold_updates=[])
        with pytest.raises((sqlite3.IntegrityError, asyncpg.UniqueViolationError)):
            store.commit(placing)
        assert store.head(LEDGER) == genesis
        assert store.events(LEDGER, after_seq=0, limit=10) == []
        assert store.projections(LEDGER).holds == [stale]
        # PostgreSQL's long form fails at its copy of the holds, before the update the spy
        # counts it by; that it was not the one statement shows it was taken.
        assert taken == ([] if is_postgres(db) and path == "split" else [path])
    finally:
        store.close()


def test_a_hold_placed_before_the_holds_projection_settles_and_verifies(
    engine: Engine, db: str
) -> None:
    """The rolling upgrade end to end: holds whose rows are gone (placed by a tally without
    the projection) are released and captured by the engine, whose state knows them; their
    rows are then exactly a replay's, and verify passes."""
    batch(engine, LEDGER, ("r-a", recharge("alice", 100_00)))
    old1, old2, kept = batch(
        engine,
        LEDGER,
        ("h-1", hold("alice", "old-1", 10_00)),
        ("h-2", hold("alice", "old-2", 20_00)),
        ("h-3", hold("alice", "kept", 30_00)),
    )
    with rawdb.connect(db) as raw:
        deleted = raw.execute(
            "DELETE FROM holds WHERE ledger = ? AND hold_id IN ('old-1', 'old-2')", (LEDGER,)
        )
        assert deleted.rowcount == 2
    assert engine.projection_differences(LEDGER) != []
    released = run(engine, LEDGER, "x-1", release("old-1"))
    captured = run(engine, LEDGER, "c-2", capture("old-2", ("o-1", 5_00)))
    assert stored_holds(engine) == by_hold_id(
        [row_of(old1, released), row_of(old2, captured), row_of(kept)]
    )
    assert engine.projection_differences(LEDGER) == []
    verification = verify(engine, LEDGER)
    assert verification.ok, verification


def test_a_postgresql_statement_settling_a_hold_sees_the_long_form_batch_before_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Batch N, in the long form, places a hold; N+1, one statement, settles it, started
    while N still commits. N+1 waits only for N's compare-and-set, so its statement starts
    before N's rows are committed; its upsert still finds N's row (READ COMMITTED's
    INSERT ... ON CONFLICT checks the newest committed row, whatever the snapshot) and
    updates it: no second row, no unique violation, no second try in the long form. N is
    held between its compare-and-set and its commit until N+1 has been started."""
    update = postgres._update
    seen_in_flight = threading.Event()

    async def held_when_none(db: Any, sql: str, ledger: str, rows: Sequence[Any]) -> None:
        if not rows and sql is postgres._UPDATE_ORDERS:  # N, after its compare-and-set
            deadline = time.monotonic() + WAIT_S
            while not seen_in_flight.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.2)
        await update(db, sql, ledger, rows)

    monkeypatch.setattr(postgres, "_update", held_when_none)
    statement = PostgresStore._commit_in_one_statement
    missed: list[int] = []

    async def noting_misses(store: PostgresStore, batch: BatchWrite) -> None:
        try:
            await statement(store, batch)
        except postgres._OrdersNotSeen:
            missed.append(batch.head.seq)
            raise

    monkeypatch.setattr(PostgresStore, "_commit_in_one_statement", noting_misses)
    with fresh_database() as url:
        store = PostgresStore(url)
        try:
            genesis = new_ledger(store)
            placed = HoldRow("h-1", "txn-1", 1, "alice", "USD", 5_00, None, None)
            placing = synthetic_batch(
                genesis, postgres.one_statement_events_max + 1, holds=[placed], hold_updates=[]
            )
            settled = placed._replace(settled_by=f"txn-{placing.head.seq + 1}")
            settling = synthetic_batch(placing.head, 1, holds=[], hold_updates=[settled])
            first = store.commit_soon(placing)
            second = store.commit_soon(settling)
            assert not first.done()
            seen_in_flight.set()
            first.result(WAIT_S)
            second.result(WAIT_S)
            assert missed == []
            assert store.projections(LEDGER).holds == [settled]
            assert store.head(LEDGER) == settling.head
        finally:
            seen_in_flight.set()
            store.close()


# -- 3. Store.holds_of ----------------------------------------------------------------------


def test_holds_of_lists_a_users_holds_in_placement_order_with_their_events(
    engine: Engine,
) -> None:
    """Alice's holds come in the order they were placed (never by hold id), filtered by
    settled, paged by the placement's seq, each with its placement's canonical bytes and
    its settlement's (None while open); bob's holds and another ledger's (one of the same
    hold id) never show."""
    store = engine.store
    run(engine, LEDGER, "r-a", recharge("alice", 1_000_00))
    run(engine, LEDGER, "r-b", recharge("bob", 1_000_00))
    run(engine, OTHER, "r-a", recharge("alice", 1_000_00))
    z1, bob1 = batch(
        engine, LEDGER, ("h-z1", hold("alice", "z-1", 1_00)), ("h-bob1", hold("bob", "bob-1", 2_00))
    )
    other_z1 = run(engine, OTHER, "h-z1", hold("alice", "z-1", 9_00))  # the same hold id
    m2 = run(engine, LEDGER, "h-m2", hold("alice", "m-2", 2_00, expires_at_us=_now_us() + DAY_US))
    a3, k4 = batch(
        engine, LEDGER, ("h-a3", hold("alice", "a-3", 3_00)), ("h-k4", hold("alice", "k-4", 4_00))
    )
    other_o9 = run(engine, OTHER, "h-o9", hold("alice", "o-9", 1_00))
    m2_captured = run(engine, LEDGER, "c-m2", capture("m-2", ("o-1", 1_50)))
    b5 = run(engine, LEDGER, "h-b5", hold("alice", "b-5", 5_00))
    bob2 = run(engine, LEDGER, "h-bob2", hold("bob", "bob-2", 1_00))
    a3_released = run(engine, LEDGER, "x-a3", release("a-3", reason="out of stock"))
    c6, d7 = batch(
        engine, LEDGER, ("h-c6", hold("alice", "c-6", 6_00)), ("h-d7", hold("alice", "d-7", 7_00))
    )
    d7_released, bob1_captured = batch(
        engine, LEDGER, ("x-d7", release("d-7")), ("c-bob1", capture("bob-1", ("o-2", 2_00)))
    )
    other_z1_released = run(engine, OTHER, "x-z1", release("z-1"))

    settlements = {
        "m-2": m2_captured,
        "a-3": a3_released,
        "d-7": d7_released,
        "bob-1": bob1_captured,
    }
    alice = [z1, m2, a3, k4, b5, c6, d7]

    def expected(placements: Sequence[Committed], ledger: str = LEDGER) -> list[Any]:
        listed: list[Any] = []
        for placed in placements:
            event = placed.event
            assert isinstance(event, HoldPlaced)
            settled = settlements.get(event.hold_id) if ledger == LEDGER else None
            if ledger == OTHER and event.hold_id == "z-1":
                settled = other_z1_released
            listed.append(
                (
                    row_of(placed, settled),
                    encode_event(ledger, event),
                    None if settled is None else encode_event(ledger, settled.event),
                )
            )
        return listed

    def holds_of(
        user: str,
        *,
        after_seq: int = 0,
        limit: int = 100,
        settled: bool | None = None,
        ledger: str = LEDGER,
    ) -> list[Any]:
        return [
            (row, placed, settlement)
            for row, placed, settlement in store.holds_of(
                ledger, user, after_seq=after_seq, limit=limit, settled=settled
            )
        ]

    every = holds_of("alice")
    assert [row.hold_id for row, _, _ in every] == ["z-1", "m-2", "a-3", "k-4", "b-5", "c-6", "d-7"]
    seqs = [row.seq for row, _, _ in every]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == len(seqs)
    assert every == expected(alice)
    # The bytes are the log's, and decode to the events that were committed.
    for (row, placed_body, settlement_body), placed in zip(every, alice, strict=True):
        (logged,) = store.events(LEDGER, after_seq=row.seq - 1, limit=1)
        assert placed_body == logged.body
        assert decode_event(placed_body) == (LEDGER, placed.event)
        settled = settlements.get(row.hold_id)
        if settled is None:
            assert settlement_body is None
            assert row.settled_by is None
        else:
            assert settlement_body is not None
            assert decode_event(settlement_body) == (LEDGER, settled.event)
            found = store.event_by_transaction(LEDGER, settled.event.transaction_id)
            assert found is not None
            assert settlement_body == found.body

    open_ones = [z1, k4, b5, c6]
    settled_ones = [m2, a3, d7]
    assert holds_of("alice", settled=False) == expected(open_ones)
    assert holds_of("alice", settled=True) == expected(settled_ones)

    # Pages of two, each after the last one's placement: every hold exactly once.
    for settled_filter, placements in ((None, alice), (False, open_ones), (True, settled_ones)):
        walked: list[Any] = []
        after, pages = 0, 0
        while True:
            page = holds_of("alice", after_seq=after, limit=2, settled=settled_filter)
            pages += 1
            assert len(page) <= 2
            walked += page
            if len(page) < 2:
                break
            after = page[-1][0].seq
        assert walked == expected(placements), settled_filter
        assert pages == len(placements) // 2 + 1

    # after_seq is exclusive; limit bounds the page.
    assert holds_of("alice", after_seq=a3.event.seq) == expected([k4, b5, c6, d7])
    assert holds_of("alice", after_seq=a3.event.seq - 1) == expected([a3, k4, b5, c6, d7])
    assert holds_of("alice", after_seq=d7.event.seq) == []
    assert holds_of("alice", limit=3) == expected([z1, m2, a3])
    assert holds_of("alice", after_seq=z1.event.seq, limit=1, settled=False) == expected([k4])

    # Another user's, another ledger's.
    assert holds_of("bob") == [
        (
            row_of(bob1, bob1_captured),
            encode_event(LEDGER, bob1.event),
            encode_event(LEDGER, bob1_captured.event),
        ),
        (row_of(bob2), encode_event(LEDGER, bob2.event), None),
    ]
    assert holds_of("bob", settled=False) == [
        (row_of(bob2), encode_event(LEDGER, bob2.event), None)
    ]
    assert holds_of("carol") == []
    assert holds_of("alice", ledger=OTHER) == expected([other_z1, other_o9], ledger=OTHER)
    assert holds_of("alice", ledger=OTHER, settled=True) == expected([other_z1], ledger=OTHER)
    assert holds_of("bob", ledger=OTHER) == []
    assert holds_of("alice", ledger="nobody") == []


# -- 4. tampered rows: verify names the table, replay repairs it ------------------------------

GHOST = HoldRow("ghost", "txn_ghost", 2, "alice", "USD", 1, None, None)


@dataclass(frozen=True, slots=True)
class Tamper:
    """An edit of one row of `build_holds`'s ledger behind tally's back (`?` is the ledger),
    the row a replay then expects and the table lacks (by hold id), and the row the table
    has instead (from the honest rows by hold id)."""

    sql: str
    expected: str | None
    found: Callable[[dict[str, HoldRow]], HoldRow] | None

    def edit(self, raw: RawDb) -> None:
        assert raw.execute(self.sql, (LEDGER,)).rowcount == 1


TAMPERS = {
    "row-deleted": Tamper("DELETE FROM holds WHERE ledger = ? AND hold_id = 'a-1'", "a-1", None),
    "settled-by-cleared": Tamper(
        "UPDATE holds SET settled_by = NULL WHERE ledger = ? AND hold_id = 'a-1'",
        "a-1",
        lambda rows: rows["a-1"]._replace(settled_by=None),
    ),
    "settled-by-forged": Tamper(
        "UPDATE holds SET settled_by = 'txn_forged' WHERE ledger = ? AND hold_id = 'a-2'",
        "a-2",
        lambda rows: rows["a-2"]._replace(settled_by="txn_forged"),
    ),
    "user-changed": Tamper(
        "UPDATE holds SET user_id = 'mallory' WHERE ledger = ? AND hold_id = 'a-2'",
        "a-2",
        lambda rows: rows["a-2"]._replace(user_id="mallory"),
    ),
    "expiry-set": Tamper(
        "UPDATE holds SET expires_at_us = 1 WHERE ledger = ? AND hold_id = 'a-2'",
        "a-2",
        lambda rows: rows["a-2"]._replace(expires_at_us=1),
    ),
    "bogus-row": Tamper(
        "INSERT INTO holds VALUES (?, 'ghost', 'txn_ghost', 2, 'alice', 'USD', 1, NULL, NULL)",
        None,
        lambda _: GHOST,
    ),
}


def build_holds(engine: Engine) -> dict[str, HoldRow]:
    """A ledger with a captured hold (a-1), an open one (a-2) and a released one (b-1); and
    another ledger with a hold of the same id as the first. The rows, by hold id."""
    batch(engine, LEDGER, ("r-a", recharge("alice", 100_00)), ("r-b", recharge("bob", 100_00)))
    a1, a2, b1 = batch(
        engine,
        LEDGER,
        ("h-a1", hold("alice", "a-1", 10_00)),
        ("h-a2", hold("alice", "a-2", 20_00)),
        ("h-b1", hold("bob", "b-1", 5_00, expires_at_us=_now_us() + DAY_US)),
    )
    a1_captured = run(engine, LEDGER, "c-a1", capture("a-1", ("o-1", 3_00)))
    b1_released = run(engine, LEDGER, "x-b1", release("b-1"))
    run(engine, OTHER, "r-a", recharge("alice", 100_00))
    run(engine, OTHER, "h-a1", hold("alice", "a-1", 1_00))
    return {
        "a-1": row_of(a1, a1_captured),
        "a-2": row_of(a2),
        "b-1": row_of(b1, b1_released),
    }


@pytest.mark.parametrize("case", list(TAMPERS))
def test_verify_finds_a_tampered_holds_row_and_replay_rebuilds_it(
    engine: Engine, db: str, case: str
) -> None:
    """A row deleted, settled or unsettled, given to another user or an expiry, or made up:
    the engine's comparison with a replay names table "holds" with exactly the rows that
    differ (and verify fails); a replay puts the honest rows back, leaves the other ledger's
    alone, and the writer settles holds on the repaired table."""
    rows = build_holds(engine)
    honest = stored_holds(engine)
    assert honest == by_hold_id(list(rows.values()))
    other_before = stored_holds(engine, OTHER)
    assert engine.projection_differences(LEDGER) == []
    engine.close()

    tamper = TAMPERS[case]
    with rawdb.connect(db) as raw:
        tamper.edit(raw)
    (difference,) = engine.projection_differences(LEDGER)
    assert difference.table == "holds"
    assert difference.expected == (() if tamper.expected is None else (rows[tamper.expected],))
    assert difference.found == (() if tamper.found is None else (tamper.found(rows),))
    verification = verify(engine, LEDGER)
    assert not verification.ok
    assert [d.table for d in verification.projection_differences] == ["holds"]
    assert engine.projection_differences(OTHER) == []  # the other ledger is untouched

    engine.replay(LEDGER)
    assert engine.projection_differences(LEDGER) == []
    assert stored_holds(engine) == honest
    assert stored_holds(engine, OTHER) == other_before
    assert verify(engine, LEDGER).ok
    # The repaired table is written on as before: the open hold settles.
    settled = run(engine, LEDGER, "x-a2", release("a-2"))
    assert stored_holds(engine) == by_hold_id(
        [rows["a-1"], rows["a-2"]._replace(settled_by=settled.event.transaction_id), rows["b-1"]]
    )
    assert engine.projection_differences(LEDGER) == []


def test_tally_verify_reports_the_holds_table_and_tally_replay_repairs_it(
    engine: Engine, db: str, tally: TallyRunner
) -> None:
    """The one CLI pair of the file: `tally verify --json` exits 1 naming table "holds"
    with the row a replay expects and the one found; `tally replay` exits 0; then verify
    passes."""
    rows = build_holds(engine)
    engine.close()
    with rawdb.connect(db) as raw:
        TAMPERS["settled-by-cleared"].edit(raw)

    verified = tally("verify", "--db", db, "--ledger", LEDGER, "--json")
    assert verified.returncode == 1, verified.describe()
    report = verified.json()
    assert report["ok"] is False
    assert report["problem"] is None
    assert report["projection_differences"] == [
        {
            "table": "holds",
            "expected": [list(rows["a-1"])],
            "found": [list(rows["a-1"]._replace(settled_by=None))],
        }
    ]
    replayed = tally("replay", "--db", db, "--ledger", LEDGER)
    assert replayed.returncode == 0, replayed.describe()
    assert engine.projection_differences(LEDGER) == []
    assert stored_holds(engine) == by_hold_id(list(rows.values()))


# -- 5. migration 0005 ------------------------------------------------------------------------


def forget_migration_0005(db: str) -> None:
    """The database as it was before migration 0005: no holds table, version 5 not applied."""
    with rawdb.connect(db) as raw:
        raw.execute("DROP TABLE holds")
        assert raw.execute("DELETE FROM schema_migrations WHERE version = 5").rowcount == 1
        if raw.postgres:
            assert raw.execute("SELECT to_regclass('holds')").fetchone() == (None,)
        else:
            assert (
                raw.execute("SELECT name FROM sqlite_master WHERE name = 'holds'").fetchall() == []
            )


def migrated(db: str) -> tuple[bool, bool]:
    """Whether version 5 is applied, and whether both its indexes (holds_by_user,
    open_holds_by_user) exist."""
    with rawdb.connect(db) as raw:
        applied = raw.execute("SELECT 1 FROM schema_migrations WHERE version = 5").fetchall()
        indexed = True
        for name in ("holds_by_user", "open_holds_by_user"):
            if raw.postgres:
                index = raw.execute(f"SELECT to_regclass('{name}')").fetchone()
                indexed &= index is not None and index[0] is not None
            else:
                indexed &= bool(
                    raw.execute(
                        "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?", (name,)
                    ).fetchall()
                )
    return bool(applied), indexed


def test_migration_0005_backfills_the_holds_a_replay_makes(db: str) -> None:
    """A database written before the holds table: on open, migration 0005 fills it from the
    log with exactly the rows a replay makes, in every ledger: open, captured and released
    holds, with and without an expiry (one at the latest instant tally shows), an amount
    beyond 2^53 (no float on the way), non-ASCII metadata and reasons, and a hold id used in
    two ledgers (the capture in one settles nothing in the other)."""
    engine = open_engine(db)
    try:
        huge = 2**62 + 1
        latest = limits.timestamp_us_max
        run(engine, LEDGER, "r-a", recharge("alice", huge + 100_00))
        run(engine, LEDGER, "r-b", recharge("bob", 100_00, currency="EUR"))
        big, captured_hold, released_hold = batch(
            engine,
            LEDGER,
            ("h-big", hold("alice", "big-1", huge, expires_at_us=latest)),
            (
                "h-c2",
                hold("alice", "c-2", 30_00, metadata=(("note", "café — 日本 ☃"), ("z", "ü"))),
            ),
            (
                "h-r3",
                hold(
                    "bob",
                    "r-3",
                    12_00,
                    currency="EUR",
                    expires_at_us=_now_us() + DAY_US,
                    metadata=(("motif", "réservé"),),
                ),
            ),
        )
        open_hold = run(
            engine, LEDGER, "h-o4", hold("alice", "o-4", 5_00, metadata=(("who", "Zoë 🙂"),))
        )
        captured = run(
            engine,
            LEDGER,
            "c-c2",
            capture("c-2", ("o-1", 10_00), metadata=(("recu", "n° 7 — ✓"),)),
        )
        released = run(engine, LEDGER, "x-r3", release("r-3", reason="annulé — ✓ 取消"))
        run(engine, OTHER, "r-a", recharge("alice", 100_00))
        other_c2 = run(engine, OTHER, "h-c2", hold("alice", "c-2", 40_00))
        expected = {
            LEDGER: by_hold_id(
                [
                    row_of(big),
                    row_of(captured_hold, captured),
                    row_of(released_hold, released),
                    row_of(open_hold),
                ]
            ),
            OTHER: [row_of(other_c2)],
        }
        for ledger, rows in expected.items():
            assert stored_holds(engine, ledger) == rows
    finally:
        engine.close()
        engine.store.close()

    forget_migration_0005(db)
    assert migrated(db) == (False, False)
    reopened = open_engine(db)  # migrations run on open
    try:
        assert migrated(db) == (True, True)
        for ledger, rows in expected.items():
            assert stored_holds(reopened, ledger) == rows
            assert reopened.projection_differences(ledger) == []
        (big_row,) = [row for row in stored_holds(reopened) if row.hold_id == "big-1"]
        assert (big_row.amount, big_row.expires_at_us) == (huge, latest)
        # The backfilled rows are the writer's to update, and holds_of reads them.
        settled = run(reopened, LEDGER, "x-o4", release("o-4"))
        (page,) = reopened.store.holds_of(
            LEDGER, "alice", after_seq=captured_hold.event.seq, limit=5, settled=None
        )
        assert page[0] == row_of(open_hold, settled)
        assert reopened.projection_differences(LEDGER) == []
        assert verify(reopened, LEDGER).ok
    finally:
        reopened.close()
        reopened.store.close()


def test_migration_0005_backfills_holds_whose_text_holds_a_nul(db: str) -> None:
    """A metadata value and a release's reason may hold U+0000 (canonical JSON writes it
    `\\u0000`), which PostgreSQL's jsonb refuses: the migration turns it into `\\u0001` before
    the cast (no key it reads holds a backslash). Casting the body as it was failed the
    migration, and with it the opening of any database whose log held such a hold."""
    engine = open_engine(db)
    try:
        run(engine, LEDGER, "r-a", recharge("alice", 100_00))
        placed = run(
            engine, LEDGER, "h-n1", hold("alice", "n-1", 10_00, metadata=(("note", "a\x00b"),))
        )
        released = run(engine, LEDGER, "x-n1", release("n-1", reason="nul \x00 inside"))
        expected = [row_of(placed, released)]
        assert stored_holds(engine) == expected
    finally:
        engine.close()
        engine.store.close()

    forget_migration_0005(db)
    reopened = open_engine(db)  # PostgreSQL: StoreUnavailable (unsupported Unicode escape)
    try:
        assert stored_holds(reopened) == expected
        assert reopened.projection_differences(LEDGER) == []
    finally:
        reopened.close()
        reopened.store.close()

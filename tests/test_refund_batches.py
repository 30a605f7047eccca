"""Batches that carry refunds: the orders they update, on both stores and every commit path.

A batch updates the orders that existed before it and whose `refunded` changed
(`BatchWrite.order_updates`). SQLite updates them in the batch view's trigger. PostgreSQL
updates them in the one-statement commit (the `up` CTE) or, for a batch of more than
`one_statement_events_max` events, in the long form; a statement whose snapshot missed an
order is committed once more in the long form; and a batch with refunds waits for the batch
before it to be done, so that its statement sees the orders that batch inserted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from typing import Any

import pytest

from pg import fresh_database
from tally.bootstrap import open_engine, open_store
from tally.domain import limits
from tally.domain.commands import Envelope, Expense, OrderLine, Recharge, Refund
from tally.domain.rejections import Rejected, Rejection
from tally.engine.engine import Engine
from tally.engine.ports import BatchWrite, EventRow, Head, OrderRow, Projections
from tally.engine.results import Committed
from tally.store import postgres
from tally.store.postgres import PostgresStore
from tally.verification import verify

LEDGER = "default"
ORDERS = 1_000
ORDERS_PER_EXPENSE = limits.orders_per_expense_max
WAIT_S = 60  # a bound on waits for commits that take milliseconds


def recharge(key: str, amount: int) -> Envelope:
    return Envelope(
        idempotency_key=key,
        command=Recharge(user_id="alice", amount=amount, currency="USD", gateway="paypal"),
    )


def expense(key: str, orders: dict[str, int]) -> Envelope:
    lines = tuple(OrderLine(order_id=order, amount=amount) for order, amount in orders.items())
    return Envelope(
        idempotency_key=key, command=Expense(user_id="alice", currency="USD", orders=lines)
    )


def refund(key: str, expense_id: str, order: str, amount: int) -> Envelope:
    return Envelope(
        idempotency_key=key,
        command=Refund(
            expense_id=expense_id, order_id=order, amount=amount, currency="USD", reason="returned"
        ),
    )


def order_id(i: int) -> str:
    return f"o{i}"


def paid(i: int) -> int:
    return 100 + i % 37


def first_refund(i: int) -> int:
    """What the first refund batch gives back of order i: less than it was paid."""
    return 1 + i % 50


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


def refunded_in_store(store: RecordingStore) -> dict[str, int]:
    """Every order's `refunded` as the store reads it back, one order at a time."""
    refunded = {}
    for i in range(ORDERS):
        row = store.order(LEDGER, order_id(i))
        assert row is not None, order_id(i)
        refunded[row.order_id] = row.refunded
    return refunded


def pay_every_order(engine: Engine) -> dict[str, str]:
    """One recharge, then expenses of `ORDERS_PER_EXPENSE` orders each; the expense of each
    order by its id."""
    engine.execute(LEDGER, recharge("fund", sum(paid(i) for i in range(ORDERS))))
    groups = [
        range(first, first + ORDERS_PER_EXPENSE) for first in range(0, ORDERS, ORDERS_PER_EXPENSE)
    ]
    expenses = [expense(f"e{group[0]}", {order_id(i): paid(i) for i in group}) for group in groups]
    outcomes = engine.execute_many(LEDGER, expenses)
    expense_of = {}
    for group, outcome in zip(groups, outcomes, strict=True):
        assert isinstance(outcome, Committed), outcome
        for i in group:
            expense_of[order_id(i)] = outcome.event.transaction_id
    return expense_of


def test_a_batch_of_a_thousand_refunds_updates_every_order_and_keeps_each_limit(db: str) -> None:
    """1,000 refunds of 1,000 orders in one batch (SQLite: the batch view's trigger;
    PostgreSQL: the long form), then a batch refunding some orders beyond what they were
    paid, alone or by two refunds of one order, with 100 refunds accepted (PostgreSQL: one
    statement). Exactly the refunds beyond the limit are refused, and only the others show."""
    store = RecordingStore(db)
    engine = Engine(store, currencies={"USD"})
    try:
        expense_of = pay_every_order(engine)
        first = [
            refund(f"r1-{i}", expense_of[order_id(i)], order_id(i), first_refund(i))
            for i in range(ORDERS)
        ]
        outcomes = engine.execute_many(LEDGER, first)
        assert [o for o in outcomes if not isinstance(o, Committed)] == []
        assert refunded_in_store(store) == {order_id(i): first_refund(i) for i in range(ORDERS)}

        # Every fifth order: those whose number ends in 0 ask for one more than is left; those
        # ending in 5 are refunded in full, then by one more.
        second: list[Envelope] = []
        reasons: list[Rejection | None] = []
        for i in range(0, ORDERS, 5):
            left = paid(i) - first_refund(i)
            expense_id, order = expense_of[order_id(i)], order_id(i)
            if i % 10 == 0:
                second.append(refund(f"r2-{i}", expense_id, order, left + 1))
                reasons.append(Rejection.REFUND_EXCEEDS_REFUNDABLE)
            else:
                second.append(refund(f"r2-{i}", expense_id, order, left))
                second.append(refund(f"r3-{i}", expense_id, order, 1))
                reasons += [None, Rejection.REFUND_EXCEEDS_REFUNDABLE]
        head = store.head(LEDGER)
        assert head is not None
        outcomes = engine.execute_many(LEDGER, second)
        assert [o.reason if isinstance(o, Rejected) else None for o in outcomes] == reasons

        accepted = [o.event.transaction_id for o in outcomes if isinstance(o, Committed)]
        logged = store.events(LEDGER, after_seq=head.seq, limit=len(second) + 1)
        assert [e.transaction_id for e in logged] == accepted
        assert store.head(LEDGER) == Head(head.seq + len(accepted), logged[-1].hash)
        assert refunded_in_store(store) == {
            order_id(i): paid(i) if i % 10 == 5 else first_refund(i) for i in range(ORDERS)
        }
        (wallet,) = store.account_balances(LEDGER, kind="wallet", owner="alice")
        refunded_in_full = range(5, ORDERS, 10)
        assert wallet.balance == sum(first_refund(i) for i in range(ORDERS)) + sum(
            paid(i) - first_refund(i) for i in refunded_in_full
        )
        # One batch each, each order listed once however many refunds it had in the batch.
        assert [(len(b.events), len(b.order_updates)) for b in store.batches] == [
            (1, 0),
            (ORDERS // ORDERS_PER_EXPENSE, 0),
            (ORDERS, ORDERS),
            (len(accepted), len(refunded_in_full)),
        ]
        engine.close()
        verification = verify(engine, LEDGER)
        assert verification.ok, verification
        assert verification.events == 1 + ORDERS // ORDERS_PER_EXPENSE + ORDERS + len(accepted)
    finally:
        engine.close()
        store.close()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database: for what only the PostgreSQL store does."""
    with fresh_database() as url:
        yield url


def test_a_refund_statement_that_missed_its_order_lands_once_in_the_long_form(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one statement of the refund's batch runs in full, with one order more to update
    than exist: it fails as one whose snapshot missed an order does (`_OrdersNotSeen`),
    having written nothing; the batch is then committed in the long form, exactly once."""
    statement = PostgresStore._commit_in_one_statement
    forced: list[int] = []  # the head of each batch whose statement was given a ghost order
    missed: list[int] = []  # the head of each batch whose statement missed an order

    async def missing_an_order_once(store: PostgresStore, batch: BatchWrite) -> None:
        if not batch.order_updates or forced:
            await statement(store, batch)
            return
        forced.append(batch.head.seq)
        ghost = OrderRow("o-ghost", "txn-ghost", "alice", "USD", "platform", 5, 1)
        unseen = dataclasses.replace(batch, order_updates=[*batch.order_updates, ghost])
        try:
            await statement(store, unseen)
        except postgres._OrdersNotSeen:
            missed.append(batch.head.seq)
            raise

    monkeypatch.setattr(PostgresStore, "_commit_in_one_statement", missing_an_order_once)
    engine = open_engine(postgres_url)
    try:
        funding = engine.execute(LEDGER, recharge("fund", 1_000))
        payment = engine.execute(LEDGER, expense("e1", {"o1": 500}))
        refunded = engine.execute(LEDGER, refund("r1", payment.event.transaction_id, "o1", 150))
        # Written by the long form, not replayed: the failed statement had written nothing.
        assert not refunded.replayed
        store = engine.store
        logged = store.events(LEDGER, after_seq=0, limit=10)
        assert [(e.seq, e.transaction_id) for e in logged] == [
            (1, funding.event.transaction_id),
            (2, payment.event.transaction_id),
            (3, refunded.event.transaction_id),
        ]
        assert store.head(LEDGER) == Head(3, refunded.hash)
        order = store.order(LEDGER, "o1")
        assert order is not None
        assert (order.paid, order.refunded) == (500, 150)
        assert missed == [3]  # the refund's statement did miss the ghost and fail
        engine.close()
        verification = verify(engine, LEDGER)
        assert verification.ok, verification
        assert verification.events == 3
    finally:
        engine.close()
        engine.store.close()


def synthetic_events(after: Head, count: int) -> list[EventRow]:
    """`count` events after `after` (the store checks neither their bodies nor the chain)."""
    seqs = range(after.seq + 1, after.seq + 1 + count)
    return [EventRow(s, f"txn-{s}", "expense", b"{}", s.to_bytes(32, "big")) for s in seqs]


def batch_after(
    base: Head, count: int, *, orders: list[OrderRow], order_updates: list[OrderRow]
) -> BatchWrite:
    events = synthetic_events(base, count)
    return BatchWrite(
        ledger=LEDGER,
        base=base,
        head=Head(events[-1].seq, events[-1].hash),
        events=events,
        projections=Projections(accounts=[], entries=[], orders=orders, keys=[], holds=[]),
        order_updates=order_updates,
    )


@pytest.mark.parametrize(
    "refund_events",
    [1, postgres.one_statement_events_max + 1],
    ids=["refund-in-one-statement", "refund-in-the-long-form"],
)
def test_a_refund_batch_right_behind_the_batch_that_inserts_its_order_sees_the_order(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, refund_events: int
) -> None:
    """Batch N, in the long form, inserts an order; N+1 refunds it, started while N still
    commits (as the writer does with two commits side by side). A one-statement N+1 waits
    for N to be done: its snapshot, taken when it starts, then holds the order (having
    waited only for N's compare-and-set, it would miss the order and go again in the long
    form). A long-form N+1 updates after its compare-and-set, which waits for N's commit."""
    # N holds its COMMIT, after its compare-and-set, until the test has seen it still in
    # flight with N+1 started (whatever the threads' timing), then sleeps: a one-statement
    # N+1 that waited only for N's compare-and-set would start its statement in this window,
    # its snapshot without the order. (N updates no order; a long-form N+1 updates one and
    # does not wait.)
    update = postgres._update
    seen_in_flight = threading.Event()

    async def held_when_none(db: Any, sql: str, ledger: str, rows: Sequence[Any]) -> None:
        if not rows:
            deadline = time.monotonic() + WAIT_S
            while not seen_in_flight.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.2)
        await update(db, sql, ledger, rows)

    monkeypatch.setattr(postgres, "_update", held_when_none)
    statement = PostgresStore._commit_in_one_statement
    missed: list[int] = []  # the head of each batch whose statement missed an order

    async def noting_misses(store: PostgresStore, batch: BatchWrite) -> None:
        try:
            await statement(store, batch)
        except postgres._OrdersNotSeen:
            missed.append(batch.head.seq)
            raise

    monkeypatch.setattr(PostgresStore, "_commit_in_one_statement", noting_misses)
    store = PostgresStore(postgres_url)
    try:
        store.ensure_ledger(LEDGER)
        genesis = store.head(LEDGER)
        assert genesis is not None
        order = OrderRow("o1", "txn-1", "alice", "USD", "platform", 500, 0)
        inserting = batch_after(
            genesis, postgres.one_statement_events_max + 1, orders=[order], order_updates=[]
        )
        refunding = batch_after(
            inserting.head,
            refund_events,
            orders=[],
            order_updates=[order._replace(refunded=120)],
        )
        inserted = store.commit_soon(inserting)
        refunded = store.commit_soon(refunding)
        assert not inserted.done()
        seen_in_flight.set()
        inserted.result(WAIT_S)
        refunded.result(WAIT_S)
        assert missed == []
        assert store.order(LEDGER, "o1") == order._replace(refunded=120)
        assert store.head(LEDGER) == refunding.head
        logged = store.events(LEDGER, after_seq=0, limit=1_000)
        assert [e.seq for e in logged] == list(range(1, refunding.head.seq + 1))
    finally:
        seen_in_flight.set()
        store.close()

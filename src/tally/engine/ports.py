"""What the engine needs from a store, and the rows it hands over.

Rows are plain tuples in the column order of the tables in store/migrations, so a store
writes a whole batch with one multi-row statement per table.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from tally.domain.events import Event
from tally.domain.state import Entry as EntryRow
from tally.domain.state import HoldState as HoldRow
from tally.domain.state import OrderState as OrderRow

__all__ = [
    "AccountRow",
    "BatchWrite",
    "EntryRow",
    "EventRow",
    "Head",
    "HeadMoved",
    "HoldRow",
    "KeyRow",
    "OrderRow",
    "Projections",
    "Store",
    "StoreUnavailable",
]


class EventRow(NamedTuple):
    seq: int
    transaction_id: str
    event_type: str
    body: bytes  # canonical v1 bytes
    hash: bytes  # chain hash after this event


class AccountRow(NamedTuple):
    account: str
    balance: int
    last_seq: int


class AccountTotals(NamedTuple):
    """One account's money over a report's period (`Store.report`): its balance before the
    period, and what left it (`debits`, a positive sum) and came in (`credits`) within."""

    account: str
    kind: str
    owner: str
    currency: str
    opening: int
    debits: int
    credits: int


class Movement(NamedTuple):
    """What one type of event moved on one kind of account in one currency within a
    report's period: its debits and credits, and how many such events have their first
    posting on that kind (so the events of a type are the sum over its kinds: counted
    without a DISTINCT, which cost SQLite half the query)."""

    event_type: str
    kind: str
    currency: str
    events: int
    debits: int
    credits: int


class KeyRow(NamedTuple):
    idempotency_key: str
    command_digest: str
    seq: int


class Head(NamedTuple):
    seq: int
    hash: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Projections:
    """Every projection row of one ledger; what replay writes and verify compares."""

    accounts: list[AccountRow]
    entries: list[EntryRow]
    orders: list[OrderRow]
    keys: list[KeyRow]
    holds: list[HoldRow]


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchWrite:
    """One batch: the head moves from `base` to `head` with these rows, or nothing does."""

    ledger: str
    base: Head
    head: Head
    events: list[EventRow]
    # As of `head`: the accounts, orders and holds the batch created, as rows to insert (an
    # account's balance is its last entry's `balance_after`, so the store keeps only the
    # account itself), and in `order_updates` the orders that existed before it and changed
    # (refunded amounts); in `hold_updates` the holds that existed before it and were settled.
    projections: Projections
    order_updates: list[OrderRow] = field(default_factory=list)
    hold_updates: list[HoldRow] = field(default_factory=list)


class HeadMoved(Exception):
    """Another writer moved the ledger's head; nothing of the batch was written."""


class StoreUnavailable(Exception):
    """The database cannot be reached right now (down, restarting, network). Retry later."""


class Store(Protocol):
    """Durable storage of events and projections. Implementations: store/sqlite.py."""

    # How many `commit` calls may run side by side. Above 1, a batch's commit may start
    # before the previous batch's has ended; it must then land only after it, and not at
    # all if the previous one does not (the compare-and-set of the head gives both).
    concurrent_commits: int

    def ensure_ledger(self, ledger: str) -> None: ...

    def ledgers(self) -> list[str]: ...

    def head(self, ledger: str) -> Head | None: ...

    def events(self, ledger: str, *, after_seq: int, limit: int) -> list[EventRow]: ...

    def commit(self, batch: BatchWrite) -> None:
        """Write the batch in one transaction, moving the head by compare-and-set.

        Raises `HeadMoved` (having written nothing) when the head is not `batch.base`.
        """
        ...

    def commit_soon(self, batch: BatchWrite) -> Future[None] | None:
        """Start `commit(batch)` without a thread of the caller's and return its future, or
        return None: the writer then calls `commit` on a committer thread of its own."""
        ...

    def replace_projections(self, ledger: str, head: Head, parts: Iterable[Projections]) -> None:
        """Drop every projection of `ledger` and write `parts` in their place (replay), in
        one transaction that first checks that the head is `head`; an exception from `parts`
        rolls it back."""
        ...

    def projections(self, ledger: str) -> Projections: ...

    def highest_projected_seq(self, ledger: str) -> int:
        """The highest seq any projection row of `ledger` refers to (0: none)."""
        ...

    def entries_of(self, ledger: str, event: Event) -> list[EntryRow]:
        """The entries `event` produced, in posting order: sought by the accounts its
        postings name (entries are keyed by account first), one seek each."""
        ...

    def event_by_transaction(self, ledger: str, transaction_id: str) -> EventRow | None: ...

    def account_balances(self, ledger: str, *, kind: str, owner: str) -> list[AccountRow]: ...

    def statement(
        self, ledger: str, account: str, *, after: tuple[int, int], limit: int
    ) -> list[tuple[EntryRow, bytes]]:
        """Entries of `account` after `(seq, index)`, oldest first, each with its event body."""
        ...

    def order(self, ledger: str, order_id: str) -> OrderRow | None: ...

    def order_events(self, ledger: str, order_id: str) -> list[EventRow]:
        """The events of an order, in seq order: its expense, then its refunds."""
        ...

    def holds_of(
        self, ledger: str, user_id: str, *, after_seq: int, limit: int, settled: bool | None
    ) -> list[tuple[HoldRow, bytes, bytes | None]]:
        """The user's holds placed after `after_seq`, in the order they were placed, each
        with its placement's event body and its settlement's (None while it is open); only
        the open ones (`settled` False) or only the settled ones (True), or all (None)."""
        ...

    def report(
        self, ledger: str, *, after_seq: int, upto_seq: int
    ) -> tuple[list[AccountTotals], list[Movement]]:
        """Every account with an entry at or before `upto_seq`, its balance at `after_seq`
        and its debits and credits after it (by currency, kind and owner); and the period's
        movements by event type, account kind and currency (by event type): aggregated by
        the database, in one read transaction."""
        ...

    def server_warnings(self) -> list[str]:
        """The database's settings that docs advise against, for a server to log at start."""
        ...

    def close(self) -> None: ...


class LoopReads(Protocol):
    """What a store whose driver is asyncio-native (PostgreSQL's asyncpg) offers an HTTP
    server: the reads its GET routes make (statement pages, balances, transactions, orders,
    the log), done on the server's own event loop, on connections of that loop's, with no
    thread between the request and the database. Each `…_on_loop` method reads the very rows
    of the `Store` method of its name, which go through the store's thread, two hand-offs
    away.

    The loop's owner opens them (`open_loop_reads`, at a server's start) and closes them
    (`close_loop_reads`, at its shutdown, before the store closes); a read never opens them,
    so a loop that ends without closing them cannot have any."""

    async def open_loop_reads(self) -> bool:
        """Open the running loop's connections; False (logged) when the database refused."""
        ...

    def reads_on_this_loop(self) -> bool:
        """Whether the running loop's connections are open."""
        ...

    async def statement_on_loop(
        self, ledger: str, account: str, *, after: tuple[int, int], limit: int
    ) -> list[tuple[EntryRow, bytes]]:
        """`Store.statement`, on the running loop (whose connections are open)."""
        ...

    async def account_balances_on_loop(
        self, ledger: str, *, kind: str, owner: str
    ) -> list[AccountRow]:
        """`Store.account_balances`, on the running loop (whose connections are open)."""
        ...

    async def events_on_loop(self, ledger: str, *, after_seq: int, limit: int) -> list[EventRow]:
        """`Store.events`, on the running loop (whose connections are open)."""
        ...

    async def event_by_transaction_on_loop(
        self, ledger: str, transaction_id: str
    ) -> EventRow | None:
        """`Store.event_by_transaction`, on the running loop."""
        ...

    async def entries_of_on_loop(self, ledger: str, event: Event) -> list[EntryRow]:
        """`Store.entries_of`, on the running loop."""
        ...

    async def order_on_loop(self, ledger: str, order_id: str) -> OrderRow | None:
        """`Store.order`, on the running loop."""
        ...

    async def order_events_on_loop(self, ledger: str, order_id: str) -> list[EventRow]:
        """`Store.order_events`, on the running loop."""
        ...

    async def close_loop_reads(self) -> None:
        """Close the running loop's connections (none open: nothing to do)."""
        ...

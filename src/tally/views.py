"""The seed's shapes: transactions and statement entries as users and clients see them.

Amounts are decimal strings, signed from the wallet's point of view (a recharge `"200.00"`,
an expense line `"-50.00"`); `balance_after` is the wallet's balance right after the line.

The shapes are msgspec Structs, built directly rather than as dicts first: the HTTP API
serves them as they are (`tally.http.models` re-exports them), the CLI prints them as plain
dicts (`msgspec.to_builtins`). Rendering is on every write's answer and on statement pages of
up to a thousand lines, so it is kept cheap: a statement line decodes only the fields it shows
from its event's canonical bytes, and the calendar part of a timestamp is formatted once per
second.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import msgspec

from tally.audit.canonical import FORMAT_VERSION, CanonicalFormError, decode_event
from tally.domain import accounts
from tally.domain.events import (
    Event,
    HoldCaptured,
    HoldPlaced,
    HoldReleased,
    RefundIssued,
    Transferred,
    WalletRecharged,
)
from tally.domain.rejections import InvariantViolated
from tally.engine.ports import AccountRow, EntryRow, EventRow, OrderRow, Store
from tally.engine.results import Committed
from tally.money import format_amount

statement_page_entries_max = 1000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# -- the shapes ------------------------------------------------------------------------
# Field order is the JSON's key order. gc=False: these never hold a reference cycle, and a
# page of them is cheaper to build without the garbage collector tracking each one.
class RefundOf(msgspec.Struct, kw_only=True, gc=False, omit_defaults=True):
    expense_id: str
    order_id: str
    refund_request_id: str | None = None  # left out when the refund named no request


# `hold_id` is left out of every line and transaction but a hold's, capture's or release's:
# the seed's shapes stay as they were for every other event.
class Entry(msgspec.Struct, kw_only=True, gc=False, omit_defaults=True):
    transaction_id: str
    seq: int
    timestamp: str
    user_id: str
    event_type: str
    amount: str
    currency: str
    balance_after: str
    reference_order_ids: list[str]
    metadata: dict[str, str]
    refund_of: RefundOf | None
    hold_id: str | None = None


class Leg(msgspec.Struct, kw_only=True, gc=False):
    """One posting of a transfer, on whichever account: shown whole on its transaction, as a
    transfer's legs are the client's own (every other event's legs follow from its type)."""

    account: str
    amount: str
    balance_after: str


# `postings` is left out of every transaction but a transfer's, as `hold_id` is.
class Transaction(msgspec.Struct, kw_only=True, gc=False, omit_defaults=True):
    transaction_id: str
    ledger: str
    seq: int
    timestamp: str
    user_id: str
    event_type: str
    amount: str
    currency: str
    balance_after: str
    reference_order_ids: list[str]
    metadata: dict[str, str]
    refund_of: RefundOf | None
    idempotency_key: str
    actor: str
    entries: list[Entry]
    hold_id: str | None = None
    postings: list[Leg] | None = None


@lru_cache(maxsize=1024)
def _second(seconds: int) -> str:
    # isoformat pads the year to four digits, strftime's %Y does not below 1000 (a `to`
    # bound in year 500 compared as "500-…" would sort after every real line)
    return (_EPOCH + timedelta(seconds=seconds)).isoformat(timespec="seconds")[:19]


def timestamp(timestamp_us: int) -> str:
    """RFC 3339 in UTC with microseconds: 2026-11-26T01:21:16.123456Z."""
    # Events of one batch share their second, so the calendar part is formatted once; the
    # microseconds are the last six digits of the number (cheaper than formatting them).
    if timestamp_us < 1_000_000:  # the first second of 1970, or before it (a `to` bound)
        seconds, micros = divmod(timestamp_us, 1_000_000)
        return f"{_second(seconds)}.{micros:06d}Z"
    return f"{_second(timestamp_us // 1_000_000)}.{str(timestamp_us)[-6:]}Z"


# What a timestamp can show: years 1 to 9999 in UTC (a zone can push a moment past either)
_EARLIEST = datetime(1, 1, 1, tzinfo=UTC)
_LATEST = datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)


def instant_us(text: str) -> int:
    """Microseconds since the Unix epoch of an RFC 3339 timestamp with a zone (a `from` or
    `to` bound); ValueError, saying what is expected, for anything else."""
    try:  # `fromisoformat` stops reading at a NUL: "…Z\0anything" would pass
        moment = None if "\0" in text else datetime.fromisoformat(text)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise ValueError("an RFC 3339 timestamp with a zone, e.g. 2026-01-31T00:00:00Z")
    if not _EARLIEST <= moment <= _LATEST:
        raise ValueError("must fall in years 1 to 9999 in UTC")
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


# -- transactions, from events in memory ------------------------------------------------
def _metadata(event: Event) -> dict[str, str]:
    metadata = dict(event.metadata)
    if isinstance(event, WalletRecharged):
        metadata.setdefault("payment_gateway", event.gateway)
        if event.gateway_reference is not None:  # the business key (`decide` reserves it)
            metadata["gateway_reference"] = event.gateway_reference
    return metadata


_HOLD_EVENTS = (HoldPlaced, HoldCaptured, HoldReleased)


def _refund_of(event: Event) -> RefundOf | None:
    if isinstance(event, RefundIssued):
        return RefundOf(
            expense_id=event.expense_id,
            order_id=event.order_id,
            refund_request_id=event.refund_request_id,
        )
    return None


def transaction_of(ledger: str, event: Event, entries: Sequence[EntryRow]) -> Transaction:
    """A written transaction, with one wallet line per posting on the user's wallet."""
    wallet = accounts.wallet(event.user_id, event.currency)
    currency = event.currency
    # Each line's two amounts formatted once: the transaction shows the last line's balance,
    # and a one-line transaction (most are) its line's amount.
    lines = [
        (entry, format_amount(entry.amount, currency), format_amount(entry.balance_after, currency))
        for entry in entries
        if entry.account == wallet
    ]
    amount = (
        lines[0][1]
        if len(lines) == 1
        else format_amount(sum(entry.amount for entry, _, _ in lines), currency)
    )
    stamp = timestamp(event.timestamp_us)
    metadata = _metadata(event)
    refund_of = _refund_of(event)
    order_ids = list(dict.fromkeys(p.order_id for p in event.postings if p.order_id is not None))
    shown = Transaction(
        transaction_id=event.transaction_id,
        ledger=ledger,
        seq=event.seq,
        timestamp=stamp,
        user_id=event.user_id,
        event_type=event.event_type,
        amount=amount,
        currency=currency,
        balance_after=lines[-1][2],
        reference_order_ids=order_ids,
        metadata=metadata,
        refund_of=refund_of,
        idempotency_key=event.idempotency_key,
        actor=event.actor,
        entries=[
            Entry(
                transaction_id=event.transaction_id,
                seq=event.seq,
                timestamp=stamp,
                user_id=event.user_id,
                event_type=event.event_type,
                amount=line_amount,
                currency=currency,
                balance_after=balance_after,
                reference_order_ids=[] if entry.order_id is None else [entry.order_id],
                metadata=dict(metadata),  # a dict per line, as if each were built alone
                refund_of=refund_of,
            )
            for entry, line_amount, balance_after in lines
        ],
    )
    if type(event) in _HOLD_EVENTS:  # set after: a `hold_id=None` argument cost 0.8 µs
        hold_id: str = event.hold_id  # type: ignore[attr-defined]
        shown.hold_id = hold_id
        for line in shown.entries:
            line.hold_id = hold_id
    elif type(event) is Transferred:
        shown.postings = [
            Leg(
                account=entry.account,
                amount=format_amount(entry.amount, currency),
                balance_after=format_amount(entry.balance_after, currency),
            )
            for entry in entries
        ]
    return shown


def committed_transaction(committed: Committed) -> Transaction:
    """The answer to a write."""
    return transaction_of(committed.ledger, committed.event, committed.entries)


def committed_view(committed: Committed) -> dict[str, Any]:
    """The answer to a write, as plain dicts and lists (for JSON printers)."""
    view: dict[str, Any] = msgspec.to_builtins(committed_transaction(committed))
    return view


def transaction(store: Store, ledger: str, transaction_id: str) -> Transaction | None:
    row = store.event_by_transaction(ledger, transaction_id)
    if row is None:
        return None
    _, event = decode_event(row.body)
    return stored_transaction_of(ledger, event, store.entries_of(ledger, event))


def stored_transaction_of(ledger: str, event: Event, entries: Sequence[EntryRow]) -> Transaction:
    """`transaction_of` for a transaction read back: its event from the log, its lines from
    the entries projection, which must be the event's postings, one line each, in order,
    each with an integer balance_after.

    A line missing, out of order, or holding another amount or order (tampering; on SQLite,
    whose columns take any type, a seq, index or amount of another type is one of these:
    the lookup misses it, it sorts last, or it equals no integer) is a broken ledger, never
    a transaction shown with a wrong amount or balance. A write's answer needs no check:
    its lines are the ones just made from its postings."""
    expected = [
        (posting.account, event.seq, index, posting.amount, posting.order_id)
        for index, posting in enumerate(event.postings)
    ]
    found = [(e.account, e.seq, e.posting_index, e.amount, e.order_id) for e in entries]
    if found != expected or any(type(entry.balance_after) is not int for entry in entries):
        raise InvariantViolated(
            f"{ledger}: the entries of seq {event.seq} are not its event's postings (a line "
            "missing or moved, another amount or order, or a value of another type)"
        )
    return transaction_of(ledger, event, entries)


def find_transaction(store: Store, ledger: str, transaction_id: str) -> dict[str, Any] | None:
    """`transaction`, as plain dicts and lists (for JSON printers)."""
    found = transaction(store, ledger, transaction_id)
    if found is None:
        return None
    view: dict[str, Any] = msgspec.to_builtins(found)
    return view


# -- statements, from stored lines and their events' canonical bytes --------------------
class _Shown(msgspec.Struct, gc=False):
    """What a statement line shows of a canonical v1 body (docs/log-format.md).

    Decoding into this skips every other field (postings, digests, orders) without building
    it: several times cheaper than decoding whole events, which tally.audit.canonical does
    (and stays the one place that encodes them). One flat shape rather than a union tagged by
    `type`, which is not the first key of the canonical form: that is another third cheaper.
    """

    type: str
    v: int
    seq: int
    transaction_id: str
    timestamp_us: int
    user_id: str
    currency: str
    metadata: dict[str, str]
    gateway: str | None = None  # recharges
    gateway_reference: str | None = None  # recharges, when given
    expense_id: str | None = None  # refunds
    order_id: str | None = None  # refunds
    refund_request_id: str | None = None  # refunds, when given
    hold_id: str | None = None  # holds, captures and releases


_decode_shown = msgspec.json.Decoder(_Shown).decode
_EVENT_TYPES = frozenset(
    ("recharge", "expense", "refund", "adjustment", "hold", "capture", "release", "transfer")
)
_HOLD_TYPES = frozenset(("hold", "capture", "release"))


def _shown(body: bytes) -> _Shown:
    try:
        shown = _decode_shown(body)
    except msgspec.DecodeError as error:  # msgspec.ValidationError too
        raise CanonicalFormError(f"not a v1 event: {error}") from error
    if shown.v != FORMAT_VERSION:
        raise CanonicalFormError(f"unsupported format version {shown.v!r}")
    if shown.type not in _EVENT_TYPES:
        raise CanonicalFormError(f"not a v1 event: unknown type {shown.type!r}")
    return shown


def _statement_line(line: EntryRow, body: bytes) -> Entry:
    shown = _shown(body)
    # Decoded afresh, so ours to extend; canonical bytes keep its keys sorted, as the
    # metadata of an event in memory is.
    metadata = shown.metadata
    refund_of = None
    if shown.type == "recharge":
        if shown.gateway is None:
            raise CanonicalFormError("not a v1 event: a recharge without its gateway")
        metadata.setdefault("payment_gateway", shown.gateway)
        if shown.gateway_reference is not None:
            metadata["gateway_reference"] = shown.gateway_reference
    elif shown.type == "refund":
        if shown.expense_id is None or shown.order_id is None:
            raise CanonicalFormError("not a v1 event: a refund without its expense and order")
        refund_of = RefundOf(
            expense_id=shown.expense_id,
            order_id=shown.order_id,
            refund_request_id=shown.refund_request_id,
        )
    elif shown.type in _HOLD_TYPES and shown.hold_id is None:
        raise CanonicalFormError(f"not a v1 event: a {shown.type} without its hold_id")
    currency = shown.currency
    # A transfer's line is the user's whose wallet it is on (one transfer may pay several):
    # every other event touches its own user's wallet alone.
    user_id = line.account.split(":")[1] if shown.type == "transfer" else shown.user_id
    return Entry(
        transaction_id=shown.transaction_id,
        seq=shown.seq,
        timestamp=timestamp(shown.timestamp_us),
        user_id=user_id,
        event_type=shown.type,
        amount=format_amount(line.amount, currency),
        currency=currency,
        balance_after=format_amount(line.balance_after, currency),
        reference_order_ids=[] if line.order_id is None else [line.order_id],
        metadata=metadata,
        refund_of=refund_of,
        hold_id=shown.hold_id,
    )


def statement_page(
    store: Store, ledger: str, user_id: str, currency: str, *, after: tuple[int, int], limit: int
) -> tuple[list[Entry], tuple[int, int] | None]:
    """Up to `limit` statement lines after the cursor `(seq, index)`, and the next cursor."""
    limit = max(1, min(limit, statement_page_entries_max))
    rows = store.statement(ledger, accounts.wallet(user_id, currency), after=after, limit=limit)
    return statement_lines(rows, limit)


def statement_lines(
    rows: Sequence[tuple[EntryRow, bytes]], limit: int
) -> tuple[list[Entry], tuple[int, int] | None]:
    """The lines of a page read with `limit`, and the next cursor (None: the last page)."""
    lines = [_statement_line(line, body) for line, body in rows]
    next_cursor = (rows[-1][0].seq, rows[-1][0].posting_index) if len(rows) == limit else None
    return lines, next_cursor


def full_statement(store: Store, ledger: str, user_id: str, currency: str) -> list[dict[str, Any]]:
    """Every statement line, as plain dicts (for JSON printers and tables)."""
    lines: list[Entry] = []
    cursor: tuple[int, int] | None = (0, -1)
    while cursor is not None:
        page, cursor = statement_page(
            store, ledger, user_id, currency, after=cursor, limit=statement_page_entries_max
        )
        lines.extend(page)
    builtins: list[dict[str, Any]] = msgspec.to_builtins(lines)
    return builtins


# -- balances and orders ----------------------------------------------------------------
def balances(store: Store, ledger: str, user_id: str) -> dict[str, Any]:
    rows = store.account_balances(ledger, kind=accounts.WALLET, owner=user_id)
    return balances_of(user_id, rows, ledger=ledger)


def balances_of(user_id: str, rows: Sequence[AccountRow], *, ledger: str) -> dict[str, Any]:
    """A user's balances from their wallets' rows (`Store.account_balances`).

    A row that holds no text name or no integer balance is a broken ledger, never shown:
    on SQLite, whose columns take any type, a tampered projection (an account named by a
    BLOB, a last entry whose balance_after, seq or index is text, a real or a BLOB:
    `Store.account_balances` gives no balance then); on PostgreSQL, which types its
    columns, a wallet without entries."""
    balances = []
    for account, balance, _ in rows:
        if type(account) is not str or type(balance) is not int:
            raise InvariantViolated(
                f"{ledger}: wallet {account!r} of {user_id} has no integer balance: its last "
                "entry is missing or holds a value of another type than its column's"
            )
        currency = accounts.split(account)[2]
        balances.append({"currency": currency, "balance": format_amount(balance, currency)})
    return {"user_id": user_id, "balances": balances}


_ORDER_TYPES = (str, str, str, str, str, int, int)  # of OrderRow's fields, in order


def order_view(store: Store, ledger: str, order: OrderRow) -> dict[str, Any]:
    """What an order was paid and refunded, and the transactions that did it."""
    return order_view_of(order, store.order_events(ledger, order.order_id))


def order_view_of(order: OrderRow, events: Sequence[EventRow]) -> dict[str, Any]:
    """`order_view` from the order's row and its events (its expense, then its refunds).

    `Store.order_events` catches a refund's event missing from the log; an expense's
    missing event shows here: the first event is not the order's expense. A row holding a
    value of another type than its column's (SQLite's columns take any: tampering) is a
    broken ledger too, never shown: a real `paid` would read "5000..5", a BLOB `user_id`
    as base64."""
    if any(type(value) is not kind for value, kind in zip(order, _ORDER_TYPES, strict=True)):
        columns = [
            name
            for name, value, kind in zip(OrderRow._fields, order, _ORDER_TYPES, strict=True)
            if type(value) is not kind
        ]
        raise InvariantViolated(
            f"order {order.order_id!r}: its {', '.join(columns)} holds a value of another type "
            "than its column's"
        )
    if not events or events[0].transaction_id != order.expense_id:
        raise InvariantViolated(f"order {order.order_id}: its expense is not in the log")
    transactions = [
        {"transaction_id": row.transaction_id, "event_type": row.event_type, "seq": row.seq}
        for row in events
    ]
    return {
        "order_id": order.order_id,
        "expense_id": order.expense_id,
        "user_id": order.user_id,
        "merchant_id": order.merchant_id,
        "currency": order.currency,
        "paid": format_amount(order.paid, order.currency),
        "refunded": format_amount(order.refunded, order.currency),
        "refundable": format_amount(order.paid - order.refunded, order.currency),
        "transactions": transactions,
    }


# -- holds ------------------------------------------------------------------------------
# A hold is its own account, `hold:<hold_id>:CUR`: the accounts projection finds it by kind
# and owner, and its lines (at most two: placed, then captured or released) lead to the
# events that say the rest. No projection of its own to keep in step.
def hold_view(store: Store, ledger: str, hold_id: str, now_us: int) -> dict[str, Any] | None:
    """A hold as its user's platform sees it, or None when the ledger has no such hold."""
    rows = store.account_balances(ledger, kind=accounts.HOLD, owner=hold_id)
    if not rows:
        return None
    lines = store.statement(ledger, hold_account(ledger, hold_id, rows), after=(0, -1), limit=3)
    return hold_view_of(ledger, hold_id, lines, now_us=now_us)


def hold_account(ledger: str, hold_id: str, rows: Sequence[AccountRow]) -> str:
    """The one account of a hold, from its rows of the accounts projection."""
    if len(rows) != 1 or type(rows[0].account) is not str:
        raise InvariantViolated(f"{ledger}: hold {hold_id} has {len(rows)} accounts, not one")
    return rows[0].account


def hold_view_of(
    ledger: str, hold_id: str, lines: Sequence[tuple[EntryRow, bytes]], *, now_us: int
) -> dict[str, Any]:
    """`hold_view` from the hold account's lines and their events' canonical bytes."""
    return _hold_of_events(ledger, hold_id, [body for _, body in lines], now_us=now_us)


holds_page_max = 100  # holds a page of `user_holds`: each decodes one or two events


def user_holds(
    store: Store,
    ledger: str,
    user_id: str,
    *,
    after_seq: int,
    limit: int,
    settled: bool | None,
    now_us: int,
) -> dict[str, Any]:
    """A page of the user's holds, in the order they were placed (after the placement at
    `after_seq`): only the open ones (`settled` False: their money is still held, expired
    or not), only the settled ones (True), or all (None). `next_after_seq` is where the
    next page starts, None on the last."""
    rows = store.holds_of(ledger, user_id, after_seq=after_seq, limit=limit, settled=settled)
    holds = []
    for row, placed, settlement in rows:
        listed = (placed,) if row.settled_by is None else (placed, settlement)
        bodies = [body for body in listed if type(body) is bytes]
        if len(bodies) != len(listed):  # a row whose events are gone: only tampering
            raise InvariantViolated(f"{ledger}: hold {row.hold_id!r} has lost its events")
        view = _hold_of_events(ledger, row.hold_id, bodies, now_us=now_us)
        if view["user_id"] != user_id or row.user_id != user_id:
            raise InvariantViolated(f"{ledger}: hold {row.hold_id!r} is not {user_id}'s")
        holds.append(view)
    next_after_seq = rows[-1][0].seq if len(rows) == limit else None
    return {"user_id": user_id, "holds": holds, "next_after_seq": next_after_seq}


def _hold_of_events(
    ledger: str, hold_id: str, bodies: Sequence[bytes], *, now_us: int
) -> dict[str, Any]:
    """A hold's view from its events' canonical bytes: its placement, then its settlement
    once it has one."""
    events = [decode_event(body)[1] for body in bodies]
    placed = events[0] if events else None
    settled = events[1:]
    if (
        not isinstance(placed, HoldPlaced)
        or placed.hold_id != hold_id
        or len(settled) > 1
        or any(
            not isinstance(event, HoldCaptured | HoldReleased) or event.hold_id != hold_id
            for event in settled
        )
    ):
        raise InvariantViolated(f"{ledger}: the lines of hold {hold_id} are not its events")
    currency = placed.currency
    captured = 0
    orders: list[str] = []
    status = "open"
    if settled:
        end = settled[0]
        status = "released"
        if isinstance(end, HoldCaptured):
            status = "captured"
            captured = sum(line.amount for line in end.orders)
            orders = [line.order_id for line in end.orders]
    elif placed.expires_at_us is not None and now_us >= placed.expires_at_us:
        status = "expired"
    return {
        "hold_id": hold_id,
        "user_id": placed.user_id,
        "currency": currency,
        "amount": format_amount(placed.amount, currency),
        "status": status,
        "expires_at": None if placed.expires_at_us is None else timestamp(placed.expires_at_us),
        "captured": format_amount(captured, currency),
        "released": format_amount(placed.amount - captured if settled else 0, currency),
        "reference_order_ids": orders,
        "metadata": dict(placed.metadata),
        "transactions": [
            {
                "transaction_id": event.transaction_id,
                "event_type": event.event_type,
                "seq": event.seq,
                "timestamp": timestamp(event.timestamp_us),
            }
            for event in events
        ],
    }

"""The seed's shapes: transactions and statement entries as users and clients see them.

Amounts are decimal strings, signed from the wallet's point of view (a recharge `"200.00"`,
an expense line `"-50.00"`); `balance_after` is the wallet's balance right after the line.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from tally.audit.canonical import decode_event
from tally.domain import accounts
from tally.domain.events import Event, RefundIssued, WalletRecharged
from tally.domain.state import Entry
from tally.engine.ports import OrderRow, Store
from tally.engine.results import Committed
from tally.money import format_amount

statement_page_entries_max = 1000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@lru_cache(maxsize=1024)
def _second(seconds: int) -> str:
    return (_EPOCH + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S")


def timestamp(timestamp_us: int) -> str:
    """RFC 3339 in UTC with microseconds: 2026-11-26T01:21:16.123456Z."""
    # Events of one batch share their second, so the calendar part is formatted once.
    seconds, micros = divmod(timestamp_us, 1_000_000)
    return f"{_second(seconds)}.{micros:06d}Z"


def _metadata(event: Event) -> dict[str, str]:
    metadata = dict(event.metadata)
    if isinstance(event, WalletRecharged):
        metadata.setdefault("payment_gateway", event.gateway)
    return metadata


def _refund_of(event: Event) -> dict[str, str] | None:
    if isinstance(event, RefundIssued):
        return {"expense_id": event.expense_id, "order_id": event.order_id}
    return None


def entry_view(event: Event, entry: Entry) -> dict[str, Any]:
    """One statement line."""
    return {
        "transaction_id": event.transaction_id,
        "seq": event.seq,
        "timestamp": timestamp(event.timestamp_us),
        "user_id": event.user_id,
        "event_type": event.event_type,
        "amount": format_amount(entry.amount, event.currency),
        "currency": event.currency,
        "balance_after": format_amount(entry.balance_after, event.currency),
        "reference_order_ids": [] if entry.order_id is None else [entry.order_id],
        "metadata": _metadata(event),
        "refund_of": _refund_of(event),
    }


def transaction_view(
    ledger: str, event: Event, entries: tuple[Entry, ...] | list[Entry]
) -> dict[str, Any]:
    """A written transaction, with one wallet line per posting on the user's wallet."""
    wallet = accounts.wallet(event.user_id, event.currency)
    lines = [entry for entry in entries if entry.account == wallet]
    amount = sum(entry.amount for entry in lines)
    order_ids = list(dict.fromkeys(p.order_id for p in event.postings if p.order_id is not None))
    return {
        "transaction_id": event.transaction_id,
        "ledger": ledger,
        "seq": event.seq,
        "timestamp": timestamp(event.timestamp_us),
        "user_id": event.user_id,
        "event_type": event.event_type,
        "amount": format_amount(amount, event.currency),
        "currency": event.currency,
        "balance_after": format_amount(lines[-1].balance_after, event.currency),
        "reference_order_ids": order_ids,
        "metadata": _metadata(event),
        "refund_of": _refund_of(event),
        "idempotency_key": event.idempotency_key,
        "actor": event.actor,
        "entries": [entry_view(event, entry) for entry in lines],
    }


def committed_view(committed: Committed) -> dict[str, Any]:
    return transaction_view(committed.ledger, committed.event, committed.entries)


def find_transaction(store: Store, ledger: str, transaction_id: str) -> dict[str, Any] | None:
    row = store.event_by_transaction(ledger, transaction_id)
    if row is None:
        return None
    _, event = decode_event(row.body)
    return transaction_view(ledger, event, store.entries_of(ledger, row.seq))


def balances(store: Store, ledger: str, user_id: str) -> dict[str, Any]:
    rows = store.account_balances(ledger, kind=accounts.WALLET, owner=user_id)
    return {
        "user_id": user_id,
        "balances": [
            {
                "currency": accounts.split(row.account)[2],
                "balance": format_amount(row.balance, accounts.split(row.account)[2]),
            }
            for row in rows
        ],
    }


def statement_page(
    store: Store, ledger: str, user_id: str, currency: str, *, after: tuple[int, int], limit: int
) -> tuple[list[dict[str, Any]], tuple[int, int] | None]:
    """Up to `limit` statement lines after the cursor `(seq, index)`, and the next cursor."""
    limit = max(1, min(limit, statement_page_entries_max))
    rows = store.statement(ledger, accounts.wallet(user_id, currency), after=after, limit=limit)
    lines = []
    for entry, body in rows:
        _, event = decode_event(body)
        lines.append(entry_view(event, entry))
    next_cursor = (rows[-1][0].seq, rows[-1][0].posting_index) if len(rows) == limit else None
    return lines, next_cursor


def full_statement(store: Store, ledger: str, user_id: str, currency: str) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    cursor: tuple[int, int] | None = (0, -1)
    while cursor is not None:
        page, cursor = statement_page(
            store, ledger, user_id, currency, after=cursor, limit=statement_page_entries_max
        )
        lines.extend(page)
    return lines


def order_view(store: Store, ledger: str, order: OrderRow) -> dict[str, Any]:
    transactions = []
    for seq in store.order_event_seqs(ledger, order.order_id):
        rows = store.events(ledger, after_seq=seq - 1, limit=1)
        transactions.append(
            {"transaction_id": rows[0].transaction_id, "event_type": rows[0].event_type, "seq": seq}
        )
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

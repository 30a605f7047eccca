"""The seed's shapes at the edges: RFC 3339 timestamps, statement lines and transactions.

Statement lines are rendered from their events' canonical bytes (decoding only what a line
shows), transactions from events in memory: the two paths must agree field for field, and
both must keep the JSON the API has always returned, byte for byte.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rawdb import RawDb, tamper
from tally import views
from tally.audit.canonical import CanonicalFormError, encode_event
from tally.domain import accounts
from tally.domain.commands import Envelope, Expense, OrderLine, Recharge, Refund
from tally.domain.events import (
    BalanceAdjusted,
    Event,
    ExpensePaid,
    Posting,
    RefundIssued,
    WalletRecharged,
)
from tally.domain.rejections import InvariantViolated
from tally.engine.engine import Engine
from tally.engine.ports import EntryRow, Store
from tally.engine.results import Committed
from tally.views import timestamp

LEDGER = "shop"
STAMP_US = 1_764_120_076_123_456  # 2025-11-26T01:21:16.123456Z


@given(st.integers(min_value=-2_208_988_800_000_000, max_value=253_402_300_799_999_999))
def test_timestamp_is_rfc3339_utc_with_microseconds(timestamp_us: int) -> None:
    # From 1900 (a `to` bound may be before 1970) up to 9999-12-31.
    expected = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=timestamp_us)
    assert timestamp(timestamp_us) == expected.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_timestamp_example() -> None:
    assert timestamp(1_764_120_076_123_456) == "2025-11-26T01:21:16.123456Z"
    assert timestamp(1_764_120_076_000_007) == "2025-11-26T01:21:16.000007Z"
    assert timestamp(999_999) == "1970-01-01T00:00:00.999999Z"
    assert timestamp(-1) == "1969-12-31T23:59:59.999999Z"


# -- events and the lines they leave on the wallet ----------------------------------------
def _common(
    seq: int, metadata: dict[str, str], postings: tuple[Posting, ...], currency: str = "USD"
) -> dict[str, Any]:
    return {
        "seq": seq,
        "transaction_id": f"txn_{seq}",
        "timestamp_us": STAMP_US + seq,
        "idempotency_key": f"key-{seq}",
        "command_digest": "0" * 64,
        "actor": "key_1",
        "user_id": "alice",
        "currency": currency,
        "postings": postings,
        "metadata": tuple(sorted(metadata.items())),
    }


def _recharge(seq: int, amount: int, metadata: dict[str, str] | None = None) -> Event:
    wallet, clearing = accounts.wallet("alice", "USD"), accounts.clearing("paypal", "USD")
    postings = (Posting(clearing, "USD", -amount), Posting(wallet, "USD", amount))
    return WalletRecharged(**_common(seq, metadata or {}, postings), gateway="paypal")


def _expense(seq: int, orders: tuple[OrderLine, ...]) -> Event:
    wallet = accounts.wallet("alice", "USD")
    postings: list[Posting] = []
    for line in orders:
        postings.append(Posting(wallet, "USD", -line.amount, line.order_id))
        postings.append(Posting(accounts.revenue(line.merchant_id, "USD"), "USD", line.amount))
    return ExpensePaid(**_common(seq, {}, tuple(postings)), orders=orders)


def _refund(seq: int, amount: int) -> Event:
    wallet, revenue = accounts.wallet("alice", "USD"), accounts.revenue("m1", "USD")
    postings = (Posting(revenue, "USD", -amount, "o1"), Posting(wallet, "USD", amount, "o1"))
    return RefundIssued(
        **_common(seq, {"ticket": "T-1"}, postings),
        expense_id="txn_2",
        order_id="o1",
        amount=amount,
        reason="returned",
    )


def _adjustment(seq: int, amount: int, currency: str = "USD") -> Event:
    wallet, equity = accounts.wallet("alice", currency), accounts.adjustments(currency)
    postings = (Posting(equity, currency, -amount), Posting(wallet, currency, amount))
    return BalanceAdjusted(**_common(seq, {}, postings, currency), amount=amount, reason="fix")


def _lines(events: list[Event]) -> list[tuple[Event, EntryRow]]:
    """Each event's wallet lines, with the running balance, as the store keeps them."""
    balance = 0
    lines = []
    for event in events:
        wallet = accounts.wallet(event.user_id, event.currency)
        for index, posting in enumerate(event.postings):
            if posting.account == wallet:
                balance += posting.amount
                entry = EntryRow(
                    wallet, event.seq, index, posting.amount, balance, posting.order_id
                )
                lines.append((event, entry))
    return lines


class _Stored:
    """Just enough of a Store for statement pages: fixed rows, paged by cursor."""

    def __init__(self, lines: list[tuple[Event, EntryRow]]) -> None:
        self.rows = [(entry, encode_event(LEDGER, event)) for event, entry in lines]

    def statement(
        self, ledger: str, account: str, *, after: tuple[int, int], limit: int
    ) -> list[tuple[EntryRow, bytes]]:
        later = [row for row in self.rows if (row[0].seq, row[0].posting_index) > after]
        return [row for row in later if row[0].account == account][:limit]


def _statement(lines: list[tuple[Event, EntryRow]], currency: str = "USD") -> list[views.Entry]:
    store = cast(Store, _Stored(lines))
    page, _ = views.statement_page(
        store, LEDGER, "alice", currency, after=(0, -1), limit=views.statement_page_entries_max
    )
    return page


JOURNEY = [
    _recharge(1, 20_000, {"b": "2", "a": "1"}),
    _expense(2, (OrderLine("o1", 5_000, "m1"), OrderLine("o2", 1_500, "m2"))),
    _refund(3, 1_000),
    _adjustment(4, -5),
    _recharge(5, 1, {"payment_gateway": "override"}),
]


def test_statement_lines_keep_the_seed_json_byte_for_byte() -> None:
    page = _statement(_lines(JOURNEY))
    line = (
        '{{"transaction_id":"txn_{seq}","seq":{seq},"timestamp":"2025-11-26T01:21:16.{micros}Z",'
        '"user_id":"alice","event_type":"{kind}","amount":"{amount}","currency":"USD",'
        '"balance_after":"{after}","reference_order_ids":{orders},"metadata":{metadata},'
        '"refund_of":{refund_of}}}'
    )
    expected = [
        line.format(
            seq=1,
            micros="123457",
            kind="recharge",
            amount="200.00",
            after="200.00",
            orders="[]",
            metadata='{"a":"1","b":"2","payment_gateway":"paypal"}',
            refund_of="null",
        ),
        line.format(
            seq=2,
            micros="123458",
            kind="expense",
            amount="-50.00",
            after="150.00",
            orders='["o1"]',
            metadata="{}",
            refund_of="null",
        ),
        line.format(
            seq=2,
            micros="123458",
            kind="expense",
            amount="-15.00",
            after="135.00",
            orders='["o2"]',
            metadata="{}",
            refund_of="null",
        ),
        line.format(
            seq=3,
            micros="123459",
            kind="refund",
            amount="10.00",
            after="145.00",
            orders='["o1"]',
            metadata='{"ticket":"T-1"}',
            refund_of='{"expense_id":"txn_2","order_id":"o1"}',
        ),
        line.format(
            seq=4,
            micros="123460",
            kind="adjustment",
            amount="-0.05",
            after="144.95",
            orders="[]",
            metadata="{}",
            refund_of="null",
        ),
        line.format(
            seq=5,
            micros="123461",
            kind="recharge",
            amount="0.01",
            after="144.96",
            orders="[]",
            metadata='{"payment_gateway":"override"}',
            refund_of="null",
        ),
    ]
    assert [msgspec.json.encode(entry).decode() for entry in page] == expected


def test_a_transaction_keeps_the_seed_json_byte_for_byte() -> None:
    expense = JOURNEY[1]
    entries = [entry for event, entry in _lines(JOURNEY) if event is expense]
    rendered = views.transaction_of(LEDGER, expense, entries)
    assert msgspec.json.encode(rendered).decode() == (
        '{"transaction_id":"txn_2","ledger":"shop","seq":2,'
        '"timestamp":"2025-11-26T01:21:16.123458Z","user_id":"alice","event_type":"expense",'
        '"amount":"-65.00","currency":"USD","balance_after":"135.00",'
        '"reference_order_ids":["o1","o2"],"metadata":{},"refund_of":null,'
        '"idempotency_key":"key-2","actor":"key_1","entries":['
        + ",".join(msgspec.json.encode(line).decode() for line in _statement(_lines(JOURNEY))[1:3])
        + "]}"
    )


metadata_keys = st.text(alphabet="ABCXYZabcxyz0189_.-", min_size=1, max_size=12) | st.just(
    "payment_gateway"
)
events = st.lists(
    st.one_of(
        st.builds(
            lambda amount, metadata: ("recharge", amount, metadata),
            st.integers(min_value=1, max_value=10**12),
            st.dictionaries(metadata_keys, st.text(max_size=8), max_size=4),
        ),
        st.builds(
            lambda amount, orders: ("expense", amount, orders),
            st.integers(min_value=1, max_value=10**6),
            st.integers(min_value=1, max_value=3),
        ),
        st.builds(lambda amount: ("refund", amount, None), st.integers(1, 10**6)),
        st.builds(lambda amount: ("adjustment", amount, None), st.integers(-(10**6), 10**6)),
    ),
    min_size=1,
    max_size=12,
)


def _journey(drawn: list[tuple[str, int, Any]]) -> list[Event]:
    made: list[Event] = []
    for seq, (kind, amount, extra) in enumerate(drawn, start=1):
        if kind == "recharge":
            made.append(_recharge(seq, amount, extra))
        elif kind == "expense":
            made.append(
                _expense(
                    seq, tuple(OrderLine(f"o{seq}-{i}", amount + i, "m1") for i in range(extra))
                )
            )
        elif kind == "refund":
            made.append(_refund(seq, amount))
        else:
            made.append(_adjustment(seq, amount or 1))
    return made


@given(events)
def test_statement_lines_from_bytes_equal_the_lines_of_transactions_in_memory(
    drawn: list[tuple[str, int, Any]],
) -> None:
    lines = _lines(_journey(drawn))
    from_bytes = _statement(lines)
    in_memory = []
    for event in dict.fromkeys(event for event, _ in lines):
        entries = [entry for owner, entry in lines if owner is event]
        in_memory.extend(views.transaction_of(LEDGER, event, entries).entries)
    assert from_bytes == in_memory
    assert msgspec.json.encode(from_bytes) == msgspec.json.encode(in_memory)


def test_other_currencies_use_their_minor_units() -> None:
    page = _statement(_lines([_adjustment(1, 1_234, "BHD"), _adjustment(2, -1, "BHD")]), "BHD")
    assert [(line.amount, line.balance_after) for line in page] == [
        ("1.234", "1.234"),
        ("-0.001", "1.233"),
    ]
    page = _statement(_lines([_adjustment(1, 1_000, "JPY")]), "JPY")
    assert [(line.amount, line.balance_after) for line in page] == [("1000", "1000")]


def _with(event: Event, **changes: Any) -> bytes:
    """The event's canonical bytes with some fields changed (None: removed)."""
    fields = msgspec.json.decode(encode_event(LEDGER, event))
    fields.update(changes)
    return msgspec.json.encode({key: value for key, value in fields.items() if value is not None})


@pytest.mark.parametrize(
    "body",
    [
        _with(_recharge(1, 100), v=2),
        _with(_recharge(1, 100), type="gift"),
        _with(_recharge(1, 100), gateway=None),
        _with(_recharge(1, 100), seq="1"),
        _with(_recharge(1, 100), metadata=None),
        _with(_refund(1, 100), order_id=None),
        _with(_refund(1, 100), expense_id=None),
        b"{not json",
    ],
    ids=["v2", "type", "gateway", "seq", "metadata", "refund-order", "refund-expense", "json"],
)
def test_a_body_that_is_not_a_v1_event_is_refused(body: bytes) -> None:
    store = _Stored([])
    store.rows = [(EntryRow(accounts.wallet("alice", "USD"), 1, 1, 100, 100, None), body)]
    with pytest.raises(CanonicalFormError):
        views.statement_page(cast(Store, store), LEDGER, "alice", "USD", after=(0, -1), limit=1)


def test_printers_get_plain_dicts_in_the_seed_key_order() -> None:
    expense = JOURNEY[1]
    entries = [entry for event, entry in _lines(JOURNEY) if event is expense]
    rendered = msgspec.to_builtins(views.transaction_of(LEDGER, expense, entries))
    assert list(rendered) == [
        "transaction_id",
        "ledger",
        "seq",
        "timestamp",
        "user_id",
        "event_type",
        "amount",
        "currency",
        "balance_after",
        "reference_order_ids",
        "metadata",
        "refund_of",
        "idempotency_key",
        "actor",
        "entries",
    ]
    # `hold_id` only on a hold's, capture's or release's lines: an expense's have none
    assert list(rendered["entries"][0]) == [
        field for field in views.Entry.__struct_fields__ if field != "hold_id"
    ]
    assert isinstance(rendered["entries"][0]["metadata"], dict)


def test_a_store_gives_statement_lines_their_events_bytes(engine: Engine) -> None:
    """The store carries bodies through SQL to a statement page unchanged, escapes and all."""
    awkward = {
        "note": 'quote " backslash \\ slash / tab \t newline \n nul \x00 bell \x07',
        "unicode": "café ☕ 𝄞 \u2028 \ufeff",
    }
    for index, value in enumerate(awkward.values()):
        engine.execute(
            "views",
            Envelope(
                idempotency_key=f"k{index}",
                command=Recharge(
                    user_id="ann",
                    amount=100 + index,
                    currency="USD",
                    gateway="pp",
                    metadata=(("note", value),),
                ),
            ),
        )
    store = engine.store
    logged = {row.seq: row.body for row in store.events("views", after_seq=0, limit=10)}
    lines = store.statement("views", accounts.wallet("ann", "USD"), after=(0, -1), limit=10)
    assert [(line.seq, body) for line, body in lines] == sorted(logged.items())
    page, _ = views.statement_page(store, "views", "ann", "USD", after=(0, -1), limit=10)
    assert [line.metadata["note"] for line in page] == list(awkward.values())


def test_an_order_lists_its_expense_then_its_refunds_and_a_deleted_event_breaks_it(
    engine: Engine, db: str
) -> None:
    store = engine.store
    engine.execute(
        LEDGER,
        Envelope(
            idempotency_key="r",
            command=Recharge(user_id="u", amount=1_000, currency="USD", gateway="pp"),
        ),
    )
    paid = engine.execute(
        LEDGER,
        Envelope(
            idempotency_key="e",
            command=Expense(
                user_id="u",
                currency="USD",
                orders=(
                    OrderLine(order_id="o-1", amount=300, merchant_id="m"),
                    OrderLine(order_id="o-2", amount=200, merchant_id="m"),
                ),
            ),
        ),
    )
    assert isinstance(paid, Committed)
    for key in ("f-1", "f-2"):
        engine.execute(
            LEDGER,
            Envelope(
                idempotency_key=key,
                command=Refund(
                    expense_id=paid.event.transaction_id, order_id="o-1", amount=50, currency="USD"
                ),
            ),
        )
    order = store.order(LEDGER, "o-1")
    assert order is not None
    view = views.order_view(store, LEDGER, order)
    assert [(t["seq"], t["event_type"]) for t in view["transactions"]] == [
        (2, "expense"),
        (3, "refund"),
        (4, "refund"),
    ]
    assert view["transactions"][0]["transaction_id"] == paid.event.transaction_id
    assert (view["refunded"], view["refundable"]) == ("1.00", "2.00")
    other = store.order(LEDGER, "o-2")
    assert other is not None
    assert [t["seq"] for t in views.order_view(store, LEDGER, other)["transactions"]] == [2]

    def delete_the_expense_and_the_first_refund(raw: RawDb) -> None:
        raw.execute(f"DELETE FROM events WHERE ledger = '{LEDGER}' AND seq IN (2, 3)")

    tamper(db, delete_the_expense_and_the_first_refund)
    with pytest.raises(InvariantViolated, match="no event at seq 3"):
        views.order_view(store, LEDGER, order)
    with pytest.raises(InvariantViolated, match="its expense is not in the log"):
        views.order_view(store, LEDGER, other)  # o-2 has no refund: only its expense is gone

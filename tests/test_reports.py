"""The finance report (tally/reports.py over `Store.report`), on both stores.

One scripted ledger of every event type in two currencies, written at timestamps the test
sets (the writer's clock is replaced), and the report of it compared, number for number,
with a report computed here from the postings the script wrote (`expected_report`): the
whole log, periods bounded at and between events, an empty period; a ledger that does not
exist; an entry tampered so the sums no longer balance, and (SQLite, whose columns take any
type) an entry holding something else than an integer.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import rawdb
from tally.bootstrap import open_engine
from tally.domain.commands import (
    Adjustment,
    Capture,
    Command,
    Envelope,
    Expense,
    Hold,
    OrderLine,
    Recharge,
    Refund,
    Release,
    Transfer,
    TransferPosting,
)
from tally.domain.limits import INT64_MAX
from tally.domain.rejections import InvariantViolated
from tally.engine import writer as writer_module
from tally.engine.engine import Engine
from tally.engine.results import Committed
from tally.reports import finance_report

LEDGER = "shop"
OTHER_LEDGER = "other"  # written beside `shop`: nothing of it may show in shop's report
START = datetime(2026, 11, 1, tzinfo=UTC)
START_US = int(START.timestamp()) * 1_000_000
SECOND_US = 1_000_000
EVENTS = 14  # what `write_ledger` writes to `shop`: event N at START + N seconds
PLACES = {"USD": 2, "JPY": 0}  # ISO 4217's minor units of the currencies used here


class Clock:
    """The writer's clock (tally.engine.writer stamps events with `time.time_ns()`), set by
    the test: an event is stamped `now_us`."""

    def __init__(self, now_us: int) -> None:
        self.now_us = now_us

    def time_ns(self) -> int:
        return self.now_us * 1000

    @staticmethod
    def sleep(seconds: float) -> None:  # the writer's back-off, left real
        time.sleep(seconds)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    stopped = Clock(START_US)
    monkeypatch.setattr(writer_module, "time", stopped)
    return stopped


def at(offset_s: float) -> int:
    """The instant `offset_s` seconds after START, in microseconds."""
    return START_US + round(offset_s * SECOND_US)


def rfc3339(instant_us: int) -> str:
    """How a report shows a bound: RFC 3339 in UTC with microseconds."""
    moment = START + timedelta(microseconds=instant_us - START_US)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# -- the ledger ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Written:
    """One event of the script as the test knows it: its postings, (account, minor units)."""

    seq: int
    event_type: str
    postings: tuple[tuple[str, int], ...]


def write_ledger(engine: Engine, clock: Clock) -> tuple[Written, ...]:
    """Write the script to `shop` (event N at START + N seconds) and one recharge to
    `other`; each event's entries are checked to be the postings the test expects."""
    written: list[Written] = []

    def write(key: str, command: Command, event_type: str, *postings: tuple[str, int]) -> Committed:
        seq = len(written) + 1
        clock.now_us = at(seq)
        done = engine.execute(LEDGER, Envelope(idempotency_key=key, command=command))
        assert (done.event.seq, done.event.event_type, done.event.timestamp_us) == (
            seq,
            event_type,
            at(seq),
        )
        assert sorted((entry.account, entry.amount) for entry in done.entries) == sorted(postings)
        written.append(Written(seq=seq, event_type=event_type, postings=postings))
        return done

    write(
        "r1",
        Recharge(user_id="alice", amount=100_00, currency="USD", gateway="paypal"),
        "recharge",
        ("clearing:paypal:USD", -100_00),
        ("wallet:alice:USD", 100_00),
    )
    clock.now_us = at(1.5)
    engine.execute(
        OTHER_LEDGER,
        Envelope(
            idempotency_key="z1",
            command=Recharge(user_id="zed", amount=999_99, currency="USD", gateway="paypal"),
        ),
    )
    write(
        "r2",
        Recharge(user_id="bob", amount=50_00, currency="USD", gateway="stripe"),
        "recharge",
        ("clearing:stripe:USD", -50_00),
        ("wallet:bob:USD", 50_00),
    )
    expense = write(
        "e1",
        Expense(
            user_id="alice",
            currency="USD",
            orders=(
                OrderLine("o-1", 20_00),
                OrderLine("o-2", 15_00, "m-7"),
                OrderLine("o-3", 5_00, "m-7"),
            ),
        ),
        "expense",
        ("wallet:alice:USD", -20_00),
        ("revenue:platform:USD", 20_00),
        ("wallet:alice:USD", -15_00),
        ("revenue:m-7:USD", 15_00),
        ("wallet:alice:USD", -5_00),
        ("revenue:m-7:USD", 5_00),
    )
    write(
        "f1",
        Refund(
            expense_id=expense.event.transaction_id, order_id="o-1", amount=5_00, currency="USD"
        ),
        "refund",
        ("revenue:platform:USD", -5_00),
        ("wallet:alice:USD", 5_00),
    )
    write(
        "h1",
        Hold(user_id="alice", amount=30_00, currency="USD", hold_id="h-1"),
        "hold",
        ("wallet:alice:USD", -30_00),
        ("hold:h-1:USD", 30_00),
    )
    write(
        "h2",
        Hold(user_id="bob", amount=10_00, currency="USD", hold_id="h-2"),
        "hold",
        ("wallet:bob:USD", -10_00),
        ("hold:h-2:USD", 10_00),
    )
    write(
        "c1",
        Capture(hold_id="h-1", currency="USD", orders=(OrderLine("o-4", 12_00, "m-7"),)),
        "capture",
        ("hold:h-1:USD", -30_00),
        ("wallet:alice:USD", 30_00),
        ("wallet:alice:USD", -12_00),
        ("revenue:m-7:USD", 12_00),
    )
    write(
        "x1",
        Release(hold_id="h-2"),
        "release",
        ("hold:h-2:USD", -10_00),
        ("wallet:bob:USD", 10_00),
    )
    write(
        "a1",
        Adjustment(user_id="bob", amount=2_50, currency="USD", reason="goodwill"),
        "adjustment",
        ("equity:adjustments:USD", -2_50),
        ("wallet:bob:USD", 2_50),
    )
    write(
        "t1",
        Transfer(
            user_id="alice",
            currency="USD",
            postings=(
                TransferPosting("wallet:alice", -10_00),
                TransferPosting("wallet:bob", 7_00),
                TransferPosting("revenue:platform", 3_00),
            ),
            reason="a gift and its fee",
        ),
        "transfer",
        ("wallet:alice:USD", -10_00),
        ("wallet:bob:USD", 7_00),
        ("revenue:platform:USD", 3_00),
    )
    write(
        "j1",
        Recharge(user_id="carol", amount=5000, currency="JPY", gateway="paypal"),
        "recharge",
        ("clearing:paypal:JPY", -5000),
        ("wallet:carol:JPY", 5000),
    )
    write(
        "j2",
        Expense(user_id="carol", currency="JPY", orders=(OrderLine("o-5", 1200),)),
        "expense",
        ("wallet:carol:JPY", -1200),
        ("revenue:platform:JPY", 1200),
    )
    write(
        "a2",
        Adjustment(user_id="alice", amount=-1_00, currency="USD", reason="correction"),
        "adjustment",
        ("equity:adjustments:USD", 1_00),
        ("wallet:alice:USD", -1_00),
    )
    write(
        "t2",
        Transfer(
            user_id="bob",
            currency="USD",
            postings=(TransferPosting("wallet:bob", -1_00), TransferPosting("wallet:alice", 1_00)),
        ),
        "transfer",
        ("wallet:bob:USD", -1_00),
        ("wallet:alice:USD", 1_00),
    )
    assert len(written) == EVENTS
    return tuple(written)


# -- the report the test expects -------------------------------------------------------------


def decimal(minor: int, currency: str) -> str:
    """Minor units as the report shows them: "-1.50" (USD), "1200" (JPY)."""
    return str(Decimal(minor).scaleb(-PLACES[currency]))


def _sums(amounts: list[int], currency: str) -> dict[str, str]:
    debits = sum(-amount for amount in amounts if amount < 0)
    credits = sum(amount for amount in amounts if amount > 0)
    return {"debits": decimal(debits, currency), "credits": decimal(credits, currency)}


def _currency(written: tuple[Written, ...], currency: str, after: int, upto: int) -> Any:
    opening: dict[str, int] = {}
    moved: dict[str, list[int]] = {}
    for event in written:
        for account, amount in event.postings:
            if account.endswith(f":{currency}") and event.seq <= upto:
                opening.setdefault(account, 0)
                moved.setdefault(account, [])
                if event.seq <= after:
                    opening[account] += amount
                else:
                    moved[account].append(amount)

    def line(kind: str, owner: str | None, names: list[str]) -> dict[str, Any]:
        start = sum(opening[name] for name in names)
        amounts = [amount for name in names for amount in moved[name]]
        return {
            "kind": kind,
            "owner": owner,
            "accounts": len(names),
            "opening": decimal(start, currency),
            **_sums(amounts, currency),
            "closing": decimal(start + sum(amounts), currency),
        }

    kinds = {name: name.split(":")[0] for name in opening}
    lines = [
        line(kind, None, [name for name in opening if kinds[name] == kind])
        for kind in ("wallet", "hold")
        if kind in kinds.values()
    ]
    lines += [
        line(kinds[name], name.split(":")[1], [name])
        for name in sorted(opening, key=lambda name: name.split(":")[:2])
        if kinds[name] not in ("wallet", "hold")
    ]
    period = [
        event
        for event in written
        if after < event.seq <= upto and event.postings[0][0].endswith(f":{currency}")
    ]
    activity = []
    for event_type in sorted({event.event_type for event in period}):
        of_type = [event for event in period if event.event_type == event_type]
        by_kind: dict[str, list[int]] = {}
        for event in of_type:
            for account, amount in event.postings:
                by_kind.setdefault(account.split(":")[0], []).append(amount)
        activity.append(
            {
                "event_type": event_type,
                "events": len(of_type),
                "movements": [
                    {"kind": kind, **_sums(by_kind[kind], currency)} for kind in sorted(by_kind)
                ],
            }
        )
    total = sum(opening.values()) + sum(sum(amounts) for amounts in moved.values())
    return {
        "currency": currency,
        "balanced": total == 0,
        "trial_balance": decimal(total, currency),
        "accounts": lines,
        "activity": activity,
    }


def expected_report(
    written: tuple[Written, ...],
    *,
    first_seq: int,
    last_seq: int,
    since_us: int | None = None,
    until_us: int | None = None,
) -> dict[str, Any]:
    """The report of seqs first_seq..last_seq, from the postings the test wrote."""
    currencies = sorted(
        {
            account.split(":")[2]
            for event in written
            if event.seq <= last_seq
            for account, _ in event.postings
        }
    )
    return {
        "ledger": LEDGER,
        "from": None if since_us is None else rfc3339(since_us),
        "to": None if until_us is None else rfc3339(until_us),
        "first_seq": first_seq,
        "last_seq": last_seq,
        "currencies": [
            _currency(written, currency, first_seq - 1, last_seq) for currency in currencies
        ],
    }


def part(report: dict[str, Any] | None, currency: str) -> dict[str, Any]:
    assert report is not None
    (found,) = [entry for entry in report["currencies"] if entry["currency"] == currency]
    return dict(found)


def lines_of(report: dict[str, Any] | None, currency: str) -> dict[tuple[str, str | None], Any]:
    return {(line["kind"], line["owner"]): line for line in part(report, currency)["accounts"]}


# -- the whole log ---------------------------------------------------------------------------


def test_the_whole_log(engine: Engine, clock: Clock) -> None:
    written = write_ledger(engine, clock)
    report = finance_report(engine.store, LEDGER)
    assert report == expected_report(written, first_seq=1, last_seq=EVENTS)

    # The same figures written out by hand: what alice and bob hold (43.00 and 58.50), what
    # the gateways sent, what the merchants earned, what adjustments gave and took.
    assert lines_of(report, "USD") == {
        ("wallet", None): {
            "kind": "wallet",
            "owner": None,
            "accounts": 2,
            "opening": "0.00",
            "debits": "104.00",
            "credits": "205.50",
            "closing": "101.50",
        },
        ("hold", None): {
            "kind": "hold",
            "owner": None,
            "accounts": 2,
            "opening": "0.00",
            "debits": "40.00",
            "credits": "40.00",
            "closing": "0.00",
        },
        ("clearing", "paypal"): {
            "kind": "clearing",
            "owner": "paypal",
            "accounts": 1,
            "opening": "0.00",
            "debits": "100.00",
            "credits": "0.00",
            "closing": "-100.00",
        },
        ("clearing", "stripe"): {
            "kind": "clearing",
            "owner": "stripe",
            "accounts": 1,
            "opening": "0.00",
            "debits": "50.00",
            "credits": "0.00",
            "closing": "-50.00",
        },
        ("equity", "adjustments"): {
            "kind": "equity",
            "owner": "adjustments",
            "accounts": 1,
            "opening": "0.00",
            "debits": "2.50",
            "credits": "1.00",
            "closing": "-1.50",
        },
        ("revenue", "m-7"): {
            "kind": "revenue",
            "owner": "m-7",
            "accounts": 1,
            "opening": "0.00",
            "debits": "0.00",
            "credits": "32.00",
            "closing": "32.00",
        },
        ("revenue", "platform"): {
            "kind": "revenue",
            "owner": "platform",
            "accounts": 1,
            "opening": "0.00",
            "debits": "5.00",
            "credits": "23.00",
            "closing": "18.00",
        },
    }
    jpy = part(report, "JPY")
    assert [(line["kind"], line["owner"], line["closing"]) for line in jpy["accounts"]] == [
        ("wallet", None, "3800"),
        ("clearing", "paypal", "-5000"),
        ("revenue", "platform", "1200"),
    ]
    usd = part(report, "USD")
    assert [(kind["event_type"], kind["events"]) for kind in usd["activity"]] == [
        ("adjustment", 2),
        ("capture", 1),
        ("expense", 1),
        ("hold", 2),
        ("recharge", 2),
        ("refund", 1),
        ("release", 1),
        ("transfer", 2),
    ]
    # two transfers, one of them between wallets alone: the revenue line moved by one
    (transfers,) = [kind for kind in usd["activity"] if kind["event_type"] == "transfer"]
    assert transfers == {
        "event_type": "transfer",
        "events": 2,
        "movements": [
            {"kind": "revenue", "debits": "0.00", "credits": "3.00"},
            {"kind": "wallet", "debits": "11.00", "credits": "8.00"},
        ],
    }
    (capture,) = [kind for kind in usd["activity"] if kind["event_type"] == "capture"]
    assert capture["movements"] == [
        {"kind": "hold", "debits": "30.00", "credits": "0.00"},
        {"kind": "revenue", "debits": "0.00", "credits": "12.00"},
        {"kind": "wallet", "debits": "12.00", "credits": "30.00"},
    ]
    assert report is not None
    assert [
        (entry["currency"], entry["trial_balance"], entry["balanced"])
        for entry in report["currencies"]
    ] == [
        ("JPY", "0", True),
        ("USD", "0.00", True),
    ]


# -- periods ---------------------------------------------------------------------------------

# test id -> (from, to: seconds after START or None; the period's first and last seq)
PERIODS: dict[str, tuple[float | None, float | None, int, int]] = {
    "from-and-to-at-events": (5, 10, 5, 9),  # `from` inclusive, `to` exclusive
    "from-and-to-between-events": (4.5, 9.5, 5, 9),
    "from-alone": (12, None, 12, EVENTS),
    "to-alone": (None, 3, 1, 2),
    "to-before-the-first-event": (None, 0.5, 1, 0),
    "empty-after-the-last-event": (100, None, EVENTS + 1, EVENTS),
    "empty-between-events": (7.25, 7.75, 8, 7),
    "from-after-to": (9, 5, 5, 4),  # refused at the edges; an empty period here
}


@pytest.mark.parametrize(
    ("since_s", "until_s", "first_seq", "last_seq"), PERIODS.values(), ids=PERIODS
)
def test_a_period(
    engine: Engine,
    clock: Clock,
    since_s: float | None,
    until_s: float | None,
    first_seq: int,
    last_seq: int,
) -> None:
    written = write_ledger(engine, clock)
    since_us = None if since_s is None else at(since_s)
    until_us = None if until_s is None else at(until_s)
    report = finance_report(engine.store, LEDGER, since_us=since_us, until_us=until_us)
    assert report is not None
    assert (report["first_seq"], report["last_seq"]) == (first_seq, last_seq)
    assert report == expected_report(
        written, first_seq=first_seq, last_seq=last_seq, since_us=since_us, until_us=until_us
    )


def test_a_period_opens_with_the_balances_before_it(engine: Engine, clock: Clock) -> None:
    write_ledger(engine, clock)
    report = finance_report(engine.store, LEDGER, since_us=at(5), until_us=at(10))
    assert report is not None
    assert (report["from"], report["to"]) == (
        "2026-11-01T00:00:05.000000Z",
        "2026-11-01T00:00:10.000000Z",
    )
    # no JPY before seq 10: the currency is not in the period's report
    assert [entry["currency"] for entry in report["currencies"]] == ["USD"]
    lines = lines_of(report, "USD")
    # after seq 4 alice held 65.00 and bob 50.00; then the holds (30.00, 10.00), the capture
    # (30.00 back, 12.00 paid), the release (10.00 back), the adjustment (2.50)
    assert {key: lines[key] for key in (("wallet", None), ("hold", None))} == {
        ("wallet", None): {
            "kind": "wallet",
            "owner": None,
            "accounts": 2,
            "opening": "115.00",
            "debits": "52.00",
            "credits": "42.50",
            "closing": "105.50",
        },
        ("hold", None): {
            "kind": "hold",
            "owner": None,
            "accounts": 2,
            "opening": "0.00",
            "debits": "40.00",
            "credits": "40.00",
            "closing": "0.00",
        },
    }
    assert [(line["opening"], line["closing"]) for line in lines.values()][2:] == [
        ("-100.00", "-100.00"),  # clearing paypal: nothing in the period
        ("-50.00", "-50.00"),  # clearing stripe
        ("0.00", "-2.50"),  # equity adjustments
        ("20.00", "32.00"),  # revenue m-7: the capture's order
        ("15.00", "15.00"),  # revenue platform
    ]
    usd = part(report, "USD")
    assert [(kind["event_type"], kind["events"]) for kind in usd["activity"]] == [
        ("adjustment", 1),
        ("capture", 1),
        ("hold", 2),
        ("release", 1),
    ]
    assert (usd["trial_balance"], usd["balanced"]) == ("0.00", True)


def test_an_empty_period_moves_nothing(engine: Engine, clock: Clock) -> None:
    write_ledger(engine, clock)
    report = finance_report(engine.store, LEDGER, since_us=at(100))
    whole = finance_report(engine.store, LEDGER)
    assert report is not None
    assert whole is not None
    assert (report["first_seq"], report["last_seq"]) == (EVENTS + 1, EVENTS)
    for currency in ("JPY", "USD"):
        zero = "0" if currency == "JPY" else "0.00"
        entry = part(report, currency)
        assert entry["activity"] == []
        assert (entry["trial_balance"], entry["balanced"]) == (zero, True)
        for line, closed in zip(entry["accounts"], part(whole, currency)["accounts"], strict=True):
            assert (line["debits"], line["credits"]) == (zero, zero)
            assert line["opening"] == line["closing"] == closed["closing"]


# -- ledgers with nothing to report ----------------------------------------------------------


def test_a_ledger_that_does_not_exist_reports_no_currency(engine: Engine, clock: Clock) -> None:
    write_ledger(engine, clock)  # another ledger's money is not in it
    for report in (
        finance_report(engine.store, "nothing"),
        finance_report(engine.store, "nothing", since_us=at(1), until_us=at(2)),
    ):
        assert (report["ledger"], report["last_seq"], report["currencies"]) == ("nothing", 0, [])


def test_a_ledger_never_written_reports_no_currency(engine: Engine) -> None:
    engine.store.ensure_ledger("fresh")
    assert finance_report(engine.store, "fresh") == {
        "ledger": "fresh",
        "from": None,
        "to": None,
        "first_seq": 1,
        "last_seq": 0,
        "currencies": [],
    }


# -- tampered entries ------------------------------------------------------------------------


@pytest.mark.parametrize(("delta", "trial_balance"), [(1, "0.01"), (-1, "-0.01")])
def test_sums_that_do_not_balance_say_so(
    engine: Engine, db: str, clock: Clock, delta: int, trial_balance: str
) -> None:
    write_ledger(engine, clock)
    with rawdb.connect(db) as raw:
        changed = raw.execute(
            "UPDATE entries SET amount = amount + ? "
            "WHERE ledger = ? AND account = 'wallet:alice:USD' AND seq = 1",
            (delta, LEDGER),
        )
        assert changed.rowcount == 1
    report = finance_report(engine.store, LEDGER)
    usd = part(report, "USD")
    assert (usd["trial_balance"], usd["balanced"]) == (trial_balance, False)
    wallets = lines_of(report, "USD")[("wallet", None)]
    assert (wallets["credits"], wallets["closing"]) == (
        decimal(205_50 + delta, "USD"),
        decimal(101_50 + delta, "USD"),
    )
    assert (part(report, "JPY")["trial_balance"], part(report, "JPY")["balanced"]) == ("0", True)
    # a period after the tampered entry opens with it: still not balanced
    later = finance_report(engine.store, LEDGER, since_us=at(5))
    assert (part(later, "USD")["trial_balance"], part(later, "USD")["balanced"]) == (
        trial_balance,
        False,
    )


def test_an_amount_of_minus_2_to_the_63_is_no_crash(engine: Engine, db: str, clock: Clock) -> None:
    """No posting holds -2**63 (decide and replay refuse it); tampered in, its debit's
    negation passes bigint's range (PostgreSQL: summed as numeric, unbalanced) or turns into
    a REAL (SQLite: refused as no amount), never a crash or a figure in floats."""
    write_ledger(engine, clock)
    with rawdb.connect(db) as raw:
        changed = raw.execute(
            "UPDATE entries SET amount = ? "
            "WHERE ledger = ? AND account = 'wallet:alice:USD' AND seq = 1",
            (-(2**63), LEDGER),
        )
        assert changed.rowcount == 1
    if not rawdb.is_postgres(db):
        with pytest.raises(InvariantViolated, match="not an integer"):
            finance_report(engine.store, LEDGER)
        return
    usd = part(finance_report(engine.store, LEDGER), "USD")
    assert usd["balanced"] is False
    wallets = lines_of(finance_report(engine.store, LEDGER), "USD")[("wallet", None)]
    assert "e" not in wallets["debits"]  # an exact decimal string
    assert decimal_minor(wallets["debits"]) >= 2**63


def decimal_minor(text: str) -> int:
    return int(Decimal(text) * 100)


@pytest.fixture
def sqlite_engine(db_path: Path) -> Iterator[Engine]:
    opened = open_engine(db_path)
    try:
        yield opened
    finally:
        opened.close()
        opened.store.close()


@pytest.mark.parametrize(
    "value",
    ["amount || 'x'", "CAST(amount AS BLOB)", "amount + 0.5"],
    ids=["text", "blob", "real"],
)
def test_an_amount_that_is_not_an_integer_is_refused_on_sqlite(
    sqlite_engine: Engine, db_path: Path, clock: Clock, value: str
) -> None:
    write_ledger(sqlite_engine, clock)
    with rawdb.connect(str(db_path)) as raw:
        changed = raw.execute(
            f"UPDATE entries SET amount = {value} WHERE account = 'wallet:bob:USD' AND seq = 2"
        )
        assert changed.rowcount == 1
    with pytest.raises(InvariantViolated, match="an entry holds a value that is not an integer"):
        finance_report(sqlite_engine.store, LEDGER)
    with pytest.raises(InvariantViolated):  # the period's opening balances sum it too
        finance_report(sqlite_engine.store, LEDGER, since_us=at(5), until_us=at(10))


def test_a_seq_that_is_not_an_integer_is_refused_on_sqlite(
    sqlite_engine: Engine, db_path: Path, clock: Clock
) -> None:
    write_ledger(sqlite_engine, clock)
    with rawdb.connect(str(db_path)) as raw:
        raw.execute(
            "UPDATE entries SET seq = seq || 'x' WHERE account = 'wallet:bob:USD' AND seq = 2"
        )
    try:
        report = finance_report(sqlite_engine.store, LEDGER)
    except InvariantViolated:
        return
    raise AssertionError(f"summed without the entry: {part(report, 'USD')['trial_balance']}")


# -- sums past 64 bits -----------------------------------------------------------------------

# Each a ledger that verifies: no balance past 64 bits, but the sums of what moved are.
GROSS_PAST_64_BITS = {
    # one wallet paid in 2**63 - 1 and then 1: its credits are 2**63
    "one-account": (
        Recharge(user_id="alice", amount=INT64_MAX, currency="USD", gateway="paypal"),
        Expense(user_id="alice", currency="USD", orders=(OrderLine("o-1", INT64_MAX),)),
        Recharge(user_id="alice", amount=1, currency="USD", gateway="stripe"),
    ),
    # two wallets, two gateways: no account's sums pass 64 bits, the recharges' together do
    "one-event-type": (
        Recharge(user_id="alice", amount=INT64_MAX, currency="USD", gateway="paypal"),
        Recharge(user_id="bob", amount=1, currency="USD", gateway="stripe"),
    ),
}


@pytest.mark.parametrize("commands", GROSS_PAST_64_BITS.values(), ids=GROSS_PAST_64_BITS)
def test_sums_past_64_bits_are_exact(engine: Engine, commands: tuple[Command, ...]) -> None:
    for index, command in enumerate(commands):
        engine.execute(LEDGER, Envelope(idempotency_key=f"k{index}", command=command))
    report = finance_report(engine.store, LEDGER)
    usd = part(report, "USD")
    (recharges,) = [kind for kind in usd["activity"] if kind["event_type"] == "recharge"]
    assert recharges["movements"] == [
        {"kind": "clearing", "debits": "92233720368547758.08", "credits": "0.00"},
        {"kind": "wallet", "debits": "0.00", "credits": "92233720368547758.08"},
    ]
    assert (usd["trial_balance"], usd["balanced"]) == ("0.00", True)

"""`tally reconcile`: a gateway's settlement file against the recharges the ledger credited
through it, matched by the gateway's payment id (`gateway_reference`), on both stores."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from conftest import TallyRunner
from tally.bootstrap import open_engine
from tally.domain.commands import Envelope, Recharge
from tally.reconciliation import (
    Payment,
    SettlementError,
    credited_payments,
    read_settlement,
    reconcile,
)

LEDGER = "shop"


def settlement(text: str) -> list[Payment]:
    return read_settlement(io.StringIO(text))


@pytest.mark.parametrize(
    ("text", "line", "field"),
    [
        ("ref,amount,currency\n", 1, "reference"),
        ("reference,amount\n", 1, "currency"),
        ("reference,amount,currency\npi 1,1.00,USD\n", 2, "reference"),
        ("reference,amount,currency\npi_1,1.00,USD\npi_1,2.00,USD\n", 3, "reference"),
        ("reference,amount,currency\npi_1,1.001,USD\n", 2, "amount"),
        ("reference,amount,currency\npi_1,1.5,JPY\n", 2, "amount"),
        ("reference,amount,currency\npi_1,-1.00,USD\n", 2, "amount"),
        ("reference,amount,currency\npi_1,0.00,USD\n", 2, "amount"),
        ("reference,amount,currency\npi_1,1e3,USD\n", 2, "amount"),
        ("reference,amount,currency\npi_1,1.00,usd\n", 2, "currency"),
        ("reference,amount,currency\npi_1,1.00\n", 2, "currency"),
        ("reference,amount,currency,amount\npi_1,1.00,USD,0.97\n", 1, "amount"),
        ("reference,amount,currency\npi_1,2,000.00,USD\n", 2, "file"),
    ],
    ids=[
        "no-reference-column",
        "no-currency-column",
        "reference-no-id",
        "reference-twice",
        "too-precise",
        "yen-fraction",
        "negative",
        "zero",
        "exponent",
        "lower-case-currency",
        "short-line",
        "amount-twice",
        "more-fields-than-columns",
    ],
)
def test_a_settlement_file_that_is_not_one_names_its_line_and_column(
    text: str, line: int, field: str
) -> None:
    with pytest.raises(SettlementError) as refused:
        settlement(text)
    assert (refused.value.line, refused.value.field) == (line, field)


def test_settlement_lines_are_exact_minor_units_and_other_columns_are_ignored() -> None:
    read = settlement("fee,reference,currency,amount\n0.30,pi_1,USD,10.00\n0,pi_2,JPY,500\n")
    assert read == [Payment("pi_1", 10_00, "USD", "line 2"), Payment("pi_2", 500, "JPY", "line 3")]


def test_each_way_money_goes_astray_is_named() -> None:
    settled = settlement(
        "reference,amount,currency\npi_1,10.00,USD\npi_2,5.50,USD\npi_3,3.00,USD\npi_4,1,JPY\n"
    )
    credited = [
        Payment("pi_1", 10_00, "USD", "txn-1"),
        Payment("pi_2", 5_00, "USD", "txn-2"),  # another amount
        Payment("pi_4", 1_00, "USD", "txn-3"),  # another currency
        Payment("pi_9", 7_00, "USD", "txn-4"),  # never settled
        Payment(None, 2_00, "USD", "txn-5"),  # names no payment
    ]
    report = reconcile("stripe", settled, credited)
    assert not report.ok
    assert (report.matched, report.matched_totals) == (1, {"USD": 10_00})
    assert [(d.kind, d.reference) for d in report.discrepancies] == [
        ("amount_differs", "pi_2"),
        ("amount_differs", "pi_4"),
        ("missing_in_settlement", "pi_9"),
        ("unreferenced", None),
        ("missing_in_ledger", "pi_3"),
    ]
    assert reconcile("stripe", settled[:1], credited[:1]).ok


def _recharge(key: str, gateway: str, reference: str | None, amount: int) -> Envelope:
    return Envelope(
        idempotency_key=key,
        command=Recharge(
            user_id=f"u-{key}",
            amount=amount,
            currency="USD",
            gateway=gateway,
            gateway_reference=reference,
        ),
    )


def _stamps(db: str) -> list[int]:
    """Three stripe payments and one paypal one; the stripe recharges' timestamps."""
    engine = open_engine(db)
    try:
        stamps = []
        for key, gateway, reference, amount in [
            ("a", "stripe", "pi_1", 10_00),
            ("b", "paypal", "pi_1", 99_00),
            ("c", "stripe", "pi_2", 5_00),
            ("d", "stripe", "pi_3", 3_00),
        ]:
            done = engine.execute(LEDGER, _recharge(key, gateway, reference, amount))
            if gateway == "stripe":
                stamps.append(done.event.timestamp_us)
        return stamps
    finally:
        engine.close()
        engine.store.close()


def test_the_ledger_side_is_every_recharge_through_the_gateway_with_its_time(db: str) -> None:
    stamps = _stamps(db)
    engine = open_engine(db)
    try:
        store = engine.store
        every = list(credited_payments(store, LEDGER, "stripe"))
        assert [(p.reference, p.amount, at) for p, at in every] == [
            ("pi_1", 10_00, stamps[0]),
            ("pi_2", 5_00, stamps[1]),
            ("pi_3", 3_00, stamps[2]),
        ]
        assert [p.reference for p, _ in credited_payments(store, LEDGER, "paypal")] == ["pi_1"]
    finally:
        engine.close()
        engine.store.close()


def test_a_payment_credited_in_another_period_is_a_timing_difference() -> None:
    """A daily settlement pays out what was credited late the day before: not missing."""
    settled = settlement("reference,amount,currency\npi_1,10.00,USD\npi_2,5.00,USD\n")
    yesterday = [Payment("pi_1", 10_00, "USD", "txn-1"), Payment("pi_2", 4_00, "USD", "txn-2")]
    report = reconcile("stripe", settled, [], credited_outside=yesterday)
    assert [(d.kind, d.reference) for d in report.outside_period] == [
        ("credited_outside_period", "pi_1")
    ]
    assert [(d.kind, d.reference) for d in report.discrepancies] == [("amount_differs", "pi_2")]


def test_the_cli_reconciles_or_says_what_differs(
    db: str, tally: TallyRunner, tmp_path: Path
) -> None:
    _stamps(db)
    full = tmp_path / "full.csv"
    full.write_text("reference,amount,currency\npi_1,10.00,USD\npi_2,5.00,USD\npi_3,3.00,USD\n")
    args = ("reconcile", "--gateway", "stripe", "--db", db, "--ledger", LEDGER)
    done = tally(*args, "--settlement", str(full))
    assert done.returncode == 0, done.describe()
    assert done.stdout.startswith("reconciled stripe: 3 payments match (18.00 USD)")
    short = tmp_path / "short.csv"
    short.write_text("reference,amount,currency\npi_1,10.00,USD\npi_2,5.01,USD\npi_7,1.00,USD\n")
    differs = tally(*args, "--settlement", str(short), "--json")
    assert differs.returncode == 1, differs.describe()
    report = differs.json()
    assert (report["reconciled"], report["matched"]) == (False, 1)
    assert [(d["kind"], d["reference"]) for d in report["discrepancies"]] == [
        ("amount_differs", "pi_2"),
        ("missing_in_settlement", "pi_3"),
        ("missing_in_ledger", "pi_7"),
    ]
    assert report["discrepancies"][0]["settled"] == {
        "amount": "5.01",
        "currency": "USD",
        "where": "line 3",
    }
    broken = tmp_path / "broken.csv"
    broken.write_text("reference,amount,currency\npi_1,ten,USD\n")
    usage = tally(*args, "--settlement", str(broken))
    assert usage.returncode == 2
    assert "line 2: amount" in usage.stderr
    assert tally(*args, "--settlement", str(tmp_path / "missing.csv")).returncode == 2
    bad_time = tally(*args, "--settlement", str(full), "--since", "yesterday")
    assert bad_time.returncode == 2
    assert "RFC 3339" in bad_time.stderr
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + full.read_bytes())  # a spreadsheet's CSV UTF-8
    assert tally(*args, "--settlement", str(bom)).returncode == 0
    # A window after every recharge: the three are credited outside it, a timing difference
    later = tally(*args, "--settlement", str(full), "--since", "9999-01-01T00:00:00Z", "--json")
    assert later.returncode == 0, later.describe()
    assert [d["reference"] for d in later.json()["credited_outside_period"]] == [
        "pi_1",
        "pi_2",
        "pi_3",
    ]
    backwards = ("--since", "2026-02-01T00:00:00Z", "--until", "2026-01-01T00:00:00Z")
    assert tally(*args, "--settlement", str(full), *backwards).returncode == 2
    typo = tmp_path / "typo.db"
    missing = tally(
        "reconcile", "--gateway", "stripe", "--db", str(typo), "--settlement", str(full)
    )
    assert missing.returncode == 1
    assert not typo.exists()
    nosuch = tally(
        "reconcile",
        "--gateway",
        "stripe",
        "--db",
        db,
        "--ledger",
        "nosuch",
        "--settlement",
        str(full),
        "--json",
    )
    assert (nosuch.returncode, nosuch.json()["error"]) == (1, "ledger_unknown")

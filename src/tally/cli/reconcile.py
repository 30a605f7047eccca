"""`tally reconcile --gateway G --settlement FILE`: the gateway's settlement against the ledger.

Registered into the `tally` app by the last lines of cli/app.py.
"""

from __future__ import annotations

from pathlib import Path

from rich.table import Table
from rich.text import Text

from tally.api_keys import KeyRefused, check_ledger_name
from tally.bootstrap import open_store
from tally.cli.new_ledger import is_new_database
from tally.cli.options import (
    Common,
    Refusal,
    console,
    period_us,
    print_json,
    print_refusal,
    print_usage,
)
from tally.domain.accounts import is_identifier
from tally.money import format_amount
from tally.reconciliation import (
    Payment,
    Reconciliation,
    SettlementError,
    credited_payments,
    read_settlement,
    reconcile,
    report_view,
)


def reconcile_command(
    *,
    gateway: str,
    settlement: str,
    since: str | None = None,
    until: str | None = None,
    common: Common | None = None,
) -> int:
    """Match a gateway's settlement file with the recharges credited through GATEWAY.

    SETTLEMENT is CSV with a header naming `reference` (the gateway's payment id, as recharges
    name it with --reference), `amount` (a decimal string) and `currency`; other columns are
    ignored. --since and --until (RFC 3339, e.g. 2026-11-01T00:00:00Z; until exclusive)
    limit the recharges to the period the settlement covers. Exit status 0 reconciled, 1 not
    (payments settled but never credited, credited but never settled, amounts that differ,
    recharges naming no payment) or no such ledger, 2 a usage error (a file that cannot be
    read as a settlement: its line and column named).
    """
    common = common or Common()
    try:
        check_ledger_name(common.ledger)
    except KeyRefused as refusal:
        return print_usage(str(refusal))
    if not is_identifier(gateway):
        return print_usage(f"--gateway {gateway!r} is no gateway id")
    try:
        since_us, until_us = period_us(since, until)
    except ValueError as error:
        return print_usage(str(error))
    try:
        # utf-8-sig: a spreadsheet's "CSV UTF-8" starts with a byte-order mark
        with Path(settlement).open(encoding="utf-8-sig", newline="") as stream:
            settled = read_settlement(stream)
    except OSError as error:
        return print_usage(f"--settlement {settlement}: {error.strerror}")
    except (SettlementError, UnicodeDecodeError) as error:
        return print_usage(f"--settlement {settlement}: {error}")
    no_ledger = f"no ledger {common.ledger!r} in {common.db}"
    if is_new_database(common.db):  # a mistyped --db is not created to find that out
        return print_refusal(Refusal.LEDGER_UNKNOWN, "ledger", no_ledger, as_json=common.json)
    store = open_store(common.db)
    try:
        if store.head(common.ledger) is None:
            return print_refusal(Refusal.LEDGER_UNKNOWN, "ledger", no_ledger, as_json=common.json)
        inside: list[Payment] = []
        outside: list[Payment] = []
        for payment, stamped in credited_payments(store, common.ledger, gateway):
            within = (since_us is None or stamped >= since_us) and (
                until_us is None or stamped < until_us
            )
            (inside if within else outside).append(payment)
    finally:
        store.close()
    report = reconcile(gateway, settled, inside, credited_outside=outside)
    if common.json:
        print_json(report_view(report))
    else:
        _print(report)
    return 0 if report.ok else 1


def _print(report: Reconciliation) -> None:
    totals = ", ".join(
        f"{format_amount(total, currency)} {currency}"
        for currency, total in sorted(report.matched_totals.items())
    )
    status = Text("reconciled", "green") if report.ok else Text("NOT reconciled", "red")
    console.print(
        Text.assemble(
            status, f" {report.gateway}: {report.matched} payments match ({totals or 'none'})"
        )
    )
    if not report.discrepancies and not report.outside_period:
        return
    table = Table("kind", "reference", "settled", "credited")
    for found in [*report.discrepancies, *report.outside_period]:
        table.add_row(
            found.kind, found.reference or "", _side(found.settled), _side(found.credited)
        )
    console.print(table)


def _side(payment: Payment | None) -> str:
    if payment is None:
        return ""
    return f"{format_amount(payment.amount, payment.currency)} {payment.currency} ({payment.where})"

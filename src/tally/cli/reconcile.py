"""`tally reconcile --gateway G --settlement FILE`: the gateway's settlement against the ledger.

Registered into the `tally` app by the last lines of cli/app.py.
"""

from __future__ import annotations

from pathlib import Path

from rich.table import Table
from rich.text import Text

from tally import views
from tally.api_keys import KeyRefused, check_ledger_name
from tally.bootstrap import open_store
from tally.cli.options import Common, console, errors, print_json
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
        return _usage(str(refusal))
    if not is_identifier(gateway):
        return _usage(f"--gateway {gateway!r} is no gateway id")
    try:
        since_us = None if since is None else views.instant_us(since)
        until_us = None if until is None else views.instant_us(until)
    except ValueError as error:
        return _usage(f"--since/--until: {error}")
    try:
        with Path(settlement).open(encoding="utf-8", newline="") as stream:
            settled = read_settlement(stream)
    except OSError as error:
        return _usage(f"--settlement {settlement}: {error.strerror}")
    except (SettlementError, UnicodeDecodeError) as error:
        return _usage(f"--settlement {settlement}: {error}")
    store = open_store(common.db)
    try:
        if store.head(common.ledger) is None:
            problem = f"no ledger {common.ledger!r} in {common.db}"
            if common.json:
                print_json({"error": "ledger_unknown", "field": "ledger", "detail": problem})
            else:
                errors.print(Text.assemble(("refused", "red"), f" ledger_unknown: {problem}"))
            return 1
        credited = credited_payments(
            store, common.ledger, gateway, since_us=since_us, until_us=until_us
        )
        report = reconcile(gateway, settled, credited)
    finally:
        store.close()
    if common.json:
        print_json(report_view(report))
    else:
        _print(report)
    return 0 if report.ok else 1


def _usage(problem: str) -> int:
    errors.print(Text.assemble(("usage", "red"), f" {problem}"))
    return 2


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
    if not report.discrepancies:
        return
    table = Table("kind", "reference", "settled", "credited")
    for found in report.discrepancies:
        table.add_row(
            found.kind, found.reference or "", _side(found.settled), _side(found.credited)
        )
    console.print(table)


def _side(payment: Payment | None) -> str:
    if payment is None:
        return ""
    return f"{format_amount(payment.amount, payment.currency)} {payment.currency} ({payment.where})"

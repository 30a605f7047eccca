"""`tally report`: what a ledger held and moved over a period, by currency (tally/reports.py).

Registered into the `tally` app by the last lines of cli/app.py.
"""

from __future__ import annotations

from typing import Any

from rich.table import Table

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
from tally.reports import finance_report


def report_command(
    *, since: str | None = None, until: str | None = None, common: Common | None = None
) -> int:
    """The finance report: per currency, each account's opening balance, debits, credits
    and closing balance over the period (users' wallets and holds added up into one line
    each; revenue per merchant, clearing per gateway, equity), what each type of event
    moved, and the trial balance, which is zero.

    --since and --until (RFC 3339, e.g. 2026-11-01T00:00:00Z; until exclusive) bound the
    period; without them it covers the whole log. Exit status 0, 1 when a currency's trial
    balance is not zero (run tally verify) or there is no such ledger, 2 a usage error."""
    common = common or Common()
    try:
        check_ledger_name(common.ledger)
    except KeyRefused as refusal:
        return print_usage(str(refusal))
    try:
        since_us, until_us = period_us(since, until)
    except ValueError as error:
        return print_usage(str(error))
    no_ledger = f"no ledger {common.ledger!r} in {common.db}"
    if is_new_database(common.db):  # a mistyped --db is not created to find that out
        return print_refusal(Refusal.LEDGER_UNKNOWN, "ledger", no_ledger, as_json=common.json)
    store = open_store(common.db)
    try:
        if store.head(common.ledger) is None:
            return print_refusal(Refusal.LEDGER_UNKNOWN, "ledger", no_ledger, as_json=common.json)
        report = finance_report(store, common.ledger, since_us=since_us, until_us=until_us)
    finally:
        store.close()
    if common.json:
        print_json(report)
    else:
        _print_report(report)
    return 0 if all(part["balanced"] for part in report["currencies"]) else 1


def _print_report(report: dict[str, Any]) -> None:
    period = f"{report['from'] or 'the start'} to {report['to'] or 'now'}"
    console.print(
        f"ledger {report['ledger']}, {period}: seq {report['first_seq']} to {report['last_seq']}"
    )
    for part in report["currencies"]:
        currency = part["currency"]
        accounts = Table(title=f"{currency}: accounts")
        for column in ("kind", "owner", "accounts"):
            accounts.add_column(column)
        for column in ("opening", "debits", "credits", "closing"):
            accounts.add_column(column, justify="right")
        for line in part["accounts"]:
            owner = line["owner"] or "(all)"
            accounts.add_row(
                line["kind"],
                owner,
                str(line["accounts"]),
                *(line[c] for c in ("opening", "debits", "credits", "closing")),
            )
        console.print(accounts)
        activity = Table(title=f"{currency}: activity")
        for column in ("event", "events", "kind"):
            activity.add_column(column)
        activity.add_column("debits", justify="right")
        activity.add_column("credits", justify="right")
        for kind in part["activity"]:
            for index, movement in enumerate(kind["movements"]):
                first = index == 0
                activity.add_row(
                    kind["event_type"] if first else "",
                    str(kind["events"]) if first else "",
                    movement["kind"],
                    movement["debits"],
                    movement["credits"],
                )
        console.print(activity)
        state = "balanced" if part["balanced"] else "NOT BALANCED: run tally verify"
        console.print(f"{currency} trial balance {part['trial_balance']} ({state})")

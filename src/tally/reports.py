"""The finance report: what a ledger held and moved over a period, by currency.

For month-end and for anyone reconciling the platform's books: per currency,

- **accounts**: each account's balance at the period's start (`opening`), what left it
  (`debits`) and came in (`credits`) within, and its balance at the end (`closing`). Users'
  wallets are added up into one line (what the platform owes its users), and so are holds
  (what is set aside for payments not yet settled); revenue per merchant, clearing per
  gateway and each equity account are lines of their own;
- **activity**: per event type, how many events of the period and what they moved on each
  kind of account (an expense: debits on wallets, the same credits on revenue);
- **trial balance**: the sum of every closing balance, zero in a ledger whose postings sum
  to zero per currency (`balanced`).

The sums are the database's, over the entries projection (`Store.report`), of one snapshot:
for a million entries 1.9 s on PostgreSQL and 7.1 s on SQLite, where folding the log took
11.5 s (`bench/report.py`, docs/benchmarks.md). They hold for a
ledger that verifies, as every projection does (`tally verify`). The period is by timestamp,
`from` inclusive and `to` exclusive, turned into a seq range by a search of the log
(timestamps never go back along seq).
"""

from __future__ import annotations

from typing import Any

from tally import views
from tally.audit.canonical import decode_event
from tally.domain import accounts
from tally.engine.ports import AccountTotals, Movement, Store
from tally.money import format_amount

# the kinds whose accounts are added up into one line: one account per user, or per hold
_SUMMED_KINDS = (accounts.WALLET, accounts.HOLD)


def first_seq_at(store: Store, ledger: str, instant_us: int) -> int:
    """The first seq stamped at or after `instant_us` (the head's seq + 1 when none is):
    a binary search of the log, whose timestamps never go back along seq."""
    head = store.head(ledger)
    low, high = 1, (0 if head is None else head.seq) + 1
    while low < high:
        middle = (low + high) // 2
        (row,) = store.events(ledger, after_seq=middle - 1, limit=1)
        if decode_event(row.body)[1].timestamp_us < instant_us:
            low = middle + 1
        else:
            high = middle
    return low


def finance_report(
    store: Store, ledger: str, *, since_us: int | None = None, until_us: int | None = None
) -> dict[str, Any]:
    """The report of `ledger` over [since_us, until_us) (either None: unbounded); a ledger
    nothing was written to (or none of that name: the caller tells them apart) has no
    currency."""
    head = store.head(ledger)
    upto = 0 if head is None else head.seq
    if until_us is not None:
        upto = first_seq_at(store, ledger, until_us) - 1
    after = 0 if since_us is None else first_seq_at(store, ledger, since_us) - 1
    after = min(after, upto)  # a `from` after the `to`: an empty period
    totals, movements = store.report(ledger, after_seq=after, upto_seq=upto)
    currencies = sorted({row.currency for row in totals})
    return {
        "ledger": ledger,
        "from": None if since_us is None else views.timestamp(since_us),
        "to": None if until_us is None else views.timestamp(until_us),
        "first_seq": after + 1,
        "last_seq": upto,
        "currencies": [
            _currency_report(
                currency,
                [row for row in totals if row.currency == currency],
                [row for row in movements if row.currency == currency],
            )
            for currency in currencies
        ],
    }


def _currency_report(
    currency: str, totals: list[AccountTotals], movements: list[Movement]
) -> dict[str, Any]:
    lines: list[dict[str, Any]] = []
    for kind in _SUMMED_KINDS:
        summed = [row for row in totals if row.kind == kind]
        if summed:
            lines.append(_line(currency, kind, None, summed))
    lines.extend(
        _line(currency, row.kind, row.owner, [row])
        for row in totals
        if row.kind not in _SUMMED_KINDS
    )
    trial_balance = sum(row.opening + row.credits - row.debits for row in totals)
    by_type: dict[str, list[Movement]] = {}
    for row in movements:
        by_type.setdefault(row.event_type, []).append(row)
    return {
        "currency": currency,
        "balanced": trial_balance == 0,
        "trial_balance": format_amount(trial_balance, currency),
        "accounts": lines,
        "activity": [
            {
                "event_type": event_type,
                "events": sum(row.events for row in rows),  # each counted on one kind
                "movements": [
                    {
                        "kind": row.kind,
                        "debits": format_amount(row.debits, currency),
                        "credits": format_amount(row.credits, currency),
                    }
                    for row in rows
                ],
            }
            for event_type, rows in by_type.items()
        ],
    }


def _line(currency: str, kind: str, owner: str | None, rows: list[AccountTotals]) -> dict[str, Any]:
    opening = sum(row.opening for row in rows)
    debits = sum(row.debits for row in rows)
    credits = sum(row.credits for row in rows)
    return {
        "kind": kind,
        "owner": owner,
        "accounts": len(rows),
        "opening": format_amount(opening, currency),
        "debits": format_amount(debits, currency),
        "credits": format_amount(credits, currency),
        "closing": format_amount(opening + credits - debits, currency),
    }

"""Reconcile a payment gateway's settlement with the recharges the ledger credited through it.

A gateway reports the payments it settled (a settlement or payout report: one line per
payment, its id, amount and currency); the ledger holds every recharge through that gateway,
each naming the gateway's id of the payment (`gateway_reference`, a business key: credited
once). Matching them by that id finds the two ways money goes astray between a gateway and
a wallet ledger:

- `missing_in_ledger`: the gateway settled a payment no wallet was credited for (a webhook
  lost, a crash before the recharge): a customer who paid and got nothing;
- `missing_in_settlement`: a wallet was credited for a payment the gateway did not settle
  (refused, charged back, a forged webhook): money spent that never arrived;

and `amount_differs` (same payment, another amount or currency), and `unreferenced`: a
recharge through the gateway that names no payment, which nothing can match. Reconciled means
none of the four. Over a period (the days a settlement report covers), a settled payment
credited outside it is no discrepancy but a timing difference (`credited_outside_period`:
credited just before the period, settled in it), listed apart. The ledger's side is read
from the log (every recharge event), so the report needs no projection and holds for any
ledger that verifies.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TextIO

from tally.audit.canonical import decode_event
from tally.domain.accounts import is_identifier
from tally.domain.events import WalletRecharged
from tally.domain.rejections import Rejected
from tally.engine.engine import log_pages
from tally.engine.ports import Store
from tally.money import exponent, format_amount, parse_amount

SETTLEMENT_COLUMNS = ("reference", "amount", "currency")
settlement_lines_max = 1_000_000  # payments in one settlement file


class SettlementError(ValueError):
    """A settlement file that cannot be read as one: `line` (1 is the header) and `field`."""

    def __init__(self, line: int, field: str, problem: str) -> None:
        super().__init__(f"line {line}: {field}: {problem}")
        self.line = line
        self.field = field


@dataclass(frozen=True, slots=True)
class Payment:
    """One payment: as the gateway settled it (`where` is its line), or as the ledger
    credited it (`where` is the recharge's transaction id)."""

    reference: str | None
    amount: int
    currency: str
    where: str


@dataclass(frozen=True, slots=True)
class Discrepancy:
    kind: str  # missing_in_ledger | missing_in_settlement | amount_differs | unreferenced
    reference: str | None
    settled: Payment | None
    credited: Payment | None


@dataclass(slots=True)
class Reconciliation:
    gateway: str
    matched: int = 0
    matched_totals: dict[str, int] = field(default_factory=dict)  # currency -> minor units
    discrepancies: list[Discrepancy] = field(default_factory=list)
    outside_period: list[Discrepancy] = field(default_factory=list)  # matched, other period

    @property
    def ok(self) -> bool:
        return not self.discrepancies


def read_settlement(stream: TextIO) -> list[Payment]:
    """The payments of a settlement file: CSV with a header naming at least `reference`,
    `amount` (a decimal string, as the API takes) and `currency`; other columns are ignored.
    Raises `SettlementError` at the first line that is not a payment, or names one twice."""
    reader = csv.DictReader(stream)
    try:
        columns = list(reader.fieldnames or ())
    except csv.Error as error:
        raise SettlementError(1, "file", str(error)) from None
    missing = [name for name in SETTLEMENT_COLUMNS if name not in columns]
    if missing:
        raise SettlementError(1, missing[0], f"the header needs the columns {SETTLEMENT_COLUMNS}")
    for name in SETTLEMENT_COLUMNS:  # which of two would be meant cannot be known
        if columns.count(name) > 1:
            raise SettlementError(1, name, "the column appears twice")
    payments: list[Payment] = []
    seen: dict[str, int] = {}
    try:
        for row in reader:
            line = reader.line_num
            if None in row:  # DictReader's key for fields beyond the header's
                raise SettlementError(line, "file", "more fields than the header has columns")
            if len(payments) == settlement_lines_max:
                raise SettlementError(line, "file", f"at most {settlement_lines_max} payments")
            reference, amount, currency = (row[name] for name in SETTLEMENT_COLUMNS)
            if not is_identifier(reference):
                raise SettlementError(line, "reference", f"{reference!r} is no payment id")
            if reference in seen:
                raise SettlementError(
                    line, "reference", f"{reference} is on line {seen[reference]} too"
                )
            seen[reference] = line
            payments.append(
                Payment(reference, _amount(amount, currency, line), currency, f"line {line}")
            )
    except csv.Error as error:
        raise SettlementError(reader.line_num, "file", str(error)) from None
    return payments


def _amount(text: str | None, currency: str | None, line: int) -> int:
    try:
        exponent(currency or "")
    except Rejected as rejection:
        raise SettlementError(line, "currency", rejection.detail) from None
    try:
        minor = parse_amount(text or "", currency or "")
    except Rejected as rejection:
        raise SettlementError(line, "amount", rejection.detail) from None
    if minor <= 0:
        raise SettlementError(line, "amount", "a settled payment is positive")
    return minor


def credited_payments(store: Store, ledger: str, gateway: str) -> Iterator[tuple[Payment, int]]:
    """Every recharge of `ledger` through `gateway`, from its log, in seq order, with the
    time it was stamped (microseconds since the Unix epoch)."""
    for page in log_pages(store, ledger, after=0):
        for row in page:
            if row.event_type != WalletRecharged.event_type:  # decode only recharges
                continue
            _, event = decode_event(row.body)
            if type(event) is not WalletRecharged or event.gateway != gateway:
                continue
            credited = Payment(
                event.gateway_reference,
                event.postings[-1].amount,  # the wallet's leg: what was credited
                event.currency,
                event.transaction_id,
            )
            yield credited, event.timestamp_us


def reconcile(
    gateway: str,
    settled: Iterable[Payment],
    credited: Iterable[Payment],
    *,
    credited_outside: Iterable[Payment] = (),
) -> Reconciliation:
    """Match the gateway's `settled` payments with the ledger's `credited` ones by id; a
    settled payment none of them names is looked for in `credited_outside` (the recharges
    of other periods) before it is called missing."""
    report = Reconciliation(gateway)
    by_reference = {payment.reference: payment for payment in settled}
    for payment in credited:
        if payment.reference is None:
            report.discrepancies.append(Discrepancy("unreferenced", None, None, payment))
            continue
        match = by_reference.pop(payment.reference, None)
        if match is None:
            report.discrepancies.append(
                Discrepancy("missing_in_settlement", payment.reference, None, payment)
            )
        elif (match.amount, match.currency) != (payment.amount, payment.currency):
            report.discrepancies.append(
                Discrepancy("amount_differs", payment.reference, match, payment)
            )
        else:
            report.matched += 1
            totals = report.matched_totals
            totals[payment.currency] = totals.get(payment.currency, 0) + payment.amount
    elsewhere: dict[str | None, Payment] = {
        payment.reference: payment for payment in credited_outside if payment.reference
    }
    for reference, payment in by_reference.items():  # settled, not credited in the period
        other = elsewhere.get(reference)
        if other is None:
            report.discrepancies.append(Discrepancy("missing_in_ledger", reference, payment, None))
        elif (other.amount, other.currency) != (payment.amount, payment.currency):
            report.discrepancies.append(Discrepancy("amount_differs", reference, payment, other))
        else:
            report.outside_period.append(
                Discrepancy("credited_outside_period", reference, payment, other)
            )
    return report


def report_view(report: Reconciliation) -> dict[str, object]:
    """The report as JSON-ready data, amounts as decimal strings."""

    def shown(payment: Payment | None) -> dict[str, str] | None:
        if payment is None:
            return None
        return {
            "amount": format_amount(payment.amount, payment.currency),
            "currency": payment.currency,
            "where": payment.where,
        }

    return {
        "gateway": report.gateway,
        "reconciled": report.ok,
        "matched": report.matched,
        "matched_totals": [
            {"currency": currency, "amount": format_amount(total, currency)}
            for currency, total in sorted(report.matched_totals.items())
        ],
        "discrepancies": [
            {
                "kind": discrepancy.kind,
                "reference": discrepancy.reference,
                "settled": shown(discrepancy.settled),
                "credited": shown(discrepancy.credited),
            }
            for discrepancy in report.discrepancies
        ],
        "credited_outside_period": [
            {
                "reference": found.reference,
                "settled": shown(found.settled),
                "credited": shown(found.credited),
            }
            for found in report.outside_period
        ],
    }

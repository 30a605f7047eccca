"""Request bodies to domain commands: decimal strings become minor units here.

Anything wrong raises `Rejected`, naming the field; nothing has been submitted yet.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple, cast

from tally import money, views
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
    metadata_from,
)
from tally.domain.decide import Stamp, decide
from tally.domain.rejections import InvariantViolated, Rejected, Rejection
from tally.domain.state import LedgerState
from tally.http import models
from tally.money import exponent, parse_amount


class Currencies(NamedTuple):
    """The currencies amounts are parsed in where the command names none (see writes.py):
    of each refunded expense, of each captured hold, by id. Two mappings, not one: a hold id
    is the platform's own and may read like an expense's transaction id."""

    expenses: Mapping[str, str]
    holds: Mapping[str, str]


def recharge(body: models.RechargeRequest) -> Recharge:
    return Recharge(
        user_id=body.user_id,
        amount=parse_amount(body.amount, body.currency),
        currency=body.currency,
        gateway=body.gateway,
        metadata=metadata_from(body.metadata),
        gateway_reference=body.gateway_reference,
    )


def expense(body: models.ExpenseRequest) -> Expense:
    exponent(body.currency)  # an unknown currency is the first thing to report
    return Expense(
        user_id=body.user_id,
        currency=body.currency,
        orders=_order_lines(body.orders, body.currency),
        metadata=metadata_from(body.metadata),
    )


def _order_lines(orders: Sequence[models.OrderRequest], currency: str) -> tuple[OrderLine, ...]:
    return tuple(
        OrderLine(
            order_id=line.order_id,
            amount=parse_amount(line.amount, currency, field=f"orders[{index}].amount"),
            **({} if line.merchant_id is None else {"merchant_id": line.merchant_id}),
        )
        for index, line in enumerate(orders)
    )


def refund(body: models.RefundRequest, currencies: Mapping[str, str]) -> Refund:
    """`currencies` maps expense ids to the currency they were paid in (see writes.py)."""
    currency = currencies.get(body.expense_id)
    if currency is None:
        raise Rejected(
            Rejection.EXPENSE_UNKNOWN, field="expense_id", detail=f"no expense {body.expense_id}"
        )
    return Refund(
        expense_id=body.expense_id,
        order_id=body.order_id,
        amount=parse_amount(body.amount, currency),
        currency=currency,
        reason=body.reason or "",
        metadata=metadata_from(body.metadata),
        refund_request_id=body.refund_request_id,
    )


def adjustment(body: models.AdjustmentRequest) -> Adjustment:
    return Adjustment(
        user_id=body.user_id,
        amount=parse_amount(body.amount, body.currency, signed=True),
        currency=body.currency,
        reason=body.reason,
        metadata=metadata_from(body.metadata),
    )


def hold(body: models.HoldRequest) -> Hold:
    return Hold(
        user_id=body.user_id,
        amount=parse_amount(body.amount, body.currency),
        currency=body.currency,
        hold_id=body.hold_id,
        metadata=metadata_from(body.metadata),
        expires_at_us=_expires_at_us(body.expires_at),
    )


def _expires_at_us(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return views.instant_us(text)
    except ValueError as error:
        raise Rejected(Rejection.EXPIRY_INVALID, field="expires_at", detail=str(error)) from None


def capture(hold_id: str, body: models.CaptureRequest, currencies: Mapping[str, str]) -> Capture:
    """`currencies` maps hold ids to their currency (see writes.py), in which the orders'
    amounts are parsed; a hold missing from it is refused as the ledger refuses a capture
    of a hold it does not have (`unknown_hold`). The capture names that currency: the
    writer's state it came from may hold a batch not yet committed, and if that batch is
    undone, a hold of the same id in another currency placed elsewhere meanwhile is refused
    the capture (`currency_mismatch`) instead of being paid these numbers in its currency."""
    currency = currencies.get(hold_id)
    if currency is None:
        raise unknown_hold(hold_id, body)
    return Capture(
        hold_id=hold_id,
        currency=currency,
        orders=_order_lines(body.orders, currency),
        metadata=metadata_from(body.metadata),
    )


def release(hold_id: str, body: models.ReleaseRequest) -> Release:
    return Release(hold_id=hold_id, reason=body.reason or "", metadata=metadata_from(body.metadata))


def transfer(body: models.TransferRequest) -> Transfer:
    exponent(body.currency)  # an unknown currency is the first thing to report
    return Transfer(
        user_id=body.user_id,
        currency=body.currency,
        postings=tuple(
            TransferPosting(
                account=posting.account,
                amount=parse_amount(
                    posting.amount, body.currency, field=f"postings[{index}].amount", signed=True
                ),
            )
            for index, posting in enumerate(body.postings)
        ),
        reason=body.reason or "",
        metadata=metadata_from(body.metadata),
    )


_PROBE_STAMP = Stamp(seq=1, transaction_id="probe", timestamp_us=0, command_digest="")
_ANY_CURRENCY = "USD"  # for telling what is no amount at all: its decimals play no part
_TOLD_WITHOUT_CURRENCY = (Rejection.AMOUNT_INVALID, Rejection.AMOUNT_NOT_POSITIVE)


def unknown_hold(hold_id: str, body: models.CaptureRequest) -> Rejected:
    """What the ledger answers a capture naming `hold_id`, a hold it does not have.

    Such a capture cannot be built (its amounts are in the hold's currency), but the ledger
    ranks its refusals, and several outrank `hold_unknown` (no orders, an id that is no
    identifier, a bad amount or metadata, an order twice): the capture is decided, as the
    writer would decide it, against an empty ledger, which has no hold to accept it for.
    Each amount stands in as what can be told of it without a currency: text that is no
    amount stays text (`amount_invalid`), one not above zero is 0 (`amount_not_positive`),
    any other is 1 (its precision and size are the hold's currency's to judge); a refused
    amount is then answered with the edge's own words for it. Only what the ledger's state
    adds is not told: an order already paid is `hold_unknown` here."""
    refused_amounts: dict[str, Rejected] = {}
    lines = []
    for index, line in enumerate(body.orders):
        field = f"orders[{index}].amount"
        stand_in: object = 1
        try:
            parse_amount(line.amount, _ANY_CURRENCY, field=field)
        except Rejected as refused:
            if refused.reason in _TOLD_WITHOUT_CURRENCY:
                refused_amounts[field] = refused
                stand_in = line.amount if refused.reason is Rejection.AMOUNT_INVALID else 0
        merchant = {} if line.merchant_id is None else {"merchant_id": line.merchant_id}
        # text where an int belongs: what the ledger refuses as amount_invalid
        lines.append(OrderLine(order_id=line.order_id, amount=cast(int, stand_in), **merchant))
    probe = Capture(
        hold_id=hold_id,
        currency=_ANY_CURRENCY,
        orders=tuple(lines),
        metadata=metadata_from(body.metadata),
    )
    try:
        decide(
            LedgerState(""),
            Envelope(idempotency_key="probe", command=probe),
            _PROBE_STAMP,
            currencies=money.currencies(),
        )
    except Rejected as rejection:
        edge = refused_amounts.get(rejection.field)
        return edge if edge is not None and edge.reason is rejection.reason else rejection
    raise InvariantViolated(f"a capture of hold {hold_id!r} was accepted by an empty ledger")


def of_batch(item: models.BatchCommand, currencies: Currencies) -> Command:
    if isinstance(item, models.BatchRecharge):
        return recharge(item)
    if isinstance(item, models.BatchExpense):
        return expense(item)
    if isinstance(item, models.BatchRefund):
        return refund(item, currencies.expenses)
    if isinstance(item, models.BatchAdjustment):
        return adjustment(item)
    if isinstance(item, models.BatchHold):
        return hold(item)
    if isinstance(item, models.BatchCapture):
        return capture(item.hold_id, item, currencies.holds)
    if isinstance(item, models.BatchTransfer):
        return transfer(item)
    return release(item.hold_id, item)

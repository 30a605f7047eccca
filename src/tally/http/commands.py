"""Request bodies to domain commands: decimal strings become minor units here.

Anything wrong raises `Rejected`, naming the field; nothing has been submitted yet.
"""

from __future__ import annotations

from collections.abc import Mapping

from tally.domain.commands import (
    Adjustment,
    Command,
    Expense,
    OrderLine,
    Recharge,
    Refund,
    metadata_from,
)
from tally.domain.rejections import Rejected, Rejection
from tally.http import models
from tally.money import exponent, parse_amount


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
    lines = tuple(
        OrderLine(
            order_id=line.order_id,
            amount=parse_amount(line.amount, body.currency, field=f"orders[{index}].amount"),
            **({} if line.merchant_id is None else {"merchant_id": line.merchant_id}),
        )
        for index, line in enumerate(body.orders)
    )
    return Expense(
        user_id=body.user_id,
        currency=body.currency,
        orders=lines,
        metadata=metadata_from(body.metadata),
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


def of_batch(item: models.BatchCommand, currencies: Mapping[str, str]) -> Command:
    if isinstance(item, models.BatchRecharge):
        return recharge(item)
    if isinstance(item, models.BatchExpense):
        return expense(item)
    if isinstance(item, models.BatchRefund):
        return refund(item, currencies)
    return adjustment(item)

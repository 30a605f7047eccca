"""The wire shapes: request bodies (strict: unknown fields refused, amounts are decimal
strings) and the responses. Transactions and statement entries are `tally.views`' own Structs,
which views builds directly (no dicts to convert), re-exported here."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from tally import views

Amount = Annotated[
    str,
    msgspec.Meta(
        description='A decimal string in the currency\'s units, e.g. "150.00" (never a number).',
        examples=["150.00"],
    ),
]
Currency = Annotated[
    str, msgspec.Meta(description="ISO 4217 code in capitals, e.g. USD.", examples=["USD"])
]
Metadata = Annotated[
    dict[str, str],
    msgspec.Meta(description="Flat string-to-string metadata (at most 32 entries, 4 KiB)."),
]


class _Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


def strict_request_types() -> list[type[msgspec.Struct]]:
    """Every request body type (each refuses unknown fields)."""
    found: list[type[msgspec.Struct]] = []
    pending: list[type[msgspec.Struct]] = [_Strict]
    while pending:
        for sub in pending.pop().__subclasses__():
            found.append(sub)
            pending.append(sub)
    return found


# -- requests --------------------------------------------------------------------------
class RechargeRequest(_Strict):
    user_id: str
    amount: Amount
    currency: Currency
    gateway: str
    metadata: Metadata | None = None
    gateway_reference: Annotated[
        str | None,
        msgspec.Meta(
            description="The gateway's id of the payment (a capture, a payment intent): the "
            "ledger credits each payment of a gateway once, whatever Idempotency-Key a "
            "retried webhook carries (`payment_already_credited`)."
        ),
    ] = None


class OrderRequest(_Strict):
    order_id: str
    amount: Amount
    merchant_id: str | None = None


class ExpenseRequest(_Strict):
    user_id: str
    currency: Currency
    orders: list[OrderRequest]
    metadata: Metadata | None = None


class RefundRequest(_Strict):
    expense_id: str
    order_id: str
    amount: Amount
    reason: str | None = None
    metadata: Metadata | None = None
    refund_request_id: Annotated[
        str | None,
        msgspec.Meta(
            description="Your id of the refund request (a return, a cancellation): the "
            "ledger refunds each request once, whatever Idempotency-Key a retry carries "
            "(`refund_already_issued`)."
        ),
    ] = None


class AdjustmentRequest(_Strict):
    user_id: str
    amount: Annotated[str, msgspec.Meta(description='Signed decimal string: "-5.00" debits.')]
    currency: Currency
    reason: str
    metadata: Metadata | None = None


class HoldRequest(_Strict):
    user_id: str
    amount: Amount
    currency: Currency
    hold_id: Annotated[
        str,
        msgspec.Meta(
            description="Your id of the hold (an identifier), unique in the ledger: how its "
            "capture and release name it (`hold_already_placed` when used again)."
        ),
    ]
    expires_at: Annotated[
        str | None,
        msgspec.Meta(
            description="RFC 3339 with a zone, in the future: from then on the hold can no "
            "longer be captured (`hold_expired`), only released. None: it never expires.",
            examples=["2026-01-31T00:00:00Z"],
        ),
    ] = None
    metadata: Metadata | None = None


class CaptureRequest(_Strict):
    orders: Annotated[
        list[OrderRequest],
        msgspec.Meta(
            description="The orders the hold pays, all or none, in the hold's currency; "
            "what they do not take goes back to the wallet."
        ),
    ]
    metadata: Metadata | None = None


class ReleaseRequest(_Strict):
    reason: str | None = None
    metadata: Metadata | None = None


class TransferPostingRequest(_Strict):
    account: Annotated[
        str,
        msgspec.Meta(
            description="kind:owner, the kind one of wallet, revenue, clearing, equity "
            "(the transfer's currency completes it), e.g. wallet:bob or revenue:m-42.",
            examples=["wallet:bob"],
        ),
    ]
    amount: Annotated[
        str, msgspec.Meta(description='Signed decimal string: "-5.00" takes from the account.')
    ]


class TransferRequest(_Strict):
    user_id: Annotated[
        str,
        msgspec.Meta(description="Whose transaction it is: one posting is on this user's wallet."),
    ]
    currency: Currency
    postings: Annotated[
        list[TransferPostingRequest],
        msgspec.Meta(
            description="2 to 100 postings that sum to zero, each account named once; "
            "no wallet may go below zero."
        ),
    ]
    reason: str | None = None
    metadata: Metadata | None = None


class BatchRecharge(RechargeRequest, tag_field="type", tag="recharge", kw_only=True):
    idempotency_key: str


class BatchExpense(ExpenseRequest, tag_field="type", tag="expense", kw_only=True):
    idempotency_key: str


class BatchRefund(RefundRequest, tag_field="type", tag="refund", kw_only=True):
    idempotency_key: str


class BatchAdjustment(AdjustmentRequest, tag_field="type", tag="adjustment", kw_only=True):
    idempotency_key: str


class BatchHold(HoldRequest, tag_field="type", tag="hold", kw_only=True):
    idempotency_key: str


class BatchCapture(CaptureRequest, tag_field="type", tag="capture", kw_only=True):
    idempotency_key: str
    hold_id: str


class BatchRelease(ReleaseRequest, tag_field="type", tag="release", kw_only=True):
    idempotency_key: str
    hold_id: str


class BatchTransfer(TransferRequest, tag_field="type", tag="transfer", kw_only=True):
    idempotency_key: str


BatchCommand = (
    BatchRecharge
    | BatchExpense
    | BatchRefund
    | BatchAdjustment
    | BatchHold
    | BatchCapture
    | BatchRelease
    | BatchTransfer
)


class BatchRequest(_Strict):
    commands: list[BatchCommand]


# -- responses -------------------------------------------------------------------------
# Transactions and statement entries: tally.views' own Structs, which it builds directly.
RefundOf = views.RefundOf
Entry = views.Entry
Transaction = views.Transaction


class Balance(msgspec.Struct, kw_only=True):
    currency: str
    balance: str


class Balances(msgspec.Struct, kw_only=True):
    user_id: str
    balances: list[Balance]


class StatementPage(msgspec.Struct, kw_only=True):
    entries: list[Entry]
    next_cursor: str | None


class OrderTransaction(msgspec.Struct, kw_only=True):
    transaction_id: str
    event_type: str
    seq: int


class Order(msgspec.Struct, kw_only=True):
    order_id: str
    expense_id: str
    user_id: str
    merchant_id: str
    currency: str
    paid: str
    refunded: str
    refundable: str
    transactions: list[OrderTransaction]


class HoldTransaction(msgspec.Struct, kw_only=True):
    transaction_id: str
    event_type: str
    seq: int
    timestamp: str


class Hold(msgspec.Struct, kw_only=True):
    """A hold (`tally.views.hold_view`): `status` is open, expired (no longer capturable:
    release it), captured or released."""

    hold_id: str
    user_id: str
    currency: str
    amount: str
    status: Literal["open", "expired", "captured", "released"]
    expires_at: str | None
    captured: Annotated[str, msgspec.Meta(description="What the capture's orders took.")]
    released: Annotated[
        str, msgspec.Meta(description="What went back to the wallet once it was settled.")
    ]
    reference_order_ids: list[str]
    metadata: dict[str, str]
    transactions: list[HoldTransaction]


class UserHolds(msgspec.Struct, kw_only=True):
    """A page of a user's holds (`tally.views.user_holds`), in the order they were placed."""

    user_id: str
    holds: list[Hold]
    next_cursor: str | None


class LoggedEvent(msgspec.Struct, kw_only=True):
    seq: int
    transaction_id: str
    event_type: str
    hash: Annotated[str, msgspec.Meta(description="Chain hash after this event, hex.")]
    body: Annotated[str, msgspec.Meta(description="The canonical v1 bytes that were hashed.")]
    event: dict[str, Any]


class EventsPage(msgspec.Struct, kw_only=True):
    events: list[LoggedEvent]
    next_after_seq: int | None


class ReportAccounts(msgspec.Struct, kw_only=True):
    """One line of a report's accounts: one account, or (`owner` null) every wallet or every
    hold of the currency added up."""

    kind: str
    owner: str | None
    accounts: int
    opening: str
    debits: str
    credits: str
    closing: str


class ReportMovement(msgspec.Struct, kw_only=True):
    kind: str
    debits: str
    credits: str


class ReportActivity(msgspec.Struct, kw_only=True):
    event_type: str
    events: int
    movements: list[ReportMovement]


class CurrencyReport(msgspec.Struct, kw_only=True):
    currency: str
    balanced: bool
    trial_balance: str
    accounts: list[ReportAccounts]
    activity: list[ReportActivity]


class FinanceReport(msgspec.Struct, kw_only=True):
    ledger: str
    since: str | None = msgspec.field(name="from")
    until: str | None = msgspec.field(name="to")
    first_seq: int
    last_seq: int
    currencies: list[CurrencyReport]


class Problem(msgspec.Struct, kw_only=True):
    """RFC 9457 problem details, plus tally's stable `code` and the offending `field`."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    field: str | None = None


class BatchResult(msgspec.Struct, kw_only=True):
    status: int
    replayed: bool = False
    transaction: Transaction | None = None
    problem: Problem | None = None


class BatchResponse(msgspec.Struct, kw_only=True):
    results: list[BatchResult]


class Health(msgspec.Struct, kw_only=True):
    status: str

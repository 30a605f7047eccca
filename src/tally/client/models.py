"""What the API answers, as typed, immutable values. Amounts stay decimal strings."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import msgspec


class RefundOf(msgspec.Struct, frozen=True, kw_only=True):
    expense_id: str
    order_id: str
    refund_request_id: str | None = None  # when the refund named its refund request


class Entry(msgspec.Struct, frozen=True, kw_only=True):
    """One statement line: a wallet movement and the balance right after it."""

    transaction_id: str
    seq: int
    timestamp: str
    user_id: str
    event_type: str
    amount: str
    currency: str
    balance_after: str
    reference_order_ids: list[str]
    metadata: dict[str, str]
    refund_of: RefundOf | None
    hold_id: str | None = None  # of a hold's, capture's or release's line


class Leg(msgspec.Struct, frozen=True, kw_only=True):
    """One posting of a transfer, on whichever account (`wallet:bob:USD`, `revenue:m-1:USD`),
    and that account's balance right after it."""

    account: str
    amount: str  # signed: negative was taken from the account
    balance_after: str


class Transaction(msgspec.Struct, frozen=True, kw_only=True):
    """A committed transaction. `replayed`: an earlier call with the same key made it.

    `entries` are the user's wallet lines; a transfer's `postings` are all its legs, on
    every account it names (None on every other transaction, and from servers that predate
    transfers)."""

    transaction_id: str
    ledger: str
    seq: int
    timestamp: str
    user_id: str
    event_type: str
    amount: str
    currency: str
    balance_after: str
    reference_order_ids: list[str]
    metadata: dict[str, str]
    refund_of: RefundOf | None
    idempotency_key: str
    actor: str
    entries: list[Entry]
    hold_id: str | None = None  # of a hold, a capture or a release
    postings: list[Leg] | None = None  # of a transfer
    replayed: bool = False


class Balance(msgspec.Struct, frozen=True, kw_only=True):
    currency: str
    balance: str


class Balances(msgspec.Struct, frozen=True, kw_only=True):
    user_id: str
    balances: list[Balance]

    def of(self, currency: str) -> Decimal:
        """The balance in `currency` (zero when the user never held it)."""
        for line in self.balances:
            if line.currency == currency:
                return Decimal(line.balance)
        return Decimal(0)


class StatementPage(msgspec.Struct, frozen=True, kw_only=True):
    entries: list[Entry]
    next_cursor: str | None


class OrderTransaction(msgspec.Struct, frozen=True, kw_only=True):
    transaction_id: str
    event_type: str
    seq: int


class Order(msgspec.Struct, frozen=True, kw_only=True):
    order_id: str
    expense_id: str
    user_id: str
    merchant_id: str
    currency: str
    paid: str
    refunded: str
    refundable: str
    transactions: list[OrderTransaction]


class HoldTransaction(msgspec.Struct, frozen=True, kw_only=True):
    transaction_id: str
    event_type: str  # hold, then capture or release
    seq: int
    timestamp: str


class Hold(msgspec.Struct, frozen=True, kw_only=True):
    """A hold: `status` is "open", "expired" (no longer capturable: release it),
    "captured" or "released"; `captured` is what its orders took, `released` what went back
    to the wallet once it was settled."""

    hold_id: str
    user_id: str
    currency: str
    amount: str
    status: str
    expires_at: str | None
    captured: str
    released: str
    reference_order_ids: list[str]
    metadata: dict[str, str]
    transactions: list[HoldTransaction]


class UserHolds(msgspec.Struct, frozen=True, kw_only=True):
    """A page of a user's holds, in the order they were placed."""

    user_id: str
    holds: list[Hold]
    next_cursor: str | None


class ReportAccounts(msgspec.Struct, frozen=True, kw_only=True):
    """One line of a finance report's accounts: one account, or (`owner` None) every wallet
    or every hold of the currency added up; amounts are decimal strings."""

    kind: str
    owner: str | None
    accounts: int
    opening: str
    debits: str
    credits: str
    closing: str


class ReportMovement(msgspec.Struct, frozen=True, kw_only=True):
    kind: str
    debits: str
    credits: str


class ReportActivity(msgspec.Struct, frozen=True, kw_only=True):
    """What the period's events of one type moved, per kind of account."""

    event_type: str
    events: int
    movements: list[ReportMovement]


class CurrencyReport(msgspec.Struct, frozen=True, kw_only=True):
    currency: str
    balanced: bool  # the trial balance is zero
    trial_balance: str
    accounts: list[ReportAccounts]
    activity: list[ReportActivity]


class FinanceReport(msgspec.Struct, frozen=True, kw_only=True):
    """The ledger's balances and movements over [`since`, `until`), by currency."""

    ledger: str
    since: str | None = msgspec.field(name="from")
    until: str | None = msgspec.field(name="to")
    first_seq: int
    last_seq: int
    currencies: list[CurrencyReport]

    def of(self, currency: str) -> CurrencyReport | None:
        """The report's part in `currency`, if the ledger has any."""
        return next((part for part in self.currencies if part.currency == currency), None)


class LoggedEvent(msgspec.Struct, frozen=True, kw_only=True):
    seq: int
    transaction_id: str
    event_type: str
    hash: str
    body: str
    event: dict[str, Any]


class EventsPage(msgspec.Struct, frozen=True, kw_only=True):
    events: list[LoggedEvent]
    next_after_seq: int | None


class Problem(msgspec.Struct, frozen=True, kw_only=True):
    """RFC 9457 problem details with tally's stable `code` and the offending `field`."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    field: str | None = None


class BatchResult(msgspec.Struct, frozen=True, kw_only=True):
    """One command's answer in a batch: a transaction (status 201) or a problem."""

    status: int
    replayed: bool = False
    transaction: Transaction | None = None
    problem: Problem | None = None

    @property
    def ok(self) -> bool:
        return self.transaction is not None


class _BatchResponse(msgspec.Struct, frozen=True, kw_only=True):
    results: list[BatchResult]


# -- what callers send ---------------------------------------------------------------------
Amount = str | Decimal | int
"""A decimal string ("150.00"), a Decimal or an int; floats are refused."""


def amount_text(amount: Amount) -> str:
    if isinstance(amount, bool) or not isinstance(amount, str | Decimal | int):
        raise TypeError(f"amounts are str, Decimal or int, never {type(amount).__name__}")
    if isinstance(amount, Decimal):
        return format(amount, "f")
    return str(amount)


class OrderLine(msgspec.Struct, frozen=True, kw_only=True):
    """One order an expense pays."""

    order_id: str
    amount: Amount
    merchant_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"order_id": self.order_id, "amount": amount_text(self.amount)}
        if self.merchant_id is not None:
            body["merchant_id"] = self.merchant_id
        return body


class TransferPosting(msgspec.Struct, frozen=True, kw_only=True):
    """One leg of a transfer: `account` is `kind:owner`, the kind one of wallet, revenue,
    clearing or equity (`wallet:bob`, `revenue:m-42`; the transfer's currency completes
    it); `amount` is signed, negative taking from the account."""

    account: str
    amount: Amount

    def to_json(self) -> dict[str, Any]:
        return {"account": self.account, "amount": amount_text(self.amount)}


def _new_key() -> str:
    return f"sdk-{uuid.uuid4()}"


def _metadata(metadata: dict[str, str] | None) -> dict[str, Any]:
    return {} if metadata is None else {"metadata": dict(metadata)}


class RechargeCommand(msgspec.Struct, frozen=True, kw_only=True):
    """A recharge inside a batch. Its idempotency key is made once, when it is built."""

    user_id: str
    amount: Amount
    currency: str
    gateway: str
    metadata: dict[str, str] | None = None
    gateway_reference: str | None = None
    idempotency_key: str = msgspec.field(default_factory=_new_key)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": "recharge",
            "idempotency_key": self.idempotency_key,
            "user_id": self.user_id,
            "amount": amount_text(self.amount),
            "currency": self.currency,
            "gateway": self.gateway,
            **_metadata(self.metadata),
        }
        if self.gateway_reference is not None:
            body["gateway_reference"] = self.gateway_reference
        return body


class ExpenseCommand(msgspec.Struct, frozen=True, kw_only=True):
    user_id: str
    currency: str
    orders: tuple[OrderLine, ...]
    metadata: dict[str, str] | None = None
    idempotency_key: str = msgspec.field(default_factory=_new_key)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "expense",
            "idempotency_key": self.idempotency_key,
            "user_id": self.user_id,
            "currency": self.currency,
            "orders": [line.to_json() for line in self.orders],
            **_metadata(self.metadata),
        }


class RefundCommand(msgspec.Struct, frozen=True, kw_only=True):
    expense_id: str
    order_id: str
    amount: Amount
    reason: str | None = None
    metadata: dict[str, str] | None = None
    refund_request_id: str | None = None
    idempotency_key: str = msgspec.field(default_factory=_new_key)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": "refund",
            "idempotency_key": self.idempotency_key,
            "expense_id": self.expense_id,
            "order_id": self.order_id,
            "amount": amount_text(self.amount),
            **_metadata(self.metadata),
        }
        if self.reason is not None:
            body["reason"] = self.reason
        if self.refund_request_id is not None:
            body["refund_request_id"] = self.refund_request_id
        return body


class AdjustmentCommand(msgspec.Struct, frozen=True, kw_only=True):
    user_id: str
    amount: Amount  # signed
    currency: str
    reason: str
    metadata: dict[str, str] | None = None
    idempotency_key: str = msgspec.field(default_factory=_new_key)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "adjustment",
            "idempotency_key": self.idempotency_key,
            "user_id": self.user_id,
            "amount": amount_text(self.amount),
            "currency": self.currency,
            "reason": self.reason,
            **_metadata(self.metadata),
        }


class HoldCommand(msgspec.Struct, frozen=True, kw_only=True):
    user_id: str
    amount: Amount
    currency: str
    hold_id: str
    expires_at: datetime | str | None = None  # a datetime with a zone, or RFC 3339 text
    metadata: dict[str, str] | None = None
    idempotency_key: str = msgspec.field(default_factory=_new_key)

    def to_json(self) -> dict[str, Any]:
        fields = hold_json(
            self.user_id,
            self.amount,
            self.currency,
            self.hold_id,
            expires_at=self.expires_at,
            metadata=self.metadata,
        )
        return {"type": "hold", "idempotency_key": self.idempotency_key, **fields}


class CaptureCommand(msgspec.Struct, frozen=True, kw_only=True):
    """A capture inside a batch. Its hold must be placed already: a hold placed in the same
    batch is not known yet when the batch's amounts are read (`hold_unknown`)."""

    hold_id: str
    orders: tuple[OrderLine, ...]
    metadata: dict[str, str] | None = None
    idempotency_key: str = msgspec.field(default_factory=_new_key)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "capture",
            "idempotency_key": self.idempotency_key,
            "hold_id": self.hold_id,
            "orders": [line.to_json() for line in self.orders],
            **_metadata(self.metadata),
        }


class ReleaseCommand(msgspec.Struct, frozen=True, kw_only=True):
    hold_id: str
    reason: str = ""
    metadata: dict[str, str] | None = None
    idempotency_key: str = msgspec.field(default_factory=_new_key)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": "release",
            "idempotency_key": self.idempotency_key,
            "hold_id": self.hold_id,
            **_metadata(self.metadata),
        }
        if self.reason:
            body["reason"] = self.reason
        return body


class TransferCommand(msgspec.Struct, frozen=True, kw_only=True):
    """A transfer inside a batch: the batch's key needs the admin scope for it, else its
    result alone is a 403 `forbidden`."""

    user_id: str
    currency: str
    postings: tuple[TransferPosting, ...]
    reason: str = ""
    metadata: dict[str, str] | None = None
    idempotency_key: str = msgspec.field(default_factory=_new_key)

    def to_json(self) -> dict[str, Any]:
        fields = transfer_json(
            self.user_id,
            self.currency,
            self.postings,
            reason=self.reason,
            metadata=self.metadata,
        )
        return {"type": "transfer", "idempotency_key": self.idempotency_key, **fields}


def hold_json(
    user_id: str,
    amount: Amount,
    currency: str,
    hold_id: str,
    *,
    expires_at: datetime | str | None,
    metadata: Mapping[str, str] | None,
) -> dict[str, Any]:
    """A hold's fields as the API takes them (the single route's body, a batch command's)."""
    body: dict[str, Any] = {
        "user_id": user_id,
        "amount": amount_text(amount),
        "currency": currency,
        "hold_id": hold_id,
    }
    if expires_at is not None:
        body["expires_at"] = instant_text(expires_at)
    if metadata is not None:
        body["metadata"] = dict(metadata)
    return body


def transfer_json(
    user_id: str,
    currency: str,
    postings: Sequence[TransferPosting],
    *,
    reason: str,
    metadata: Mapping[str, str] | None,
) -> dict[str, Any]:
    """A transfer's fields as the API takes them (the single route's body, a batch
    command's). An empty reason is no reason, as the server takes it."""
    body: dict[str, Any] = {
        "user_id": user_id,
        "currency": currency,
        "postings": [posting.to_json() for posting in postings],
    }
    if reason:
        body["reason"] = reason
    if metadata is not None:
        body["metadata"] = dict(metadata)
    return body


def instant_text(moment: datetime | str) -> str:
    """RFC 3339 text of a moment: a datetime as ISO 8601 (the server refuses one without a
    zone, `expiry_invalid`), text as it is."""
    if isinstance(moment, datetime):
        return moment.isoformat()
    if isinstance(moment, str):
        return moment
    raise TypeError(f"a moment is a datetime or RFC 3339 text, never {type(moment).__name__}")


BatchCommand = (
    RechargeCommand
    | ExpenseCommand
    | RefundCommand
    | AdjustmentCommand
    | HoldCommand
    | CaptureCommand
    | ReleaseCommand
    | TransferCommand
)

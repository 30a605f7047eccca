"""What happened: one immutable event per committed transaction.

Every event carries its postings explicitly, so anyone can check that they sum to zero per
currency without knowing tally's business rules, and carries its idempotency key and the
digest of the command that produced it, so the idempotency index can be rebuilt from the log
alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, NamedTuple

from tally.domain.commands import Metadata, OrderLine


class Posting(NamedTuple):
    """One leg of a transaction: `amount` minor units added to `account` (negative: taken).

    A NamedTuple rather than a frozen dataclass: equally immutable, and several times cheaper
    to build, which matters for the two or more postings of every transaction.
    """

    account: str
    currency: str
    amount: int
    order_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """The fields every event has. `seq` is its place in the ledger's log, from 1."""

    event_type: ClassVar[str] = ""

    seq: int
    transaction_id: str
    timestamp_us: int  # microseconds since the Unix epoch, UTC
    idempotency_key: str
    command_digest: str  # hex SHA-256 of the command's canonical bytes
    actor: str
    user_id: str
    currency: str
    postings: tuple[Posting, ...]
    metadata: Metadata = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class WalletRecharged(Event):
    event_type: ClassVar[str] = "recharge"

    gateway: str
    gateway_reference: str | None = None  # the business key, when the command named one


@dataclass(frozen=True, slots=True, kw_only=True)
class ExpensePaid(Event):
    event_type: ClassVar[str] = "expense"

    orders: tuple[OrderLine, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class RefundIssued(Event):
    event_type: ClassVar[str] = "refund"

    expense_id: str
    order_id: str
    amount: int
    reason: str = ""
    refund_request_id: str | None = None  # the business key, when the command named one


@dataclass(frozen=True, slots=True, kw_only=True)
class BalanceAdjusted(Event):
    event_type: ClassVar[str] = "adjustment"

    amount: int
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class HoldPlaced(Event):
    event_type: ClassVar[str] = "hold"

    hold_id: str
    amount: int
    expires_at_us: int | None = None  # from then on it cannot be captured


@dataclass(frozen=True, slots=True, kw_only=True)
class HoldCaptured(Event):
    """The hold's whole amount back to the wallet, then each order paid from it, as an
    expense pays them: one transaction, so the wallet never shows the money twice."""

    event_type: ClassVar[str] = "capture"

    hold_id: str
    orders: tuple[OrderLine, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class HoldReleased(Event):
    event_type: ClassVar[str] = "release"

    hold_id: str
    amount: int  # the hold's whole amount
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Transferred(Event):
    """A transfer: its postings are the ones its command named, in that order, each account
    completed with the currency; it touches no order."""

    event_type: ClassVar[str] = "transfer"

    reason: str = ""


# What pays orders, and so what a refund names as its `expense_id`: an expense, or a capture.
ORDER_PAYING_TYPES = frozenset((ExpensePaid.event_type, HoldCaptured.event_type))

EVENT_TYPES: dict[str, type[Event]] = {
    cls.event_type: cls
    for cls in (
        WalletRecharged,
        ExpensePaid,
        RefundIssued,
        BalanceAdjusted,
        HoldPlaced,
        HoldCaptured,
        HoldReleased,
        Transferred,
    )
}

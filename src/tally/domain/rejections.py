"""Why a command was refused: one enum, ordered by precedence.

A rejection is an expected operating outcome, not a bug. The decider walks a straight
ladder of checks and returns the first one that fails, so a command with several problems
always reports the same one: the lowest member of `Rejection`. A broken invariant is a
different thing entirely (`InvariantViolated`): it means tally itself is wrong, and it is
never turned into a rejection.
"""

from __future__ import annotations

import enum


class Rejection(enum.IntEnum):
    """Reasons a command is refused, lowest value checked first."""

    IDEMPOTENCY_KEY_INVALID = 1
    IDEMPOTENCY_KEY_REUSED = 2
    ORDERS_EMPTY = 3
    ORDERS_TOO_MANY = 4
    POSTINGS_INVALID = 5
    IDENTIFIER_INVALID = 6
    CURRENCY_UNKNOWN = 7
    AMOUNT_INVALID = 8
    AMOUNT_NOT_POSITIVE = 9
    AMOUNT_TOO_PRECISE = 10
    AMOUNT_TOO_LARGE = 11
    METADATA_INVALID = 12
    METADATA_TOO_LARGE = 13
    REASON_INVALID = 14
    EXPIRY_INVALID = 15
    POSTINGS_UNBALANCED = 16
    ORDER_DUPLICATED = 17
    ORDER_ALREADY_PAID = 18
    PAYMENT_ALREADY_CREDITED = 19
    REFUND_ALREADY_ISSUED = 20
    HOLD_ALREADY_PLACED = 21
    EXPENSE_UNKNOWN = 22
    HOLD_UNKNOWN = 23
    ORDER_UNKNOWN = 24
    CURRENCY_MISMATCH = 25
    HOLD_SETTLED = 26
    HOLD_EXPIRED = 27
    REFUND_EXCEEDS_REFUNDABLE = 28
    CAPTURE_EXCEEDS_HOLD = 29
    INSUFFICIENT_FUNDS = 30
    BALANCE_LIMIT_EXCEEDED = 31

    @property
    def code(self) -> str:
        """The stable lowercase code shown to users and clients."""
        return self.name.lower()


class Rejected(Exception):
    """A command was refused for `reason`; nothing was written."""

    def __init__(self, reason: Rejection, *, field: str, detail: str) -> None:
        super().__init__(f"{reason.code}: {detail} ({field})")
        self.reason = reason
        self.field = field
        self.detail = detail


class InvariantViolated(Exception):
    """tally broke one of its own invariants. This is a bug and must never be swallowed."""

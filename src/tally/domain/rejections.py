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
    IDENTIFIER_INVALID = 5
    CURRENCY_UNKNOWN = 6
    AMOUNT_INVALID = 7
    AMOUNT_NOT_POSITIVE = 8
    AMOUNT_TOO_PRECISE = 9
    AMOUNT_TOO_LARGE = 10
    METADATA_INVALID = 11
    METADATA_TOO_LARGE = 12
    REASON_INVALID = 13
    EXPIRY_INVALID = 14
    ORDER_DUPLICATED = 15
    ORDER_ALREADY_PAID = 16
    PAYMENT_ALREADY_CREDITED = 17
    REFUND_ALREADY_ISSUED = 18
    HOLD_ALREADY_PLACED = 19
    EXPENSE_UNKNOWN = 20
    HOLD_UNKNOWN = 21
    ORDER_UNKNOWN = 22
    CURRENCY_MISMATCH = 23
    HOLD_SETTLED = 24
    HOLD_EXPIRED = 25
    REFUND_EXCEEDS_REFUNDABLE = 26
    CAPTURE_EXCEEDS_HOLD = 27
    INSUFFICIENT_FUNDS = 28
    BALANCE_LIMIT_EXCEEDED = 29

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

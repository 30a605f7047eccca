"""Canonical encoding, version 1: the bytes that are hashed and stored for every event.

The format is specified in docs/log-format.md, with test vectors that tests/test_canonical.py
checks byte for byte. In short: UTF-8 JSON, object keys sorted, no insignificant whitespace,
integers as plain decimal digits (never floats), strings escaped as RFC 8785 does, `null` for
a posting without an order; the optional keys (a recharge's `gateway_reference`, a refund's
`refund_request_id`, a hold's `expires_at_us`) are left out when absent. Nothing else in
tally serializes events for hashing.
"""

from __future__ import annotations

import hashlib
from typing import Any, TypeVar

import msgspec
from msgspec.structs import astuple

from tally.domain.commands import (
    Adjustment,
    Capture,
    Command,
    Expense,
    Hold,
    OrderLine,
    Recharge,
    Refund,
    Release,
    Transfer,
)
from tally.domain.events import (
    BalanceAdjusted,
    Event,
    ExpensePaid,
    HoldCaptured,
    HoldPlaced,
    HoldReleased,
    Posting,
    RefundIssued,
    Transferred,
    WalletRecharged,
)

FORMAT_VERSION = 1

# msgspec writes exactly the canonical form: UTF-8, keys sorted (dict keys and, with
# order="sorted", Struct fields too), no whitespace, RFC 8785 string escapes, integers as
# digits. The offline auditor re-derives the same bytes with the standard library's json
# module, so the two implementations check each other.
_encoder = msgspec.json.Encoder(order="sorted")
_new_tuple = tuple.__new__
_E = TypeVar("_E", bound=Event)


class CanonicalFormError(ValueError):
    """Bytes that are not a canonical v1 event."""


def dumps(value: Any) -> bytes:
    """Canonical bytes of a JSON value made of dicts, lists, str, int, bool and None."""
    return _encoder.encode(value)


# -- the v1 shapes ---------------------------------------------------------------------
# One Struct per JSON object of docs/log-format.md. They are the format, spelled once for
# both directions: building them and encoding is several times cheaper than building dicts,
# and decoding into them checks every key and type in C (and refuses keys the format has
# not: "No other keys appear").


class _Posting(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    account: str
    currency: str
    amount: int
    order_id: str | None


class _Order(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    order_id: str
    amount: int
    merchant_id: str


class _Body(msgspec.Struct, frozen=True, tag_field="type", forbid_unknown_fields=True):
    v: int
    ledger: str
    seq: int
    transaction_id: str
    timestamp_us: int
    idempotency_key: str
    command_digest: str
    actor: str
    user_id: str
    currency: str
    postings: list[_Posting]
    metadata: dict[str, str]


class _RechargeBody(_Body, frozen=True, tag="recharge", omit_defaults=True):
    gateway: str
    gateway_reference: str | None = None  # optional, as a refund's `refund_request_id`


class _ExpenseBody(_Body, frozen=True, tag="expense"):
    orders: list[_Order]


class _RefundBody(_Body, frozen=True, tag="refund", omit_defaults=True):
    expense_id: str
    order_id: str
    amount: int
    reason: str
    # The optional keys of v1, added after the first logs were written: absent, not null,
    # when not named, so every body written before them still is its own canonical form
    # (and so is a body with `null`, which re-encodes without it).
    refund_request_id: str | None = None


class _AdjustmentBody(_Body, frozen=True, tag="adjustment"):
    amount: int
    reason: str


class _HoldBody(_Body, frozen=True, tag="hold", omit_defaults=True):
    hold_id: str
    amount: int
    expires_at_us: int | None = None  # optional: absent when the hold never expires


class _CaptureBody(_Body, frozen=True, tag="capture"):
    hold_id: str
    orders: list[_Order]


class _ReleaseBody(_Body, frozen=True, tag="release"):
    hold_id: str
    amount: int
    reason: str


class _TransferBody(_Body, frozen=True, tag="transfer"):
    reason: str


_decoder = msgspec.json.Decoder(
    _RechargeBody
    | _ExpenseBody
    | _RefundBody
    | _AdjustmentBody
    | _HoldBody
    | _CaptureBody
    | _ReleaseBody
    | _TransferBody
)
_version_decoder = msgspec.json.Decoder()


def encode_event(ledger: str, event: Event) -> bytes:
    """The canonical v1 bytes of `event` in `ledger`."""
    postings = [_Posting(p.account, p.currency, p.amount, p.order_id) for p in event.postings]
    common = (
        FORMAT_VERSION,
        ledger,
        event.seq,
        event.transaction_id,
        event.timestamp_us,
        event.idempotency_key,
        event.command_digest,
        event.actor,
        event.user_id,
        event.currency,
        postings,
        dict(event.metadata),
    )
    body: _Body
    if isinstance(event, ExpensePaid):
        body = _ExpenseBody(*common, [_Order(*line) for line in event.orders])
    elif isinstance(event, WalletRecharged):
        body = _RechargeBody(*common, event.gateway, event.gateway_reference)
    elif isinstance(event, RefundIssued):
        body = _RefundBody(
            *common,
            event.expense_id,
            event.order_id,
            event.amount,
            event.reason,
            event.refund_request_id,
        )
    elif isinstance(event, BalanceAdjusted):
        body = _AdjustmentBody(*common, event.amount, event.reason)
    elif isinstance(event, HoldPlaced):
        body = _HoldBody(*common, event.hold_id, event.amount, event.expires_at_us)
    elif isinstance(event, HoldCaptured):
        body = _CaptureBody(*common, event.hold_id, [_Order(*line) for line in event.orders])
    elif isinstance(event, HoldReleased):
        body = _ReleaseBody(*common, event.hold_id, event.amount, event.reason)
    elif isinstance(event, Transferred):
        body = _TransferBody(*common, event.reason)
    else:  # pragma: no cover - the Event hierarchy is closed
        raise TypeError(f"not an event: {event!r}")
    return _encoder.encode(body)


def decode_event(data: bytes) -> tuple[str, Event]:
    """Parse canonical v1 bytes back into `(ledger, event)`."""
    try:
        body = _decoder.decode(data)
    except msgspec.DecodeError as error:
        raise CanonicalFormError(f"not a v1 event: {_version_problem(data) or error}") from error
    if body.v != FORMAT_VERSION:
        raise CanonicalFormError(f"unsupported format version {body.v!r}")
    # Replay, verify and a writer's catch-up decode every event of a log: the postings and
    # orders are built as the tuples they are (tuple.__new__ skips NamedTuple's Python-level
    # __new__), and only each type's own fields go through a keyword dict.
    event: Event
    if isinstance(body, _ExpenseBody):
        orders = tuple([_new_tuple(OrderLine, astuple(o)) for o in body.orders])
        event = _event(ExpensePaid, body, orders=orders)
    elif isinstance(body, _RechargeBody):
        event = _event(
            WalletRecharged, body, gateway=body.gateway, gateway_reference=body.gateway_reference
        )
    elif isinstance(body, _RefundBody):
        event = _event(
            RefundIssued,
            body,
            expense_id=body.expense_id,
            order_id=body.order_id,
            amount=body.amount,
            reason=body.reason,
            refund_request_id=body.refund_request_id,
        )
    elif isinstance(body, _AdjustmentBody):
        event = _event(BalanceAdjusted, body, amount=body.amount, reason=body.reason)
    elif isinstance(body, _HoldBody):
        event = _event(
            HoldPlaced,
            body,
            hold_id=body.hold_id,
            amount=body.amount,
            expires_at_us=body.expires_at_us,
        )
    elif isinstance(body, _CaptureBody):
        orders = tuple([_new_tuple(OrderLine, astuple(o)) for o in body.orders])
        event = _event(HoldCaptured, body, hold_id=body.hold_id, orders=orders)
    elif isinstance(body, _ReleaseBody):
        event = _event(
            HoldReleased, body, hold_id=body.hold_id, amount=body.amount, reason=body.reason
        )
    elif isinstance(body, _TransferBody):
        event = _event(Transferred, body, reason=body.reason)
    else:  # pragma: no cover - the decoder's union is closed
        raise CanonicalFormError(f"not a v1 event: unknown body {type(body).__name__}")
    return body.ledger, event


def _event(kind: type[_E], body: _Body, **own: Any) -> _E:
    """The event of type `kind` from a decoded body: the fields every event has, and `own`."""
    return kind(
        seq=body.seq,
        transaction_id=body.transaction_id,
        timestamp_us=body.timestamp_us,
        idempotency_key=body.idempotency_key,
        command_digest=body.command_digest,
        actor=body.actor,
        user_id=body.user_id,
        currency=body.currency,
        postings=tuple([_new_tuple(Posting, astuple(p)) for p in body.postings]),
        metadata=tuple(sorted(body.metadata.items())) if body.metadata else (),
        **own,
    )


def _version_problem(data: bytes) -> str | None:
    """Name an unsupported version, when that is why the bytes did not decode."""
    try:
        version = _version_decoder.decode(data).get("v")
    except (msgspec.DecodeError, AttributeError):
        return None
    return None if version == FORMAT_VERSION else f"unsupported format version {version!r}"


class _ExpenseCommand(msgspec.Struct, frozen=True, tag_field="type", tag="expense"):
    user_id: str
    currency: str
    orders: list[_Order]
    metadata: dict[str, str]


class _RechargeCommand(
    msgspec.Struct, frozen=True, tag_field="type", tag="recharge", omit_defaults=True
):
    user_id: str
    amount: int
    currency: str
    gateway: str
    metadata: dict[str, str]
    gateway_reference: str | None = None  # absent when not given: old digests unchanged


class _RefundCommand(
    msgspec.Struct, frozen=True, tag_field="type", tag="refund", omit_defaults=True
):
    expense_id: str
    order_id: str
    amount: int
    currency: str
    reason: str
    metadata: dict[str, str]
    # absent when not given: the digest of a refund without one is what it always was
    refund_request_id: str | None = None


class _AdjustmentCommand(msgspec.Struct, frozen=True, tag_field="type", tag="adjustment"):
    user_id: str
    amount: int
    currency: str
    reason: str
    metadata: dict[str, str]


class _HoldCommand(msgspec.Struct, frozen=True, tag_field="type", tag="hold", omit_defaults=True):
    user_id: str
    amount: int
    currency: str
    hold_id: str
    metadata: dict[str, str]
    expires_at_us: int | None = None  # absent when the hold never expires


class _CaptureCommand(msgspec.Struct, frozen=True, tag_field="type", tag="capture"):
    hold_id: str
    currency: str
    orders: list[_Order]
    metadata: dict[str, str]


class _ReleaseCommand(msgspec.Struct, frozen=True, tag_field="type", tag="release"):
    hold_id: str
    reason: str
    metadata: dict[str, str]


class _TransferPosting(msgspec.Struct, frozen=True):
    account: str  # as the command names it: kind:owner
    amount: int


class _TransferCommand(msgspec.Struct, frozen=True, tag_field="type", tag="transfer"):
    user_id: str
    currency: str
    postings: list[_TransferPosting]  # in the command's order
    reason: str
    metadata: dict[str, str]


def command_digest(command: Command) -> str:
    """Hex SHA-256 of the command's canonical bytes: what "the same request" means."""
    body: msgspec.Struct
    c = command
    if isinstance(c, Expense):
        orders = [_Order(*line) for line in c.orders]
        body = _ExpenseCommand(c.user_id, c.currency, orders, dict(c.metadata))
    elif isinstance(c, Recharge):
        body = _RechargeCommand(
            c.user_id, c.amount, c.currency, c.gateway, dict(c.metadata), c.gateway_reference
        )
    elif isinstance(c, Refund):
        body = _RefundCommand(
            c.expense_id,
            c.order_id,
            c.amount,
            c.currency,
            c.reason,
            dict(c.metadata),
            c.refund_request_id,
        )
    elif isinstance(c, Adjustment):
        body = _AdjustmentCommand(c.user_id, c.amount, c.currency, c.reason, dict(c.metadata))
    elif isinstance(c, Hold):
        body = _HoldCommand(
            c.user_id, c.amount, c.currency, c.hold_id, dict(c.metadata), c.expires_at_us
        )
    elif isinstance(c, Capture):
        orders = [_Order(*line) for line in c.orders]
        body = _CaptureCommand(c.hold_id, c.currency, orders, dict(c.metadata))
    elif isinstance(c, Release):
        body = _ReleaseCommand(c.hold_id, c.reason, dict(c.metadata))
    elif isinstance(c, Transfer):
        postings = [_TransferPosting(*posting) for posting in c.postings]
        body = _TransferCommand(c.user_id, c.currency, postings, c.reason, dict(c.metadata))
    else:  # pragma: no cover - the Command union is closed
        raise TypeError(f"not a command: {command!r}")
    return hashlib.sha256(_encoder.encode(body)).hexdigest()

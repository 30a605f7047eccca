"""Canonical encoding, version 1: the bytes that are hashed and stored for every event.

The format is specified in docs/log-format.md, with test vectors that tests/test_canonical.py
checks byte for byte. In short: UTF-8 JSON, object keys sorted, no insignificant whitespace,
integers as plain decimal digits (never floats), strings escaped as RFC 8785 does, `null` for
absent optional values. Nothing else in tally serializes events for hashing.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

from tally.domain.commands import (
    Adjustment,
    Command,
    Expense,
    OrderLine,
    Recharge,
    Refund,
)
from tally.domain.events import (
    EVENT_TYPES,
    BalanceAdjusted,
    Event,
    ExpensePaid,
    Posting,
    RefundIssued,
    WalletRecharged,
)

FORMAT_VERSION = 1

# msgspec writes exactly the canonical form: UTF-8, keys sorted, no whitespace, RFC 8785
# string escapes, integers as digits. The offline auditor re-derives the same bytes with the
# standard library's json module, so the two implementations check each other.
_encoder = msgspec.json.Encoder(order="sorted")
_decoder = msgspec.json.Decoder()


class CanonicalFormError(ValueError):
    """Bytes that are not a canonical v1 event."""


def dumps(value: Any) -> bytes:
    """Canonical bytes of a JSON value made of dicts, lists, str, int, bool and None."""
    return _encoder.encode(value)


def encode_event(ledger: str, event: Event) -> bytes:
    """The canonical v1 bytes of `event` in `ledger`."""
    body: dict[str, Any] = {
        "v": FORMAT_VERSION,
        "ledger": ledger,
        "seq": event.seq,
        "type": event.event_type,
        "transaction_id": event.transaction_id,
        "timestamp_us": event.timestamp_us,
        "idempotency_key": event.idempotency_key,
        "command_digest": event.command_digest,
        "actor": event.actor,
        "user_id": event.user_id,
        "currency": event.currency,
        "postings": [
            {
                "account": p.account,
                "currency": p.currency,
                "amount": p.amount,
                "order_id": p.order_id,
            }
            for p in event.postings
        ],
        "metadata": dict(event.metadata),
    }
    if isinstance(event, ExpensePaid):
        body["orders"] = [_order(line) for line in event.orders]
    elif isinstance(event, WalletRecharged):
        body["gateway"] = event.gateway
    elif isinstance(event, RefundIssued):
        body["expense_id"] = event.expense_id
        body["order_id"] = event.order_id
        body["amount"] = event.amount
        body["reason"] = event.reason
    elif isinstance(event, BalanceAdjusted):
        body["amount"] = event.amount
        body["reason"] = event.reason
    return dumps(body)


def decode_event(data: bytes) -> tuple[str, Event]:
    """Parse canonical v1 bytes back into `(ledger, event)`."""
    try:
        body = _decoder.decode(data)
        if body.get("v") != FORMAT_VERSION:
            raise CanonicalFormError(f"unsupported format version {body.get('v')!r}")
        cls = EVENT_TYPES[body["type"]]
        common: dict[str, Any] = {
            "seq": body["seq"],
            "transaction_id": body["transaction_id"],
            "timestamp_us": body["timestamp_us"],
            "idempotency_key": body["idempotency_key"],
            "command_digest": body["command_digest"],
            "actor": body["actor"],
            "user_id": body["user_id"],
            "currency": body["currency"],
            "postings": tuple(
                Posting(
                    account=p["account"],
                    currency=p["currency"],
                    amount=p["amount"],
                    order_id=p["order_id"],
                )
                for p in body["postings"]
            ),
            "metadata": tuple(sorted(body["metadata"].items())),
        }
        if cls is ExpensePaid:
            common["orders"] = tuple(
                OrderLine(order_id=o["order_id"], amount=o["amount"], merchant_id=o["merchant_id"])
                for o in body["orders"]
            )
        elif cls is WalletRecharged:
            common["gateway"] = body["gateway"]
        elif cls is RefundIssued:
            common.update(
                expense_id=body["expense_id"],
                order_id=body["order_id"],
                amount=body["amount"],
                reason=body["reason"],
            )
        else:
            common.update(amount=body["amount"], reason=body["reason"])
        event = cls(**common)
        ledger = body["ledger"]
    except (KeyError, TypeError, AttributeError, ValueError, msgspec.DecodeError) as error:
        raise CanonicalFormError(f"not a v1 event: {error}") from error
    if not isinstance(ledger, str):
        raise CanonicalFormError("ledger must be a string")
    return ledger, event


def _order(line: OrderLine) -> dict[str, Any]:
    return {"order_id": line.order_id, "amount": line.amount, "merchant_id": line.merchant_id}


def command_digest(command: Command) -> str:
    """Hex SHA-256 of the command's canonical bytes: what "the same request" means."""
    body: dict[str, Any]
    if isinstance(command, Expense):
        body = {
            "type": "expense",
            "user_id": command.user_id,
            "currency": command.currency,
            "orders": [_order(line) for line in command.orders],
        }
    elif isinstance(command, Recharge):
        body = {
            "type": "recharge",
            "user_id": command.user_id,
            "amount": command.amount,
            "currency": command.currency,
            "gateway": command.gateway,
        }
    elif isinstance(command, Refund):
        body = {
            "type": "refund",
            "expense_id": command.expense_id,
            "order_id": command.order_id,
            "amount": command.amount,
            "currency": command.currency,
            "reason": command.reason,
        }
    elif isinstance(command, Adjustment):
        body = {
            "type": "adjustment",
            "user_id": command.user_id,
            "amount": command.amount,
            "currency": command.currency,
            "reason": command.reason,
        }
    else:  # pragma: no cover - the Command union is closed
        raise TypeError(f"not a command: {command!r}")
    body["metadata"] = dict(command.metadata)
    return hashlib.sha256(dumps(body)).hexdigest()

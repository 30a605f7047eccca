"""The Python SDK for tally's HTTP API: `Client` (blocking) and `AsyncClient` (asyncio).

    from tally.client import Client, OrderLine, TransferPosting

    with Client("http://127.0.0.1:8000", "tally_key_...") as tally:
        tally.recharge("alice", "200.00", "USD", gateway="paypal")
        paid = tally.expense("alice", "USD", [OrderLine(order_id="o-1", amount="50.00")])
        tally.refund(paid.transaction_id, "o-1", "20.00", reason="returned")
        tally.hold("alice", "30.00", "USD", "auth-1")  # set aside, then captured or released
        tally.capture("auth-1", [OrderLine(order_id="o-2", amount="25.00")])
        tally.transfer(  # an admin key's: alice pays bob, and the platform a fee
            "alice",
            "USD",
            [
                TransferPosting(account="wallet:alice", amount="-5.50"),
                TransferPosting(account="wallet:bob", amount="5.00"),
                TransferPosting(account="revenue:platform", amount="0.50"),
            ],
            reason="dinner split",
        )
        print(tally.balances("alice").of("USD"))

It depends on httpx and msgspec only, never on the server's code, so it ships alone.
"""

from __future__ import annotations

from tally.client._async import AsyncClient
from tally.client._sync import Client
from tally.client.errors import (
    ApiError,
    Conflict,
    Forbidden,
    InvalidArgument,
    InvalidRequest,
    NotFound,
    Refused,
    ServerError,
    TallyError,
    TransportError,
    Unauthorized,
    UnreadableAnswer,
)
from tally.client.models import (
    AdjustmentCommand,
    Balance,
    Balances,
    BatchCommand,
    BatchResult,
    CaptureCommand,
    Entry,
    EventsPage,
    ExpenseCommand,
    FinanceReport,
    Hold,
    HoldCommand,
    HoldTransaction,
    Leg,
    LoggedEvent,
    Order,
    OrderLine,
    OrderTransaction,
    Problem,
    RechargeCommand,
    RefundCommand,
    RefundOf,
    ReleaseCommand,
    StatementPage,
    Transaction,
    TransferCommand,
    TransferPosting,
    UserHolds,
)

__all__ = [
    "AdjustmentCommand",
    "ApiError",
    "AsyncClient",
    "Balance",
    "Balances",
    "BatchCommand",
    "BatchResult",
    "CaptureCommand",
    "Client",
    "Conflict",
    "Entry",
    "EventsPage",
    "ExpenseCommand",
    "FinanceReport",
    "Forbidden",
    "Hold",
    "HoldCommand",
    "HoldTransaction",
    "InvalidArgument",
    "InvalidRequest",
    "Leg",
    "LoggedEvent",
    "NotFound",
    "Order",
    "OrderLine",
    "OrderTransaction",
    "Problem",
    "RechargeCommand",
    "RefundCommand",
    "RefundOf",
    "Refused",
    "ReleaseCommand",
    "ServerError",
    "StatementPage",
    "TallyError",
    "Transaction",
    "TransferCommand",
    "TransferPosting",
    "TransportError",
    "Unauthorized",
    "UnreadableAnswer",
    "UserHolds",
]

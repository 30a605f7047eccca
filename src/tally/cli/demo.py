"""Alice's journey from the seed, as `tally demo` runs it.

The keys are fixed, so running the demo again replays the same transactions (idempotency)
instead of spending Alice's money twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tally import views
from tally.domain.commands import Envelope, Expense, OrderLine, Recharge, Refund
from tally.engine.engine import Engine
from tally.money import parse_amount
from tally.verification import Verification, verify

USER = "alice"
CURRENCY = "USD"


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoOutcome:
    transactions: list[dict[str, Any]]
    statement: list[dict[str, Any]]
    verification: Verification


def run_demo(engine: Engine, ledger: str) -> DemoOutcome:
    usd = CURRENCY
    recharged = engine.execute(
        ledger,
        Envelope(
            idempotency_key="demo-alice-recharge",
            command=Recharge(
                user_id=USER,
                amount=parse_amount("200.00", usd),
                currency=usd,
                gateway="paypal",
                metadata=(("payment_gateway", "PayPal"),),
            ),
        ),
    )
    paid = engine.execute(
        ledger,
        Envelope(
            idempotency_key="demo-alice-expense",
            command=Expense(
                user_id=USER,
                currency=usd,
                orders=(
                    OrderLine(order_id="order-1001", amount=parse_amount("50.00", usd)),
                    OrderLine(order_id="order-1002", amount=parse_amount("35.00", usd)),
                ),
            ),
        ),
    )
    refunded = engine.execute(
        ledger,
        Envelope(
            idempotency_key="demo-alice-refund",
            command=Refund(
                expense_id=paid.event.transaction_id,
                order_id="order-1001",
                amount=parse_amount("20.00", usd),
                currency=usd,
                reason="item returned",
            ),
        ),
    )
    return DemoOutcome(
        transactions=[views.committed_view(c) for c in (recharged, paid, refunded)],
        statement=views.full_statement(engine.store, ledger, USER, usd),
        verification=verify(engine, ledger),
    )

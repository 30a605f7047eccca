"""Business keys are unique (DESIGN decision 7): a refund request is refunded once and a
gateway's payment credited once, on both stores: within a batch, across batches, and after
the writer is rebuilt from the log."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import audit_offline
from tally.bootstrap import open_engine
from tally.domain.commands import Envelope, Expense, OrderLine, Recharge, Refund
from tally.domain.events import ExpensePaid, RefundIssued, WalletRecharged
from tally.domain.rejections import InvariantViolated, Rejected, Rejection
from tally.domain.state import LedgerState, check_logged, evolve
from tally.engine.engine import Engine
from tally.engine.results import Committed
from tally.verification import verify

LEDGER = "shop"
WALLET = "wallet:alice:USD"


def _paid(engine: Engine) -> str:
    """Alice recharged 100.00 and paid order o-1 (60.00); the expense's transaction id."""
    engine.execute(
        LEDGER,
        Envelope(
            idempotency_key="r1",
            command=Recharge(user_id="alice", amount=100_00, currency="USD", gateway="pp"),
        ),
    )
    paid = engine.execute(
        LEDGER,
        Envelope(
            idempotency_key="e1",
            command=Expense(user_id="alice", currency="USD", orders=(OrderLine("o-1", 60_00),)),
        ),
    )
    return paid.event.transaction_id


def _refund(key: str, expense_id: str, request: str | None, amount: int = 10_00) -> Envelope:
    return Envelope(
        idempotency_key=key,
        command=Refund(
            expense_id=expense_id,
            order_id="o-1",
            amount=amount,
            currency="USD",
            refund_request_id=request,
        ),
    )


def test_a_refund_request_refunds_once_in_a_batch_and_across_batches(
    engine: Engine, db: str, tmp_path: Path
) -> None:
    expense_id = _paid(engine)
    outcomes = engine.execute_many(
        LEDGER,
        [
            _refund("f1", expense_id, "rma-1"),
            _refund("f1-retry", expense_id, "rma-1"),  # a retry that lost its key
            _refund("f2", expense_id, "rma-2"),
            _refund("f3", expense_id, None),
        ],
    )
    first, retried, other, unnamed = outcomes
    assert isinstance(first, Committed)
    assert isinstance(other, Committed)
    assert isinstance(unnamed, Committed)
    assert isinstance(retried, Rejected)
    assert (retried.reason, retried.field) == (Rejection.REFUND_ALREADY_ISSUED, "refund_request_id")
    assert first.event.transaction_id in retried.detail
    assert isinstance(first.event, RefundIssued)
    assert first.event.refund_request_id == "rma-1"
    # The same key and body: the original; a later batch under another key: refused.
    assert engine.execute(LEDGER, _refund("f1", expense_id, "rma-1")).event == first.event
    with pytest.raises(Rejected) as caught:
        engine.execute(LEDGER, _refund("f1-later", expense_id, "rma-1"))
    assert caught.value.reason == Rejection.REFUND_ALREADY_ISSUED
    (row,) = engine.store.account_balances(LEDGER, kind="wallet", owner="alice")
    assert (row.account, row.balance) == (WALLET, 40_00 + 3 * 10_00)  # three refunds, not four

    # A new writer knows the request from the log alone (its catch-up folds it).
    engine.close()
    reopened = open_engine(db)
    try:
        with pytest.raises(Rejected) as caught:
            reopened.execute(LEDGER, _refund("f1-after-restart", expense_id, "rma-1"))
        assert caught.value.reason == Rejection.REFUND_ALREADY_ISSUED
        assert verify(reopened, LEDGER).ok
    finally:
        reopened.close()
        reopened.store.close()
    report = audit_offline(db, LEDGER, tmp_path)
    assert report.ok
    assert report.balances[WALLET] == 70_00


def _refund_event(request: str) -> RefundIssued:
    return RefundIssued(
        seq=2,
        transaction_id="txn-2",
        timestamp_us=2,
        idempotency_key="f1",
        command_digest="0" * 64,
        actor="cli",
        user_id="alice",
        currency="USD",
        postings=(),
        expense_id="txn-1",
        order_id="o-1",
        amount=1,
        refund_request_id=request,
    )


def test_replay_refuses_a_logged_refund_request_id_that_is_no_identifier() -> None:
    state = LedgerState(LEDGER)
    with pytest.raises(InvariantViolated, match="refund_request_id"):
        check_logged(state, _refund_event("rma 1"))


def test_evolve_refuses_a_refund_request_refunded_twice() -> None:
    state = LedgerState(LEDGER)
    paid = ExpensePaid(
        seq=1,
        transaction_id="txn-1",
        timestamp_us=1,
        idempotency_key="e1",
        command_digest="0" * 64,
        actor="cli",
        user_id="alice",
        currency="USD",
        postings=(),
        orders=(OrderLine("o-1", 2),),
    )
    evolve(state, paid)
    evolve(state, _refund_event("rma-1"))
    again = _refund_event("rma-1")
    object.__setattr__(again, "seq", 3)
    object.__setattr__(again, "idempotency_key", "f2")
    with pytest.raises(InvariantViolated, match="refunded twice"):
        evolve(state, again)


def _recharge(key: str, gateway: str, reference: str | None) -> Envelope:
    return Envelope(
        idempotency_key=key,
        command=Recharge(
            user_id="bob",
            amount=25_00,
            currency="USD",
            gateway=gateway,
            gateway_reference=reference,
        ),
    )


def test_a_gateway_payment_is_credited_once_in_a_batch_and_across_batches(
    engine: Engine, db: str, tmp_path: Path
) -> None:
    outcomes = engine.execute_many(
        LEDGER,
        [
            _recharge("w1", "stripe", "pi_1"),
            _recharge("w1-redelivered", "stripe", "pi_1"),  # a webhook delivered twice
            _recharge("w2", "paypal", "pi_1"),  # another gateway's id that happens to match
            _recharge("w3", "stripe", None),
        ],
    )
    first, redelivered, other_gateway, unnamed = outcomes
    assert isinstance(first, Committed)
    assert isinstance(other_gateway, Committed)
    assert isinstance(unnamed, Committed)
    assert isinstance(redelivered, Rejected)
    assert (redelivered.reason, redelivered.field) == (
        Rejection.PAYMENT_ALREADY_CREDITED,
        "gateway_reference",
    )
    assert first.event.transaction_id in redelivered.detail
    assert isinstance(first.event, WalletRecharged)
    assert first.event.gateway_reference == "pi_1"
    (row,) = engine.store.account_balances(LEDGER, kind="wallet", owner="bob")
    assert row.balance == 3 * 25_00
    engine.close()
    reopened = open_engine(db)
    try:
        with pytest.raises(Rejected) as caught:
            reopened.execute(LEDGER, _recharge("w1-after-restart", "stripe", "pi_1"))
        assert caught.value.reason == Rejection.PAYMENT_ALREADY_CREDITED
        assert reopened.execute(LEDGER, _recharge("w1", "stripe", "pi_1")).replayed
        assert verify(reopened, LEDGER).ok
    finally:
        reopened.close()
        reopened.store.close()
    assert audit_offline(db, LEDGER, tmp_path).ok

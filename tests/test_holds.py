"""Holds, on both stores: money set aside from a wallet at once, then captured (paying orders,
the rest back) or released, each once; an expired hold is only released. A hold is its own
account, so the balances, statements, replay and verify that know accounts know holds."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import audit_offline
from tally import views
from tally.audit.canonical import decode_event, encode_event
from tally.bootstrap import open_engine
from tally.domain import limits
from tally.domain.commands import (
    Capture,
    Command,
    Envelope,
    Hold,
    OrderLine,
    Recharge,
    Refund,
    Release,
)
from tally.domain.events import (
    Event,
    HoldCaptured,
    HoldPlaced,
    HoldReleased,
    Posting,
    WalletRecharged,
)
from tally.domain.rejections import InvariantViolated, Rejected, Rejection
from tally.domain.state import LedgerState, check_logged, evolve
from tally.engine.engine import Engine
from tally.engine.results import Committed
from tally.verification import verify

LEDGER = "shop"
WALLET = "wallet:alice:USD"


def _run(engine: Engine, key: str, command: Command) -> Committed:
    return engine.execute(LEDGER, Envelope(idempotency_key=key, command=command))


def _now_us() -> int:
    return time.time_ns() // 1000


def _balance(engine: Engine, account: str) -> int:
    kind, owner, _ = account.split(":")
    rows = {
        row.account: row.balance
        for row in engine.store.account_balances(LEDGER, kind=kind, owner=owner)
    }
    return rows[account]


def test_a_hold_is_captured_once_paying_orders_and_the_rest_goes_back(
    engine: Engine, db: str, tmp_path: Path
) -> None:
    _run(engine, "r1", Recharge(user_id="alice", amount=100_00, currency="USD", gateway="pp"))
    placed = _run(engine, "h1", Hold(user_id="alice", amount=60_00, currency="USD", hold_id="a-1"))
    assert isinstance(placed.event, HoldPlaced)
    # Held money leaves the available balance at once; the hold's account holds it.
    assert _balance(engine, WALLET) == 40_00
    assert _balance(engine, "hold:a-1:USD") == 60_00
    with pytest.raises(Rejected) as caught:  # 40.00 is all that is available
        _run(engine, "e1", Hold(user_id="alice", amount=40_01, currency="USD", hold_id="a-2"))
    assert caught.value.reason == Rejection.INSUFFICIENT_FUNDS

    captured = _run(
        engine,
        "c1",
        Capture(
            hold_id="a-1",
            currency="USD",
            orders=(OrderLine("o-1", 25_00), OrderLine("o-2", 10_00, "m-9")),
        ),
    )
    assert isinstance(captured.event, HoldCaptured)
    assert captured.event.user_id == "alice"
    assert captured.event.currency == "USD"
    assert [(e.account, e.amount, e.balance_after) for e in captured.entries] == [
        ("hold:a-1:USD", -60_00, 0),
        (WALLET, 60_00, 100_00),
        (WALLET, -25_00, 75_00),
        ("revenue:platform:USD", 25_00, 25_00),
        (WALLET, -10_00, 65_00),
        ("revenue:m-9:USD", 10_00, 10_00),
    ]
    assert _balance(engine, WALLET) == 65_00
    assert _balance(engine, "hold:a-1:USD") == 0

    # The answer a client sees: the wallet's net +25.00, the orders, the hold.
    shown = views.committed_view(captured)
    assert (shown["event_type"], shown["amount"], shown["balance_after"]) == (
        "capture",
        "25.00",
        "65.00",
    )
    assert shown["reference_order_ids"] == ["o-1", "o-2"]
    assert shown["hold_id"] == "a-1"
    assert [line["hold_id"] for line in shown["entries"]] == ["a-1"] * 3
    recharge_view = views.find_transaction(engine.store, LEDGER, _first_txn(engine))
    assert recharge_view is not None
    assert "hold_id" not in recharge_view

    with pytest.raises(Rejected) as caught:
        _run(engine, "c2", Capture(hold_id="a-1", currency="USD", orders=(OrderLine("o-3", 1),)))
    assert (caught.value.reason, caught.value.field) == (Rejection.HOLD_SETTLED, "hold_id")
    assert captured.event.transaction_id in caught.value.detail
    with pytest.raises(Rejected) as caught:
        _run(engine, "x1", Release(hold_id="a-1"))
    assert caught.value.reason == Rejection.HOLD_SETTLED

    # A captured order is refunded as an expense's is, naming the capture.
    refunded = _run(
        engine,
        "f1",
        Refund(
            expense_id=captured.event.transaction_id, order_id="o-2", amount=4_00, currency="USD"
        ),
    )
    assert _balance(engine, WALLET) == 69_00
    with pytest.raises(Rejected) as caught:
        _run(
            engine,
            "f2",
            Refund(
                expense_id=captured.event.transaction_id,
                order_id="o-2",
                amount=6_01,
                currency="USD",
            ),
        )
    assert caught.value.reason == Rejection.REFUND_EXCEEDS_REFUNDABLE
    order = engine.store.order(LEDGER, "o-2")
    assert order is not None
    assert (order.expense_id, order.paid, order.refunded) == (
        captured.event.transaction_id,
        10_00,
        4_00,
    )
    assert [row.transaction_id for row in engine.store.order_events(LEDGER, "o-2")] == [
        captured.event.transaction_id,
        refunded.event.transaction_id,
    ]

    hold = views.hold_view(engine.store, LEDGER, "a-1", now_us=_now_us())
    assert hold is not None
    assert {k: hold[k] for k in ("status", "amount", "captured", "released", "user_id")} == {
        "status": "captured",
        "amount": "60.00",
        "captured": "35.00",
        "released": "25.00",
        "user_id": "alice",
    }
    assert hold["reference_order_ids"] == ["o-1", "o-2"]
    assert [t["event_type"] for t in hold["transactions"]] == ["hold", "capture"]
    assert views.hold_view(engine.store, LEDGER, "a-2", now_us=_now_us()) is None

    # The wallet's statement shows every line, each with the hold it belongs to.
    lines = views.full_statement(engine.store, LEDGER, "alice", "USD")
    assert [(line["event_type"], line["amount"], line["balance_after"]) for line in lines] == [
        ("recharge", "100.00", "100.00"),
        ("hold", "-60.00", "40.00"),
        ("capture", "60.00", "100.00"),
        ("capture", "-25.00", "75.00"),
        ("capture", "-10.00", "65.00"),
        ("refund", "4.00", "69.00"),
    ]
    assert [line.get("hold_id") for line in lines] == [None, "a-1", "a-1", "a-1", "a-1", None]

    assert verify(engine, LEDGER).ok
    report = audit_offline(db, LEDGER, tmp_path)
    assert report.ok, report.finding
    assert report.balances[WALLET] == 69_00


def _first_txn(engine: Engine) -> str:
    (row,) = engine.store.events(LEDGER, after_seq=0, limit=1)
    return row.transaction_id


def test_a_released_or_expired_hold_gives_everything_back(
    engine: Engine, db: str, tmp_path: Path
) -> None:
    _run(engine, "r1", Recharge(user_id="alice", amount=50_00, currency="USD", gateway="pp"))
    _run(engine, "h1", Hold(user_id="alice", amount=20_00, currency="USD", hold_id="a-1"))
    released = _run(engine, "x1", Release(hold_id="a-1", reason="order cancelled"))
    assert isinstance(released.event, HoldReleased)
    assert (released.event.amount, released.event.reason) == (20_00, "order cancelled")
    assert _balance(engine, WALLET) == 50_00
    with pytest.raises(Rejected) as caught:
        _run(engine, "c1", Capture(hold_id="a-1", currency="USD", orders=(OrderLine("o-1", 1),)))
    assert caught.value.reason == Rejection.HOLD_SETTLED

    expires = _now_us() + 300_000
    _run(
        engine,
        "h2",
        Hold(user_id="alice", amount=30_00, currency="USD", hold_id="a-2", expires_at_us=expires),
    )
    view = views.hold_view(engine.store, LEDGER, "a-2", now_us=_now_us())
    assert view is not None
    assert view["status"] == "open"
    assert view["expires_at"] == views.timestamp(expires)
    while _now_us() < expires:
        time.sleep(0.05)
    with pytest.raises(Rejected) as caught:
        _run(engine, "c2", Capture(hold_id="a-2", currency="USD", orders=(OrderLine("o-2", 1_00),)))
    assert (caught.value.reason, caught.value.field) == (Rejection.HOLD_EXPIRED, "hold_id")
    assert engine.store.order(LEDGER, "o-2") is None
    view = views.hold_view(engine.store, LEDGER, "a-2", now_us=_now_us())
    assert view is not None
    assert view["status"] == "expired"
    _run(engine, "x2", Release(hold_id="a-2"))
    assert _balance(engine, WALLET) == 50_00
    view = views.hold_view(engine.store, LEDGER, "a-2", now_us=_now_us())
    assert view is not None
    assert (view["status"], view["captured"], view["released"]) == ("released", "0.00", "30.00")
    assert verify(engine, LEDGER).ok
    assert audit_offline(db, LEDGER, tmp_path).ok


def test_holds_in_one_batch_and_a_writer_rebuilt_from_the_log(engine: Engine, db: str) -> None:
    _run(engine, "r1", Recharge(user_id="alice", amount=50_00, currency="USD", gateway="pp"))
    outcomes = engine.execute_many(
        LEDGER,
        [
            Envelope(
                idempotency_key="h1",
                command=Hold(user_id="alice", amount=20_00, currency="USD", hold_id="a-1"),
            ),
            Envelope(  # the same hold id again, in the same batch
                idempotency_key="h1-again",
                command=Hold(user_id="alice", amount=1_00, currency="USD", hold_id="a-1"),
            ),
            Envelope(
                idempotency_key="c1",
                command=Capture(hold_id="a-1", currency="USD", orders=(OrderLine("o-1", 5_00),)),
            ),
            Envelope(  # captured a moment ago, in the same batch
                idempotency_key="x1", command=Release(hold_id="a-1")
            ),
            Envelope(
                idempotency_key="h2",
                command=Hold(user_id="alice", amount=10_00, currency="USD", hold_id="a-2"),
            ),
        ],
    )
    kinds = [o.reason if isinstance(o, Rejected) else o.event.event_type for o in outcomes]
    assert kinds == [
        "hold",
        Rejection.HOLD_ALREADY_PLACED,
        "capture",
        Rejection.HOLD_SETTLED,
        "hold",
    ]
    assert _balance(engine, WALLET) == 35_00  # 50 - 20 + 15 back - 10 held
    engine.close()
    reopened = open_engine(db)
    try:
        with pytest.raises(Rejected) as caught:
            _run(reopened, "h3", Hold(user_id="alice", amount=1, currency="USD", hold_id="a-2"))
        assert caught.value.reason == Rejection.HOLD_ALREADY_PLACED
        with pytest.raises(Rejected) as caught:
            _run(
                reopened,
                "c2",
                Capture(hold_id="a-1", currency="USD", orders=(OrderLine("o-2", 1),)),
            )
        assert caught.value.reason == Rejection.HOLD_SETTLED
        assert _run(
            reopened, "c1", Capture(hold_id="a-1", currency="USD", orders=(OrderLine("o-1", 5_00),))
        ).replayed
        _run(
            reopened,
            "c3",
            Capture(hold_id="a-2", currency="USD", orders=(OrderLine("o-3", 10_00),)),
        )
        assert _balance(reopened, WALLET) == 35_00
        assert _balance(reopened, "hold:a-2:USD") == 0
        reopened.close()
        reopened.replay(LEDGER)
        assert verify(reopened, LEDGER).ok
        assert _balance(reopened, WALLET) == 35_00
    finally:
        reopened.close()
        reopened.store.close()


# -- the state's own checks: what replay and a writer's catch-up refuse ---------------------

USD = "USD"


def _placed(seq: int = 2, *, amount: int = 10, expires_at_us: int | None = None) -> HoldPlaced:
    return HoldPlaced(
        seq=seq,
        transaction_id=f"txn-{seq}",
        timestamp_us=seq,
        idempotency_key=f"k{seq}",
        command_digest="0" * 64,
        actor="cli",
        user_id="alice",
        currency=USD,
        postings=(Posting(WALLET, USD, -amount), Posting("hold:a-1:USD", USD, amount)),
        hold_id="a-1",
        amount=amount,
        expires_at_us=expires_at_us,
    )


def _captured(seq: int, orders: tuple[OrderLine, ...], *, held: int = 10) -> HoldCaptured:
    legs = [Posting("hold:a-1:USD", USD, -held), Posting(WALLET, USD, held)]
    for line in orders:
        legs += [
            Posting(WALLET, USD, -line.amount, line.order_id),
            Posting(f"revenue:{line.merchant_id}:USD", USD, line.amount, line.order_id),
        ]
    return HoldCaptured(
        seq=seq,
        transaction_id=f"txn-{seq}",
        timestamp_us=seq,
        idempotency_key=f"k{seq}",
        command_digest="0" * 64,
        actor="cli",
        user_id="alice",
        currency=USD,
        postings=tuple(legs),
        hold_id="a-1",
        orders=orders,
    )


def _released(seq: int, amount: int = 10) -> HoldReleased:
    return HoldReleased(
        seq=seq,
        transaction_id=f"txn-{seq}",
        timestamp_us=seq,
        idempotency_key=f"k{seq}",
        command_digest="0" * 64,
        actor="cli",
        user_id="alice",
        currency=USD,
        postings=(Posting("hold:a-1:USD", USD, -amount), Posting(WALLET, USD, amount)),
        hold_id="a-1",
        amount=amount,
    )


def _funded() -> LedgerState:
    """Alice's wallet holds 100 minor units (seq 1)."""
    state = LedgerState(LEDGER)
    recharged = WalletRecharged(
        seq=1,
        transaction_id="txn-1",
        timestamp_us=1,
        idempotency_key="k1",
        command_digest="0" * 64,
        actor="cli",
        user_id="alice",
        currency=USD,
        postings=(Posting("clearing:pp:USD", USD, -100), Posting(WALLET, USD, 100)),
        gateway="pp",
    )
    _fold(state, recharged)
    return state


def _fold(state: LedgerState, *events: Event) -> None:
    for event in events:
        check_logged(state, event)
        evolve(state, event)


def test_a_logged_hold_history_folds() -> None:
    state = _funded()
    _fold(state, _placed(), _captured(3, (OrderLine("o-1", 4),)))
    assert state.balance(WALLET) == 96
    hold = state.hold("a-1")
    assert hold is not None
    assert hold.settled_by == "txn-3"
    assert state.expenses["txn-3"] == USD
    order = state.order("o-1")
    assert order is not None
    assert order.expense_id == "txn-3"


@pytest.mark.parametrize(
    ("events", "problem"),
    [
        ((_captured(2, (OrderLine("o-1", 4),)),), "capture of a hold never placed"),
        ((_released(2),), "release of a hold never placed"),
        ((_placed(), _released(3), _released(4)), "settled twice"),
        ((_placed(), _captured(3, (OrderLine("o-1", 11),))), "beyond its amount"),
        ((_placed(expires_at_us=3), _captured(3, (OrderLine("o-1", 1),))), "after it expired"),
        ((_placed(), _placed(3)), "placed twice"),
        ((_placed(), _released(3, amount=9)), "another amount"),
        ((_placed(expires_at_us=2),), "expiring before"),
        ((_placed(amount=0),), "no money"),
        ((_placed(amount=101),), "below zero"),
        ((_placed(), _captured(3, (), held=10)), "without orders"),
    ],
    ids=[
        "capture unplaced",
        "release unplaced",
        "released twice",
        "captured beyond",
        "captured expired",
        "placed twice",
        "released other amount",
        "expiry before placing",
        "hold of nothing",
        "hold beyond wallet",
        "capture without orders",
    ],
)
def test_replay_refuses_a_hold_history_the_writer_could_not_have_made(
    events: tuple[Event, ...], problem: str
) -> None:
    state = _funded()
    with pytest.raises(InvariantViolated, match=problem):
        _fold(state, *events)


def test_replay_refuses_a_capture_whose_postings_are_not_its_holds() -> None:
    state = _funded()
    _fold(state, _placed())
    short = _captured(3, (OrderLine("o-1", 4),))
    # the hold's money back short by one: the wallet would pay the order from its own
    tampered = replace(
        short,
        postings=(Posting("hold:a-1:USD", USD, -9), Posting(WALLET, USD, 9), *short.postings[2:]),
    )
    with pytest.raises(InvariantViolated, match="postings are not those of its capture"):
        _fold(state, tampered)
    with pytest.raises(InvariantViolated, match="hold_id"):
        _fold(state, replace(short, hold_id="a 1"))


def test_a_failed_batch_forgets_its_holds() -> None:
    state = _funded()
    state.begin()
    evolve(state, _placed())
    evolve(state, _captured(3, (OrderLine("o-1", 4),)))
    state.rollback_newest()
    assert state.holds == {}
    assert state.orders == {}
    assert "txn-3" not in state.expenses
    assert state.balance(WALLET) == 100


@pytest.mark.parametrize(
    "event",
    [
        _placed(),
        _placed(expires_at_us=99),
        _captured(3, (OrderLine("o-1", 4), OrderLine("o-2", 5, "m-2"))),
        replace(_released(4), reason="cancelled — by the shop"),
    ],
    ids=["hold", "hold expiring", "capture", "release"],
)
def test_hold_events_round_trip_through_their_canonical_bytes(event: Event) -> None:
    body = encode_event(LEDGER, event)
    assert decode_event(body) == (LEDGER, event)
    assert (b'"expires_at_us"' in body) == (getattr(event, "expires_at_us", None) is not None)


def test_a_settled_hold_is_settled_once_even_when_its_account_is_filled_again() -> None:
    """Only a hold's own event fills its account, but the state refuses a second settling on
    its own: a history that got past the floor (money put back by another hold of the same
    id) still breaks."""
    state = _funded()
    _fold(state, _placed(), _released(3))
    state.balances["hold:a-1:USD"] = 10  # as if filled again
    with pytest.raises(InvariantViolated, match="settled twice"):
        evolve(state, _released(4))


def test_a_hold_that_expires_in_year_9999_is_shown_and_one_after_is_refused(
    engine: Engine,
) -> None:
    _run(engine, "r1", Recharge(user_id="alice", amount=10_00, currency="USD", gateway="pp"))
    latest = limits.timestamp_us_max
    _run(
        engine,
        "h1",
        Hold(user_id="alice", amount=1_00, currency="USD", hold_id="a-1", expires_at_us=latest),
    )
    view = views.hold_view(engine.store, LEDGER, "a-1", now_us=_now_us())
    assert view is not None
    assert view["expires_at"] == "9999-12-31T23:59:59.999999Z"
    with pytest.raises(Rejected) as caught:
        _run(
            engine,
            "h2",
            Hold(
                user_id="alice",
                amount=1_00,
                currency="USD",
                hold_id="a-2",
                expires_at_us=latest + 1,
            ),
        )
    assert (caught.value.reason, caught.value.field) == (Rejection.EXPIRY_INVALID, "expires_at")


def test_a_hold_given_back_past_the_64_bit_limit_is_refused_naming_the_hold(
    engine: Engine,
) -> None:
    """The wallet refilled to the limit while the hold was open: giving the hold back first
    would leave 64 bits, so neither capture nor release can go (nor should the refusal name
    a field the request does not have)."""
    _run(engine, "r1", Recharge(user_id="alice", amount=100, currency="USD", gateway="pp"))
    _run(engine, "h1", Hold(user_id="alice", amount=100, currency="USD", hold_id="a-1"))
    full = limits.INT64_MAX  # the wallet, emptied by the hold, filled to the limit
    _run(engine, "r2", Recharge(user_id="alice", amount=full, currency="USD", gateway="gw"))
    attempts: list[tuple[str, Command]] = [
        ("c1", Capture(hold_id="a-1", currency="USD", orders=(OrderLine("o-1", 100),))),
        ("x1", Release(hold_id="a-1")),
    ]
    for key, command in attempts:
        with pytest.raises(Rejected) as caught:
            _run(engine, key, command)
        assert (caught.value.reason, caught.value.field) == (
            Rejection.BALANCE_LIMIT_EXCEEDED,
            "hold_id",
        )
    assert _balance(engine, "hold:a-1:USD") == 100

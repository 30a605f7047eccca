"""The standalone auditor and the engine's replay agree on what a valid log is.

Each case rewrites one event of an honest log and re-chains it (a forgery of the bytes that
the chain alone cannot tell), then asks both: `tally_audit.verify_events` (standard library,
docs/log-format.md alone) and the engine's `Replayer` (what `tally replay`, `tally verify`
and a writer's catch-up fold). Both must refuse every one; neither may accept what the other
refuses, or `tally-audit` and `tally verify` would disagree about the same log.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tally.audit.chain import link
from tally.bootstrap import open_engine
from tally.domain.commands import (
    Adjustment,
    Capture,
    Command,
    Envelope,
    Expense,
    Hold,
    OrderLine,
    Recharge,
    Refund,
    Release,
    Transfer,
    TransferPosting,
)
from tally.engine.engine import Replayer
from tally.engine.ports import EventRow
from tally_audit import verify_events

LEDGER = "x"
Event = dict[str, Any]


def canonical(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()


@pytest.fixture(scope="module")
def honest(tmp_path_factory: pytest.TempPathFactory) -> list[Event]:
    """seq 1 recharge alice 100.00 USD, 2 expense o1 30.00, 3 refund 10.00 of o1,
    4 adjustment -5.00, 5 recharge bob 50 JPY."""
    path = Path(tmp_path_factory.mktemp("agreement")) / "ledger.db"
    engine = open_engine(path)
    try:

        def run(key: str, command: Recharge | Expense | Refund | Adjustment) -> str:
            done = engine.execute(LEDGER, Envelope(idempotency_key=key, command=command))
            return done.event.transaction_id

        run("r1", Recharge(user_id="alice", amount=10000, currency="USD", gateway="pp"))
        paid = run(
            "e1",
            Expense(
                user_id="alice", currency="USD", orders=(OrderLine(order_id="o1", amount=3000),)
            ),
        )
        run("f1", Refund(expense_id=paid, order_id="o1", amount=1000, currency="USD"))
        run("a1", Adjustment(user_id="alice", amount=-500, currency="USD", reason="fix"))
        run("r2", Recharge(user_id="bob", amount=50, currency="JPY", gateway="pp"))
        rows = engine.store.events(LEDGER, after_seq=0, limit=100)
        return [json.loads(row.body) for row in rows]
    finally:
        engine.close()
        engine.store.close()


def checked(events: list[Event], raw: dict[int, bytes] | None = None) -> tuple[bool, bool]:
    """(the auditor accepts, the engine accepts) the log of `events`, re-chained."""
    rows, head = [], bytes(32)
    for index, event in enumerate(events):
        body = (raw or {}).get(index) or canonical(event)
        head = link(head, body)
        rows.append(EventRow(event["seq"], event["transaction_id"], event["type"], body, head))
    report = verify_events(LEDGER, [(r.seq, r.body, r.hash) for r in rows], (len(rows), head))
    try:
        Replayer(LEDGER).feed(rows)
    except Exception:
        return report.ok, False
    return report.ok, True


def edited(honest: list[Event], seq: int, edit: Callable[[Event], None]) -> list[Event]:
    events: list[Event] = json.loads(json.dumps(honest))
    edit(events[seq - 1])
    return events


def test_both_accept_the_honest_log(honest: list[Event]) -> None:
    assert checked(honest) == (True, True)


def _set(key: str, value: object) -> Callable[[Event], None]:
    return lambda event: event.__setitem__(key, value)


def _each_posting(edit: Callable[[dict[str, Any]], None]) -> Callable[[Event], None]:
    def apply(event: Event) -> None:
        for posting in event["postings"]:
            edit(posting)

    return apply


def _negative_refund(event: Event) -> None:
    event["amount"] = -event["amount"]
    for posting in event["postings"]:
        posting["amount"] = -posting["amount"]


def _refund_in_yen(event: Event) -> None:
    event["currency"] = "JPY"
    for posting in event["postings"]:
        posting["currency"] = "JPY"
        posting["account"] = posting["account"][:-3] + "JPY"


def _more_money_moved(event: Event) -> None:
    for posting in event["postings"]:
        posting["amount"] *= 2


def _another_merchant(event: Event) -> None:
    for posting in event["postings"]:
        posting["account"] = posting["account"].replace("revenue:platform", "revenue:mallory")


def _overdraw(event: Event) -> None:
    """The expense pays 3,000.00 from a wallet of 100.00: its orders and postings agree."""
    event["orders"][0]["amount"] *= 100
    for posting in event["postings"]:
        posting["amount"] *= 100


def _adjust_nothing(event: Event) -> None:
    event["amount"] = 0
    for posting in event["postings"]:
        posting["amount"] = 0


def _colon_user(event: Event) -> None:
    """Credits `wallet:alice:X:USD`, an account id of four parts."""
    event["user_id"] = "alice:X"
    event["postings"][1]["account"] = "wallet:alice:X:USD"


def _spaced_user(event: Event) -> None:
    event["user_id"] = "al ice"
    event["postings"][1]["account"] = "wallet:al ice:USD"


def _colon_currency(event: Event) -> None:
    """Moves money between `clearing:pp:J:PY` and `wallet:bob:J:PY`."""
    event["currency"] = "J:PY"
    for posting in event["postings"]:
        posting["currency"] = "J:PY"
        posting["account"] = posting["account"][:-3] + "J:PY"


def _no_orders(event: Event) -> None:
    event["orders"] = []
    event["postings"] = []


FORGERIES: dict[str, tuple[int, Callable[[Event], None]]] = {
    "v true": (2, _set("v", True)),
    "seq as true": (1, _set("seq", True)),
    "adjustment without a reason": (4, _set("reason", "")),
    "adjustment of nothing": (4, _adjust_nothing),
    "posting without its order_id key": (1, _each_posting(lambda p: p.pop("order_id"))),
    "posting with an extra key": (1, lambda e: e["postings"][0].__setitem__("evil", 1)),
    "event with an extra key": (1, _set("evil", 1)),
    "order with an extra key": (2, lambda e: e["orders"][0].__setitem__("evil", 1)),
    "posting currency not its account's": (
        1,
        _each_posting(lambda p: p.__setitem__("currency", "EUR")),
    ),
    "event currency not its postings'": (1, _set("currency", "EUR")),
    "negative refund": (3, _negative_refund),
    "refund amount unlike the money it moves": (3, _set("amount", 1)),
    "refund in another currency than its order": (3, _refund_in_yen),
    "refund to another user than paid": (3, _set("user_id", "bob")),
    "refund from another merchant than paid": (3, _another_merchant),
    "recharge moving twice its wallet leg": (
        1,
        lambda e: e["postings"][0].__setitem__("amount", 2 * e["postings"][0]["amount"]),
    ),
    "recharge from another gateway than named": (1, _set("gateway", "other")),
    "expense moving other money than its orders": (2, _more_money_moved),
    "expense paying nothing": (2, lambda e: e["orders"][0].__setitem__("amount", 0)),
    "refund by another expense": (3, _set("expense_id", "txn_other")),
    "the same order twice in one expense": (2, lambda e: e.__setitem__("orders", e["orders"] * 2)),
    "a wallet below zero": (2, _overdraw),
    "float amounts": (1, _each_posting(lambda p: p.__setitem__("amount", float(p["amount"])))),
    # A float that json re-encodes as written is no integer all the same
    "timestamp as a float": (1, _set("timestamp_us", 1_000_000_000_000_000.0)),
    "metadata value not a string": (1, _set("metadata", {"a": 1})),
    "metadata value an object": (1, _set("metadata", {"b": {"c": "d"}})),
    "actor null": (1, _set("actor", None)),
    "command digest null": (1, _set("command_digest", None)),
    "command digest not hex": (1, _set("command_digest", "z" * 64)),
    "actor empty": (1, _set("actor", "")),
    "actor unprintable": (1, _set("actor", "cli\n")),
    "type a list": (1, _set("type", [])),
    "user id holding a colon": (1, _colon_user),
    "user id with a space": (1, _spaced_user),
    "refund of an order id that is no identifier": (3, _set("order_id", None)),
    "expense without orders": (2, _no_orders),
    "currency holding a colon": (5, _colon_currency),
    "refund request id no identifier": (3, _set("refund_request_id", "rr 1")),
    "refund request id empty": (3, _set("refund_request_id", "")),
    "refund request id a number": (3, _set("refund_request_id", 7)),
    "refund request id on an expense": (2, _set("refund_request_id", "rr-1")),
    "gateway reference no identifier": (1, _set("gateway_reference", "pay:1")),
    "gateway reference a number": (1, _set("gateway_reference", 7)),
    "gateway reference on a refund": (3, _set("gateway_reference", "pay-1")),
}


@pytest.mark.parametrize(("seq", "edit"), list(FORGERIES.values()), ids=list(FORGERIES))
def test_both_refuse_a_rechained_forgery(
    honest: list[Event], seq: int, edit: Callable[[Event], None]
) -> None:
    assert checked(edited(honest, seq, edit)) == (False, False)


def test_the_engine_leaves_canonical_form_to_the_auditor(honest: list[Event]) -> None:
    """Escaped text is the same value in other bytes: the chain covers those bytes, and the
    auditor refuses them; the engine folds the value (documented in ARCHITECTURE.md)."""
    events = edited(honest, 1, _set("metadata", {"note": "pé"}))
    raw = {0: canonical(events[0]).replace("é".encode(), b"\\u00e9")}
    assert checked(events, raw) == (False, True)


def _second_refund(honest: list[Event], first: str, second: str) -> list[Event]:
    """The honest log with seq 3 naming refund request `first`, and a sixth event: another
    10.00 of the same order (20.00 of its 30.00 refunded in all), naming `second`."""
    events = edited(honest, 3, _set("refund_request_id", first))
    again: Event = json.loads(json.dumps(events[2]))
    again.update(seq=6, transaction_id="txn_again", idempotency_key="f2", refund_request_id=second)
    return [*events, again]


def test_both_accept_refunds_of_distinct_refund_requests(honest: list[Event]) -> None:
    assert checked(_second_refund(honest, "rr-1", "rr-2")) == (True, True)


def test_both_refuse_two_refunds_of_one_refund_request(honest: list[Event]) -> None:
    """Decision 7: one refund per refund request, in the log as at the API."""
    assert checked(_second_refund(honest, "rr-1", "rr-1")) == (False, False)


def test_a_null_refund_request_id_is_absent_to_the_engine_and_not_canonical(
    honest: list[Event],
) -> None:
    """The optional key is left out when absent: `null` is the same value in other bytes,
    which (as escapes above) the auditor refuses and the engine folds."""
    assert checked(edited(honest, 3, _set("refund_request_id", None))) == (False, True)


def _second_payment(honest: list[Event], gateway: str) -> list[Event]:
    """Seq 1 (alice's 100.00 through `pp`) naming payment pay-1, and a sixth event: another
    recharge of alice through `gateway` naming the same payment id."""
    events = edited(honest, 1, _set("gateway_reference", "pay-1"))
    again: Event = json.loads(json.dumps(events[0]))
    again.update(seq=6, transaction_id="txn_again", idempotency_key="r3", gateway=gateway)
    for posting in again["postings"]:
        posting["account"] = posting["account"].replace("clearing:pp:", f"clearing:{gateway}:")
    return [*events, again]


def test_both_accept_one_payment_id_at_two_gateways(honest: list[Event]) -> None:
    assert checked(_second_payment(honest, "stripe")) == (True, True)


def test_both_refuse_two_recharges_of_one_gateway_payment(honest: list[Event]) -> None:
    assert checked(_second_payment(honest, "pp")) == (False, False)


# -- holds -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def holds(tmp_path_factory: pytest.TempPathFactory) -> list[Event]:
    """seq 1 recharge alice 100.00 USD, 2 expense o0 10.00, 3 hold h1 40.00 expiring in an
    hour, 4 capture of h1 paying o1 30.00 to m1, 5 refund 5.00 of o1 (naming the capture),
    6 hold h2 10.00 that never expires, 7 release of h2."""
    path = Path(tmp_path_factory.mktemp("agreement-holds")) / "ledger.db"
    engine = open_engine(path)
    try:

        def run(key: str, command: Command) -> str:
            done = engine.execute(LEDGER, Envelope(idempotency_key=key, command=command))
            return done.event.transaction_id

        hour_later_us = time.time_ns() // 1000 + 3_600_000_000
        run("r1", Recharge(user_id="alice", amount=10000, currency="USD", gateway="pp"))
        run(
            "e1",
            Expense(
                user_id="alice", currency="USD", orders=(OrderLine(order_id="o0", amount=1000),)
            ),
        )
        run(
            "h1",
            Hold(
                user_id="alice",
                amount=4000,
                currency="USD",
                hold_id="h1",
                expires_at_us=hour_later_us,
            ),
        )
        order = OrderLine(order_id="o1", amount=3000, merchant_id="m1")
        captured = run("c1", Capture(hold_id="h1", currency="USD", orders=(order,)))
        run("f1", Refund(expense_id=captured, order_id="o1", amount=500, currency="USD"))
        run("h2", Hold(user_id="alice", amount=1000, currency="USD", hold_id="h2"))
        run("x2", Release(hold_id="h2", reason="cancelled"))
        rows = engine.store.events(LEDGER, after_seq=0, limit=100)
        return [json.loads(row.body) for row in rows]
    finally:
        engine.close()
        engine.store.close()


def test_both_accept_the_honest_log_with_holds(holds: list[Event]) -> None:
    assert [event["type"] for event in holds] == [
        *("recharge", "expense", "hold", "capture", "refund", "hold", "release")
    ]
    assert "expires_at_us" in holds[2]
    assert "expires_at_us" not in holds[5]
    assert checked(holds) == (True, True)


def _rename_hold(hold_id: str) -> Callable[[Event], None]:
    """The event names hold `hold_id`, its postings the hold's account too."""

    def apply(event: Event) -> None:
        old = f"hold:{event['hold_id']}:"
        event["hold_id"] = hold_id
        for posting in event["postings"]:
            posting["account"] = posting["account"].replace(old, f"hold:{hold_id}:")

    return apply


def _of_amount(amount: int) -> Callable[[Event], None]:
    """The event's `amount` is `amount`, its two postings agreeing (a hold, release, refund)."""

    def apply(event: Event) -> None:
        sign = event["postings"][1]["amount"] // abs(event["postings"][1]["amount"])
        event["amount"] = amount
        event["postings"][0]["amount"] = -sign * amount
        event["postings"][1]["amount"] = sign * amount

    return apply


def _of_true(event: Event) -> None:
    """A hold of `true` moving 1: a JSON boolean equals 1 in Python, and is no integer."""
    event["amount"] = True
    event["postings"][0]["amount"], event["postings"][1]["amount"] = -1, 1


def _to_bob(event: Event) -> None:
    """The capture or release credits bob's wallet: user and postings agree."""
    event["user_id"] = "bob"
    for posting in event["postings"]:
        posting["account"] = posting["account"].replace("wallet:alice:", "wallet:bob:")


def _capture_paying(amount: int) -> Callable[[Event], None]:
    """The capture pays its order `amount`, its postings agreeing."""

    def apply(event: Event) -> None:
        event["orders"][0]["amount"] = amount
        event["postings"][2]["amount"] = -amount
        event["postings"][3]["amount"] = amount

    return apply


def _capture_paying_o0(event: Event) -> None:
    """The capture pays o0 again, which the expense at seq 2 paid."""
    event["orders"][0]["order_id"] = "o0"
    for posting in event["postings"][2:]:
        posting["order_id"] = "o0"


def _capture_without_orders(event: Event) -> None:
    event["orders"] = []
    del event["postings"][2:]


def _capture_giving_back_the_rest(event: Event) -> None:
    """The hold's 40.00 out as 10.00 to the wallet and 30.00 to the merchant: the same
    balances as the format's legs, but not its postings."""
    event["postings"] = [
        {**event["postings"][0]},
        {**event["postings"][1], "amount": 1000},
        {**event["postings"][3]},
    ]


def _hold_back_to_bob(event: Event) -> None:
    """The capture's first credit goes to bob's wallet; alice's still pays the order."""
    event["postings"][1]["account"] = "wallet:bob:USD"


def _capture_in_yen(event: Event) -> None:
    event["currency"] = "JPY"
    for posting in event["postings"]:
        posting["currency"] = "JPY"
        posting["account"] = posting["account"][:-3] + "JPY"


def _release_from_another_hold(event: Event) -> None:
    event["postings"][0]["account"] = "hold:h1:USD"


def _release_of_the_captured_hold(event: Event) -> None:
    _rename_hold("h1")(event)
    _of_amount(4000)(event)


HOLD_FORGERIES: dict[str, tuple[int, Callable[[Event], None]]] = {
    "hold with an extra key": (3, _set("evil", 1)),
    "hold without its amount": (3, lambda e: e.pop("amount")),
    "hold without its hold_id": (3, lambda e: e.pop("hold_id")),
    "capture with an expires_at_us": (4, _set("expires_at_us", 2**62)),
    "capture with an amount": (4, _set("amount", 3000)),
    "release with an extra key": (7, _set("evil", 1)),
    "release without its reason": (7, lambda e: e.pop("reason")),
    "hold expiring at its own timestamp": (3, lambda e: e.update(expires_at_us=e["timestamp_us"])),
    "hold expiring before it was placed": (
        3,
        lambda e: e.update(expires_at_us=e["timestamp_us"] - 1),
    ),
    "hold expiry a float": (3, lambda e: e.update(expires_at_us=float(e["expires_at_us"]))),
    "hold expiry a string": (3, lambda e: e.update(expires_at_us=str(e["expires_at_us"]))),
    "hold expiry true": (3, _set("expires_at_us", True)),
    "hold of nothing": (3, _of_amount(0)),
    "hold of a negative amount (its hold account below zero)": (3, _of_amount(-4000)),
    "hold amount a float": (3, lambda e: e.update(amount=float(e["amount"]))),
    "hold amount true, its postings 1": (3, _of_true),
    "hold id with a space": (3, _rename_hold("h 1")),
    "hold id holding a colon": (3, _rename_hold("h:1")),
    "hold id empty": (3, _rename_hold("")),
    "hold id a number": (3, _set("hold_id", 7)),
    "hold into another hold's account": (
        3,
        lambda e: e["postings"][1].__setitem__("account", "hold:h9:USD"),
    ),
    "hold from another user's wallet": (
        3,
        lambda e: e["postings"][0].__setitem__("account", "wallet:bob:USD"),
    ),
    "capture of a hold never placed": (4, _rename_hold("h9")),
    "capture to another user than held": (4, _to_bob),
    "capture in another currency than held": (4, _capture_in_yen),
    "capture beyond its hold": (4, _capture_paying(4001)),
    "capture paying nothing": (4, _capture_paying(0)),
    "capture paying an order an expense paid": (4, _capture_paying_o0),
    "capture without orders": (4, _capture_without_orders),
    "capture giving back only what the orders left": (4, _capture_giving_back_the_rest),
    "capture giving the hold back to another wallet": (4, _hold_back_to_bob),
    "capture order with an extra key": (4, lambda e: e["orders"][0].__setitem__("evil", 1)),
    "capture order id no identifier": (4, lambda e: e["orders"][0].__setitem__("order_id", "o 1")),
    "refund of a captured order beyond what it paid": (5, _of_amount(3001)),
    "refund naming the hold instead of the capture": (
        5,
        lambda e: e.update(expense_id="txn_not_the_capture"),
    ),
    "release of another amount": (7, _set("amount", 999)),
    "release of another amount, its postings agreeing": (7, _of_amount(999)),
    "release of a hold never placed": (7, _rename_hold("h9")),
    "release of the captured hold": (7, _release_of_the_captured_hold),
    "release to another user than held": (7, _to_bob),
    "release from another hold's account": (7, _release_from_another_hold),
    "release reason null": (7, _set("reason", None)),
    "release amount a string": (7, _set("amount", "1000")),
    "release amount a float": (7, lambda e: e.update(amount=float(e["amount"]))),
}


@pytest.mark.parametrize(("seq", "edit"), list(HOLD_FORGERIES.values()), ids=list(HOLD_FORGERIES))
def test_both_refuse_a_rechained_hold_forgery(
    holds: list[Event], seq: int, edit: Callable[[Event], None]
) -> None:
    assert checked(edited(holds, seq, edit)) == (False, False)


def _copy(events: list[Event]) -> list[Event]:
    copied: list[Event] = json.loads(json.dumps(events))
    return copied


def _expiring(holds: list[Event], *, capture_before_us: int) -> list[Event]:
    """Hold h1 expiring `capture_before_us` after its capture's timestamp (≤ 0: expired)."""
    events = _copy(holds)
    events[2]["expires_at_us"] = events[3]["timestamp_us"] + capture_before_us
    return events


def test_both_accept_a_capture_a_microsecond_before_expiry(holds: list[Event]) -> None:
    assert checked(_expiring(holds, capture_before_us=1)) == (True, True)


def test_both_refuse_a_capture_at_or_after_expiry(holds: list[Event]) -> None:
    assert checked(_expiring(holds, capture_before_us=0)) == (False, False)
    assert checked(_expiring(holds, capture_before_us=-1)) == (False, False)


def test_both_accept_a_release_after_expiry(holds: list[Event]) -> None:
    """Hold h2 given an expiry between its placing and its release: the release is fine."""
    events = edited(holds, 6, lambda e: e.update(expires_at_us=e["timestamp_us"] + 1))
    events[6]["timestamp_us"] = events[5]["timestamp_us"] + 2
    assert checked(events) == (True, True)


def test_both_accept_a_capture_of_the_whole_hold(holds: list[Event]) -> None:
    """Orders of exactly the hold's amount: nothing goes back, and nothing is beyond it."""
    assert checked(edited(holds, 4, _capture_paying(4000))) == (True, True)


def test_both_refuse_a_second_hold_of_one_hold_id(holds: list[Event]) -> None:
    """Seq 6 places h1 again (the log ends there: a later release of it is another finding)."""
    events = edited(holds, 6, _rename_hold("h1"))[:6]
    assert checked(events) == (False, False)
    assert checked(holds[:6]) == (True, True)  # as h2: fine


def _capture_of_h2(holds: list[Event], seq: int) -> Event:
    """A capture of h2 (10.00) paying a new order, o2, all of it, as event `seq`."""
    capture = _copy(holds)[3]
    capture.update(seq=seq, transaction_id="txn_capture_h2", idempotency_key="c2")
    _rename_hold("h2")(capture)
    _capture_paying(1000)(capture)
    capture["postings"][0]["amount"], capture["postings"][1]["amount"] = -1000, 1000
    capture["orders"][0]["order_id"] = "o2"
    for posting in capture["postings"][2:]:
        posting["order_id"] = "o2"
    return capture


def test_both_refuse_a_second_settlement(holds: list[Event]) -> None:
    """An eighth event releasing h2 again, or capturing it after its release (which, in
    the release's place, is a capture both accept)."""
    release_again = _copy(holds)[6]
    release_again.update(seq=8, transaction_id="txn_again", idempotency_key="x3")
    assert checked([*holds, release_again]) == (False, False)
    assert checked([*holds[:6], _capture_of_h2(holds, 7)]) == (True, True)
    assert checked([*holds, _capture_of_h2(holds, 8)]) == (False, False)


def test_a_null_expiry_is_absent_to_the_engine_and_not_canonical(holds: list[Event]) -> None:
    """As a null `refund_request_id` above: the engine folds the value (no expiry), the
    auditor refuses the bytes, which are not those the server writes."""
    assert checked(edited(holds, 6, _set("expires_at_us", None))) == (False, True)


# -- transfers ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def transfers(tmp_path_factory: pytest.TempPathFactory) -> list[Event]:
    """seq 1 recharge alice 100.00 USD, 2 transfer alice pays bob 5.00 and the platform a
    0.50 fee, 3 transfer alice 10.00 from equity:promotions (no reason), 4 transfer bob pays
    his 5.00 out to the gateway, 5 transfer alice pays 0.01 to each of 99 wallets (100
    postings, the limit)."""
    path = Path(tmp_path_factory.mktemp("agreement-transfers")) / "ledger.db"
    engine = open_engine(path)
    try:

        def run(key: str, user_id: str, *legs: tuple[str, int], reason: str = "") -> None:
            postings = tuple(TransferPosting(account, amount) for account, amount in legs)
            command = Transfer(user_id=user_id, currency="USD", postings=postings, reason=reason)
            engine.execute(LEDGER, Envelope(idempotency_key=key, command=command))

        recharge = Recharge(user_id="alice", amount=10000, currency="USD", gateway="pp")
        engine.execute(LEDGER, Envelope(idempotency_key="r1", command=recharge))
        dinner = (("wallet:alice", -550), ("wallet:bob", 500), ("revenue:platform", 50))
        run("t1", "alice", *dinner, reason="dinner split")
        run("t2", "alice", ("equity:promotions", -1000), ("wallet:alice", 1000))
        run("t3", "bob", ("wallet:bob", -500), ("clearing:pp", 500), reason="payout")
        payees = tuple((f"wallet:u{index}", 1) for index in range(99))
        run("t4", "alice", ("wallet:alice", -99), *payees)
        rows = engine.store.events(LEDGER, after_seq=0, limit=100)
        return [json.loads(row.body) for row in rows]
    finally:
        engine.close()
        engine.store.close()


def test_both_accept_the_honest_log_with_transfers(transfers: list[Event]) -> None:
    assert [event["type"] for event in transfers] == ["recharge", *["transfer"] * 4]
    assert len(transfers[4]["postings"]) == 100
    assert checked(transfers) == (True, True)


def _posting(account: str, amount: int, currency: str = "USD") -> dict[str, Any]:
    return {"account": account, "amount": amount, "currency": currency, "order_id": None}


def _with(*postings: dict[str, Any]) -> Callable[[Event], None]:
    return lambda event: event["postings"].extend(postings)


def _on(index: int, account: str) -> Callable[[Event], None]:
    """Posting `index` moves `account` instead, its currency the account's."""

    def apply(event: Event) -> None:
        event["postings"][index].update(account=account, currency=account.rsplit(":", 1)[1])

    return apply


def _one_more_payee(event: Event) -> None:
    event["postings"][0]["amount"] -= 1
    event["postings"].append(_posting("wallet:u99:USD", 1))


def _bob_twice(event: Event) -> None:
    half = _posting("wallet:bob:USD", 250)
    event["postings"][1:2] = [half, dict(half)]


def _transfer_by(user_id: str) -> Callable[[Event], None]:
    """The transfer is `user_id`'s, its first posting (alice's) on their wallet."""

    def apply(event: Event) -> None:
        event["user_id"] = user_id
        event["postings"][0]["account"] = f"wallet:{user_id}:USD"

    return apply


def _overdraw_bob(event: Event) -> None:
    """Bob pays out 5.01 of his 5.00."""
    event["postings"][0]["amount"], event["postings"][1]["amount"] = -501, 501


def _of_each_payee(amount: int) -> Callable[[Event], None]:
    """The payees' postings are `amount` each, alice's agreeing."""

    def apply(event: Event) -> None:
        for posting in event["postings"][1:]:
            posting["amount"] = amount
        event["postings"][0]["amount"] = -amount * (len(event["postings"]) - 1)

    return apply


TRANSFER_FORGERIES: dict[str, tuple[int, Callable[[Event], None]]] = {
    "transfer with an extra key": (2, _set("evil", 1)),
    "transfer without its reason": (2, lambda e: e.pop("reason")),
    "transfer with orders": (2, _set("orders", [])),
    "transfer with a hold_id": (2, _set("hold_id", "h1")),
    "transfer with a gateway_reference": (2, _set("gateway_reference", "pay-1")),
    "transfer reason null": (3, _set("reason", None)),
    "transfer reason a number": (2, _set("reason", 7)),
    "transfer of one posting": (2, lambda e: e["postings"].__delitem__(slice(1, None))),
    "transfer of 101 postings": (5, _one_more_payee),
    "transfer into a hold's account": (2, _on(2, "hold:h1:USD")),
    "transfer into an account of no known kind": (2, _on(2, "escrow:platform:USD")),
    "transfer into an account without an owner": (2, _on(2, "revenue:USD")),
    "transfer to an owner with a space": (2, _on(1, "wallet:b ob:USD")),
    "transfer to an owner holding a colon": (2, _on(1, "wallet:bob:EUR:USD")),
    "transfer by a user id with a space": (2, _transfer_by("al ice")),
    "transfer with balanced postings in another currency": (
        2,
        _with(_posting("clearing:pp:EUR", -1, "EUR"), _posting("wallet:bob:EUR", 1, "EUR")),
    ),
    "transfer posting for an order": (2, lambda e: e["postings"][1].update(order_id="o1")),
    "transfer posting of no money": (2, _with(_posting("wallet:carol:USD", 0))),
    "transfer posting a float amount": (
        2,
        _each_posting(lambda p: p.__setitem__("amount", float(p["amount"]))),
    ),
    "transfer naming an account twice": (2, _bob_twice),
    "transfer without its user's wallet": (2, _set("user_id", "carol")),
    "transfer not summing to zero": (2, lambda e: e["postings"][1].update(amount=600)),
    "transfer taking a wallet below zero": (4, _overdraw_bob),
    "transfer taking a wallet below zero in 99 postings": (5, _of_each_payee(-1)),
    "transfer posting past 64 bits": (
        2,
        _with(
            _posting("equity:mint:USD", -(2**63)),
            _posting("wallet:carol:USD", 1),
            _posting("revenue:m:USD", 2**63 - 1),
        ),
    ),
}


@pytest.mark.parametrize(
    ("seq", "edit"), list(TRANSFER_FORGERIES.values()), ids=list(TRANSFER_FORGERIES)
)
def test_both_refuse_a_rechained_transfer_forgery(
    transfers: list[Event], seq: int, edit: Callable[[Event], None]
) -> None:
    assert checked(edited(transfers, seq, edit)) == (False, False)


def _by_carol_naming_her_wallet(event: Event) -> None:
    event["user_id"] = "carol"
    event["postings"] += [_posting("wallet:carol:USD", 1), _posting("equity:fees:USD", -1)]


# The forgeries' edits without what breaks the rule: both accept these.
NEAR_TRANSFERS: dict[str, tuple[int, Callable[[Event], None]]] = {
    "transfer naming two accounts more": (
        2,
        _with(_posting("wallet:carol:USD", 1), _posting("clearing:pp:USD", -1)),
    ),
    "transfer by another user than the wallet it takes from": (2, _by_carol_naming_her_wallet),
    "transfer of 100 postings, 1.00 to each payee": (5, _of_each_payee(100)),
}


@pytest.mark.parametrize(("seq", "edit"), list(NEAR_TRANSFERS.values()), ids=list(NEAR_TRANSFERS))
def test_both_accept_what_breaks_no_transfer_rule(
    transfers: list[Event], seq: int, edit: Callable[[Event], None]
) -> None:
    assert checked(edited(transfers, seq, edit)) == (True, True)

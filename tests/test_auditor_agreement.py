"""The standalone auditor and the engine's replay agree on what a valid log is.

Each case rewrites one event of an honest log and re-chains it (a forgery of the bytes that
the chain alone cannot tell), then asks both: `tally_audit.verify_events` (standard library,
docs/log-format.md alone) and the engine's `Replayer` (what `tally replay`, `tally verify`
and a writer's catch-up fold). Both must refuse every one; neither may accept what the other
refuses, or `tally-audit` and `tally verify` would disagree about the same log.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tally.audit.chain import link
from tally.bootstrap import open_engine
from tally.domain.commands import Adjustment, Envelope, Expense, OrderLine, Recharge, Refund
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

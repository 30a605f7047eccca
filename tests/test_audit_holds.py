"""The offline auditor on holds: each invariant of docs/log-format.md named by its finding.

tests/test_auditor_agreement.py checks that the auditor and the engine refuse the same
forged logs; several hold invariants back each other up there (a hold settled twice also
drives its `hold:` account below zero), so a check removed could go unnoticed. Here each
forgery of the document's demo log (seq 7 holds auth-5501, 8 captures it, 9 holds auth-5502,
10 releases it) must be refused for its own reason.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tally.audit.chain import link
from tally_audit import verify, verify_events
from test_canonical import LEDGER, doc_vectors

Event = dict[str, Any]


def demo_log() -> list[Event]:
    """The document's log up to the release at seq 10: the forgeries below append at 11."""
    return [json.loads(body) for body in list(doc_vectors().values())[:10]]


def finding(events: list[Event]) -> str | None:
    """The auditor's problem with the log of `events`, re-chained; None when it passes."""
    rows, head = [], bytes(32)
    for event in events:
        body = verify.canonical(event)
        head = link(head, body)
        rows.append((event["seq"], body, head))
    report = verify_events(LEDGER, rows, (len(rows), head))
    return None if report.finding is None else f"seq {report.finding.seq}: {report.finding.problem}"


def test_the_demo_log_passes() -> None:
    assert [event["type"] for event in demo_log()[6:]] == ["hold", "capture", "hold", "release"]
    assert finding(demo_log()) is None


def _edit(seq: int, edit: Callable[[Event], object]) -> Callable[[list[Event]], list[Event]]:
    def apply(events: list[Event]) -> list[Event]:
        edit(events[seq - 1])
        return events

    return apply


def _again(seq: int, **changes: object) -> Callable[[list[Event]], list[Event]]:
    """The log with a copy of event `seq` appended as seq 11, with `changes`."""

    def apply(events: list[Event]) -> list[Event]:
        copy: Event = json.loads(json.dumps(events[seq - 1]))
        copy.update(seq=11, transaction_id="txn_again", idempotency_key="again", **changes)
        return [*events, copy]

    return apply


def _capture_in_yen(event: Event) -> None:
    event["currency"] = "JPY"
    for posting in event["postings"]:
        posting["currency"] = "JPY"
        posting["account"] = posting["account"][:-3] + "JPY"


def _capture_paying(amount: int) -> Callable[[Event], None]:
    def apply(event: Event) -> None:
        event["orders"][0]["amount"] = amount
        event["postings"][2]["amount"], event["postings"][3]["amount"] = -amount, amount

    return apply


def _to_bob(event: Event) -> None:
    event["user_id"] = "bob"
    for posting in event["postings"]:
        posting["account"] = posting["account"].replace("wallet:alice:", "wallet:bob:")


def _of_nothing(event: Event) -> None:
    event["amount"] = 0
    for posting in event["postings"]:
        posting["amount"] = 0


def _of_true(event: Event) -> None:
    """A hold of `true`, and postings of 1: a JSON boolean equals 1 in Python."""
    event["amount"] = True
    event["postings"][0]["amount"], event["postings"][1]["amount"] = -1, 1


def _without_orders(event: Event) -> None:
    event["orders"] = []
    del event["postings"][2:]


def _net_of_orders(event: Event) -> None:
    """The hold's 25.00 out as the 5.00 the order left to the wallet and 20.00 to the
    merchant: the balances of the format's legs, not its postings."""
    event["postings"][1]["amount"] = 5_00
    del event["postings"][2]


def _expired_at_capture(events: list[Event]) -> list[Event]:
    events[6]["expires_at_us"] = events[7]["timestamp_us"]
    return events


def _second_hold_of(hold_id: str) -> Callable[[list[Event]], list[Event]]:
    """Seq 9 places `hold_id` instead of auth-5502, and the log ends there."""

    def apply(events: list[Event]) -> list[Event]:
        nine = events[8]
        nine["hold_id"] = hold_id
        nine["postings"][1]["account"] = f"hold:{hold_id}:USD"
        return events[:9]

    return apply


def _hold_id(hold_id: object) -> Callable[[Event], None]:
    def apply(event: Event) -> None:
        event["hold_id"] = hold_id
        event["postings"][1]["account"] = f"hold:{hold_id}:USD"

    return apply


_BAD_EXPIRY = (
    "seq 7: malformed hold (expires_at_us an integer after its timestamp_us, before year 10000)"
)

FINDINGS: dict[str, tuple[Callable[[list[Event]], list[Event]], str]] = {
    "an unknown key": (
        _edit(7, lambda e: e.update(evil=1)),
        "seq 7: a hold with other keys than the format's",
    ),
    "an expires_at_us on a release": (
        _edit(10, lambda e: e.update(expires_at_us=2**62)),
        "seq 10: a release with other keys than the format's",
    ),
    "a hold id that is no identifier": (
        _edit(7, _hold_id("auth 5501")),
        "seq 7: malformed hold_id (not an identifier)",
    ),
    "a hold id that is a number": (
        _edit(7, _hold_id(5501)),
        "seq 7: malformed hold_id (not an identifier)",
    ),
    "a capture by a user id that is no identifier": (
        _edit(8, lambda e: e.update(user_id="al ice")),
        "seq 8: malformed user_id (not an identifier)",
    ),
    "a release of a hold id that is no identifier": (
        _edit(10, lambda e: e.update(hold_id="auth:5502")),
        "seq 10: malformed hold_id (not an identifier)",
    ),
    "a release by a user id that is no identifier": (
        _edit(10, lambda e: e.update(user_id="al ice")),
        "seq 10: malformed user_id (not an identifier)",
    ),
    "a capture of a hold id that is no identifier": (
        _edit(8, lambda e: e.update(hold_id="auth:5501")),
        "seq 8: malformed hold_id (not an identifier)",
    ),
    "a hold of nothing": (
        _edit(7, _of_nothing),
        "seq 7: malformed hold (a positive amount)",
    ),
    "a hold of true (which is no 1)": (
        _edit(7, _of_true),
        "seq 7: malformed hold (a positive amount)",
    ),
    "an expiry of true (which is no 1)": (
        _edit(7, lambda e: e.update(timestamp_us=0, expires_at_us=True)),
        _BAD_EXPIRY,
    ),
    "an expiry at the hold's own timestamp": (
        _edit(7, lambda e: e.update(expires_at_us=e["timestamp_us"])),
        _BAD_EXPIRY,
    ),
    "an expiry of null": (
        _edit(7, lambda e: e.update(expires_at_us=None)),
        _BAD_EXPIRY,
    ),
    "an expiry after year 9999": (
        _edit(7, lambda e: e.update(expires_at_us=253_402_300_800_000_000)),
        _BAD_EXPIRY,
    ),
    "a hold's money put in another hold's account": (
        _edit(7, lambda e: e["postings"][1].update(account="hold:auth-9999:USD")),
        "seq 7: postings are not those the format prescribes for this hold",
    ),
    "a second hold of one id": (
        _second_hold_of("auth-5501"),
        "seq 9: hold auth-5501 placed twice",
    ),
    "a capture of a hold never placed": (
        _edit(8, lambda e: e.update(hold_id="auth-9999")),
        "seq 8: capture of hold auth-9999, which was never placed",
    ),
    "a capture of a released hold": (
        _again(8, hold_id="auth-5502"),
        "seq 11: hold auth-5502 settled twice",
    ),
    "a release of a captured hold": (
        _again(10, hold_id="auth-5501"),
        "seq 11: hold auth-5501 settled twice",
    ),
    "a capture to another user": (
        _edit(8, _to_bob),
        "seq 8: capture of hold auth-5501 to another wallet than held it",
    ),
    "a capture in another currency": (
        _edit(8, _capture_in_yen),
        "seq 8: capture of hold auth-5501 to another wallet than held it",
    ),
    "a capture at the hold's expiry": (
        _expired_at_capture,
        "seq 8: hold auth-5501 captured after it expired",
    ),
    "a capture beyond its hold": (
        _edit(8, _capture_paying(25_01)),
        "seq 8: hold auth-5501 captured beyond its amount",
    ),
    "a capture paying an order an expense paid": (
        _edit(8, lambda e: e["orders"][0].update(order_id="order-1001")),
        "seq 8: order order-1001 paid twice",
    ),
    "a capture without orders": (
        _edit(8, _without_orders),
        "seq 8: capture without orders",
    ),
    "a capture giving back only what the order left": (
        _edit(8, _net_of_orders),
        "seq 8: postings are not those the format prescribes for this capture",
    ),
    "a release of another amount": (
        _edit(10, lambda e: e.update(amount=9_99)),
        "seq 10: release of another amount than hold auth-5502 holds",
    ),
    "a release of a float amount": (
        _edit(10, lambda e: e.update(amount=float(e["amount"]))),
        "seq 10: release of another amount than hold auth-5502 holds",
    ),
    "a release's reason null": (
        _edit(10, lambda e: e.update(reason=None)),
        "seq 10: malformed release (a reason, which may be empty)",
    ),
    "a release to another user": (
        _edit(10, _to_bob),
        "seq 10: release of hold auth-5502 to another wallet than held it",
    ),
}


@pytest.mark.parametrize(("forge", "problem"), list(FINDINGS.values()), ids=list(FINDINGS))
def test_each_broken_hold_invariant_is_named(
    forge: Callable[[list[Event]], list[Event]], problem: str
) -> None:
    assert finding(forge(demo_log())) == problem


def test_a_refund_may_name_a_capture_and_is_limited_by_its_order() -> None:
    """order-1003 was paid 20.00 by the capture at seq 8: refunds name the capture's
    transaction as their expense, and may take back those 20.00, no more."""
    events = demo_log()
    capture = events[7]
    refund: Event = json.loads(json.dumps(events[4]))  # 10.00 of order-1002 to m-42
    refund.update(
        seq=11,
        transaction_id="txn_refund_capture",
        idempotency_key="refund-1003",
        expense_id=capture["transaction_id"],
        order_id="order-1003",
        refund_request_id="rma-8801",
    )
    for posting in refund["postings"]:
        posting["order_id"] = "order-1003"
    again: Event = json.loads(json.dumps(refund))
    again.update(seq=12, transaction_id="txn_again", idempotency_key="again")
    again.pop("refund_request_id")
    assert finding([*events, refund, again]) is None  # 20.00 of 20.00
    third: Event = json.loads(json.dumps(again))
    third.update(seq=13, transaction_id="txn_third", idempotency_key="third", amount=1)
    third["postings"][0]["amount"], third["postings"][1]["amount"] = -1, 1
    assert finding([*events, refund, again, third]) == (
        "seq 13: order order-1003 refunded beyond what it was paid"
    )
    by_the_hold = {**refund, "expense_id": events[6]["transaction_id"]}
    assert finding([*events, by_the_hold]) == "seq 11: refund of an order its expense did not pay"


def test_a_hold_account_never_goes_below_zero() -> None:
    """No log the other checks pass moves a `hold:` account but by its hold's own legs, so
    the floor is checked where balances are folded: the last line of defence."""
    fold = verify._Invariants({"wallet:alice:USD": 1})
    with pytest.raises(verify._Bad, match=r"hold:h1:USD goes below zero \(-1\)"):
        fold._post([("hold:h1:USD", "USD", -1, None), ("wallet:alice:USD", "USD", 1, None)])
    fold._post([("hold:h1:USD", "USD", 1, None), ("wallet:alice:USD", "USD", -1, None)])
    assert fold.balances == {"hold:h1:USD": 1, "wallet:alice:USD": 0}

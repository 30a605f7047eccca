"""`tally hold`, `capture`, `release` and `hold-show`: money set aside from a wallet at once,
out of its available balance, then captured once (it pays orders, the rest goes back) or
released (all of it goes back). An expired hold can no longer be captured, only released.

Registered into the `tally` app by the last lines of cli/app.py.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from cyclopts import Parameter

from tally import expiry, views
from tally.cli.ledger_access import (
    existing_ledger,
    order_lines,
    print_no_ledger,
    print_rejection,
    write,
)
from tally.cli.options import Common, console, print_json, print_usage
from tally.domain.commands import Capture, Envelope, Hold, Release
from tally.domain.decide import check_identifier
from tally.domain.rejections import Rejected, Rejection
from tally.money import parse_amount


def hold(
    user: str,
    amount: str,
    currency: str,
    /,
    *,
    hold_id: str,
    key: str,
    expires_at: str | None = None,
    common: Common | None = None,
) -> int:
    """Set AMOUNT CURRENCY of USER's wallet aside until it is captured or released.

    --hold-id is the platform's id of the hold, how capture, release and hold-show name it:
    a ledger places each hold once (hold_already_placed). From --expires-at (RFC 3339 with a
    zone, e.g. 2026-12-01T00:00:00Z) on, the hold can no longer be captured, only released.
    The expiry is a moment, not a duration: the same command retried with its --key is the
    same request (a duration would move it at every retry: idempotency_key_reused)."""
    common = common or Common()
    try:
        command = Hold(
            user_id=user,
            amount=parse_amount(amount, currency),
            currency=currency,
            hold_id=hold_id,
            expires_at_us=_expiry_us(expires_at),
        )
    except Rejected as rejection:
        return print_rejection(rejection, common)
    return write(common, Envelope(idempotency_key=key, command=command))


def _expiry_us(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return views.instant_us(text)
    except ValueError as error:  # a bad value of a write: refused, as a bad amount is
        raise Rejected(Rejection.EXPIRY_INVALID, field="expires_at", detail=str(error)) from None


def capture(
    hold_id: str,
    /,
    *,
    order: Annotated[list[str], Parameter(consume_multiple=False)],
    key: str,
    common: Common | None = None,
) -> int:
    """Pay one or many orders from the hold HOLD_ID, atomically: --order ORDER_ID:AMOUNT ...
    (amounts in the hold's currency); what they do not take goes back to the wallet.

    A hold is captured once. An order paid so is refunded against the capture:
    `tally refund CAPTURE_TRANSACTION_ID ORDER_ID AMOUNT`."""
    common = common or Common()
    try:
        check_identifier(hold_id, "hold_id")
        currency = _hold_named(common, hold_id)["currency"]
        lines = order_lines(order, currency)
    except Rejected as rejection:
        return print_rejection(rejection, common)
    command = Capture(hold_id=hold_id, currency=currency, orders=lines)
    return write(common, Envelope(idempotency_key=key, command=command))


def _hold_named(common: Common, hold_id: str) -> dict[str, Any]:
    """The view of the hold `hold_id` of `common.ledger`; refused `hold_unknown` when there is
    none (nor any such ledger, which is not created to find that out)."""
    with existing_ledger(common) as engine:
        view = (
            None
            if engine is None
            else views.hold_view(engine.store, common.ledger, hold_id, now_us=_now_us())
        )
    if view is None:
        raise Rejected(Rejection.HOLD_UNKNOWN, field="hold_id", detail=f"no hold {hold_id}")
    return view


def _now_us() -> int:
    return time.time_ns() // 1000


def release(hold_id: str, /, *, key: str, reason: str = "", common: Common | None = None) -> int:
    """Give all of the hold HOLD_ID back to its wallet (an expired hold's too)."""
    common = common or Common()
    command = Release(hold_id=hold_id, reason=reason)
    return write(common, Envelope(idempotency_key=key, command=command))


def hold_show(hold_id: str, /, *, common: Common | None = None) -> int:
    """What HOLD_ID holds: its status (open, expired, captured, released), amount, what was
    captured and released, its expiry and its transactions."""
    common = common or Common()
    try:
        check_identifier(hold_id, "hold_id")  # as `balance`: refused, not a hold unknown
    except Rejected as rejection:
        return print_rejection(rejection, common)
    with existing_ledger(common) as engine:
        if engine is None:
            return print_no_ledger(common)
        view = views.hold_view(engine.store, common.ledger, hold_id, now_us=_now_us())
    if view is None:
        return print_rejection(
            Rejected(Rejection.HOLD_UNKNOWN, field="hold_id", detail=f"no hold {hold_id}"),
            common,
        )
    if common.json:
        print_json(view)
        return 0
    currency = view["currency"]
    console.print(
        f"hold {view['hold_id']} of {view['user_id']} ({currency}): {view['status']}; "
        f"amount {view['amount']}, captured {view['captured']}, released {view['released']}; "
        f"expires {view['expires_at'] or 'never'}"
    )
    if view["reference_order_ids"]:
        console.print(f"  orders {', '.join(view['reference_order_ids'])}")
    for line in view["transactions"]:
        console.print(f"  {line['event_type']} {line['transaction_id']} seq {line['seq']}")
    return 0


def holds(
    user_id: str,
    /,
    *,
    open_only: Annotated[bool, Parameter(name="--open", negative="")] = False,
    settled_only: Annotated[bool, Parameter(name="--settled", negative="")] = False,
    common: Common | None = None,
) -> int:
    """USER_ID's holds in the order they were placed, with their status (open, expired,
    captured, released). --open lists only those still holding money (open, or expired and
    not yet released), --settled only those captured or released."""
    common = common or Common()
    if open_only and settled_only:
        return print_usage("--open and --settled exclude each other: give one, or neither")
    try:
        check_identifier(user_id, "user_id")
    except Rejected as rejection:
        return print_rejection(rejection, common)
    settled = False if open_only else True if settled_only else None
    found: list[dict[str, Any]] = []
    with existing_ledger(common) as engine:
        if engine is None:
            return print_no_ledger(common)
        after_seq: int | None = 0
        now_us = _now_us()
        while after_seq is not None:
            page = views.user_holds(
                engine.store,
                common.ledger,
                user_id,
                after_seq=after_seq,
                limit=views.holds_page_max,
                settled=settled,
                now_us=now_us,
            )
            found.extend(page["holds"])
            after_seq = page["next_after_seq"]
    if common.json:
        print_json({"user_id": user_id, "holds": found})
        return 0
    for view in found:
        console.print(
            f"hold {view['hold_id']} ({view['currency']}): {view['status']}; amount "
            f"{view['amount']}, captured {view['captured']}, released {view['released']}; "
            f"expires {view['expires_at'] or 'never'}"
        )
    console.print(f"{len(found)} hold(s) of {user_id}")
    return 0


def release_expired(*, common: Common | None = None) -> int:
    """Release every hold that expired and is still open: its money back to its wallet.

    Run it from cron (or by hand): an expired hold can no longer be captured, and only a
    release gives its money back. Each release's idempotency key is tally:expired:HOLD_ID,
    so sweeps that overlap release each hold once. Exit 0 when every expired hold is
    settled, 1 when one was refused (listed)."""
    common = common or Common()
    with existing_ledger(common) as engine:
        if engine is None:
            return print_no_ledger(common)
        sweep = expiry.release_expired(engine, common.ledger, now_us=_now_us())
    refused = [
        {"hold_id": hold_id, "error": r.reason.code, "field": r.field, "detail": r.detail}
        for hold_id, r in sweep.refused
    ]
    if common.json:
        print_json(
            {
                "released": [views.committed_view(c) for c in sweep.released],
                "settled_meanwhile": sweep.settled_meanwhile,
                "refused": refused,
            }
        )
    else:
        for committed in sweep.released:
            view = views.committed_view(committed)
            console.print(
                f"released {view['hold_id']}: {view['amount']} {view['currency']} back to "
                f"{view['user_id']}, balance after {view['balance_after']} "
                f"({view['transaction_id']} seq {view['seq']})"
            )
        for hold_id in sweep.settled_meanwhile:
            console.print(f"{hold_id}: settled meanwhile, nothing to release")
        for line in refused:
            console.print(f"{line['hold_id']}: refused {line['error']}: {line['detail']}")
        console.print(f"{len(sweep.released)} expired hold(s) released")
    return 1 if refused else 0

"""How a ledger command reaches its ledger and answers: the engine it opens, a read of a
ledger that may not exist (never created to find that out), one write with its printed
answer or refusal, and the `--order ORDER_ID:AMOUNT` lines of the commands that pay orders.

Shared by the commands of cli/app.py and cli/holds.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from tally import views
from tally.api_keys import KeyRefused, check_ledger_name
from tally.bootstrap import open_engine
from tally.cli.new_ledger import is_new_database, refusal_on_a_new_ledger
from tally.cli.options import Common, Refusal, console, print_json, print_refusal
from tally.domain.commands import Envelope, OrderLine
from tally.domain.rejections import Rejected, Rejection
from tally.engine.engine import Engine
from tally.money import parse_amount


class UsageError(Exception):
    """Bad arguments the parser could not catch (exit status 2)."""


def _check_ledger_name(common: Common) -> None:
    try:
        check_ledger_name(common.ledger)
    except KeyRefused as refusal:
        raise UsageError(str(refusal)) from None


@contextmanager
def engine_on(common: Common) -> Iterator[Engine]:
    """An engine on `common.db`; a write through it creates `common.ledger` if need be."""
    _check_ledger_name(common)
    engine = open_engine(common.db)
    try:
        yield engine
    finally:
        engine.close()
        engine.store.close()


@contextmanager
def existing_ledger(common: Common) -> Iterator[Engine | None]:
    """An engine to read `common.ledger` with; None when there is no such ledger (a SQLite
    file that is not there is not created to find that out)."""
    if is_new_database(common.db):
        _check_ledger_name(common)
        yield None
        return
    with engine_on(common) as engine:
        yield None if engine.store.head(common.ledger) is None else engine


def print_rejection(rejection: Rejected, common: Common) -> int:
    """Say why the command was refused (`print_refusal`); returns the exit status, 1."""
    return print_refusal(
        rejection.reason.code, rejection.field, rejection.detail, as_json=common.json
    )


def print_no_ledger(common: Common) -> int:
    """A read of a ledger nobody created: refused, not an empty answer."""
    return print_refusal(
        Refusal.LEDGER_UNKNOWN, "ledger", no_ledger_detail(common), as_json=common.json
    )


def no_ledger_detail(common: Common) -> str:
    return f"no ledger {common.ledger!r} in {common.db}"


def write(common: Common, envelope: Envelope) -> int:
    """Write one command and print the transaction it made (or made before, under the same
    key), or its refusal."""
    # The writer creates its ledger before deciding: a command it would refuse as the
    # ledger's first is refused here instead, leaving no ledger (nor a new --db file) behind.
    _check_ledger_name(common)
    if is_new_database(common.db):
        refusal = refusal_on_a_new_ledger(common.ledger, envelope)
        if refusal is not None:
            return print_rejection(refusal, common)
    with engine_on(common) as engine:
        if engine.store.head(common.ledger) is None:
            refusal = refusal_on_a_new_ledger(common.ledger, envelope)
            if refusal is not None:
                return print_rejection(refusal, common)
        try:
            committed = engine.execute(common.ledger, envelope)
        except Rejected as rejection:
            return print_rejection(rejection, common)
        view = views.committed_view(committed)
    if common.json:
        print_json(view)
    else:
        replay = " (replayed: this key was already used for this request)" * committed.replayed
        console.print(
            f"{view['event_type']} {view['transaction_id']} seq {view['seq']}: "
            f"{view['amount']} {view['currency']}, balance after {view['balance_after']}{replay}"
        )
        for leg in view.get("postings", ()):  # a transfer's: every account it moved
            console.print(
                f"  {leg['account']} {leg['amount']}, balance after {leg['balance_after']}"
            )
    return 0


def order_lines(texts: Iterable[str], currency: str) -> tuple[OrderLine, ...]:
    """`--order ORDER_ID:AMOUNT` options, each amount in `currency`; the orders' merchant is
    the platform (as an expense's)."""
    return tuple(_order_line(text, currency, index) for index, text in enumerate(texts))


def _order_line(text: str, currency: str, index: int) -> OrderLine:
    order_id, separator, amount = text.rpartition(":")
    if not separator:
        raise Rejected(
            Rejection.AMOUNT_INVALID,
            field=f"orders[{index}]",
            detail=f"expected ORDER_ID:AMOUNT, got {text!r}",
        )
    return OrderLine(
        order_id=order_id, amount=parse_amount(amount, currency, field=f"orders[{index}].amount")
    )

"""`tally`: record, inspect, replay and verify a ledger from the shell.

Every command takes `--db PATH` (default ./tally.db); the ledger commands also take
`--ledger NAME` (default "default") and `--json` (`serve` takes no `--json`; `key create`
and `key list` need `--ledger`). Exit status: 0 ok, 1 refused or verification failed,
2 usage error, 3 the ledger's log is broken (tampered or corrupt; nothing was changed),
4 verification inconclusive (writes kept coming faster than verify could check them;
nothing was found wrong in what it read: verify again later), 5 unavailable (the database
could not be opened or reached, or `serve` could not listen on its address).
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import structlog
from cyclopts import App, Parameter
from rich.table import Table
from rich.text import Text

from tally import __version__, views
from tally.audit.canonical import CanonicalFormError
from tally.cli.demo import run_demo
from tally.cli.ledger_access import (
    UsageError,
    engine_on,
    existing_ledger,
    no_ledger_detail,
    order_lines,
    print_no_ledger,
    print_rejection,
    write,
)
from tally.cli.options import (
    Common,
    Refusal,
    console,
    errors,
    print_json,
    print_refusal,
    print_usage,
)
from tally.domain.commands import Envelope, Expense, Recharge, Refund
from tally.domain.decide import check_identifier
from tally.domain.events import ORDER_PAYING_TYPES
from tally.domain.rejections import InvariantViolated, Rejected, Rejection
from tally.engine.ports import HeadMoved, StoreUnavailable
from tally.money import exponent, parse_amount
from tally.verification import Verification, verify

app = App(name="tally", help=__doc__, version=__version__)


@contextmanager
def _folding_the_whole_log() -> Iterator[None]:
    """For verify and replay: they build millions of objects with no reference cycles, which
    the cyclic collector would walk again and again (folding 200,000 events: 3.96-4.27 s of
    CPU with it, 3.33-3.94 s without; reading the projections back: 3.6-4.0 s, 2.6 s).
    Reference counting still frees them."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@app.command
def recharge(
    user: str,
    amount: str,
    currency: str,
    /,
    *,
    gateway: str,
    key: str,
    reference: str | None = None,
    common: Common | None = None,
) -> int:
    """Credit USER's wallet with AMOUNT CURRENCY received through a payment gateway.

    --reference is the gateway's id of the payment: a ledger credits each payment of a
    gateway once, whatever --key a retry carries (payment_already_credited)."""
    common = common or Common()
    try:
        command = Recharge(
            user_id=user,
            amount=parse_amount(amount, currency),
            currency=currency,
            gateway=gateway,
            gateway_reference=reference,
        )
    except Rejected as rejection:
        return print_rejection(rejection, common)
    return write(common, Envelope(idempotency_key=key, command=command))


@app.command
def expense(
    user: str,
    currency: str,
    /,
    *,
    order: Annotated[list[str], Parameter(consume_multiple=False)],
    key: str,
    common: Common | None = None,
) -> int:
    """Pay one or many orders from USER's wallet, atomically: --order ORDER_ID:AMOUNT ..."""
    common = common or Common()
    try:
        lines = order_lines(order, currency)
    except Rejected as rejection:
        return print_rejection(rejection, common)
    command = Expense(user_id=user, currency=currency, orders=lines)
    return write(common, Envelope(idempotency_key=key, command=command))


@app.command
def refund(
    expense_transaction_id: str,
    order_id: str,
    amount: str,
    /,
    *,
    key: str,
    reason: str = "",
    request: str | None = None,
    common: Common | None = None,
) -> int:
    """Refund AMOUNT of ORDER_ID, paid by the expense EXPENSE_TRANSACTION_ID, to the wallet.

    An order a hold paid is refunded against its capture: EXPENSE_TRANSACTION_ID is then the
    capture's transaction id.

    --request names the refund request it carries out (a return, a cancellation): a ledger
    refunds each request once, whatever --key a retry carries (refund_already_issued)."""
    common = common or Common()
    with existing_ledger(common) as engine:  # no ledger: no expense (and nothing is created)
        expense_view = (
            None
            if engine is None
            else views.find_transaction(engine.store, common.ledger, expense_transaction_id)
        )
    try:
        if expense_view is None or expense_view["event_type"] not in ORDER_PAYING_TYPES:
            raise Rejected(
                Rejection.EXPENSE_UNKNOWN,
                field="expense_id",
                detail=f"no expense {expense_transaction_id}",
            )
        currency = expense_view["currency"]
        command = Refund(
            expense_id=expense_transaction_id,
            order_id=order_id,
            amount=parse_amount(amount, currency),
            currency=currency,
            reason=reason,
            refund_request_id=request,
        )
    except Rejected as rejection:
        return print_rejection(rejection, common)
    return write(common, Envelope(idempotency_key=key, command=command))


@app.command
def balance(user: str, /, *, common: Common | None = None) -> int:
    """USER's wallet balance in every currency."""
    common = common or Common()
    try:
        check_identifier(user, "user_id")  # as HTTP: refused, not a user with no activity
    except Rejected as rejection:
        return print_rejection(rejection, common)
    with existing_ledger(common) as engine:
        if engine is None:
            return print_no_ledger(common)
        view = views.balances(engine.store, common.ledger, user)
    if common.json:
        print_json(view)
        return 0
    table = Table("currency", "balance", title=f"{user} @ {common.ledger}")
    for line in view["balances"]:
        table.add_row(line["currency"], line["balance"])
    console.print(table)
    return 0


@app.command
def statement(user: str, /, *, currency: str, common: Common | None = None) -> int:
    """USER's statement in CURRENCY: every wallet line with its balance after."""
    common = common or Common()
    try:  # as HTTP: refused, not an empty statement
        check_identifier(user, "user_id")
        exponent(currency)
    except Rejected as rejection:
        return print_rejection(rejection, common)
    with existing_ledger(common) as engine:
        if engine is None:
            return print_no_ledger(common)
        entries = views.full_statement(engine.store, common.ledger, user, currency)
    if common.json:
        print_json({"entries": entries})
    else:
        console.print(statement_table(user, currency, entries))
    return 0


def statement_table(user: str, currency: str, entries: list[dict[str, Any]]) -> Table:
    table = Table(
        "seq",
        "timestamp",
        "event",
        "amount",
        "balance after",
        "orders",
        "transaction",
        title=f"statement of {user} ({currency})",
    )
    for line in entries:
        table.add_row(
            str(line["seq"]),
            line["timestamp"],
            line["event_type"],
            line["amount"],
            line["balance_after"],
            ", ".join(line["reference_order_ids"]),
            line["transaction_id"],
        )
    return table


@app.command
def order(order_id: str, /, *, common: Common | None = None) -> int:
    """What ORDER_ID was paid, what was refunded, what is still refundable."""
    common = common or Common()
    with existing_ledger(common) as engine:
        if engine is None:
            return print_no_ledger(common)
        row = engine.store.order(common.ledger, order_id)
        view = None if row is None else views.order_view(engine.store, common.ledger, row)
    if view is None:
        return print_rejection(
            Rejected(Rejection.ORDER_UNKNOWN, field="order_id", detail=f"no order {order_id}"),
            common,
        )
    if common.json:
        print_json(view)
        return 0
    paid_by = view["transactions"][0]["event_type"]  # the expense, or a hold's capture
    console.print(
        f"order {view['order_id']} ({view['currency']}): paid {view['paid']}, refunded "
        f"{view['refunded']}, refundable {view['refundable']}; {paid_by} {view['expense_id']}"
    )
    for line in view["transactions"]:
        console.print(f"  {line['event_type']} {line['transaction_id']} seq {line['seq']}")
    return 0


@app.command(name="verify")
def verify_command(*, common: Common | None = None) -> int:
    """Check seq, hash chain, head and invariants, and that projections equal a replay.

    Exit status 0 verified, 1 failed (tampering, a broken invariant, projections that
    differ), 4 inconclusive (written to faster than it could be verified, nothing found
    wrong in what was read: verify again when it is quieter).
    """
    common = common or Common()
    with existing_ledger(common) as engine, _folding_the_whole_log():
        if engine is None:
            return _no_ledger_to_verify(common)
        result = verify(engine, common.ledger)
    print_verification(result, common.json)
    return verification_status(result)


def verification_status(result: Verification) -> int:
    """0 verified, 1 failed, 4 inconclusive: a script may retry the last, never the second."""
    if result.ok:
        return 0
    return 4 if result.inconclusive else 1


def _no_ledger_to_verify(common: Common) -> int:
    """verify's and replay's refusal: with `--json`, their report's keys (`ok` false, the
    `problem`) beside a refusal's."""
    detail = no_ledger_detail(common)
    if not common.json:
        return print_refusal(Refusal.LEDGER_UNKNOWN, "ledger", detail, as_json=False)
    print_json(
        {
            "ledger": common.ledger,
            "ok": False,
            "problem": detail,
            "error": Refusal.LEDGER_UNKNOWN,
            "field": "ledger",
            "detail": detail,
        }
    )
    return 1


def _print_problem(common: Common, problem: str) -> None:
    if common.json:
        print_json({"ledger": common.ledger, "ok": False, "problem": problem})
    else:
        errors.print(problem)


def verification_view(result: Verification) -> dict[str, Any]:
    return {
        "ledger": result.ledger,
        "ok": result.ok,
        "events": result.events,
        "head_hash": result.head_hash,
        "first_bad_seq": result.first_bad_seq,
        "problem": result.problem,
        "inconclusive": result.inconclusive,
        "projection_differences": [
            {
                "table": d.table,
                "expected": [_json_row(r) for r in d.expected],
                "found": [_json_row(r) for r in d.found],
            }
            for d in result.projection_differences
        ],
    }


def _json_row(row: tuple[object, ...]) -> list[object]:
    """A projection row's values for JSON; one of a type JSON has not (a BLOB on SQLite, whose
    columns take any type: tampering) as Python writes it, `b'wallet'`."""
    return [value if isinstance(value, str | int | float | None) else repr(value) for value in row]


def print_verification(result: Verification, as_json: bool) -> None:
    if as_json:
        print_json(verification_view(result))
        return
    if result.ok:
        console.print(
            Text.assemble(
                ("verified", "green"),
                f" ledger {result.ledger}: {result.events} events, seq "
                f"gapless, chain intact (head {result.head_hash[:16]}…), invariants hold, "
                "projections equal a fresh replay",
            )
        )
        return
    if result.inconclusive:
        errors.print(
            Text.assemble(("NOT VERIFIED", "yellow"), f" ledger {result.ledger}: {result.problem}")
        )
        return
    if result.problem is not None:
        where = "head row" if result.first_bad_seq is None else f"seq {result.first_bad_seq}"
        errors.print(
            Text.assemble(
                ("FAILED", "red"), f" ledger {result.ledger} at {where}: {result.problem}"
            )
        )
    for difference in result.projection_differences:
        errors.print(
            Text.assemble(
                ("FAILED", "red"),
                f" projection {difference.table} differs from a replay: "
                f"replay has {list(difference.expected)}, table has {list(difference.found)}",
            )
        )


@app.command
def replay(*, common: Common | None = None) -> int:
    """Rebuild every projection of the ledger from its log alone."""
    common = common or Common()
    with existing_ledger(common) as engine, _folding_the_whole_log():
        if engine is None:
            return _no_ledger_to_verify(common)
        try:
            head = engine.replay(common.ledger)
        except HeadMoved:
            problem = f"ledger {common.ledger} was written to during the replay; nothing changed"
            _print_problem(common, problem)
            return 1
    if common.json:
        print_json({"ledger": common.ledger, "seq": head.seq, "head_hash": head.hash.hex()})
    else:
        console.print(f"replayed ledger {common.ledger}: {head.seq} events, projections rebuilt")
    return 0


@app.command
def demo(*, common: Common | None = None) -> int:
    """Alice's journey: recharge 200.00, pay two orders at once, refund 20.00; then verify."""
    common = common or Common()
    with engine_on(common) as engine:
        try:
            outcome = run_demo(engine, common.ledger)
        except Rejected as rejection:  # its keys used for other requests on this ledger
            return print_rejection(rejection, common)
    if common.json:
        print_json(
            {
                "transactions": outcome.transactions,
                "statement": {"entries": outcome.statement},
                "verification": verification_view(outcome.verification),
            }
        )
    else:
        for line in outcome.transactions:
            orders = ", ".join(line["reference_order_ids"]) or "-"
            console.print(
                f"{line['event_type']:>10} {line['amount']:>8} {line['currency']}  "
                f"balance after {line['balance_after']:>8}  orders {orders}"
            )
        console.print(statement_table("alice", "USD", outcome.statement))
        print_verification(outcome.verification, False)
    return verification_status(outcome.verification)


def _stderr_logger(*_: Any) -> structlog.PrintLogger:
    # sys.stderr as it is when a line is written, not when logging was configured: a stream
    # captured then (a test's) may be closed by the time a writer thread logs.
    return structlog.PrintLogger(sys.stderr)


def configure_logging() -> None:
    """Log lines (a writer's warnings, `tally serve`'s) go to stderr: stdout is the command's
    answer, JSON with --json, and must hold nothing else. Tracebacks show no local
    variables: a request's (a form holding an API key, a bearer secret being checked) would
    be written to the log."""
    renderer = structlog.dev.ConsoleRenderer(
        exception_formatter=structlog.dev.RichTracebackFormatter(show_locals=False)
    )
    processors = [*structlog.get_config()["processors"][:-1], renderer]
    structlog.configure(logger_factory=_stderr_logger, processors=processors)


def main() -> None:
    configure_logging()
    try:
        code = app(exit_on_error=True)
    except Rejected as rejection:  # one no command caught (each prints its own, --json's way)
        errors.print(
            Text.assemble(
                ("refused", "red"),
                f" {rejection.reason.code}: {rejection.detail} ({rejection.field})",
            )
        )
        code = 1
    except UsageError as error:
        code = print_usage(str(error))
    except StoreUnavailable as unusable:
        # `--db` names no database tally can open or reach (a directory, not SQLite, a
        # server down or refusing the role): the command's environment, not its input
        errors.print(Text.assemble(("database unavailable", "red"), f" {unusable}"))
        code = 5
    except (InvariantViolated, CanonicalFormError) as broken:  # the log, a body or the head
        # row does not hold together (a body that is not canonical v1: read by a view)
        errors.print(
            Text.assemble(
                ("ledger broken", "red"),
                f" {broken}. Nothing was changed; run `tally verify` to find the first bad seq.",
            )
        )
        code = 3
    sys.exit(code if isinstance(code, int) else 0)


# -- holds (cli/holds.py) ----------------------------------------------------------------
from tally.cli import holds as _holds  # noqa: E402

app.command(_holds.hold)
app.command(_holds.capture)
app.command(_holds.release)
app.command(_holds.hold_show, name="hold-show")
app.command(_holds.holds)
app.command(_holds.release_expired, name="release-expired")

# -- the finance report (cli/report.py) ------------------------------------------------------
from tally.cli.report import report_command as _report  # noqa: E402

app.command(_report, name="report")

# -- transfers (cli/transfer.py) -------------------------------------------------------------
from tally.cli.transfer import transfer as _transfer  # noqa: E402

app.command(_transfer)

# -- the HTTP server and its keys (cli/server.py) ----------------------------------------
from tally.cli import server as _server  # noqa: E402

app.command(_server.serve)
app.command(_server.ledger_app)
app.command(_server.key_app)

from tally.cli.export import export as _export  # noqa: E402

app.command(_export)

from tally.cli.checkpoint import checkpoint as _checkpoint  # noqa: E402
from tally.cli.checkpoint import signing_key_app as _signing_key_app  # noqa: E402

app.command(_checkpoint)
app.command(_signing_key_app)

from tally.cli.reconcile import reconcile_command as _reconcile  # noqa: E402

app.command(_reconcile, name="reconcile")

from tally.cli.publish import publish as _publish  # noqa: E402

app.command(_publish)

"""The currency a write's amounts are read in where its command names none: a refund's is
its expense's, a capture's its hold's. Each is looked up at the edge, before the command is
submitted: in the writer's state first, then, for one the writer has not seen (another
process wrote it), in the store."""

from __future__ import annotations

import anyio.to_thread

from tally import views
from tally.audit.canonical import decode_event
from tally.domain import accounts
from tally.domain.accounts import is_identifier
from tally.domain.events import ORDER_PAYING_TYPES
from tally.engine.ports import Store
from tally.engine.writer import LedgerWriter
from tally.http import commands, models
from tally.http.services import Services


async def of_batch(
    services: Services, writer: LedgerWriter, data: models.BatchRequest
) -> commands.Currencies:
    """Those of the expenses a batch refunds and the holds it captures."""
    return commands.Currencies(
        expenses=await of_expenses(services, writer, refunded_expenses(data)),
        holds=await of_holds(services, writer, captured_holds(data)),
    )


def refunded_expenses(data: models.BatchRequest) -> list[str]:
    return [item.expense_id for item in data.commands if isinstance(item, models.BatchRefund)]


def captured_holds(data: models.BatchRequest) -> list[str]:
    return [item.hold_id for item in data.commands if isinstance(item, models.BatchCapture)]


async def of_expenses(
    services: Services, writer: LedgerWriter, expense_ids: list[str]
) -> dict[str, str]:
    """The currency each expense was paid in, for parsing refund amounts at the edge.

    The writer's state answers without a database read (a currency never changes once set;
    reading it from this thread is a benign race). An expense the writer has not seen may
    have been written by another process, so those (at most a batch's worth) are looked up
    in the log before anything is called unknown. An id that is not an identifier names no
    expense and is not looked up (PostgreSQL refuses a text holding NUL, for one).
    """
    known = writer.state.expenses
    currencies = {e: known[e] for e in expense_ids if e in known}
    missing = [e for e in dict.fromkeys(expense_ids) if e not in currencies and is_identifier(e)]
    if missing:
        store = services.engine.store
        currencies |= await anyio.to_thread.run_sync(_logged_currencies, store, writer, missing)
    return currencies


def _logged_currencies(
    store: Store, writer: LedgerWriter, expense_ids: list[str]
) -> dict[str, str]:
    found = {}
    for expense_id in expense_ids:
        row = store.event_by_transaction(writer.ledger, expense_id)
        if row is not None and row.event_type in ORDER_PAYING_TYPES:
            found[expense_id] = decode_event(row.body)[1].currency
    return found


async def of_holds(services: Services, writer: LedgerWriter, hold_ids: list[str]) -> dict[str, str]:
    """The currency of each hold, for parsing a capture's amounts at the edge.

    As for expenses (`of_expenses`): the writer's state answers (a hold's currency never
    changes: a hold id is placed once, for good), and a hold it has not seen, placed by
    another process, is looked up in the accounts projection (its account,
    `hold:<hold_id>:CUR`, names its currency). An id that is no identifier names no hold and
    is not looked up. A capture's currency is never taken from a hold placed in the same
    batch: that hold may yet be refused, and another of the same id placed meanwhile."""
    state = writer.state
    currencies = {}
    for hold_id in hold_ids:
        held = state.hold(hold_id)
        if held is not None:
            currencies[hold_id] = held.currency
    missing = [h for h in dict.fromkeys(hold_ids) if h not in currencies and is_identifier(h)]
    if missing:
        store = services.engine.store
        currencies |= await anyio.to_thread.run_sync(
            _projected_hold_currencies, store, writer.ledger, missing
        )
    return currencies


def _projected_hold_currencies(store: Store, ledger: str, hold_ids: list[str]) -> dict[str, str]:
    found = {}
    for hold_id in hold_ids:
        rows = store.account_balances(ledger, kind=accounts.HOLD, owner=hold_id)
        if rows:
            found[hold_id] = accounts.split(views.hold_account(ledger, hold_id, rows))[2]
    return found

"""What the console's pages read: the store reads behind the API's GET routes, viewed by
`tally.views` as the API views them.

Each read runs on the services' reader threads (`Services.read`), as the GET routes do on
SQLite; on PostgreSQL the store's blocking reads go through its own thread, which is
correct there too and quick enough for a console's few readers. A statement page is read
with `tally.http.reads.read_statement_page`, the API's own (on PostgreSQL, on the loop).
Every read is of the key's ledger only; an id that is no identifier is not looked up.
"""

from __future__ import annotations

import time
from typing import Any

from tally import reports, views
from tally.domain.accounts import is_identifier
from tally.engine.ports import EventRow, Head, Store
from tally.http import models
from tally.http.reads import read_statement_page
from tally.http.services import Services

statement_page_lines = 50
events_page_events = 50


async def finance_report(
    services: Services, ledger: str, since_us: int | None, until_us: int | None
) -> dict[str, Any]:
    store = services.engine.store
    return await services.report(
        lambda: reports.finance_report(store, ledger, since_us=since_us, until_us=until_us)
    )


async def head(services: Services, ledger: str) -> Head | None:
    return await services.read(services.engine.store.head, ledger)


async def balances(services: Services, ledger: str, user_id: str) -> dict[str, Any] | None:
    """A user's balances; None when `user_id` is no identifier."""
    if not is_identifier(user_id):
        return None
    return await services.read(views.balances, services.engine.store, ledger, user_id)


async def statement(
    services: Services, ledger: str, user_id: str, currency: str, after: tuple[int, int] | None
) -> models.StatementPage:
    """A page of `statement_page_lines`, oldest first (as the API pages it)."""
    return await read_statement_page(
        services, ledger, user_id, currency, after=after, limit=statement_page_lines
    )


async def transaction(
    services: Services, ledger: str, transaction_id: str
) -> views.Transaction | None:
    if not is_identifier(transaction_id):
        return None
    return await services.read(views.transaction, services.engine.store, ledger, transaction_id)


def _order(store: Store, ledger: str, order_id: str) -> dict[str, Any] | None:
    row = store.order(ledger, order_id)
    return None if row is None else views.order_view(store, ledger, row)


async def order(services: Services, ledger: str, order_id: str) -> dict[str, Any] | None:
    if not is_identifier(order_id):
        return None
    return await services.read(_order, services.engine.store, ledger, order_id)


async def hold(services: Services, ledger: str, hold_id: str) -> dict[str, Any] | None:
    if not is_identifier(hold_id):
        return None
    now_us = time.time_ns() // 1_000
    return await services.read(views.hold_view, services.engine.store, ledger, hold_id, now_us)


async def user_holds(services: Services, ledger: str, user_id: str) -> dict[str, Any]:
    """The first page of the user's holds (all of them, in the order placed)."""
    store, now_us = services.engine.store, time.time_ns() // 1_000
    return await services.read(
        lambda: views.user_holds(
            store,
            ledger,
            user_id,
            after_seq=0,
            limit=views.holds_page_max,
            settled=None,
            now_us=now_us,
        )
    )


def _events(store: Store, ledger: str, after_seq: int) -> list[EventRow]:
    return store.events(ledger, after_seq=after_seq, limit=events_page_events)


async def events(services: Services, ledger: str, after_seq: int) -> list[EventRow]:
    """Up to `events_page_events` events after `after_seq`, in seq order."""
    return await services.read(_events, services.engine.store, ledger, after_seq)

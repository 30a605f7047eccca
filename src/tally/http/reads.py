"""GET routes: balances, statements, transactions, orders, holds and the log itself.

Reads go straight to the store's projections, on the services' reader threads (the stores
are blocking; PostgreSQL's are read on the server's loop instead, see `LoopReads`), and only
ever within the key's own ledger: an id from another ledger is simply not found. An id that
is no identifier (`is_identifier`: every user, order, hold and transaction id is one) is
answered without a query, the same from every store (PostgreSQL refuses a text holding NUL,
which SQLite would look up and not find): a transaction, an order or a hold is not found,
and a user id is refused with the 400 a write gives it (`identifier_invalid`, naming
`user_id`). A well-formed user id nobody has used is a user with no activity: no balances,
an empty statement.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from typing import Annotated, Any

import msgspec
from litestar import Request, get
from litestar.params import FromPath, PathParameter, QueryParameter

from tally import reports, views
from tally.api_keys import Scope
from tally.audit.canonical import decode_event
from tally.domain import accounts, limits
from tally.domain.accounts import is_identifier
from tally.domain.decide import check_identifier
from tally.domain.limits import INT64_MAX
from tally.engine.ports import EventRow, Store
from tally.http import models
from tally.http.guards import checked, require, strict_query
from tally.http.problems import ApiProblem, EdgeProblem
from tally.http.responses import READ_RESPONSES
from tally.http.services import Services, api_key_of, services_of
from tally.money import exponent

statement_page_entries_max = views.statement_page_entries_max
events_page_max = 1000
_CURSOR = re.compile(r"([0-9]{1,18})\.([0-9]{1,9})")
_PAST_EVERY_POSTING = 2**31 - 1  # cursor index after every posting of an event

_READ: dict[str, Any] = {
    "responses": READ_RESPONSES,
    "before_request": checked(require(Scope.READ), strict_query),
    "tags": ["reads"],
}


_UserId = Annotated[
    str,
    PathParameter(
        description=f"An identifier: 1 to {limits.identifier_length_max} of A-Z a-z 0-9 _ . @ -, "
        "starting with a letter or digit; any other is refused (400 identifier_invalid).",
    ),
]


def encode_cursor(position: tuple[int, int]) -> str:
    """An opaque cursor for `(seq, posting_index)`: clients pass it back unchanged."""
    text = f"{position[0]}.{position[1]}".encode()
    return base64.urlsafe_b64encode(text).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, int]:
    padded = cursor + "=" * (-len(cursor) % 4)
    try:  # validated: else any character outside the alphabet (a NUL, say) is skipped
        text = base64.b64decode(padded, altchars=b"-_", validate=True).decode()
    except (binascii.Error, ValueError):
        text = ""
    match = _CURSOR.fullmatch(text)
    if match is None:
        raise ApiProblem(
            EdgeProblem.CURSOR_INVALID, "pass back a next_cursor unchanged", field="cursor"
        )
    return int(match[1]), int(match[2])


_INSTANT_LENGTH_MAX = 64


def _instant_us(text: str | None, field: str) -> int | None:
    if text is None:
        return None
    if len(text) > _INSTANT_LENGTH_MAX:  # here, not Litestar's max_length: it names the argument
        raise ApiProblem(
            EdgeProblem.PARAMETER_INVALID,
            f"at most {_INSTANT_LENGTH_MAX} characters",
            field=field,
        )
    try:
        return views.instant_us(text)
    except ValueError as error:
        raise ApiProblem(EdgeProblem.PARAMETER_INVALID, str(error), field=field) from None


async def read_statement_page(
    services: Services,
    ledger: str,
    user_id: str,
    currency: str,
    *,
    after: tuple[int, int] | None,
    limit: int,
    since_us: int | None = None,
    until_us: int | None = None,
) -> models.StatementPage:
    """A page of the statement (also what http/direct.py answers itself, unbounded in time).
    A `user_id` that is no identifier is refused with the write's 400, never looked up.

    A store that reads on the loop itself (`LoopReads`, PostgreSQL, its connections opened
    at the server's start) reads the page's rows there, and the lines are built on a reader
    thread; any other store reads and builds the page on a reader thread. A `from` bound
    without a cursor is first a search of the log, on a reader thread."""
    check_identifier(user_id, "user_id")
    store = services.engine.store
    if after is None:
        start = 1
        if since_us is not None:
            start = await services.read(reports.first_seq_at, store, ledger, since_us)
        after = (start - 1, _PAST_EVERY_POSTING)
    on_loop = services.reads_here()
    if on_loop is None:
        lines, next_position = await services.read(
            lambda: views.statement_page(store, ledger, user_id, currency, after=after, limit=limit)
        )
        return _page(lines, next_position, until_us)
    limit = max(1, min(limit, statement_page_entries_max))  # as `views.statement_page`
    rows = await on_loop.statement_on_loop(
        ledger, accounts.wallet(user_id, currency), after=after, limit=limit
    )
    # Built off the loop: decoding 100 event bodies holds it ~0.3 ms, which requests
    # waiting on it would all feel (docs/benchmarks.md: building pages on the loop).
    lines, next_position = await services.read(views.statement_lines, rows, limit)
    return _page(lines, next_position, until_us)


def _page(
    lines: list[views.Entry], next_position: tuple[int, int] | None, until_us: int | None
) -> models.StatementPage:
    if until_us is not None:
        until = views.timestamp(until_us)  # same width and zone: text order is time order
        kept = [line for line in lines if line.timestamp < until]
        if len(kept) < len(lines):
            lines, next_position = kept, None
    cursor = None if next_position is None else encode_cursor(next_position)
    return models.StatementPage(entries=lines, next_cursor=cursor)


@get("/v1/users/{user_id:str}/balances", summary="A user's wallet balances", **_READ)
async def get_balances(request: Request[Any, Any, Any], user_id: _UserId) -> models.Balances:
    check_identifier(user_id, "user_id")  # the write's 400 for it; never looked up
    services, ledger = services_of(request), api_key_of(request).ledger
    on_loop = services.reads_here()
    if on_loop is not None:  # PostgreSQL: see `LoopReads`
        rows = await on_loop.account_balances_on_loop(ledger, kind=accounts.WALLET, owner=user_id)
        view = views.balances_of(user_id, rows, ledger=ledger)
    else:
        view = await services.read(views.balances, services.engine.store, ledger, user_id)
    return msgspec.convert(view, models.Balances)


@get(
    "/v1/users/{user_id:str}/statement",
    summary="A user's statement in one currency, oldest first, with balance_after",
    description="Cursor-paginated by (seq, posting index): pages are stable under "
    "concurrent writes. `from` (inclusive) and `to` (exclusive) bound the timestamps.",
    **_READ,
)
async def get_statement(
    request: Request[Any, Any, Any],
    *,
    user_id: _UserId,
    currency: Annotated[str, QueryParameter(min_length=3, max_length=3)],
    limit: Annotated[int, QueryParameter(ge=1, le=statement_page_entries_max)] = 100,
    cursor: Annotated[str | None, QueryParameter(max_length=64)] = None,
    since: Annotated[str | None, QueryParameter(name="from")] = None,
    until: Annotated[str | None, QueryParameter(name="to")] = None,
) -> models.StatementPage:
    exponent(currency)  # CURRENCY_UNKNOWN for anything not ISO 4217
    after = None if cursor is None else decode_cursor(cursor)
    since_us = _instant_us(since, "from")
    until_us = _instant_us(until, "to")
    check_identifier(user_id, "user_id")  # after the parameters, as on the direct path
    return await read_statement_page(
        services_of(request),
        api_key_of(request).ledger,
        user_id,
        currency,
        after=after,
        limit=limit,
        since_us=since_us,
        until_us=until_us,
    )


@get("/v1/transactions/{transaction_id:str}", summary="One transaction", **_READ)
async def get_transaction(
    request: Request[Any, Any, Any], transaction_id: FromPath[str]
) -> models.Transaction:
    services, ledger = services_of(request), api_key_of(request).ledger
    found = None
    if is_identifier(transaction_id):  # else no such transaction: not looked up
        on_loop = services.reads_here()
        if on_loop is None:
            store = services.engine.store
            found = await services.read(views.transaction, store, ledger, transaction_id)
        else:  # PostgreSQL: see `LoopReads`; one event decoded and viewed on the loop
            row = await on_loop.event_by_transaction_on_loop(ledger, transaction_id)
            if row is not None:
                _, event = decode_event(row.body)
                entries = await on_loop.entries_of_on_loop(ledger, event)
                found = views.stored_transaction_of(ledger, event, entries)
    if found is None:
        raise ApiProblem(
            EdgeProblem.NOT_FOUND, f"no transaction {transaction_id}", field="transaction_id"
        )
    return found


def _order(store: Store, ledger: str, order_id: str) -> dict[str, Any] | None:
    row = store.order(ledger, order_id)
    return None if row is None else views.order_view(store, ledger, row)


@get(
    "/v1/orders/{order_id:str}",
    summary="What an order was paid, refunded, and can still be refunded",
    **_READ,
)
async def get_order(request: Request[Any, Any, Any], order_id: FromPath[str]) -> models.Order:
    services, ledger = services_of(request), api_key_of(request).ledger
    view = None
    if is_identifier(order_id):  # else no such order: not looked up
        on_loop = services.reads_here()
        if on_loop is None:
            view = await services.read(_order, services.engine.store, ledger, order_id)
        else:  # PostgreSQL: see `LoopReads`
            row = await on_loop.order_on_loop(ledger, order_id)
            if row is not None:
                events = await on_loop.order_events_on_loop(ledger, order_id)
                view = views.order_view_of(row, events)
    if view is None:
        raise ApiProblem(EdgeProblem.NOT_FOUND, f"no order {order_id}", field="order_id")
    return msgspec.convert(view, models.Order)


@get(
    "/v1/holds/{hold_id:str}",
    summary="A hold: its amount, status, and what its capture or release did",
    description="`status` is `open`, `expired` (it can no longer be captured: release it), "
    "`captured` or `released`; `captured` is what its orders took, `released` what went back "
    "to the wallet once it was settled.",
    **_READ,
)
async def get_hold(request: Request[Any, Any, Any], hold_id: FromPath[str]) -> models.Hold:
    services, ledger = services_of(request), api_key_of(request).ledger
    now_us = time.time_ns() // 1_000
    view = None
    if is_identifier(hold_id):  # else no such hold: not looked up
        on_loop = services.reads_here()
        if on_loop is None:
            store = services.engine.store
            view = await services.read(views.hold_view, store, ledger, hold_id, now_us)
        else:  # PostgreSQL: see `LoopReads`; the hold's account, then its lines (two at most)
            rows = await on_loop.account_balances_on_loop(ledger, kind=accounts.HOLD, owner=hold_id)
            if rows:
                account = views.hold_account(ledger, hold_id, rows)
                lines = await on_loop.statement_on_loop(ledger, account, after=(0, -1), limit=3)
                view = views.hold_view_of(ledger, hold_id, lines, now_us=now_us)
    if view is None:
        raise ApiProblem(EdgeProblem.NOT_FOUND, f"no hold {hold_id}", field="hold_id")
    return msgspec.convert(view, models.Hold)


def _user_holds(view: dict[str, Any]) -> models.UserHolds:
    after = view.pop("next_after_seq")
    view["next_cursor"] = None if after is None else encode_cursor((after, 0))
    return msgspec.convert(view, models.UserHolds)


@get(
    "/v1/users/{user_id:str}/holds",
    summary="A user's holds, in the order they were placed",
    description="`settled=false`: only the holds still holding the user's money (`open`, or "
    "`expired` and not yet released); `settled=true`: only those captured or released; "
    "without it, all. Cursor-paginated: pass `next_cursor` back as `cursor`.",
    **_READ,
)
async def get_user_holds(
    request: Request[Any, Any, Any],
    *,
    user_id: _UserId,
    settled: Annotated[bool | None, QueryParameter()] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=views.holds_page_max)] = views.holds_page_max,
    cursor: Annotated[str | None, QueryParameter(max_length=64)] = None,
) -> models.UserHolds:
    after_seq = 0 if cursor is None else decode_cursor(cursor)[0]
    check_identifier(user_id, "user_id")  # after the parameters, as the statement's
    services, ledger = services_of(request), api_key_of(request).ledger
    now_us = time.time_ns() // 1_000
    store = services.engine.store
    view = await services.read(
        lambda: views.user_holds(
            store, ledger, user_id, after_seq=after_seq, limit=limit, settled=settled, now_us=now_us
        )
    )
    return _user_holds(view)


def _events(store: Store, ledger: str, after_seq: int, limit: int) -> models.EventsPage:
    return _events_page(store.events(ledger, after_seq=after_seq, limit=limit), limit)


def _events_page(rows: list[EventRow], limit: int) -> models.EventsPage:
    events = [
        models.LoggedEvent(
            seq=row.seq,
            transaction_id=row.transaction_id,
            event_type=row.event_type,
            hash=bytes(row.hash).hex(),
            body=bytes(row.body).decode("utf-8"),
            event=msgspec.json.decode(row.body),
        )
        for row in rows
    ]
    next_after_seq = rows[-1].seq if len(rows) == limit else None
    return models.EventsPage(events=events, next_after_seq=next_after_seq)


@get(
    "/v1/events",
    summary="The ledger's log: events in seq order, with their canonical bytes and hashes",
    **_READ,
)
async def get_events(
    request: Request[Any, Any, Any],
    after_seq: Annotated[int, QueryParameter(ge=0, le=INT64_MAX)] = 0,
    limit: Annotated[int, QueryParameter(ge=1, le=events_page_max)] = 100,
) -> models.EventsPage:
    services, ledger = services_of(request), api_key_of(request).ledger
    on_loop = services.reads_here()
    if on_loop is None:
        return await services.read(_events, services.engine.store, ledger, after_seq, limit)
    # PostgreSQL: read on the loop (see `LoopReads`), the page built on a reader thread
    # (decoding up to 1,000 bodies would hold the loop for milliseconds)
    rows = await on_loop.events_on_loop(ledger, after_seq=after_seq, limit=limit)
    return await services.read(_events_page, rows, limit)


@get(
    "/v1/reports/finance",
    summary="The finance report: balances and movements by account and event type",
    description="Per currency: each account's `opening` balance, `debits`, `credits` and "
    "`closing` balance over the period (users' wallets and holds added up into one line each, "
    "`owner` null; revenue per merchant, clearing per gateway, equity accounts), what each "
    "event type moved on each kind of account, and the trial balance (zero: `balanced`). "
    "`from` (inclusive) and `to` (exclusive) are RFC 3339 with a zone; without them the "
    "whole log. Summed by the database over the entries projection.",
    **_READ,
)
async def get_finance_report(
    request: Request[Any, Any, Any],
    since: Annotated[str | None, QueryParameter(name="from")] = None,
    until: Annotated[str | None, QueryParameter(name="to")] = None,
) -> models.FinanceReport:
    since_us = _instant_us(since, "from")
    until_us = _instant_us(until, "to")
    if since_us is not None and until_us is not None and since_us >= until_us:
        raise ApiProblem(EdgeProblem.PARAMETER_INVALID, "must come after `from`", field="to")
    services, ledger = services_of(request), api_key_of(request).ledger
    store = services.engine.store
    report = await services.report(
        lambda: reports.finance_report(store, ledger, since_us=since_us, until_us=until_us)
    )
    return msgspec.convert(report, models.FinanceReport)


ROUTES = [
    get_balances,
    get_statement,
    get_transaction,
    get_order,
    get_hold,
    get_user_holds,
    get_events,
    get_finance_report,
]

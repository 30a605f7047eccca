"""The console's routes: sign-in, the overview and search, a user (balances and statements),
an order, a hold, a transaction, the log, the finance report, and the static files. GET only,
but for signing in and out; nothing here writes to a ledger.

Every page but the login form and the static files needs the cookie of a live key with the
`read` scope (`auth.signed_in`: else a 303 to the login page), and shows that key's ledger
only: an id of another ledger, or one that is no identifier, is a 404 page like an id
nobody used.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from litestar import MediaType, Request, Response, Router, get, post
from litestar.datastructures import ResponseHeader
from litestar.params import FromPath, QueryParameter
from litestar.response import Redirect

from tally import views
from tally.console import auth, lookups
from tally.console.render import CONTENT_SECURITY_POLICY, STATIC_FILES, page
from tally.domain.limits import INT64_MAX
from tally.domain.rejections import Rejected
from tally.http.reads import decode_cursor
from tally.http.services import Services, services_of
from tally.money import exponent

_PAGE: dict[str, Any] = {"before_request": auth.signed_in, "include_in_schema": False}
_OPEN: dict[str, Any] = {"include_in_schema": False}
_SEARCHES = {  # what the overview's search form can look for, and where each is shown
    "user": "users",
    "order": "orders",
    "hold": "holds",
    "transaction": "transactions",
}


def _not_found(request: Request[Any, Any, Any], what: str, the_id: str) -> Response[str]:
    return page(
        "not_found.html", status_code=404, ledger=auth.key_of(request).ledger, what=what, id=the_id
    )


# -- signing in and out -------------------------------------------------------------------
@get("/login", **_OPEN)
async def login_form() -> Response[str]:
    return page("login.html", error=None)


@post("/login", status_code=303, **_OPEN)
async def login(request: Request[Any, Any, Any]) -> Response[Any]:
    if not auth.same_site(request):
        return page("login.html", status_code=403, error="sign in from the console's own page")
    form = await request.form()
    value = form.get("key")
    secret = value.strip() if isinstance(value, str) else ""
    key = await auth.key_for(request, secret)
    if key is None:
        return page("login.html", status_code=401, error="unknown or revoked API key")
    if not auth.read_only(key):
        return page(
            "login.html",
            status_code=403,
            error="sign in with a key that has the 'read' scope and no other",
        )
    return Redirect("/console/", status_code=303, cookies=[auth.key_cookie(request, secret)])


@post("/logout", status_code=303, **_OPEN)
async def logout(request: Request[Any, Any, Any]) -> Response[Any]:
    if not auth.same_site(request):
        return page("login.html", status_code=403, error="sign out from the console's own page")
    return Redirect(auth.LOGIN, status_code=303, cookies=[auth.key_cookie(request, None)])


@get("/static/{name:str}", **_OPEN)
async def static(name: FromPath[str]) -> Response[bytes]:
    found = STATIC_FILES.get(name)
    if found is None:
        return Response(b"not found", status_code=404, media_type=MediaType.TEXT)
    body, media_type = found
    return Response(body, media_type=media_type, headers={"Cache-Control": "max-age=3600"})


# -- the ledger -----------------------------------------------------------------------------
async def _overview(
    request: Request[Any, Any, Any], *, status_code: int = 200, missing: str | None = None
) -> Response[str]:
    ledger = auth.key_of(request).ledger
    head = await lookups.head(services_of(request), ledger)
    return page(
        "overview.html",
        status_code=status_code,
        ledger=ledger,
        head_seq=0 if head is None else head.seq,
        head_hash=None if head is None else bytes(head.hash).hex(),
        missing=missing,
    )


@get("/", **_PAGE)
async def overview(request: Request[Any, Any, Any]) -> Response[str]:
    return await _overview(request)


@get("/search", **_PAGE)
async def search(
    request: Request[Any, Any, Any],
    kind: Annotated[str, QueryParameter(max_length=16)] = "user",
    the_id: Annotated[str, QueryParameter(name="id", max_length=256)] = "",
) -> Response[Any]:
    """To the page of what was searched for, or the overview saying it is not found."""
    services, ledger = services_of(request), auth.key_of(request).ledger
    the_id = the_id.strip()
    found: object = None
    if kind == "user":
        found = await _has_wallets(services, ledger, the_id)
    elif kind == "order":
        found = await lookups.order(services, ledger, the_id)
    elif kind == "hold":
        found = await lookups.hold(services, ledger, the_id)
    elif kind == "transaction":
        found = await lookups.transaction(services, ledger, the_id)
    if not found:
        missing = f"no {kind if kind in _SEARCHES else 'such thing'} {the_id!r} in this ledger"
        return await _overview(request, status_code=404, missing=missing)
    return Redirect(f"/console/{_SEARCHES[kind]}/{quote(the_id, safe='')}", status_code=303)


async def _has_wallets(services: Services, ledger: str, user_id: str) -> bool:
    shown = await lookups.balances(services, ledger, user_id)
    return shown is not None and bool(shown["balances"])


@get("/users/{user_id:str}", **_PAGE)
async def user(request: Request[Any, Any, Any], user_id: FromPath[str]) -> Response[str]:
    services, ledger = services_of(request), auth.key_of(request).ledger
    shown = await lookups.balances(services, ledger, user_id)
    if shown is None or not shown["balances"]:  # nobody's wallet: no such user here
        return _not_found(request, "user", user_id)
    statements = []
    for balance in shown["balances"]:
        first = await lookups.statement(services, ledger, user_id, balance["currency"], None)
        statements.append((balance["currency"], first))
    holds = await lookups.user_holds(services, ledger, user_id)
    return page(
        "user.html",
        ledger=ledger,
        user_id=user_id,
        balances=shown,
        statements=statements,
        holds=holds,
    )


@get("/users/{user_id:str}/statement", **_PAGE)
async def statement_rows(
    request: Request[Any, Any, Any],
    user_id: FromPath[str],
    currency: Annotated[str, QueryParameter(max_length=3)],
    cursor: Annotated[str, QueryParameter(max_length=64)],
) -> Response[str]:
    """The next page of a statement as table rows, with the button for the page after it
    (what the user page's "more" button fetches and puts in its own place)."""
    services, ledger = services_of(request), auth.key_of(request).ledger
    try:
        exponent(currency)
    except Rejected:
        return _not_found(request, "currency", currency)
    after = decode_cursor(cursor)  # a cursor not passed back unchanged: 400
    if not await _has_wallets(services, ledger, user_id):
        return _not_found(request, "user", user_id)
    shown = await lookups.statement(services, ledger, user_id, currency, after)
    return page(
        "statement_rows.html",
        user_id=user_id,
        currency=currency,
        lines=shown.entries,
        next_cursor=shown.next_cursor,
    )


@get("/orders/{order_id:str}", **_PAGE)
async def order(request: Request[Any, Any, Any], order_id: FromPath[str]) -> Response[str]:
    ledger = auth.key_of(request).ledger
    shown = await lookups.order(services_of(request), ledger, order_id)
    if shown is None:
        return _not_found(request, "order", order_id)
    return page("order.html", ledger=ledger, order=shown)


@get("/holds/{hold_id:str}", **_PAGE)
async def hold(request: Request[Any, Any, Any], hold_id: FromPath[str]) -> Response[str]:
    ledger = auth.key_of(request).ledger
    shown = await lookups.hold(services_of(request), ledger, hold_id)
    if shown is None:
        return _not_found(request, "hold", hold_id)
    return page("hold.html", ledger=ledger, hold=shown)


@get("/transactions/{transaction_id:str}", **_PAGE)
async def transaction(
    request: Request[Any, Any, Any], transaction_id: FromPath[str]
) -> Response[str]:
    ledger = auth.key_of(request).ledger
    shown = await lookups.transaction(services_of(request), ledger, transaction_id)
    if shown is None:
        return _not_found(request, "transaction", transaction_id)
    return page("transaction.html", ledger=ledger, transaction=shown)


_AfterSeq = Annotated[int, QueryParameter(ge=0, le=INT64_MAX)]


@get("/events", **_PAGE)
async def events(request: Request[Any, Any, Any], after_seq: _AfterSeq = 0) -> Response[str]:
    ledger = auth.key_of(request).ledger
    rows = await lookups.events(services_of(request), ledger, after_seq)
    return page("events.html", ledger=ledger, **_events_context(rows))


@get("/events/rows", **_PAGE)
async def events_rows(request: Request[Any, Any, Any], after_seq: _AfterSeq) -> Response[str]:
    """The log's next page as table rows (what the log page's "more" button fetches)."""
    rows = await lookups.events(services_of(request), auth.key_of(request).ledger, after_seq)
    return page("events_rows.html", **_events_context(rows))


def _events_context(rows: list[Any]) -> dict[str, Any]:
    events = [
        {
            "seq": row.seq,
            "transaction_id": row.transaction_id,
            "event_type": row.event_type,
            "hash": bytes(row.hash).hex(),
            "body": bytes(row.body).decode("utf-8"),
        }
        for row in rows
    ]
    full = len(rows) == lookups.events_page_events
    return {"events": events, "next_after_seq": rows[-1].seq if full else None}


_INSTANT_LENGTH_MAX = 64


@get("/report", **_PAGE)
async def report(
    request: Request[Any, Any, Any],
    since: Annotated[str | None, QueryParameter(name="from")] = None,
    until: Annotated[str | None, QueryParameter(name="to")] = None,
) -> Response[str]:
    """The finance report (`tally.reports`) over the period the form names."""
    ledger = auth.key_of(request).ledger
    since, until = since or None, until or None  # an empty field: unbounded
    shown: dict[str, Any] = {"ledger": ledger, "since": since, "until": until}
    try:
        if len(since or "") > _INSTANT_LENGTH_MAX or len(until or "") > _INSTANT_LENGTH_MAX:
            raise ValueError(f"at most {_INSTANT_LENGTH_MAX} characters")
        since_us = None if since is None else views.instant_us(since)
        until_us = None if until is None else views.instant_us(until)
    except ValueError as error:
        return page("report.html", status_code=400, report=None, error=f"from/to: {error}", **shown)
    if since_us is not None and until_us is not None and since_us >= until_us:
        return page(
            "report.html", status_code=400, report=None, error="from must come before to", **shown
        )
    found = await lookups.finance_report(services_of(request), ledger, since_us, until_us)
    return page("report.html", report=found, error=None, **shown)


def console_router() -> Router:
    """The console under `/console`: a fresh router for each app that mounts it."""
    return Router(
        path="/console",
        route_handlers=[
            login_form,
            login,
            logout,
            static,
            overview,
            search,
            user,
            statement_rows,
            order,
            hold,
            transaction,
            events,
            events_rows,
            report,
        ],
        response_headers=[
            ResponseHeader(name="Content-Security-Policy", value=CONTENT_SECURITY_POLICY),
            ResponseHeader(name="X-Content-Type-Options", value="nosniff"),
            ResponseHeader(name="Referrer-Policy", value="same-origin"),
        ],
        include_in_schema=False,
    )

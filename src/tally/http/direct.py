"""The writes' common case, answered beneath the framework.

A POST to one of the seven write routes of fixed paths (recharges, expenses, refunds,
adjustments, transfers, holds and batches; a hold's capture and release, whose paths name the
hold, are Litestar's) that carries a live key already in the key cache with the scope it needs,
`Content-Type: application/json`, an `Idempotency-Key` of 1 to 255 characters and a body that
decodes into the route's request type and converts into a command is submitted here with the
same code the Litestar handlers use (`writes.write_one`, `writes.write_batch`) and answered
with the same bytes. Everything else — no key or one not cached yet, another content type, a
body that does not decode or convert, a key in flight, a refund of an expense (or a batch's
capture of a hold) the writer has not seen, a ledger whose writer has not started — is handed
to Litestar untouched, the body replayed, and answered there exactly as before.
Nothing has been submitted when a request is handed over, so none is submitted twice.

Measured (docs/benchmarks.md): Litestar's routing, parameter parsing, guards and exception
layers cost about a third of a single write's CPU, and the event loop is the bottleneck.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import msgspec
import structlog
from litestar.types import HTTPRequestEvent, HTTPScope, Receive, ReceiveMessage, Send

from tally.api_keys import ApiKey, Scope
from tally.domain import limits
from tally.domain.commands import Command
from tally.domain.decide import check_identifier
from tally.domain.rejections import Rejected
from tally.engine.writer import LedgerWriter
from tally.http import commands, currencies, models, reads, writes
from tally.http.problems import PROBLEM_JSON, ApiProblem, EdgeProblem, of_rejection, problem
from tally.http.services import Services
from tally.money import exponent

log = structlog.get_logger(__name__)

_PROBLEM_JSON = PROBLEM_JSON.encode("latin-1")
_WANTED = frozenset({b"authorization", b"content-type", b"content-length", b"idempotency-key"})

# What a route does with a decoded body: submit it and return the answer, or None to hand
# the request to Litestar (having submitted nothing).
_Write = Callable[[Services, ApiKey, LedgerWriter, Any, str], Awaitable["writes.Sent | None"]]


@dataclass(frozen=True, slots=True)
class _Route:
    scope: Scope
    decoder: msgspec.json.Decoder[Any]
    body_bytes_max: int
    write: _Write


class DirectWrites:
    """Answers the common case of the write routes; `None` means "Litestar's to answer"."""

    def __init__(self, services: Services, *, body_bytes_max: int) -> None:
        self.services = services
        self.answered = 0  # writes answered here, not by Litestar (for tests and profiling)
        self.statements = 0  # statement requests answered here (pages and refused user ids)
        single = body_bytes_max
        self.routes: dict[str, _Route] = {
            "/v1/recharges": _route(Scope.WRITE, models.RechargeRequest, single, _recharge),
            "/v1/expenses": _route(Scope.WRITE, models.ExpenseRequest, single, _expense),
            "/v1/refunds": _route(Scope.WRITE, models.RefundRequest, single, _refund),
            "/v1/adjustments": _route(Scope.ADMIN, models.AdjustmentRequest, single, _adjustment),
            "/v1/holds": _route(Scope.WRITE, models.HoldRequest, single, _hold),
            "/v1/transfers": _route(Scope.ADMIN, models.TransferRequest, single, _transfer),
            "/v1/batch": _Route(
                Scope.WRITE,
                msgspec.json.Decoder(models.BatchRequest),
                writes.batch_body_bytes_max,
                _batch,
            ),
        }

    async def answer(
        self, route: _Route, scope: HTTPScope, receive: Receive, send: Send
    ) -> tuple[int | None, Receive]:
        """Answer the request and return its status; or return None and a `receive` that
        gives Litestar the body again."""
        headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            if name in _WANTED:
                if name in headers:
                    return None, receive  # repeated: the framework decides which one counts
                headers[name] = value
        key, idempotency_key = self._admitted(route, headers)
        if key is None or idempotency_key is None:
            return None, receive
        writer = self.services.known_writer(key.ledger)
        if writer is None or (key.ledger, idempotency_key) in self.services.in_flight:
            return None, receive
        body, receive = await _read(receive)
        try:
            data = route.decoder.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError, UnicodeDecodeError):
            # RecursionError: nested too deeply to decode; UnicodeDecodeError: a string that
            # is not UTF-8. Litestar refuses both as malformed (app._Request).
            return None, receive
        try:
            sent = await route.write(self.services, key, writer, data, idempotency_key)
        except Rejected as rejection:
            sent = _problem(of_rejection(rejection))
        except ApiProblem as refusal:
            sent = _problem(problem(refusal.reason, refusal.detail, refusal.field))
        except Exception as error:  # as Litestar's last exception handler answers it
            log.error("unhandled error", path=scope["path"], error=repr(error), exc_info=error)
            sent = _problem(
                problem(
                    EdgeProblem.INTERNAL_ERROR, "tally failed to answer; nothing was acknowledged"
                )
            )
        if sent is None:
            return None, receive
        self.answered += 1
        await sent(scope, receive, send)
        return sent.status, receive

    async def statement(self, scope: HTTPScope, user_id: str, send: Send) -> int | None:
        """A statement page's common case: a cached key with the read scope, `currency` (known),
        `limit` (ASCII digits, 1 to the maximum) and `cursor` (one that decodes), nothing else;
        then a user id that is no identifier is refused here, unread, with Litestar's answer.
        Anything else, or a read that fails, is Litestar's to answer (a read has no effect, so
        doing it again there is harmless)."""
        authorization = [value for name, value in scope["headers"] if name == b"authorization"]
        if len(authorization) != 1:
            return None
        key = _cached_key(self.services, authorization[0], Scope.READ)
        if key is None:
            return None
        query = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
        given = dict(query)
        if len(given) != len(query) or not given.keys() <= _STATEMENT_QUERY:
            return None
        currency, limit, cursor = (
            given.get("currency"),
            given.get("limit", "100"),
            given.get("cursor"),
        )
        # `str.isdigit` alone takes any Unicode digit (superscript, Arabic-Indic, full-width),
        # which `int` refuses or reads where Litestar answers 400; the length bound keeps `int`
        # within its digit limit.
        if (
            currency is None
            or len(currency) != 3
            or not (limit.isascii() and limit.isdigit())
            or limit.startswith("0")
            or len(limit) > _LIMIT_DIGITS_MAX
            or not 1 <= int(limit) <= reads.statement_page_entries_max
            or (cursor is not None and len(cursor) > 64)
        ):
            return None
        try:
            exponent(currency)
            after = None if cursor is None else reads.decode_cursor(cursor)
        except Exception:  # Litestar reads again and says what is wrong
            return None
        sent: writes.Sent | None
        try:  # refused once the parameters have passed, as Litestar does; not looked up
            check_identifier(user_id, "user_id")
        except Rejected as refused:
            sent = _problem(of_rejection(refused))
        else:
            sent = await self._page(key, user_id, currency, after=after, limit=int(limit))
        if sent is None:
            return None
        self.statements += 1
        await sent(scope, _nothing, send)
        return sent.status

    async def _page(
        self,
        key: ApiKey,
        user_id: str,
        currency: str,
        *,
        after: tuple[int, int] | None,
        limit: int,
    ) -> writes.Sent | None:
        """A statement page, or None when the read fails (Litestar reads again)."""
        try:
            page = await reads.read_statement_page(
                self.services, key.ledger, user_id, currency, after=after, limit=limit
            )
            body = msgspec.json.encode(page)
        except Exception:  # Litestar reads again and says what is wrong
            return None
        return writes.Sent(200, {}, body)

    def _admitted(
        self, route: _Route, headers: dict[bytes, bytes]
    ) -> tuple[ApiKey | None, str | None]:
        """The cached key holding the route's scope and the Idempotency-Key, when both are
        there and well-formed, the body is JSON and not too large (else Litestar says what
        is wrong)."""
        media_type = headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
        length = headers.get(b"content-length", b"")
        if (
            media_type != b"application/json"
            or not length.isdigit()
            or not 0 < int(length) <= route.body_bytes_max
        ):
            return None, None
        key = _cached_key(self.services, headers.get(b"authorization", b""), route.scope)
        if key is None:
            return None, None
        idempotency_key = headers.get(b"idempotency-key", b"").decode("latin-1")
        if not 1 <= len(idempotency_key) <= limits.idempotency_key_length_max:
            return None, None
        return key, idempotency_key


STATEMENT_ROUTE = "/v1/users/{user_id:str}/statement"
_STATEMENT_PREFIX, _STATEMENT_SUFFIX = "/v1/users/", "/statement"
_STATEMENT_QUERY = frozenset({"currency", "limit", "cursor"})
_LIMIT_DIGITS_MAX = len(str(reads.statement_page_entries_max))


def statement_user(path: str) -> str | None:
    """The user id of a statement path (`/v1/users/{user_id}/statement`), else None."""
    if not (path.startswith(_STATEMENT_PREFIX) and path.endswith(_STATEMENT_SUFFIX)):
        return None
    user_id = path[len(_STATEMENT_PREFIX) : -len(_STATEMENT_SUFFIX)]
    return user_id if user_id and "/" not in user_id else None


def _cached_key(services: Services, authorization: bytes, scope: Scope) -> ApiKey | None:
    """The live key of a `Bearer` header, if the key cache holds it and it has `scope`."""
    kind, _, secret = authorization.partition(b" ")
    if kind.lower() != b"bearer":
        return None
    key = services.cached_key(secret.strip().decode("latin-1"))
    return key if key is not None and key.allows(scope) else None


async def _nothing() -> ReceiveMessage:  # pragma: no cover - a GET answer reads no body
    return {"type": "http.disconnect"}


async def _read(receive: Receive) -> tuple[bytes, Receive]:
    """The whole body, and a `receive` that gives it again before anything else."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client went away: the framework's turn
            return b"", _replaying(message, receive)
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    whole: HTTPRequestEvent = {"type": "http.request", "body": body, "more_body": False}
    return body, _replaying(whole, receive)


def _replaying(first: ReceiveMessage, receive: Receive) -> Receive:
    pending = [first]

    async def replayed() -> ReceiveMessage:
        return pending.pop() if pending else await receive()

    return replayed


def _problem(body: models.Problem) -> writes.Sent:
    return writes.Sent(body.status, {}, msgspec.json.encode(body), _PROBLEM_JSON)


def _route(
    scope: Scope,
    kind: type[Any],
    body_bytes_max: int,
    convert: Callable[[Any, LedgerWriter], Command | None],
) -> _Route:
    """A single-command route: `convert` makes the command (None: hand it to Litestar)."""

    async def write(
        services: Services, key: ApiKey, writer: LedgerWriter, data: Any, idempotency_key: str
    ) -> writes.Sent | None:
        try:
            command = convert(data, writer)
        except (Rejected, ApiProblem):  # nothing submitted: Litestar says why
            return None
        if command is None:
            return None
        return await writes.write_one(services, key, command, idempotency_key)

    return _Route(scope, msgspec.json.Decoder(kind), body_bytes_max, write)


def _recharge(data: models.RechargeRequest, _: LedgerWriter) -> Command:
    return commands.recharge(data)


def _expense(data: models.ExpenseRequest, _: LedgerWriter) -> Command:
    return commands.expense(data)


def _adjustment(data: models.AdjustmentRequest, _: LedgerWriter) -> Command:
    return commands.adjustment(data)


def _hold(data: models.HoldRequest, _: LedgerWriter) -> Command:
    return commands.hold(data)


def _transfer(data: models.TransferRequest, _: LedgerWriter) -> Command:
    return commands.transfer(data)


def _refund(data: models.RefundRequest, writer: LedgerWriter) -> Command | None:
    currency = writer.state.expenses.get(data.expense_id)
    if currency is None:  # perhaps written by another process: Litestar looks in the log
        return None
    return commands.refund(data, {data.expense_id: currency})


async def _batch(
    services: Services, key: ApiKey, writer: LedgerWriter, data: Any, idempotency_key: str
) -> writes.Sent | None:
    writes.check_batch_key(idempotency_key)  # first, as in Litestar's handler
    if len(data.commands) > limits.batch_commands_max:
        return None
    state = writer.state
    expenses = {}
    for expense_id in currencies.refunded_expenses(data):
        currency = state.expenses.get(expense_id)
        if currency is None:  # perhaps written by another process: Litestar looks in the log
            return None
        expenses[expense_id] = currency
    holds = {}
    for hold_id in currencies.captured_holds(data):
        held = state.hold(hold_id)
        if held is None:  # perhaps placed by another process: Litestar looks it up
            return None
        holds[hold_id] = held.currency
    read_in = commands.Currencies(expenses=expenses, holds=holds)
    return await writes.write_batch(services, key, data, read_in, idempotency_key)

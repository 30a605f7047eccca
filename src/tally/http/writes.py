"""POST /v1/recharges, /v1/expenses, /v1/refunds, /v1/adjustments, /v1/transfers, /v1/holds
(and a hold's capture and release) and /v1/batch.

A write is parsed at the edge (no database read, but for the currency of a refund's expense
or a capture's hold that the writer has not seen: `currencies`), handed to the ledger's writer
with one `submit`, and answered once its batch has committed. The engine keeps every
idempotency key permanently in the log; this layer adds the in-flight check (409) and the
replay header.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar, cast

import msgspec
import structlog
from litestar import Request, Response, post
from litestar.datastructures import ResponseHeader
from litestar.params import HeaderParameter, JSONBody, PathParameter
from litestar.types import HTTPResponseBodyEvent, HTTPResponseStartEvent, Receive, Send
from litestar.types import Scope as AsgiScope

from tally import views
from tally.api_keys import ApiKey, Scope
from tally.domain import limits
from tally.domain.commands import Command, Envelope
from tally.domain.decide import check_idempotency_key, command_kind
from tally.domain.rejections import Rejected, Rejection
from tally.engine.results import CommitFailed, Committed, DecidingFailed, Outcome, WriterStopped
from tally.http import commands, currencies, models
from tally.http.guards import checked, json_body, require
from tally.http.problems import (
    IDEMPOTENCY_KEY_HEADER,
    ApiProblem,
    EdgeProblem,
    of_rejection,
    problem,
)
from tally.http.responses import WRITE_RESPONSES
from tally.http.services import Services, api_key_of, services_of

log = structlog.get_logger(__name__)

batch_body_bytes_max = 1024 * 1024  # 1,000 commands of ~170 bytes fit with room for metadata

REPLAYED_HEADER = "Idempotent-Replayed"
_REPLAYED = {REPLAYED_HEADER: "true"}
_FIRST: dict[str, str] = {}
_encode = msgspec.json.Encoder().encode

_Body = TypeVar("_Body")

IdempotencyKey = Annotated[
    str,
    HeaderParameter(
        name=IDEMPOTENCY_KEY_HEADER,
        min_length=1,
        max_length=limits.idempotency_key_length_max,
        description="Your unique key for this write. Resending the same key and body "
        "returns the original result (with Idempotent-Replayed: true) and writes nothing.",
    ),
]

HoldId = Annotated[
    str,
    PathParameter(
        description="The hold's id, as it was placed (an identifier); any other names no "
        "hold (400 identifier_invalid).",
    ),
]


class _Answer(Response[_Body]):
    """A write's answer, prepared (`Sent`), handed back by a Litestar handler: Litestar sends
    it as it is, without its per-response resolution of cookies, encoders, media type and
    header map. The content is only for the type the handler declares (OpenAPI)."""

    __slots__ = ("_sent",)

    def __init__(self, sent: Sent) -> None:
        super().__init__(cast(_Body, None), status_code=sent.status)
        self._sent = sent

    def to_asgi_response(self, app: Any, request: Any, **_: Any) -> Sent:  # type: ignore[override]
        return self._sent


class Sent:
    """The ASGI app of one answer: its two messages, prepared."""

    __slots__ = ("_body", "_start", "status")

    def __init__(
        self,
        status: int,
        headers: dict[str, str],
        body: bytes,
        content_type: bytes = b"application/json",
    ) -> None:
        self.status = status
        raw = [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in headers.items()
        ]
        raw.append((b"content-type", content_type))
        raw.append((b"content-length", b"%d" % len(body)))
        self._start: HTTPResponseStartEvent = {
            "type": "http.response.start",
            "status": status,
            "headers": raw,
        }
        self._body: HTTPResponseBodyEvent = {
            "type": "http.response.body",
            "body": body,
            "more_body": False,
        }

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        await send(self._start)
        await send(self._body)


def _transaction(committed: Committed) -> models.Transaction:
    return views.committed_transaction(committed)


async def _submit(
    services: Services, key: ApiKey, envelopes: list[Envelope], *, slot: str
) -> list[Outcome]:
    in_flight = (key.ledger, slot)
    if in_flight in services.in_flight:
        raise ApiProblem(
            EdgeProblem.IDEMPOTENCY_KEY_IN_FLIGHT,
            "a request with this Idempotency-Key is still being processed; retry shortly",
            field=IDEMPOTENCY_KEY_HEADER,
        )
    services.in_flight.add(in_flight)
    try:
        writer = await services.writer(key.ledger)
        future, answer = services.answers().waiting()
        writer.submit_to(envelopes, answer)
        return await future
    except (CommitFailed, WriterStopped) as error:
        log.warning("write not confirmed", ledger=key.ledger, error=repr(error))
        raise ApiProblem(
            EdgeProblem.UNAVAILABLE,
            "not confirmed (it may or may not have been recorded); retry with the same "
            "Idempotency-Key, which never writes twice",
        ) from error
    except DecidingFailed as error:  # logged by the writer, with its traceback
        raise ApiProblem(
            EdgeProblem.INTERNAL_ERROR,
            "tally failed while deciding this request (a bug, logged); nothing of it was written",
        ) from error
    finally:
        services.in_flight.discard(in_flight)


def _count(services: Services, command: Command, outcome: Outcome) -> None:
    services.count_command(*_labels(command, outcome))


def _labels(command: Command, outcome: Outcome) -> tuple[str, str]:
    if isinstance(outcome, Rejected):
        return command_kind(command), outcome.reason.code
    return command_kind(command), "replayed" if outcome.replayed else "committed"


async def _write_one(
    request: Request[Any, Any, Any], command: Command, idempotency_key: str
) -> Response[models.Transaction]:
    key = api_key_of(request)
    return _Answer(await write_one(services_of(request), key, command, idempotency_key))


async def write_one(
    services: Services, key: ApiKey, command: Command, idempotency_key: str
) -> Sent:
    """Submit one command; its transaction (201), or `Rejected` / `ApiProblem` raised."""
    envelope = Envelope(idempotency_key=idempotency_key, command=command, actor=key.key_id)
    (outcome,) = await _submit(services, key, [envelope], slot=idempotency_key)
    if isinstance(outcome, Rejected):
        _count(services, command, outcome)
        if outcome.reason in _KEY_REJECTIONS:  # the key is the header here
            raise Rejected(outcome.reason, field=IDEMPOTENCY_KEY_HEADER, detail=outcome.detail)
        raise outcome
    try:
        _count(services, command, outcome)
        headers = _REPLAYED if outcome.replayed else _FIRST
        return Sent(201, headers, _encode(_transaction(outcome)))
    except Exception as error:
        raise _unanswered(error, "the write was recorded", "the same Idempotency-Key") from error


_KEY_REJECTIONS = frozenset((Rejection.IDEMPOTENCY_KEY_INVALID, Rejection.IDEMPOTENCY_KEY_REUSED))


def _unanswered(error: Exception, recorded: str, retry_with: str) -> ApiProblem:
    """A bug after the commit: the 500 must not say that nothing was written."""
    log.error("answering a committed write failed", error=repr(error), exc_info=error)
    return ApiProblem(
        EdgeProblem.INTERNAL_ERROR,
        f"{recorded}, but tally failed to build the answer (a bug, logged); retry with "
        f"{retry_with} to get it",
    )


_WRITE: dict[str, Any] = {
    "status_code": 201,
    "response_headers": [
        ResponseHeader(
            name=REPLAYED_HEADER,
            documentation_only=True,
            description="`true` when this answer replays an earlier request with the same "
            "Idempotency-Key (nothing new was written); absent otherwise.",
        )
    ],
    "responses": WRITE_RESPONSES,
    "before_request": checked(require(Scope.WRITE), json_body),
    "tags": ["writes"],
}

_ADMIN_WRITE = {**_WRITE, "before_request": checked(require(Scope.ADMIN), json_body)}


@post("/v1/recharges", summary="Credit a wallet from a payment gateway", **_WRITE)
async def create_recharge(
    request: Request[Any, Any, Any],
    data: JSONBody[models.RechargeRequest],
    idempotency_key: IdempotencyKey,
) -> Response[models.Transaction]:
    return await _write_one(request, commands.recharge(data), idempotency_key)


@post("/v1/expenses", summary="Pay one or many orders from a wallet, all or none", **_WRITE)
async def create_expense(
    request: Request[Any, Any, Any],
    data: JSONBody[models.ExpenseRequest],
    idempotency_key: IdempotencyKey,
) -> Response[models.Transaction]:
    return await _write_one(request, commands.expense(data), idempotency_key)


@post("/v1/refunds", summary="Refund part or all of one order of an expense", **_WRITE)
async def create_refund(
    request: Request[Any, Any, Any],
    data: JSONBody[models.RefundRequest],
    idempotency_key: IdempotencyKey,
) -> Response[models.Transaction]:
    writer = await services_of(request).writer(api_key_of(request).ledger)
    expenses = await currencies.of_expenses(services_of(request), writer, [data.expense_id])
    return await _write_one(request, commands.refund(data, expenses), idempotency_key)


@post(
    "/v1/adjustments",
    summary="A manual correction with a reason (admin scope)",
    **_ADMIN_WRITE,
)
async def create_adjustment(
    request: Request[Any, Any, Any],
    data: JSONBody[models.AdjustmentRequest],
    idempotency_key: IdempotencyKey,
) -> Response[models.Transaction]:
    return await _write_one(request, commands.adjustment(data), idempotency_key)


@post(
    "/v1/transfers",
    summary="Move money between a user's wallet and other accounts (admin scope)",
    description="The generic multi-posting transaction beside the wallet words: a payment "
    "from one user to another, a fee, a promotional credit, a split. 2 to 100 postings on "
    "wallet, revenue, clearing or equity accounts, each named once, one of them the user's "
    "wallet; they sum to zero in the transfer's currency, and no wallet goes below zero "
    "(`insufficient_funds`). The transaction shows every posting with its balance_after.",
    **_ADMIN_WRITE,
)
async def create_transfer(
    request: Request[Any, Any, Any],
    data: JSONBody[models.TransferRequest],
    idempotency_key: IdempotencyKey,
) -> Response[models.Transaction]:
    return await _write_one(request, commands.transfer(data), idempotency_key)


@post(
    "/v1/holds",
    summary="Set money aside from a wallet for a payment not yet settled",
    description="The hold's amount leaves the wallet's balance at once, into the hold's own "
    "account, until the hold is captured (it pays orders, the rest goes back) or released "
    "(all of it goes back). After `expires_at` it can only be released.",
    **_WRITE,
)
async def create_hold(
    request: Request[Any, Any, Any],
    data: JSONBody[models.HoldRequest],
    idempotency_key: IdempotencyKey,
) -> Response[models.Transaction]:
    return await _write_one(request, commands.hold(data), idempotency_key)


@post(
    "/v1/holds/{hold_id:str}/capture",
    summary="Pay one or many orders from an open hold; the rest goes back to the wallet",
    description="All or none, once per hold, before the hold expires. The orders' amounts "
    "are in the hold's currency. The transaction's id is the `expense_id` a refund of one of "
    "its orders names.",
    **_WRITE,
)
async def create_capture(
    request: Request[Any, Any, Any],
    hold_id: HoldId,
    data: JSONBody[models.CaptureRequest],
    idempotency_key: IdempotencyKey,
) -> Response[models.Transaction]:
    services = services_of(request)
    writer = await services.writer(api_key_of(request).ledger)
    holds = await currencies.of_holds(services, writer, [hold_id])
    return await _write_one(request, commands.capture(hold_id, data, holds), idempotency_key)


@post(
    "/v1/holds/{hold_id:str}/release",
    summary="Give an open hold's money back to the wallet, all of it (an expired hold too)",
    **_WRITE,
)
async def create_release(
    request: Request[Any, Any, Any],
    hold_id: HoldId,
    data: JSONBody[models.ReleaseRequest],
    idempotency_key: IdempotencyKey,
) -> Response[models.Transaction]:
    return await _write_one(request, commands.release(hold_id, data), idempotency_key)


@post(
    "/v1/batch",
    summary="Many commands in one request, each atomic on its own",
    description="One result per command, in order. Each command carries its own "
    "idempotency_key; an adjustment or a transfer needs the admin scope. Answers 200 even "
    "when some commands were refused: look at each result's status. The body may be up to 1 MiB "
    "(room for 1,000 commands); every other request body up to 64 KiB.",
    **{**_WRITE, "status_code": 200, "request_max_body_size": batch_body_bytes_max},
)
async def create_batch(
    request: Request[Any, Any, Any],
    data: JSONBody[models.BatchRequest],
    idempotency_key: IdempotencyKey,
) -> Response[models.BatchResponse]:
    check_batch_key(idempotency_key)
    services = services_of(request)
    key = api_key_of(request)
    if len(data.commands) > limits.batch_commands_max:
        raise ApiProblem(
            EdgeProblem.FIELD_INVALID,
            f"at most {limits.batch_commands_max} commands per batch",
            field="commands",
        )
    writer = await services.writer(key.ledger)
    read_in = await currencies.of_batch(services, writer, data)
    return _Answer(await write_batch(services, key, data, read_in, idempotency_key))


def check_batch_key(idempotency_key: str) -> None:
    """Refuse a batch's `Idempotency-Key` header as a single write's is refused.

    A single write's header key is its command's key, which the ledger checks
    (`tally.domain.decide.recall`); a batch's is only an in-flight lock that reaches no
    command, so it is checked here, the same way, before anything is looked up or submitted."""
    check_idempotency_key(idempotency_key, IDEMPOTENCY_KEY_HEADER)


async def write_batch(
    services: Services,
    key: ApiKey,
    data: models.BatchRequest,
    read_in: commands.Currencies,
    idempotency_key: str,
) -> Sent:
    """Submit a batch's commands (`read_in`: the currencies of the refunded expenses and the
    captured holds, `currencies.of_batch`)."""
    results: list[models.BatchResult | None] = []
    envelopes: list[Envelope] = []
    for item in data.commands:
        try:
            if isinstance(item, _ADMIN_ONLY) and not key.allows(Scope.ADMIN):
                raise ApiProblem(
                    EdgeProblem.FORBIDDEN,
                    f"{item.__struct_config__.tag}s need the 'admin' scope",
                    field="Authorization",
                )
            command = commands.of_batch(item, read_in)
        except Rejected as rejection:
            results.append(_refused(rejection))
            continue
        except ApiProblem as refusal:
            results.append(_edge_refused(refusal))
            continue
        results.append(None)
        envelopes.append(
            Envelope(idempotency_key=item.idempotency_key, command=command, actor=key.key_id)
        )
    outcomes = await _submit(services, key, envelopes, slot=idempotency_key) if envelopes else []
    try:
        return _batch_answer(services, results, envelopes, outcomes)
    except Exception as error:
        raise _unanswered(
            error, "the batch's accepted commands were recorded", "the same command keys"
        ) from error


_ADMIN_ONLY = (models.BatchAdjustment, models.BatchTransfer)


def _batch_answer(
    services: Services,
    results: list[models.BatchResult | None],
    envelopes: list[Envelope],
    outcomes: list[Outcome],
) -> Sent:
    answered = iter(zip(envelopes, outcomes, strict=True))
    counts: dict[tuple[str, str], int] = {}  # the metric moved once per label pair
    for index, result in enumerate(results):
        if result is not None:
            continue
        envelope, outcome = next(answered)
        labels = _labels(envelope.command, outcome)
        counts[labels] = counts.get(labels, 0) + 1
        if isinstance(outcome, Rejected):
            results[index] = _refused(outcome)
        else:
            results[index] = models.BatchResult(
                status=201, replayed=outcome.replayed, transaction=_transaction(outcome)
            )
    for (kind, label), count in counts.items():
        services.count_command(kind, label, count)
    final = [result for result in results if result is not None]
    return Sent(200, _FIRST, _encode(models.BatchResponse(results=final)))


def _refused(rejection: Rejected) -> models.BatchResult:
    body = of_rejection(rejection)
    return models.BatchResult(status=body.status, problem=body)


def _edge_refused(refusal: ApiProblem) -> models.BatchResult:
    body = problem(refusal.reason, refusal.detail, refusal.field)
    return models.BatchResult(status=body.status, problem=body)


ROUTES = [
    create_recharge,
    create_expense,
    create_refund,
    create_adjustment,
    create_transfer,
    create_hold,
    create_capture,
    create_release,
    create_batch,
]

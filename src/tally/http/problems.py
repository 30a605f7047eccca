"""Errors as RFC 9457 problem details (`application/problem+json`).

Every error has a stable `code`: a `Rejection` code when the ledger refused the command,
otherwise one of `EdgeProblem` (the request itself was wrong before any rule could look at
it). Each code maps to exactly one HTTP status, in `status_of`.
"""

from __future__ import annotations

import enum
import re
from http import HTTPStatus
from typing import Any

import msgspec
import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from tally.domain import limits
from tally.domain.rejections import Rejected, Rejection
from tally.engine.ports import StoreUnavailable
from tally.http.models import Problem

log = structlog.get_logger(__name__)

PROBLEM_JSON = "application/problem+json"
IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"


class EdgeProblem(enum.Enum):
    """Problems found by the HTTP edge, each with its status and stable code."""

    JSON_MALFORMED = (400, "json_malformed")
    FIELD_INVALID = (400, "field_invalid")
    FIELD_UNKNOWN = (400, "field_unknown")
    FIELD_MISSING = (400, "field_missing")
    PARAMETER_INVALID = (400, "parameter_invalid")
    IDEMPOTENCY_KEY_MISSING = (400, "idempotency_key_missing")
    CURSOR_INVALID = (400, "cursor_invalid")
    UNAUTHORIZED = (401, "unauthorized")
    FORBIDDEN = (403, "forbidden")
    NOT_FOUND = (404, "not_found")
    METHOD_NOT_ALLOWED = (405, "method_not_allowed")
    IDEMPOTENCY_KEY_IN_FLIGHT = (409, "idempotency_key_in_flight")
    BODY_TOO_LARGE = (413, "body_too_large")
    CONTENT_TYPE_UNSUPPORTED = (415, "content_type_unsupported")
    INTERNAL_ERROR = (500, "internal_error")
    UNAVAILABLE = (503, "unavailable")

    @property
    def status(self) -> int:
        return self.value[0]

    @property
    def code(self) -> str:
        return self.value[1]


_REJECTION_STATUS: dict[Rejection, int] = {
    **dict.fromkeys(Rejection, 400),
    Rejection.IDEMPOTENCY_KEY_REUSED: 422,
    Rejection.ORDER_ALREADY_PAID: 409,
    Rejection.PAYMENT_ALREADY_CREDITED: 409,
    Rejection.REFUND_ALREADY_ISSUED: 409,
    Rejection.HOLD_ALREADY_PLACED: 409,
    Rejection.EXPENSE_UNKNOWN: 404,
    Rejection.HOLD_UNKNOWN: 404,
    Rejection.ORDER_UNKNOWN: 404,
    Rejection.POSTINGS_UNBALANCED: 422,
    Rejection.CURRENCY_MISMATCH: 422,
    Rejection.HOLD_SETTLED: 409,
    Rejection.HOLD_EXPIRED: 409,
    Rejection.REFUND_EXCEEDS_REFUNDABLE: 422,
    Rejection.CAPTURE_EXCEEDS_HOLD: 422,
    Rejection.INSUFFICIENT_FUNDS: 422,
    Rejection.BALANCE_LIMIT_EXCEEDED: 422,
}


def status_of(reason: Rejection | EdgeProblem) -> int:
    if isinstance(reason, Rejection):
        return _REJECTION_STATUS[reason]
    return reason.status


class ApiProblem(Exception):
    """Raised anywhere in a handler to answer with a problem."""

    def __init__(self, reason: EdgeProblem, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.field = field


def problem(reason: Rejection | EdgeProblem, detail: str, field: str | None = None) -> Problem:
    status = status_of(reason)
    return Problem(
        type=f"urn:tally:problem:{reason.code}",
        title=HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        code=reason.code,
        field=field,
    )


def of_rejection(rejection: Rejected) -> Problem:
    return problem(rejection.reason, rejection.detail, rejection.field)


def respond(body: Problem, headers: dict[str, str] | None = None) -> Response[Problem]:
    return Response(body, status_code=body.status, media_type=PROBLEM_JSON, headers=headers)


def idempotency_key_refused(value: str | None) -> Problem:
    """The answer to an `Idempotency-Key` header that is absent or empty (missing), or not of
    printable characters up to the maximum length (invalid)."""
    length_max = limits.idempotency_key_length_max
    if not value:
        return problem(
            EdgeProblem.IDEMPOTENCY_KEY_MISSING,
            f"every POST needs an Idempotency-Key header (1 to {length_max} printable characters)",
            IDEMPOTENCY_KEY_HEADER,
        )
    return problem(
        Rejection.IDEMPOTENCY_KEY_INVALID,
        f"must be 1 to {length_max} printable characters",
        IDEMPOTENCY_KEY_HEADER,
    )


# -- turning framework and validation errors into problems ------------------------------
_UNKNOWN_FIELD = re.compile(r"Object contains unknown field `([^`]*)`")
_MISSING_FIELD = re.compile(r"Object missing required field `([^`]*)`")
_METADATA_PATH = re.compile(r"((?:.*\.)?metadata)(?:\[.*)?")
_MISSING_PARAMETER = re.compile(r"Missing required (?:\w+) parameter '([^']*)'")
_PARAMETER_SOURCES = frozenset({"query", "path", "header", "cookie"})
# Litestar names a header parameter that fails validation by the handler's argument.
_IDEMPOTENCY_KEY_ARGUMENT = "idempotency_key"


def _field_path(key: object) -> str | None:
    return key if isinstance(key, str) and key not in ("data", "") else None


def bad_request(detail: str, extra: object, *, idempotency_key: str | None = None) -> Problem:
    """Classify the framework's 400s (body decoding, parameter parsing) into stable codes.

    `idempotency_key` is the request's Idempotency-Key header, if it has one."""
    first: dict[str, Any] = {}
    if isinstance(extra, list) and extra and isinstance(extra[0], dict):
        first = extra[0]
    message = str(first.get("message", detail))
    source = first.get("source")
    path = _field_path(first.get("key"))
    missing_parameter = _MISSING_PARAMETER.search(detail)
    if missing_parameter is not None and missing_parameter[1] == IDEMPOTENCY_KEY_HEADER:
        return idempotency_key_refused(None)
    if source == "header" and path == _IDEMPOTENCY_KEY_ARGUMENT:
        return idempotency_key_refused(idempotency_key)
    if missing_parameter is not None:
        name = missing_parameter[1]
        return problem(EdgeProblem.PARAMETER_INVALID, f"{name} is required", name)
    if source in _PARAMETER_SOURCES:
        return problem(EdgeProblem.PARAMETER_INVALID, message, path)
    if not first:  # the body could not be decoded at all
        return problem(EdgeProblem.JSON_MALFORMED, f"the body is not a JSON object: {detail}")
    if (match := _UNKNOWN_FIELD.search(message)) is not None:
        field = match[1] if path is None else f"{path}.{match[1]}"
        return problem(EdgeProblem.FIELD_UNKNOWN, f"unknown field {field!r}", field)
    if (match := _MISSING_FIELD.search(message)) is not None:
        field = match[1] if path is None else f"{path}.{match[1]}"
        return problem(EdgeProblem.FIELD_MISSING, f"missing required field {field!r}", field)
    if path is not None and (path == "amount" or path.endswith(".amount")):
        return problem(
            Rejection.AMOUNT_INVALID,
            'must be a decimal string such as "150.00" (numbers are refused)',
            path,
        )
    if path is not None and (metadata := _METADATA_PATH.fullmatch(path)) is not None:
        # "metadata[...]", or in a batch "commands[0].metadata[...]": named up to `metadata`
        return problem(Rejection.METADATA_INVALID, "metadata maps strings to strings", metadata[1])
    return problem(EdgeProblem.FIELD_INVALID, message, path)


def handle_validation(
    request: Request[Any, Any, Any], exc: ValidationException
) -> Response[Problem]:
    idempotency_key = request.headers.get(IDEMPOTENCY_KEY_HEADER)
    return respond(bad_request(str(exc.detail), exc.extra, idempotency_key=idempotency_key))


def handle_api_problem(_: Request[Any, Any, Any], exc: ApiProblem) -> Response[Problem]:
    return respond(problem(exc.reason, exc.detail, exc.field))


def handle_rejected(_: Request[Any, Any, Any], exc: Rejected) -> Response[Problem]:
    return respond(of_rejection(exc))


_HTTP_PROBLEMS = {
    401: EdgeProblem.UNAUTHORIZED,
    403: EdgeProblem.FORBIDDEN,
    404: EdgeProblem.NOT_FOUND,
    405: EdgeProblem.METHOD_NOT_ALLOWED,
    413: EdgeProblem.BODY_TOO_LARGE,
    415: EdgeProblem.CONTENT_TYPE_UNSUPPORTED,
}


def handle_http(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Problem]:
    if exc.status_code == 400:
        return respond(bad_request(str(exc.detail), exc.extra))
    reason = _HTTP_PROBLEMS.get(exc.status_code)
    if reason is None:
        reason = EdgeProblem.FIELD_INVALID if exc.status_code < 500 else EdgeProblem.UNAVAILABLE
        body = problem(reason, str(exc.detail))
        body = msgspec.structs.replace(body, status=exc.status_code)
        return respond(body)
    return respond(problem(reason, str(exc.detail)))


def handle_unavailable(_: Request[Any, Any, Any], exc: StoreUnavailable) -> Response[Problem]:
    log.warning("store unavailable", error=str(exc))
    return respond(
        problem(EdgeProblem.UNAVAILABLE, "the database is unavailable; nothing changed, retry")
    )


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Problem]:
    log.error("unhandled error", path=request.url.path, error=repr(exc), exc_info=exc)
    return Response(
        problem(EdgeProblem.INTERNAL_ERROR, "tally failed to answer; nothing was acknowledged"),
        status_code=500,
        media_type=PROBLEM_JSON,
    )


EXCEPTION_HANDLERS: Any = {
    ValidationException: handle_validation,
    ApiProblem: handle_api_problem,
    Rejected: handle_rejected,
    HTTPException: handle_http,
    StoreUnavailable: handle_unavailable,
    Exception: handle_unexpected,
}

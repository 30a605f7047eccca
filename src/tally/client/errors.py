"""The errors the SDK raises.

TallyError
├── InvalidArgument         also a ValueError: an idempotency key or API key that is not
│                           printable ASCII (an HTTP header); refused at once, nothing sent
├── TransportError          the network failed on every try (the write may or may not
│                           have landed: call again with the same idempotency_key)
├── UnreadableAnswer        an answer that is not tally's (a proxy's page): .status
└── ApiError                the server answered with a problem: .status .code .field
    ├── InvalidRequest      400, 413, 415: fix the request
    ├── Unauthorized        401: no key, or an unknown or revoked one
    ├── Forbidden           403: the key lacks the scope
    ├── NotFound            404: nothing with that id in the key's ledger
    ├── Conflict            409: key in flight, a business key used (order, payment, refund request)
    ├── Refused             422: the ledger's rules said no (insufficient_funds, ...)
    └── ServerError         5xx
"""

from __future__ import annotations

from tally.client.models import Problem


class TallyError(Exception):
    """Anything the SDK raises on purpose."""


class InvalidArgument(TallyError, ValueError):
    """An argument refused before anything was sent, and never retried: an idempotency key or
    API key that cannot go into an HTTP header as it is, a base URL that is not http(s).
    `.argument` names it."""

    def __init__(self, argument: str, message: str) -> None:
        super().__init__(f"{argument} {message}")
        self.argument = argument


class TransportError(TallyError):
    """No answer from the server after every retry; or, at once, a request httpx could not
    form at all (sending it again would fail the same way)."""


class UnreadableAnswer(TallyError):
    """The server answered `status` with a body the SDK cannot read as the answer it expects
    (a proxy's HTML page, say). On a 2xx the request succeeded: a write landed."""

    def __init__(self, status: int, error: Exception) -> None:
        super().__init__(f"HTTP {status}: the answer could not be read ({error})")
        self.status = status


class ApiError(TallyError):
    def __init__(self, problem: Problem) -> None:
        super().__init__(f"{problem.status} {problem.code}: {problem.detail}")
        self.problem = problem
        self.status = problem.status
        self.code = problem.code
        self.field = problem.field
        self.detail = problem.detail


class InvalidRequest(ApiError):
    pass


class Unauthorized(ApiError):
    pass


class Forbidden(ApiError):
    pass


class NotFound(ApiError):
    pass


class Conflict(ApiError):
    pass


class Refused(ApiError):
    pass


class ServerError(ApiError):
    pass


_BY_STATUS: dict[int, type[ApiError]] = {
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    422: Refused,
}


def error_for(problem: Problem) -> ApiError:
    if problem.status >= 500:
        return ServerError(problem)
    return _BY_STATUS.get(problem.status, InvalidRequest)(problem)

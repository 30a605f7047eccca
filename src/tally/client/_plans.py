"""Each API call as a plan (method, path, body, how to read the answer), shared by the
sync and async clients, which only do the I/O and the retries."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
import msgspec

from tally.client import models
from tally.client.errors import ApiError, InvalidArgument, UnreadableAnswer, error_for

T = TypeVar("T")

REPLAYED_HEADER = "Idempotent-Replayed"
retries_max = 3  # after the first try
backoff_first_s = 0.05
backoff_max_s = 2.0
_RETRY_STATUSES = frozenset({502, 503, 504})
shown_value_length_max = 64  # of a refused idempotency key, in InvalidArgument's message


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan(Generic[T]):
    method: str
    path: str
    read: Callable[[httpx.Response], T]
    params: dict[str, str | int] = field(default_factory=dict)
    body: dict[str, Any] | None = None
    idempotency_key: str | None = None  # set on every write; reused on every retry

    def headers(self) -> dict[str, str]:
        if self.idempotency_key is None:
            return {}
        return {"Idempotency-Key": self.idempotency_key}

    def content(self) -> bytes | None:
        return None if self.body is None else msgspec.json.encode(self.body)


def should_retry(response: httpx.Response) -> bool:
    if response.status_code in _RETRY_STATUSES:
        return True
    return response.status_code == 409 and _code(response) == "idempotency_key_in_flight"


def backoff_s(attempt: int) -> float:
    return float(min(backoff_max_s, backoff_first_s * 2**attempt))


def _code(response: httpx.Response) -> str | None:
    try:
        return str(response.json().get("code"))
    except (ValueError, AttributeError):
        return None


def raise_for_problem(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        problem = msgspec.json.decode(response.content, type=models.Problem)
    except msgspec.DecodeError:  # not a problem document: HTML, text, empty (a proxy's)
        problem = models.Problem(
            type="about:blank",
            title=response.reason_phrase,
            status=response.status_code,
            detail=response.text[:500],
            code="http_error",
        )
    raise error_for(problem)


def _reader(kind: type[T]) -> Callable[[httpx.Response], T]:
    def read(response: httpx.Response) -> T:
        raise_for_problem(response)
        try:
            return msgspec.json.decode(response.content, type=kind)
        except msgspec.DecodeError as error:
            raise UnreadableAnswer(response.status_code, error) from error

    return read


def _read_transaction(response: httpx.Response) -> models.Transaction:
    transaction = _reader(models.Transaction)(response)
    if response.headers.get(REPLAYED_HEADER) == "true":
        return msgspec.structs.replace(transaction, replayed=True)
    return transaction


def _read_batch(response: httpx.Response) -> list[models.BatchResult]:
    return _reader(models._BatchResponse)(response).results


def _key(given: str | None) -> str:
    if given is None:
        return f"sdk-{uuid.uuid4()}"
    check_sendable("idempotency_key", given, shown=True)
    return given


def check_sendable(argument: str, value: str, *, shown: bool) -> None:
    """Raise `InvalidArgument` naming `argument` when `value` cannot go into an HTTP header
    as it is; `shown`: whether the message may quote it (never an API key's secret).

    Checked before anything is sent: httpx refuses a non-ASCII character with a bare
    `UnicodeEncodeError`, and its HTTP/1.1 layer a control character or a space at either end
    only as it writes the request, with an error the retries would take for the network's.
    Non-ASCII is refused rather than encoded: the server reads a header's bytes as latin-1, so
    a UTF-8 key would be recorded as other characters ("café" as "cafÃ©")."""
    why = _unsendable(value)
    if why is None:
        return
    if shown:
        cut = value[:shown_value_length_max]
        why = f"{cut!r}{'...' if cut != value else ''} {why}"
    raise InvalidArgument(
        argument,
        f"{why}: it goes into an HTTP header, so it must be 1 or more printable ASCII "
        "characters (' ' to '~') without a space at either end (nothing was sent)",
    )


def _unsendable(value: str) -> str | None:
    """Why `value` cannot be sent as an HTTP header value as it is, or None when it can."""
    if not value:
        return "is empty"
    for index, character in enumerate(value):
        if not " " <= character <= "~":
            return f"holds {character!r} at index {index}"
    if value[0] == " " or value[-1] == " ":
        return "starts or ends with a space"
    return None


def _with_optional(body: dict[str, Any], **optional: Any) -> dict[str, Any]:
    body.update({name: value for name, value in optional.items() if value is not None})
    return body


def _segment(value: str) -> str:
    return quote(value, safe="")


# -- writes ----------------------------------------------------------------------------------
def recharge_body(
    user_id: str,
    amount: models.Amount,
    currency: str,
    gateway: str,
    *,
    metadata: Mapping[str, str] | None,
    gateway_reference: str | None,
) -> dict[str, Any]:
    body = {
        "user_id": user_id,
        "amount": models.amount_text(amount),
        "currency": currency,
        "gateway": gateway,
    }
    return _with_optional(
        body,
        metadata=None if metadata is None else dict(metadata),
        gateway_reference=gateway_reference,
    )


def expense_body(
    user_id: str,
    currency: str,
    orders: Sequence[models.OrderLine],
    metadata: Mapping[str, str] | None,
) -> dict[str, Any]:
    body = {"user_id": user_id, "currency": currency, "orders": [o.to_json() for o in orders]}
    return _with_optional(body, metadata=None if metadata is None else dict(metadata))


def refund_body(
    expense_id: str,
    order_id: str,
    amount: models.Amount,
    *,
    reason: str | None,
    metadata: Mapping[str, str] | None,
    refund_request_id: str | None,
) -> dict[str, Any]:
    body = {"expense_id": expense_id, "order_id": order_id, "amount": models.amount_text(amount)}
    return _with_optional(
        body,
        reason=reason,
        metadata=None if metadata is None else dict(metadata),
        refund_request_id=refund_request_id,
    )


def adjustment_body(
    user_id: str,
    amount: models.Amount,
    currency: str,
    reason: str,
    metadata: Mapping[str, str] | None,
) -> dict[str, Any]:
    body = {
        "user_id": user_id,
        "amount": models.amount_text(amount),
        "currency": currency,
        "reason": reason,
    }
    return _with_optional(body, metadata=None if metadata is None else dict(metadata))


def capture_body(
    orders: Sequence[models.OrderLine], metadata: Mapping[str, str] | None
) -> dict[str, Any]:
    body = {"orders": [o.to_json() for o in orders]}
    return _with_optional(body, metadata=None if metadata is None else dict(metadata))


def release_body(reason: str, metadata: Mapping[str, str] | None) -> dict[str, Any]:
    return _with_optional(
        {},
        reason=reason or None,  # "" is no reason, as the server takes it
        metadata=None if metadata is None else dict(metadata),
    )


def capture_path(hold_id: str) -> str:
    return f"/v1/holds/{_segment(hold_id)}/capture"


def release_path(hold_id: str) -> str:
    return f"/v1/holds/{_segment(hold_id)}/release"


def write(path: str, body: dict[str, Any], key: str | None) -> Plan[models.Transaction]:
    return Plan(
        method="POST", path=path, body=body, read=_read_transaction, idempotency_key=_key(key)
    )


def batch(
    commands: Sequence[models.BatchCommand], key: str | None
) -> Plan[list[models.BatchResult]]:
    body = {"commands": [command.to_json() for command in commands]}
    return Plan(
        method="POST", path="/v1/batch", body=body, read=_read_batch, idempotency_key=_key(key)
    )


# -- reads -----------------------------------------------------------------------------------
def balances(user_id: str) -> Plan[models.Balances]:
    return Plan(
        method="GET",
        path=f"/v1/users/{_segment(user_id)}/balances",
        read=_reader(models.Balances),
    )


def statement(
    user_id: str,
    currency: str,
    *,
    limit: int | None,
    cursor: str | None,
    since: str | None,
    until: str | None,
) -> Plan[models.StatementPage]:
    params: dict[str, str | int] = {"currency": currency}
    for name, value in (("limit", limit), ("cursor", cursor), ("from", since), ("to", until)):
        if value is not None:
            params[name] = value
    return Plan(
        method="GET",
        path=f"/v1/users/{_segment(user_id)}/statement",
        params=params,
        read=_reader(models.StatementPage),
    )


def transaction(transaction_id: str) -> Plan[models.Transaction]:
    return Plan(
        method="GET",
        path=f"/v1/transactions/{_segment(transaction_id)}",
        read=_reader(models.Transaction),
    )


def order(order_id: str) -> Plan[models.Order]:
    return Plan(method="GET", path=f"/v1/orders/{_segment(order_id)}", read=_reader(models.Order))


def hold(hold_id: str) -> Plan[models.Hold]:
    return Plan(method="GET", path=f"/v1/holds/{_segment(hold_id)}", read=_reader(models.Hold))


def user_holds(
    user_id: str, *, settled: bool | None, limit: int | None, cursor: str | None
) -> Plan[models.UserHolds]:
    params: dict[str, str | int] = {}
    if settled is not None:
        params["settled"] = "true" if settled else "false"
    for name, value in (("limit", limit), ("cursor", cursor)):
        if value is not None:
            params[name] = value
    return Plan(
        method="GET",
        path=f"/v1/users/{_segment(user_id)}/holds",
        params=params,
        read=_reader(models.UserHolds),
    )


def finance_report(since: str | None, until: str | None) -> Plan[models.FinanceReport]:
    params: dict[str, str | int] = {
        name: value for name, value in (("from", since), ("to", until)) if value is not None
    }
    return Plan(
        method="GET",
        path="/v1/reports/finance",
        params=params,
        read=_reader(models.FinanceReport),
    )


def events(after_seq: int, limit: int) -> Plan[models.EventsPage]:
    return Plan(
        method="GET",
        path="/v1/events",
        params={"after_seq": after_seq, "limit": limit},
        read=_reader(models.EventsPage),
    )


def check_base_url(base_url: str) -> None:
    """Raise `InvalidArgument` for a base URL httpx cannot send to (no http:// or https://,
    no host): its error would come only at the first request, and be retried as the
    network's."""
    try:
        url = httpx.URL(base_url)
    except httpx.InvalidURL as error:
        raise InvalidArgument("base_url", f"{base_url!r} is no URL ({error})") from None
    if url.scheme not in {"http", "https"} or not url.host:
        raise InvalidArgument(
            "base_url",
            f"{base_url!r} must be http:// or https:// and a host (nothing was sent)",
        )


def retriable(error: httpx.TransportError) -> bool:
    """Whether sending again could help: not when httpx could not form the request at all
    (it was never sent; it would fail the same way every time)."""
    return not isinstance(error, httpx.LocalProtocolError | httpx.UnsupportedProtocol)


def auth_headers(api_key: str) -> dict[str, str]:
    check_sendable("api_key", api_key, shown=False)
    return {"Authorization": f"Bearer {api_key}", "User-Agent": "tally-python-sdk"}


__all__ = ["ApiError", "Plan"]

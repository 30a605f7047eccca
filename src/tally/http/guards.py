"""Who may call a route (bearer key and scope), and what a POST must look like."""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable
from typing import Any

from litestar.connection import ASGIConnection, Request
from litestar.enums import ParamType
from litestar.handlers.base import BaseRouteHandler
from litestar.params import ParameterKwarg

from tally.api_keys import Scope, secret_length_max
from tally.http.problems import ApiProblem, EdgeProblem
from tally.http.services import services_of

Guard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Awaitable[None]]


def require(scope: Scope) -> Guard:
    """A guard: a live key of this app's keys, holding `scope` (401 / 403 otherwise)."""

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        header = connection.headers.get("authorization", "")
        kind, _space, secret = header.partition(" ")
        secret = secret.strip()
        if kind.lower() != "bearer" or not secret or len(secret) > secret_length_max:
            raise ApiProblem(
                EdgeProblem.UNAUTHORIZED,
                "send an API key: Authorization: Bearer <key>",
                field="Authorization",
            )
        key = await services_of(connection).authenticate(secret)
        if key is None:
            raise ApiProblem(
                EdgeProblem.UNAUTHORIZED, "unknown or revoked API key", field="Authorization"
            )
        if not key.allows(scope):
            raise ApiProblem(
                EdgeProblem.FORBIDDEN,
                f"this key lacks the {scope.value!r} scope",
                field="Authorization",
            )
        connection.scope["state"]["tally_api_key"] = key

    return guard


async def json_body(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """POST bodies are non-empty JSON: anything else is refused before it is read."""
    media_type = connection.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise ApiProblem(
            EdgeProblem.CONTENT_TYPE_UNSUPPORTED,
            f"send Content-Type: application/json (got {media_type or 'none'!r})",
            field="Content-Type",
        )
    length = connection.headers.get("content-length")
    if length == "0" or (
        # chunked: only reading it tells (a Request caches its body for the handler)
        length is None and isinstance(connection, Request) and not await connection.body()
    ):
        raise ApiProblem(EdgeProblem.JSON_MALFORMED, "the body is empty; send a JSON object")


# Integer and boolean query parameters in one spelling each: Litestar's lax parsing
# (msgspec's) would also take `1e2` or `1.0` for 100 and 1 and `1`, `0` or `True` for a
# boolean, where the statement page's direct path (http/direct.py) takes digits alone.
_WHOLE = (re.compile(r"0|[1-9][0-9]*"), "a whole number in digits")
_BOOLEAN = (re.compile(r"true|false"), "true or false")
_SHOWN_MAX = 40  # of a refused value, in the problem's detail


@functools.cache  # a route handler lives as long as its app
def _query_forms(handler: BaseRouteHandler) -> tuple[tuple[str, re.Pattern[str], str], ...]:
    """The handler's integer and boolean query parameters (declared with `QueryParameter`,
    as every route of the API's is): (the key in the query, its form, what it must be)."""
    forms = []
    for name, field in handler.parsed_fn_signature.parameters.items():
        declared = field.kwarg_definition
        if not isinstance(declared, ParameterKwarg) or declared.param_type is not ParamType.QUERY:
            continue
        types = (field, *field.inner_types)  # `bool | None`: the bool is an inner type
        if any(t.is_subclass_of(bool) for t in types):
            form, expected = _BOOLEAN
        elif any(t.is_subclass_of(int) for t in types):
            form, expected = _WHOLE
        else:
            continue
        forms.append((declared.name or declared.query or name, form, expected))
    return tuple(forms)


async def strict_query(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """The route's integer and boolean query parameters, when given, are given once and
    spelled as the API documents them (400 `parameter_invalid` naming the parameter). A
    parameter the route does not take is ignored, as any unknown one is."""
    if not connection.scope["query_string"]:
        return
    query = connection.query_params
    for key, form, expected in _query_forms(handler):
        values = query.getall(key, [])
        if not values:
            continue
        if len(values) > 1:
            raise ApiProblem(
                EdgeProblem.PARAMETER_INVALID,
                f"{key} is given {len(values)} times; give it once",
                field=key,
            )
        if form.fullmatch(values[0]) is None:
            raise ApiProblem(
                EdgeProblem.PARAMETER_INVALID,
                f"{key} must be {expected} (got {values[0][:_SHOWN_MAX]!r})",
                field=key,
            )


def checked(*guards: Guard) -> Callable[[Request[Any, Any, Any]], Awaitable[None]]:
    """The guards as one before-request hook, which runs where guards do: before the
    parameters and the body are read. (Litestar hands each guard a `copy.copy` of the route
    handler, which cost more than the checks themselves.)"""

    async def check(request: Request[Any, Any, Any]) -> None:
        handler = request.scope["route_handler"]
        for guard in guards:
            await guard(request, handler)

    return check


__all__ = ["Guard", "checked", "json_body", "require", "strict_query"]

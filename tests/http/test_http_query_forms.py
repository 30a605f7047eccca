"""Integer and boolean query parameters in one spelling each, on every route that takes
them, from both stores: digits for `limit` and `after_seq` (no `1e2`, `1.0`, `+5` or `05`),
`true` or `false` for `settled` (no `1`, `0` or `True`), each given once. Anything else is a
400 `parameter_invalid` naming the parameter and quoting what came; a parameter a route
does not take is ignored, as any unknown one is. The statement page's direct path
(http/direct.py) hands what it does not take to Litestar, which now refuses the same."""

from __future__ import annotations

from typing import Any

import pytest
from litestar.handlers import HTTPRouteHandler

from tally.http import guards, reads

pytest_plugins = ["http_fixtures"]

ROUTES = {  # the routes, and the integer parameters each takes
    "/v1/users/bob/statement?currency=USD": ("limit",),
    "/v1/users/bob/holds": ("limit",),
    "/v1/events": ("limit", "after_seq"),
}
BAD_WHOLE = ["1e2", "1.0", "+5", "05", " 5", "5 ", "0x10", "١٢", "-0"]
GOOD_WHOLE = ["1", "7", "100"]


def _get(live: Any, route: str, query: list[tuple[str, str]]) -> Any:
    path, _, fixed = route.partition("?")
    params = [tuple(p.split("=", 1)) for p in fixed.split("&") if p] + query
    with live.client("read") as http:
        return http.get(path, params=params)


def _refused(response: Any, field: str, needle: str) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == "parameter_invalid", body
    assert body["field"] == field, body
    assert needle in body["detail"], body


@pytest.mark.parametrize("value", BAD_WHOLE)
@pytest.mark.parametrize(
    ("route", "name"), [(route, name) for route, names in ROUTES.items() for name in names]
)
def test_an_integer_in_another_spelling_is_refused(
    live: Any, route: str, name: str, value: str
) -> None:
    _refused(_get(live, route, [(name, value)]), name, "a whole number in digits")


@pytest.mark.parametrize("value", GOOD_WHOLE)
@pytest.mark.parametrize(
    ("route", "name"), [(route, name) for route, names in ROUTES.items() for name in names]
)
def test_an_integer_in_digits_is_taken(live: Any, route: str, name: str, value: str) -> None:
    response = _get(live, route, [(name, value)])
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("value", ["1", "0", "True", "FALSE", "yes", ""])
def test_settled_is_true_or_false_and_nothing_else(live: Any, value: str) -> None:
    _refused(_get(live, "/v1/users/bob/holds", [("settled", value)]), "settled", repr(value))


@pytest.mark.parametrize("value", ["true", "false"])
def test_settled_true_or_false_is_taken(live: Any, value: str) -> None:
    response = _get(live, "/v1/users/bob/holds", [("settled", value)])
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("route", list(ROUTES))
def test_a_parameter_given_twice_is_refused(live: Any, route: str) -> None:
    _refused(_get(live, route, [("limit", "5"), ("limit", "5")]), "limit", "given 2 times")


def test_a_parameter_the_route_does_not_take_is_ignored(live: Any) -> None:
    """`settled` is no parameter of the log's pages: any spelling of it changes nothing."""
    for value in ("1", "maybe"):
        response = _get(live, "/v1/events", [("settled", value), ("limit", "1")])
        assert response.status_code == 200, response.text


def test_a_long_refused_value_is_quoted_in_part(live: Any) -> None:
    response = _get(live, "/v1/events", [("after_seq", "9" * 30 + "x" * 500)])
    _refused(response, "after_seq", "9" * 30)
    assert len(response.json()["detail"]) < 120, response.text


def test_the_checked_parameters_are_each_routes_integers_and_booleans() -> None:
    """Found from each read route's signature, not from a list of names: a new integer or
    boolean query parameter is checked as these are."""
    handlers = [v for v in vars(reads).values() if isinstance(v, HTTPRouteHandler)]
    found = {
        h.handler_name: [(key, expected) for key, _, expected in guards._query_forms(h)]
        for h in handlers
    }
    whole, boolean = "a whole number in digits", "true or false"
    assert {name: forms for name, forms in found.items() if forms} == {
        "get_statement": [("limit", whole)],
        "get_user_holds": [("settled", boolean), ("limit", whole)],
        "get_events": [("after_seq", whole), ("limit", whole)],
    }

"""Bad input is a problem+json 4xx with a stable code and the field named; never a 5xx,
never a change of state."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tally.domain.rejections import Rejection
from tally.http.problems import EdgeProblem, status_of

pytest_plugins = ["http_fixtures"]

Poster = Callable[..., httpx.Response]

RECHARGE = {"user_id": "eve", "amount": "5.00", "currency": "USD", "gateway": "paypal"}


def _with(**changes: Any) -> bytes:
    return json.dumps({**RECHARGE, **changes}).encode()


BAD_RECHARGES: list[tuple[str, bytes, int, str, str | None]] = [
    ("truncated", b'{"user_id": "eve", "amount": "5.0', 400, "json_malformed", None),
    ("not json", b"amount=5", 400, "json_malformed", None),
    ("empty", b"", 400, "json_malformed", None),
    (
        "a string not UTF-8",
        b'{"user_id":"al\xffice","amount":"5.00","currency":"USD","gateway":"paypal"}',
        400,
        "json_malformed",
        None,
    ),
    (
        "a key not UTF-8",
        b'{"us\xffer_id":"alice","amount":"5.00","currency":"USD","gateway":"paypal"}',
        400,
        "json_malformed",
        None,
    ),
    ("a list", b"[]", 400, "field_invalid", None),
    (
        "NaN",
        b'{"user_id":"eve","amount":NaN,"currency":"USD","gateway":"p"}',
        400,
        "json_malformed",
        None,
    ),
    ("float", _with(amount=5.5), 400, "amount_invalid", "amount"),
    ("integer number", _with(amount=5), 400, "amount_invalid", "amount"),
    (
        "exponent number",
        b'{"user_id":"eve","amount":1e3,"currency":"USD","gateway":"p"}',
        400,
        "amount_invalid",
        "amount",
    ),
    ("exponent string", _with(amount="1e3"), 400, "amount_invalid", "amount"),
    ("negative", _with(amount="-5.00"), 400, "amount_not_positive", "amount"),
    ("zero", _with(amount="0.00"), 400, "amount_not_positive", "amount"),
    ("finer than cents", _with(amount="5.001"), 400, "amount_too_precise", "amount"),
    ("finer than yen", _with(amount="5.1", currency="JPY"), 400, "amount_too_precise", "amount"),
    ("beyond 64 bits", _with(amount="92233720368547758.08"), 400, "amount_too_large", "amount"),
    ("far beyond 64 bits", _with(amount="9" * 20), 400, "amount_too_large", "amount"),
    ("lowercase currency", _with(currency="usd"), 400, "currency_unknown", "currency"),
    ("unknown currency", _with(currency="XYZ"), 400, "currency_unknown", "currency"),
    (
        "client-sent balance_after",
        _with(balance_after="100.00"),
        400,
        "field_unknown",
        "balance_after",
    ),
    (
        "missing user",
        json.dumps({k: v for k, v in RECHARGE.items() if k != "user_id"}).encode(),
        400,
        "field_missing",
        "user_id",
    ),
    ("bad user id", _with(user_id="no spaces allowed"), 400, "identifier_invalid", "user_id"),
    ("metadata not strings", _with(metadata={"a": 1}), 400, "metadata_invalid", "metadata"),
    (
        "oversized metadata",
        _with(metadata={f"k{i}": "v" * 200 for i in range(30)}),
        400,
        "metadata_too_large",
        "metadata",
    ),
    (
        "too many metadata entries",
        _with(metadata={f"k{i}": "v" for i in range(40)}),
        400,
        "metadata_too_large",
        "metadata",
    ),
]


def _head(live: Any) -> Any:
    return live.services.engine.store.head("shop")


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [case[1:] for case in BAD_RECHARGES],
    ids=[case[0] for case in BAD_RECHARGES],
)
def test_a_bad_recharge_is_a_problem(
    live: Any, body: bytes, status: int, code: str, field: str | None
) -> None:
    before = _head(live)
    with live.client() as http:
        response = http.post(
            "/v1/recharges",
            content=body,
            headers={"Content-Type": "application/json", "Idempotency-Key": str(uuid.uuid4())},
        )
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert (problem["code"], problem["field"], problem["status"]) == (code, field, status)
    assert problem["type"] == f"urn:tally:problem:{code}"
    assert _head(live) == before


def _nested(depth: int, inner: bytes, *, opening: bytes, closing: bytes) -> bytes:
    return opening * depth + inner + closing * depth


NESTING = 3000  # far beyond what the JSON decoder recurses into
TOO_DEEP: list[tuple[str, str, bytes]] = [
    (
        "a batch command's unknown field",
        "/v1/batch",
        b'{"commands":[{"x":'
        + _nested(NESTING, b"", opening=b"[", closing=b"]")
        + b',"type":"recharge"}]}',
    ),
    (
        "a recharge's metadata",
        "/v1/recharges",
        _with(metadata="METADATA").replace(
            b'"METADATA"', _nested(NESTING, b'"x"', opening=b'{"a":', closing=b"}")
        ),
    ),
]


@pytest.mark.parametrize(
    ("path", "body"), [case[1:] for case in TOO_DEEP], ids=[case[0] for case in TOO_DEEP]
)
def test_json_nested_too_deeply_is_malformed(live: Any, path: str, body: bytes) -> None:
    before = _head(live)
    with live.client() as http:
        response = http.post(
            path,
            content=body,
            headers={"Content-Type": "application/json", "Idempotency-Key": str(uuid.uuid4())},
        )
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert (response.json()["code"], response.json()["field"]) == ("json_malformed", None)
    assert _head(live) == before


@pytest.mark.parametrize("path", ["/v1/recharges", "/v1/batch"])
def test_an_empty_chunked_body_is_malformed(live: Any, path: str) -> None:
    """As an empty body with `Content-Length: 0` is: chunked, no length says so up front."""
    before = _head(live)
    with live.client() as http:
        response = http.post(
            path,
            content=iter([b""]),
            headers={"Content-Type": "application/json", "Idempotency-Key": str(uuid.uuid4())},
        )
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert response.status_code == 400, response.text
    problem = response.json()
    assert (problem["code"], problem["field"]) == ("json_malformed", None)
    assert problem["detail"] == "the body is empty; send a JSON object"
    assert _head(live) == before


def test_metadata_of_the_wrong_type_in_a_batch_names_the_command(live: Any) -> None:
    """The same code as on the single route, and a field a client can find."""
    command = {"type": "recharge", "idempotency_key": "q", **RECHARGE, "metadata": {"k": 5}}
    before = _head(live)
    with live.client() as http:
        response = http.post(
            "/v1/batch",
            json={"commands": [{"type": "recharge", "idempotency_key": "p", **RECHARGE}, command]},
            headers={"Idempotency-Key": str(uuid.uuid4())},
        )
    assert response.status_code == 400, response.text
    problem = response.json()
    assert (problem["code"], problem["field"]) == ("metadata_invalid", "commands[1].metadata")
    assert _head(live) == before


@pytest.mark.parametrize(
    "expense_id",
    ["txn\u0000x", "txn x", "txn\u00e9", "", "-txn", "t" * 129],
    ids=["NUL", "space", "non-ASCII", "empty", "leading dash", "too long"],
)
def test_a_refund_of_an_expense_id_that_is_no_identifier_is_unknown(
    live: Any, poster: Poster, expense_id: str
) -> None:
    """Such an id names no expense and is not looked up in the log (PostgreSQL refuses a
    NUL in a text): 404, as for any id no expense has."""
    before = _head(live)
    refund = {"expense_id": expense_id, "order_id": "o", "amount": "1.00"}
    with live.client() as http:
        response = poster(http, "/v1/refunds", refund)
    assert response.status_code == 404, response.text
    assert (response.json()["code"], response.json()["field"]) == ("expense_unknown", "expense_id")
    assert _head(live) == before


def test_the_wrong_content_type_is_415(live: Any) -> None:
    with live.client() as http:
        response = http.post(
            "/v1/recharges",
            content=json.dumps(RECHARGE),
            headers={"Content-Type": "text/plain", "Idempotency-Key": "ct"},
        )
    assert response.status_code == 415
    assert response.json()["code"] == "content_type_unsupported"


def test_a_batch_of_a_thousand_commands_fits_and_over_a_mib_is_413(live: Any) -> None:
    commands = [
        {
            "type": "recharge",
            "idempotency_key": f"k-{uuid.uuid4()}",
            "user_id": "batcher",
            "amount": "0.01",
            "currency": "USD",
            "gateway": "paypal",
        }
        for _ in range(1000)
    ]
    with live.client() as http:
        fits = http.post(
            "/v1/batch",
            json={"commands": commands},
            headers={"Idempotency-Key": f"b-{uuid.uuid4()}"},
        )
        assert fits.status_code == 200, fits.text[:300]
        assert len(fits.json()["results"]) == 1000
        too_big = http.post(
            "/v1/batch",
            content=b'{"commands": [], "pad": "' + b"x" * (1024 * 1024) + b'"}',
            headers={"Content-Type": "application/json", "Idempotency-Key": "huge"},
        )
    assert too_big.status_code == 413
    assert too_big.json()["code"] == "body_too_large"


def test_a_body_over_64_kib_is_413_unread(live: Any) -> None:
    body = _with(metadata={"pad": "x" * (64 * 1024)})
    with live.client() as http:
        response = http.post(
            "/v1/recharges",
            content=body,
            headers={"Content-Type": "application/json", "Idempotency-Key": "big"},
        )
    assert response.status_code == 413
    assert response.json()["code"] == "body_too_large"


@pytest.mark.parametrize(
    ("orders", "code"),
    [
        ([], "orders_empty"),
        ([{"order_id": f"o{i}", "amount": "1"} for i in range(101)], "orders_too_many"),
    ],
    ids=["empty", "too many"],
)
def test_order_lists_are_bounded(live: Any, poster: Poster, orders: list[Any], code: str) -> None:
    with live.client() as http:
        response = poster(
            http, "/v1/expenses", {"user_id": "eve", "currency": "USD", "orders": orders}
        )
    assert response.status_code == 400
    assert (response.json()["code"], response.json()["field"]) == (code, "orders")


@pytest.mark.parametrize(
    ("path", "params", "code", "field"),
    [
        (
            "/v1/users/eve/statement",
            {"currency": "USD", "limit": 1001},
            "parameter_invalid",
            "limit",
        ),
        ("/v1/users/eve/statement", {"currency": "USD", "limit": 0}, "parameter_invalid", "limit"),
        *(
            (
                "/v1/users/eve/statement",
                {"currency": "USD", "limit": digits},
                "parameter_invalid",
                "limit",
            )
            # Unicode digits: '²', Arabic-Indic 10, full-width 1; and more digits than `int` reads
            for digits in ("\u00b2", "\u0661\u0660", "\uff11", "9" * 5000)
        ),
        ("/v1/users/eve/statement", {"currency": "usd"}, "currency_unknown", "currency"),
        ("/v1/users/eve/statement", {}, "parameter_invalid", "currency"),
        (
            "/v1/users/eve/statement",
            {"currency": "USD", "cursor": "garbage!"},
            "cursor_invalid",
            "cursor",
        ),
        (
            "/v1/users/eve/statement",
            {"currency": "USD", "from": "yesterday"},
            "parameter_invalid",
            "from",
        ),
        (
            "/v1/users/eve/statement",
            {"currency": "USD", "to": "2026-01-01T00:00:00"},
            "parameter_invalid",
            "to",
        ),
        *(
            (
                "/v1/users/eve/statement",
                {"currency": "USD", bound: moment},
                "parameter_invalid",
                bound,
            )
            for bound in ("from", "to")
            # valid RFC 3339, but before year 1 or after year 9999 once in UTC
            for moment in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00")
        ),
        ("/v1/events", {"limit": 5000}, "parameter_invalid", "limit"),
        ("/v1/events", {"after_seq": -1}, "parameter_invalid", "after_seq"),
        ("/v1/events", {"after_seq": 2**70}, "parameter_invalid", "after_seq"),
        ("/v1/events", {"after_seq": "x"}, "parameter_invalid", "after_seq"),
    ],
)
def test_bad_query_parameters(
    live: Any, path: str, params: dict[str, Any], code: str, field: str
) -> None:
    with live.client() as http:
        response = http.get(path, params=params)
    assert response.status_code == 400, response.text
    assert (response.json()["code"], response.json()["field"]) == (code, field)


def test_unknown_routes_and_methods_are_problems(live: Any) -> None:
    with live.client() as http:
        missing = http.get("/v1/nothing")
        outside = http.get("/nothing")  # once caught by the schema's router: an HTML page
        under_schema = http.get("/openapi.json/nothing")  # that router's own catch-all
        schema = http.get("/openapi.json/")  # a trailing slash, as every route accepts
        wrong_method = http.delete("/v1/events")
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
    assert (schema.status_code, schema.json()["info"]["title"]) == (200, "tally")
    for response in (outside, under_schema):
        assert (response.status_code, response.json()["code"]) == (404, "not_found")
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["detail"] == missing.json()["detail"]
    assert (wrong_method.status_code, wrong_method.json()["code"]) == (405, "method_not_allowed")


def test_every_rejection_has_exactly_one_status() -> None:
    statuses = {reason: status_of(reason) for reason in Rejection}
    assert set(statuses.values()) <= {400, 404, 409, 422}
    assert statuses[Rejection.IDEMPOTENCY_KEY_REUSED] == 422
    assert statuses[Rejection.INSUFFICIENT_FUNDS] == 422
    assert statuses[Rejection.AMOUNT_INVALID] == 400
    codes = [reason.code for reason in Rejection] + [problem.code for problem in EdgeProblem]
    assert len(codes) == len(set(codes))

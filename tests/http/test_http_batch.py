"""POST /v1/batch: one result per command, each atomic on its own, replayable."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

pytest_plugins = ["http_fixtures"]

Poster = Callable[..., httpx.Response]


def test_a_batch_answers_each_command_on_its_own(
    live: Any, unique: Callable[[str], str], poster: Poster
) -> None:
    user, order = unique("u"), unique("o")
    keys = [unique("bk") for _ in range(5)]
    commands = [
        {
            "type": "recharge",
            "idempotency_key": keys[0],
            "user_id": user,
            "amount": "10.00",
            "currency": "USD",
            "gateway": "paypal",
        },
        {
            "type": "expense",
            "idempotency_key": keys[1],
            "user_id": user,
            "currency": "USD",
            "orders": [{"order_id": order, "amount": "4.00"}],
        },
        {
            "type": "expense",
            "idempotency_key": keys[2],
            "user_id": user,
            "currency": "USD",
            "orders": [{"order_id": unique("o"), "amount": "400.00"}],
        },
        {
            "type": "recharge",
            "idempotency_key": keys[3],
            "user_id": user,
            "amount": "1.001",
            "currency": "USD",
            "gateway": "paypal",
        },
        {
            "type": "adjustment",
            "idempotency_key": keys[4],
            "user_id": user,
            "amount": "-1.00",
            "currency": "USD",
            "reason": "fee",
        },
    ]
    with live.client("read_write") as http:
        response = poster(http, "/v1/batch", {"commands": commands})
        balance = http.get(f"/v1/users/{user}/balances").json()["balances"]
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == [201, 201, 422, 400, 403]
    assert results[0]["transaction"]["balance_after"] == "10.00"
    assert results[1]["transaction"]["reference_order_ids"] == [order]
    assert [r["problem"]["code"] for r in results[2:]] == [
        "insufficient_funds",
        "amount_too_precise",
        "forbidden",
    ]
    assert balance == [{"currency": "USD", "balance": "6.00"}]

    with live.client("admin") as http:
        again = poster(http, "/v1/batch", {"commands": commands}).json()["results"]
    assert [r["status"] for r in again] == [201, 201, 422, 400, 201]
    assert [r["replayed"] for r in again[:2]] == [True, True]
    assert again[0]["transaction"] == results[0]["transaction"]


def test_a_batch_is_bounded_and_strict(live: Any, poster: Poster) -> None:
    with live.client() as http:
        unknown_type = poster(
            http, "/v1/batch", {"commands": [{"type": "wire", "idempotency_key": "k"}]}
        )
        empty = poster(http, "/v1/batch", {"commands": []})
    assert unknown_type.status_code == 400
    assert unknown_type.json()["code"] == "field_invalid"
    assert empty.status_code == 200
    assert empty.json() == {"results": []}


def test_a_refund_of_an_expense_id_that_is_no_identifier_leaves_the_rest_answered(
    live: Any, unique: Callable[[str], str], poster: Poster
) -> None:
    """The id is not looked up in the log (PostgreSQL refuses a NUL in a text): that command
    is refused as unknown, the others are answered as ever."""
    user = unique("u")
    commands = [
        {
            "type": "recharge",
            "idempotency_key": unique("bk"),
            "user_id": user,
            "amount": "1.00",
            "currency": "USD",
            "gateway": "paypal",
        },
        {
            "type": "refund",
            "idempotency_key": unique("bk"),
            "expense_id": "txn\u0000x",
            "order_id": "o",
            "amount": "1.00",
        },
    ]
    with live.client() as http:
        response = poster(http, "/v1/batch", {"commands": commands})
    assert response.status_code == 200, response.text
    recharged, refunded = response.json()["results"]
    assert recharged["status"] == 201
    assert (refunded["status"], refunded["problem"]["code"]) == (404, "expense_unknown")
    assert refunded["problem"]["field"] == "expense_id"


def test_the_batch_header_key_is_only_an_in_flight_lock(
    live: Any, unique: Callable[[str], str], poster: Poster
) -> None:
    """docs/http-api.md: the header key of a batch is held while it is processed and not
    recorded; each command's own idempotency_key is what makes a retry safe."""
    user, header = unique("u"), unique("batch")

    def recharge(key: str, amount: str) -> dict[str, Any]:
        return {
            "type": "recharge",
            "idempotency_key": key,
            "user_id": user,
            "amount": amount,
            "currency": "USD",
            "gateway": "paypal",
        }

    first, second = (
        {"commands": [recharge(unique("bk"), "1.00")]},
        {"commands": [recharge(unique("bk"), "2.00")]},
    )
    live.services.in_flight.add(("shop", header))  # as if a batch with it were still running
    try:
        with live.client() as http:
            locked = poster(http, "/v1/batch", first, header)
    finally:
        live.services.in_flight.discard(("shop", header))
    with live.client() as http:
        written = poster(http, "/v1/batch", first, header)
        other_body = poster(http, "/v1/batch", second, header)
        again = poster(http, "/v1/batch", first, header)
        altered = first["commands"][0] | {"amount": "3.00"}
        reused = poster(http, "/v1/batch", {"commands": [altered]}, header)
        balances = http.get(f"/v1/users/{user}/balances").json()["balances"]
    assert (locked.status_code, locked.json()["code"]) == (409, "idempotency_key_in_flight")
    assert [r.status_code for r in (written, other_body, again, reused)] == [200] * 4
    assert "idempotent-replayed" not in again.headers
    (made,), (other,) = written.json()["results"], other_body.json()["results"]
    assert (made["status"], made["replayed"], other["status"], other["replayed"]) == (
        201,
        False,
        201,
        False,
    )
    (replayed,) = again.json()["results"]
    assert (replayed["status"], replayed["replayed"]) == (201, True)
    assert replayed["transaction"] == made["transaction"]
    (refused,) = reused.json()["results"]
    assert (refused["status"], refused["problem"]["code"]) == (422, "idempotency_key_reused")
    assert balances == [{"currency": "USD", "balance": "3.00"}]

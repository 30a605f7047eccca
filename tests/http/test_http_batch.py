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
            http, "/v1/batch", {"commands": [{"type": "transfer", "idempotency_key": "k"}]}
        )
        empty = poster(http, "/v1/batch", {"commands": []})
    assert unknown_type.status_code == 400
    assert unknown_type.json()["code"] == "field_invalid"
    assert empty.status_code == 200
    assert empty.json() == {"results": []}

"""Idempotency-Key: same body replays, another body is 422, in flight is 409, and
concurrent duplicates make exactly one transaction."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

pytest_plugins = ["http_fixtures"]

Poster = Callable[..., httpx.Response]


def _recharge(user: str, amount: str = "5.00") -> dict[str, Any]:
    return {"user_id": user, "amount": amount, "currency": "USD", "gateway": "paypal"}


def test_the_same_key_and_body_replays_the_original(
    live: Any, unique: Callable[[str], str], poster: Poster
) -> None:
    user, key = unique("u"), unique("key")
    with live.client() as http:
        first = poster(http, "/v1/recharges", _recharge(user), key)
        second = poster(http, "/v1/recharges", _recharge(user), key)
        balances = http.get(f"/v1/users/{user}/balances").json()["balances"]
    assert (first.status_code, second.status_code) == (201, 201)
    assert "idempotent-replayed" not in first.headers
    assert second.headers["idempotent-replayed"] == "true"
    assert second.json() == first.json()
    assert balances == [{"currency": "USD", "balance": "5.00"}]


def test_the_same_key_with_another_body_is_422_and_writes_nothing(
    live: Any, unique: Callable[[str], str], poster: Poster
) -> None:
    user, key = unique("u"), unique("key")
    with live.client() as http:
        poster(http, "/v1/recharges", _recharge(user), key)
        before = live.services.engine.store.head("shop")
        other = poster(http, "/v1/recharges", _recharge(user, "6.00"), key)
        reused_elsewhere = poster(
            http,
            "/v1/expenses",
            {"user_id": user, "currency": "USD", "orders": [{"order_id": key, "amount": "1"}]},
            key,
        )
        balances = http.get(f"/v1/users/{user}/balances").json()["balances"]
    assert other.status_code == reused_elsewhere.status_code == 422
    assert other.json()["code"] == "idempotency_key_reused"
    assert other.json()["field"] == "Idempotency-Key"  # a header on a single write
    assert live.services.engine.store.head("shop") == before
    assert balances == [{"currency": "USD", "balance": "5.00"}]


def test_keys_are_scoped_to_the_ledger(
    live: Any, unique: Callable[[str], str], poster: Poster
) -> None:
    user, key = unique("u"), unique("key")
    with live.client("admin") as shop, live.client("other_admin") as other:
        here = poster(shop, "/v1/recharges", _recharge(user), key)
        there = poster(other, "/v1/recharges", _recharge(user, "7.00"), key)
    assert (here.status_code, there.status_code) == (201, 201)
    assert "idempotent-replayed" not in there.headers
    assert there.json()["ledger"] == "other"


def test_a_key_still_in_flight_is_409(
    live: Any, unique: Callable[[str], str], poster: Poster
) -> None:
    user, key = unique("u"), unique("key")
    live.services.in_flight.add(("shop", key))  # as if the first request were still running
    try:
        with live.client() as http:
            response = poster(http, "/v1/recharges", _recharge(user), key)
    finally:
        live.services.in_flight.discard(("shop", key))
    assert response.status_code == 409
    assert response.json()["code"] == "idempotency_key_in_flight"
    with live.client() as http:
        assert poster(http, "/v1/recharges", _recharge(user), key).status_code == 201


def test_concurrent_duplicates_make_exactly_one_transaction(
    live: Any, unique: Callable[[str], str], poster: Poster
) -> None:
    user, key = unique("u"), unique("key")

    def attempt(_: int) -> httpx.Response:
        with live.client() as http:
            return poster(http, "/v1/recharges", _recharge(user), key)

    with ThreadPoolExecutor(max_workers=16) as pool:
        responses = list(pool.map(attempt, range(48)))
    statuses = {response.status_code for response in responses}
    assert statuses <= {201, 409}
    created = [r.json()["transaction_id"] for r in responses if r.status_code == 201]
    assert len(set(created)) == 1
    with live.client() as http:
        statement = http.get(f"/v1/users/{user}/statement", params={"currency": "USD"}).json()
    assert len(statement["entries"]) == 1


def test_every_post_needs_an_idempotency_key(live: Any, unique: Callable[[str], str]) -> None:
    with live.client() as http:
        before = live.services.engine.store.head("shop")
        response = http.post("/v1/recharges", json=_recharge(unique("u")))
        empty = http.post(
            "/v1/recharges", json=_recharge(unique("u")), headers={"Idempotency-Key": ""}
        )
    assert response.status_code == 400
    assert response.json()["code"] == "idempotency_key_missing"
    assert response.json()["field"] == "Idempotency-Key"
    assert empty.status_code == 400
    assert live.services.engine.store.head("shop") == before


@pytest.mark.parametrize("path", ["/v1/recharges", "/v1/batch"])
@pytest.mark.parametrize(
    ("key", "code"),
    [
        ("", "idempotency_key_missing"),
        ("x" * 256, "idempotency_key_invalid"),
        ("a\tb", "idempotency_key_invalid"),  # a control character inside
        (b"a\x85b", "idempotency_key_invalid"),  # NEL, a C1 control (latin-1)
        (b"a\xa0b", "idempotency_key_invalid"),  # a no-break space: not printable
    ],
    ids=["empty", "too long", "tab", "NEL", "no-break space"],
)
def test_a_bad_idempotency_key_header_names_the_header_and_writes_nothing(
    live: Any, unique: Callable[[str], str], path: str, key: str | bytes, code: str
) -> None:
    """The same answer for a single write and a batch, whose header key is only a lock. (Over
    HTTP/1.1 the other control characters, DEL among them, are refused by the client or by the
    server's parser before tally sees them; test_http_direct.py sends them in process.)"""
    user = unique("u")
    body: dict[str, Any] = _recharge(user)
    if path == "/v1/batch":
        body = {"commands": [{"type": "recharge", "idempotency_key": unique("bk"), **body}]}
    with live.client() as http:
        before = live.services.engine.store.head("shop")
        response = http.post(path, json=body, headers={"Idempotency-Key": key})
        balances = http.get(f"/v1/users/{user}/balances").json()["balances"]
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert (response.json()["code"], response.json()["field"]) == (code, "Idempotency-Key")
    assert live.services.engine.store.head("shop") == before
    assert balances == []


def test_a_refused_write_does_not_use_up_its_key(
    live: Any, unique: Callable[[str], str], poster: Poster
) -> None:
    user, key = unique("u"), unique("key")
    spend = {"user_id": user, "currency": "USD", "orders": [{"order_id": key, "amount": "3.00"}]}
    with live.client() as http:
        refused = poster(http, "/v1/expenses", spend, key)
        poster(http, "/v1/recharges", _recharge(user), str(uuid.uuid4()))
        accepted = poster(http, "/v1/expenses", spend, key)
    assert refused.status_code == 422
    assert refused.json()["code"] == "insufficient_funds"
    assert accepted.status_code == 201

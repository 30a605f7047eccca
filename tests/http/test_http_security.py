"""Every endpoint x (no key, bad key, revoked key, a key lacking the scope, another ledger's
key): 401, 403 or 404 as if the thing did not exist, and nothing is ever written."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tally.api_keys import Scope

pytest_plugins = ["http_fixtures"]

Poster = Callable[..., httpx.Response]


@dataclass(frozen=True, slots=True)
class Shop:
    """A user with a recharge, an expense of one order and two open holds in ledger "shop"."""

    user_id: str
    order_id: str
    expense_id: str
    hold_ids: tuple[str, str]  # one for the capture, one for the release


@dataclass(frozen=True, slots=True)
class Call:
    method: str
    path: str
    body: dict[str, Any] | None
    scope: Scope


@pytest.fixture
def shop(live: Any, unique: Callable[[str], str], poster: Poster) -> Shop:
    user, order = unique("u"), unique("o")
    with live.client("admin") as http:
        poster(
            http,
            "/v1/recharges",
            {"user_id": user, "amount": "10.00", "currency": "USD", "gateway": "paypal"},
        )
        paid = poster(
            http,
            "/v1/expenses",
            {"user_id": user, "currency": "USD", "orders": [{"order_id": order, "amount": "4.00"}]},
        )
        hold_ids = (unique("h"), unique("h"))
        for hold_id in hold_ids:
            held = poster(
                http,
                "/v1/holds",
                {"user_id": user, "amount": "1.00", "currency": "USD", "hold_id": hold_id},
            )
            assert held.status_code == 201, held.text
    assert paid.status_code == 201
    return Shop(
        user_id=user,
        order_id=order,
        expense_id=paid.json()["transaction_id"],
        hold_ids=hold_ids,
    )


def calls(shop: Shop) -> list[Call]:
    user = shop.user_id
    captured, released = shop.hold_ids
    return [
        Call(
            "POST",
            "/v1/recharges",
            {"user_id": user, "amount": "1.00", "currency": "USD", "gateway": "paypal"},
            Scope.WRITE,
        ),
        Call(
            "POST",
            "/v1/expenses",
            {
                "user_id": user,
                "currency": "USD",
                "orders": [{"order_id": f"x-{uuid.uuid4().hex}", "amount": "1.00"}],
            },
            Scope.WRITE,
        ),
        Call(
            "POST",
            "/v1/refunds",
            {"expense_id": shop.expense_id, "order_id": shop.order_id, "amount": "1.00"},
            Scope.WRITE,
        ),
        Call(
            "POST",
            "/v1/adjustments",
            {"user_id": user, "amount": "1.00", "currency": "USD", "reason": "goodwill"},
            Scope.ADMIN,
        ),
        Call(
            "POST",
            "/v1/transfers",
            {
                "user_id": user,
                "currency": "USD",
                "postings": [
                    {"account": "equity:promotions", "amount": "-1.00"},
                    {"account": f"wallet:{user}", "amount": "1.00"},
                ],
            },
            Scope.ADMIN,
        ),
        Call(
            "POST",
            "/v1/batch",
            {
                "commands": [
                    {
                        "type": "recharge",
                        "idempotency_key": f"b-{uuid.uuid4()}",
                        "user_id": user,
                        "amount": "1.00",
                        "currency": "USD",
                        "gateway": "paypal",
                    }
                ]
            },
            Scope.WRITE,
        ),
        Call(
            "POST",
            "/v1/holds",
            {"user_id": user, "amount": "1.00", "currency": "USD", "hold_id": f"h-{uuid.uuid4()}"},
            Scope.WRITE,
        ),
        Call(
            "POST",
            f"/v1/holds/{captured}/capture",
            {"orders": [{"order_id": f"x-{uuid.uuid4().hex}", "amount": "0.50"}]},
            Scope.WRITE,
        ),
        Call("POST", f"/v1/holds/{released}/release", {}, Scope.WRITE),
        Call("GET", f"/v1/users/{user}/balances", None, Scope.READ),
        Call("GET", f"/v1/users/{user}/statement?currency=USD", None, Scope.READ),
        Call("GET", f"/v1/transactions/{shop.expense_id}", None, Scope.READ),
        Call("GET", f"/v1/orders/{shop.order_id}", None, Scope.READ),
        Call("GET", f"/v1/holds/{captured}", None, Scope.READ),
        Call("GET", f"/v1/users/{user}/holds", None, Scope.READ),
        Call("GET", "/v1/events", None, Scope.READ),
        Call("GET", "/v1/reports/finance", None, Scope.READ),
    ]


def send(live: Any, call: Call, secret: str | None) -> httpx.Response:
    headers = {"Idempotency-Key": f"k-{uuid.uuid4()}"}
    if secret is not None:
        headers["Authorization"] = f"Bearer {secret}"
    with httpx.Client(base_url=live.url, timeout=30) as http:
        return http.request(call.method, call.path, json=call.body, headers=headers)


def head_seq(live: Any, ledger: str) -> int:
    head = live.services.engine.store.head(ledger)
    return 0 if head is None else int(head.seq)


LACKING = {Scope.WRITE: "read", Scope.ADMIN: "read_write", Scope.READ: "write"}


def test_the_matrix_covers_every_v1_route(live: Any, shop: Shop) -> None:
    with live.client(None) as http:
        schema = http.get("/openapi.json").json()
    documented = {
        (method.upper(), path)
        for path, operations in schema["paths"].items()
        for method in operations
        if path.startswith("/v1/")
    }
    covered = {
        (c.method, c.path.split("?")[0].replace(shop.user_id, "{user_id}")) for c in calls(shop)
    }
    covered = {
        (m, p.replace(shop.expense_id, "{transaction_id}").replace(shop.order_id, "{order_id}"))
        for m, p in covered
    }
    for hold_id in shop.hold_ids:
        covered = {(m, p.replace(hold_id, "{hold_id}")) for m, p in covered}
    assert covered == documented


def test_no_key_bad_key_and_revoked_key_are_401(live: Any, shop: Shop) -> None:
    key_id, revoked = live.issue("shop", Scope.ADMIN)
    live.services.keys.revoke(key_id)
    before = head_seq(live, "shop")
    for call in calls(shop):
        for secret in (None, "tally_key_0000_nope", revoked, "x" * 500):
            response = send(live, call, secret)
            assert response.status_code == 401, (call, secret, response.text)
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["code"] == "unauthorized"
    assert head_seq(live, "shop") == before


def test_a_key_without_the_scope_is_403(live: Any, shop: Shop) -> None:
    before = head_seq(live, "shop")
    for call in calls(shop):
        response = send(live, call, live.keys[LACKING[call.scope]])
        assert response.status_code == 403, (call, response.text)
        assert response.json()["code"] == "forbidden"
    assert head_seq(live, "shop") == before


def test_a_key_with_the_scope_is_let_in(live: Any, shop: Shop) -> None:
    holder = {Scope.WRITE: "write", Scope.ADMIN: "admin", Scope.READ: "read"}
    for call in calls(shop):
        response = send(live, call, live.keys[holder[call.scope]])
        assert response.status_code in (200, 201), (call, response.text)


def test_another_ledgers_ids_do_not_exist(live: Any, shop: Shop) -> None:
    shop_before = head_seq(live, "shop")
    foreign = live.keys["other_admin"]
    reads_first = sorted(calls(shop), key=lambda call: call.method != "GET")
    for call in reads_first:
        response = send(live, call, foreign)
        if call.method == "GET" and call.path.startswith(
            ("/v1/transactions/", "/v1/orders/", "/v1/holds/")
        ):
            assert response.status_code == 404, response.text
            assert response.json()["code"] == "not_found"
        elif call.path == "/v1/refunds":
            assert response.status_code == 404, response.text
            assert response.json()["code"] == "expense_unknown"
        elif call.path.startswith("/v1/holds/"):  # another ledger's hold: a capture, a release
            assert response.status_code == 404, response.text
            assert (response.json()["code"], response.json()["field"]) == (
                "hold_unknown",
                "hold_id",
            )
        elif call.path.endswith("/balances"):
            assert response.json() == {"user_id": shop.user_id, "balances": []}
        elif "/statement" in call.path:
            assert response.json() == {"entries": [], "next_cursor": None}
        elif call.path == f"/v1/users/{shop.user_id}/holds":
            assert response.json() == {"user_id": shop.user_id, "holds": [], "next_cursor": None}
        elif call.path == "/v1/events":
            seen = {event["transaction_id"] for event in response.json()["events"]}
            assert shop.expense_id not in seen
        else:  # a write lands in the key's own ledger, never in "shop"
            assert response.status_code in (200, 201), response.text
    assert head_seq(live, "shop") == shop_before


def test_a_refund_of_a_foreign_expense_is_exactly_an_unknown_one(live: Any, shop: Shop) -> None:
    body = {"expense_id": shop.expense_id, "order_id": shop.order_id, "amount": "1.00"}
    foreign = send(live, Call("POST", "/v1/refunds", body, Scope.WRITE), live.keys["other_admin"])
    unknown = send(
        live,
        Call("POST", "/v1/refunds", {**body, "expense_id": "txn_nope"}, Scope.WRITE),
        live.keys["other_admin"],
    )
    assert foreign.status_code == unknown.status_code == 404
    assert {k: v for k, v in foreign.json().items() if k != "detail"} == {
        k: v for k, v in unknown.json().items() if k != "detail"
    }

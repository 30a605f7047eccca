"""Business keys over HTTP (DESIGN decision 7): one refund per `refund_request_id`, one
recharge per gateway payment (`gateway_reference`), on the single route and in a batch, shown
on the transaction and the statement line, documented in the OpenAPI schema."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tally.client import (
    AsyncClient,
    Client,
    Conflict,
    OrderLine,
    RechargeCommand,
    RefundCommand,
)

pytest_plugins = ["http_fixtures"]

Poster = Callable[..., httpx.Response]


def _paid(http: httpx.Client, poster: Poster, user: str, order: str) -> str:
    recharged = poster(
        http,
        "/v1/recharges",
        {"user_id": user, "amount": "100.00", "currency": "USD", "gateway": "paypal"},
    )
    assert recharged.status_code == 201, recharged.text
    paid = poster(
        http,
        "/v1/expenses",
        {"user_id": user, "currency": "USD", "orders": [{"order_id": order, "amount": "60.00"}]},
    )
    assert paid.status_code == 201, paid.text
    expense_id: str = paid.json()["transaction_id"]
    return expense_id


def _balance(http: httpx.Client, user: str) -> str:
    balances = http.get(f"/v1/users/{user}/balances").json()["balances"]
    return str(balances[0]["balance"])


def test_a_refund_request_is_refunded_once_whatever_the_key(
    live: Any, unique: Callable[[str], str], poster: Poster
) -> None:
    user, order, request = unique("u"), unique("o"), unique("rma")
    with live.client() as http:
        expense_id = _paid(http, poster, user, order)
        refund = {
            "expense_id": expense_id,
            "order_id": order,
            "amount": "10.00",
            "refund_request_id": request,
        }
        first = poster(http, "/v1/refunds", refund, unique("k"))
        assert first.status_code == 201, first.text
        refunded = first.json()
        assert refunded["refund_of"] == {
            "expense_id": expense_id,
            "order_id": order,
            "refund_request_id": request,
        }

        again = poster(http, "/v1/refunds", refund, unique("k"))  # a retry with a new key
        assert again.status_code == 409, again.text
        problem = again.json()
        assert (problem["code"], problem["field"]) == ("refund_already_issued", "refund_request_id")
        assert refunded["transaction_id"] in problem["detail"]
        assert _balance(http, user) == "50.00"  # 100 - 60 + 10: refunded once

        shown = http.get(f"/v1/transactions/{refunded['transaction_id']}").json()
        assert shown["refund_of"]["refund_request_id"] == request
        statement = http.get(f"/v1/users/{user}/statement", params={"currency": "USD"}).json()
        assert statement["entries"][-1]["refund_of"]["refund_request_id"] == request
        # Without a request, the shape is the seed's: no such key
        unnamed = poster(http, "/v1/refunds", {**refund, "refund_request_id": None})
        assert unnamed.status_code == 201, unnamed.text
        assert unnamed.json()["refund_of"] == {"expense_id": expense_id, "order_id": order}


def test_a_batch_refunds_a_request_once_and_answers_the_rest(
    live: Any, unique: Callable[[str], str], poster: Poster
) -> None:
    user, order, request = unique("u"), unique("o"), unique("rma")
    with live.client() as http:
        expense_id = _paid(http, poster, user, order)
        refund = {
            "type": "refund",
            "expense_id": expense_id,
            "order_id": order,
            "amount": "1.00",
            "refund_request_id": request,
        }
        commands = [
            {**refund, "idempotency_key": unique("bk")},
            {**refund, "idempotency_key": unique("bk")},
            {**refund, "idempotency_key": unique("bk"), "refund_request_id": "not valid"},
        ]
        response = poster(http, "/v1/batch", {"commands": commands})
        assert response.status_code == 200, response.text
        first, second, invalid = response.json()["results"]
        assert first["status"] == 201
        assert (second["status"], second["problem"]["code"]) == (409, "refund_already_issued")
        assert (invalid["status"], invalid["problem"]["code"], invalid["problem"]["field"]) == (
            400,
            "identifier_invalid",
            "refund_request_id",
        )
        assert _balance(http, user) == "41.00"


def test_the_schema_documents_the_refund_request_id(live: Any) -> None:
    with live.client() as http:
        schema = http.get("/openapi.json").json()
    properties = schema["components"]["schemas"]["RefundRequest"]["properties"]
    assert "refund_request_id" in properties
    assert properties["refund_request_id"]["description"].startswith("Your id of the refund")


def test_the_sdks_name_the_refund_request(live: Any, unique: Callable[[str], str]) -> None:
    user, order, request = unique("u"), unique("o"), unique("rma")
    with Client(live.url, live.keys["admin"]) as tally:
        tally.recharge(user, "9.00", "USD", gateway="paypal")
        paid = tally.expense(user, "USD", [OrderLine(order_id=order, amount="5.00")])
        done = tally.refund(paid.transaction_id, order, "1.00", refund_request_id=request)
        assert done.refund_of is not None
        assert done.refund_of.refund_request_id == request
        with pytest.raises(Conflict) as refused:
            tally.refund(paid.transaction_id, order, "1.00", refund_request_id=request)
        assert (refused.value.code, refused.value.field) == (
            "refund_already_issued",
            "refund_request_id",
        )
        (result,) = tally.batch(
            [
                RefundCommand(
                    expense_id=paid.transaction_id,
                    order_id=order,
                    amount="1.00",
                    refund_request_id=request,
                )
            ]
        )
        assert (result.status, result.problem and result.problem.code) == (
            409,
            "refund_already_issued",
        )

    async def refund_async() -> None:
        async with AsyncClient(live.url, live.keys["admin"]) as tally:
            with pytest.raises(Conflict):
                await tally.refund(paid.transaction_id, order, "1.00", refund_request_id=request)
            other = await tally.refund(
                paid.transaction_id, order, "1.00", refund_request_id=f"{request}-2"
            )
            assert other.refund_of is not None
            assert other.refund_of.refund_request_id == f"{request}-2"

    asyncio.run(refund_async())


def test_a_gateway_payment_is_credited_once_whatever_the_key(
    live: Any, unique: Callable[[str], str], poster: Poster
) -> None:
    user, payment = unique("u"), unique("pi")
    recharge = {
        "user_id": user,
        "amount": "12.00",
        "currency": "USD",
        "gateway": "stripe",
        "gateway_reference": payment,
    }
    with live.client() as http:
        first = poster(http, "/v1/recharges", recharge, unique("k"))
        assert first.status_code == 201, first.text
        credited = first.json()
        assert credited["metadata"] == {"payment_gateway": "stripe", "gateway_reference": payment}
        again = poster(http, "/v1/recharges", recharge, unique("k"))  # the webhook, redelivered
        assert again.status_code == 409, again.text
        problem = again.json()
        assert (problem["code"], problem["field"]) == (
            "payment_already_credited",
            "gateway_reference",
        )
        assert credited["transaction_id"] in problem["detail"]
        batch = poster(
            http,
            "/v1/batch",
            {"commands": [{"type": "recharge", "idempotency_key": unique("bk"), **recharge}]},
        )
        (result,) = batch.json()["results"]
        assert (result["status"], result["problem"]["code"]) == (409, "payment_already_credited")
        bad = poster(http, "/v1/recharges", {**recharge, "gateway_reference": "pi 1"})
        assert (bad.status_code, bad.json()["field"]) == (400, "gateway_reference")
        assert _balance(http, user) == "12.00"
        statement = http.get(f"/v1/users/{user}/statement", params={"currency": "USD"}).json()
        assert statement["entries"][0]["metadata"]["gateway_reference"] == payment
        schema = http.get("/openapi.json").json()
    assert "gateway_reference" in schema["components"]["schemas"]["RechargeRequest"]["properties"]
    with Client(live.url, live.keys["admin"]) as tally:
        with pytest.raises(Conflict) as refused:
            tally.recharge(user, "12.00", "USD", gateway="stripe", gateway_reference=payment)
        assert refused.value.code == "payment_already_credited"
        other = unique("pi")
        done = tally.recharge(user, "1.00", "USD", gateway="stripe", gateway_reference=other)
        assert done.metadata["gateway_reference"] == other
        (result,) = tally.batch(
            [
                RechargeCommand(
                    user_id=user,
                    amount="1.00",
                    currency="USD",
                    gateway="stripe",
                    gateway_reference=other,
                )
            ]
        )
        assert (result.status, result.problem and result.problem.code) == (
            409,
            "payment_already_credited",
        )

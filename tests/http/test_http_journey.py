"""The demo journey over HTTP and through the SDK (sync and async), checked end to end."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx

from tally.audit.chain import GENESIS_HASH, link
from tally.client import AsyncClient, Client, OrderLine

pytest_plugins = ["http_fixtures"]

Poster = Callable[..., httpx.Response]


def test_the_demo_journey_over_http(
    live: Any, unique: Callable[[str], str], poster: Poster
) -> None:
    alice, first, second = unique("alice"), unique("order"), unique("order")
    with live.client("admin") as http:
        recharged = poster(
            http,
            "/v1/recharges",
            {"user_id": alice, "amount": "200.00", "currency": "USD", "gateway": "paypal"},
        )
        assert recharged.status_code == 201, recharged.text
        paid = poster(
            http,
            "/v1/expenses",
            {
                "user_id": alice,
                "currency": "USD",
                "orders": [
                    {"order_id": first, "amount": "50.00"},
                    {"order_id": second, "amount": "35.00", "merchant_id": "acme"},
                ],
            },
        )
        assert paid.status_code == 201, paid.text
        expense = paid.json()
        refunded = poster(
            http,
            "/v1/refunds",
            {
                "expense_id": expense["transaction_id"],
                "order_id": first,
                "amount": "20.00",
                "reason": "item returned",
            },
        )
        assert refunded.status_code == 201, refunded.text

        assert [recharged.json()["amount"], expense["amount"], refunded.json()["amount"]] == [
            "200.00",
            "-85.00",
            "20.00",
        ]
        assert [line["amount"] for line in expense["entries"]] == ["-50.00", "-35.00"]
        assert [line["balance_after"] for line in expense["entries"]] == ["150.00", "115.00"]
        assert expense["reference_order_ids"] == [first, second]
        assert refunded.json()["refund_of"] == {
            "expense_id": expense["transaction_id"],
            "order_id": first,
        }

        balances = http.get(f"/v1/users/{alice}/balances").json()
        assert balances == {
            "user_id": alice,
            "balances": [{"currency": "USD", "balance": "135.00"}],
        }

        statement = http.get(f"/v1/users/{alice}/statement", params={"currency": "USD"}).json()
        assert [
            (e["event_type"], e["amount"], e["balance_after"]) for e in statement["entries"]
        ] == [
            ("recharge", "200.00", "200.00"),
            ("expense", "-50.00", "150.00"),
            ("expense", "-35.00", "115.00"),
            ("refund", "20.00", "135.00"),
        ]
        assert statement["next_cursor"] is None

        order = http.get(f"/v1/orders/{first}").json()
        assert (order["paid"], order["refunded"], order["refundable"]) == (
            "50.00",
            "20.00",
            "30.00",
        )
        assert [t["event_type"] for t in order["transactions"]] == ["expense", "refund"]

        fetched = http.get(f"/v1/transactions/{expense['transaction_id']}")
        assert fetched.status_code == 200
        assert fetched.json() == expense
        key_id = live.services.keys.keys("shop")[0].key_id
        assert expense["actor"] == key_id  # the admin key is the first made


def test_the_log_chains_and_records_who_wrote(
    live: Any, unique: Callable[[str], str], poster: Poster
) -> None:
    key_id, secret = live.issue("shop", *__import__("tally.api_keys").api_keys.Scope)
    with httpx.Client(
        base_url=live.url, headers={"Authorization": f"Bearer {secret}"}, timeout=30
    ) as http:
        made = poster(
            http,
            "/v1/recharges",
            {"user_id": unique("bob"), "amount": "1.00", "currency": "USD", "gateway": "stripe"},
        ).json()
        events: list[dict[str, Any]] = []
        after = 0
        while True:
            page = http.get("/v1/events", params={"after_seq": after, "limit": 7}).json()
            events.extend(page["events"])
            if page["next_after_seq"] is None:
                break
            after = page["next_after_seq"]
    assert [event["seq"] for event in events] == list(range(1, len(events) + 1))
    chain = GENESIS_HASH
    for event in events:
        chain = link(chain, event["body"].encode())
        assert event["hash"] == chain.hex()
    mine = next(event for event in events if event["transaction_id"] == made["transaction_id"])
    assert mine["event"]["actor"] == key_id
    assert made["actor"] == key_id


def test_the_demo_journey_through_the_sync_sdk(live: Any, unique: Callable[[str], str]) -> None:
    alice, first, second = unique("alice"), unique("order"), unique("order")
    with Client(live.url, live.keys["admin"]) as tally:
        recharged = tally.recharge(alice, "200.00", "USD", gateway="paypal")
        paid = tally.expense(
            alice,
            "USD",
            [OrderLine(order_id=first, amount="50.00"), OrderLine(order_id=second, amount=35)],
        )
        refunded = tally.refund(paid.transaction_id, first, Decimal("20.00"), reason="returned")
        again = tally.refund(
            paid.transaction_id,
            first,
            "20.00",
            reason="returned",
            idempotency_key=refunded.idempotency_key,
        )
        assert (recharged.balance_after, paid.balance_after, refunded.balance_after) == (
            "200.00",
            "115.00",
            "135.00",
        )
        assert again.replayed
        assert not refunded.replayed
        assert again.transaction_id == refunded.transaction_id
        assert tally.balances(alice).of("USD") == Decimal("135.00")
        lines = list(tally.iter_statement(alice, "USD", page_size=1))
        assert [line.balance_after for line in lines] == ["200.00", "150.00", "115.00", "135.00"]
        order = tally.order(first)
        assert (order.refunded, order.refundable) == ("20.00", "30.00")
        assert tally.transaction(paid.transaction_id).entries == paid.entries


def test_the_demo_journey_through_the_async_sdk(live: Any, unique: Callable[[str], str]) -> None:
    alice, first = unique("alice"), unique("order")

    async def journey() -> list[str]:
        async with AsyncClient(live.url, live.keys["admin"]) as tally:
            await tally.recharge(alice, "200.00", "USD", gateway="paypal")
            paid = await tally.expense(alice, "USD", [OrderLine(order_id=first, amount="50.00")])
            await tally.refund(paid.transaction_id, first, "20.00")
            return [line.balance_after async for line in tally.iter_statement(alice, "USD")]

    assert asyncio.run(journey()) == ["200.00", "150.00", "170.00"]

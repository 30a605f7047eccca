"""Holds over HTTP: placed, captured (and a captured order refunded), released and read, on
the single routes, in a batch and through both SDKs; each refusal with its status, code and
field, and nothing of it written."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient

from pg import empty_database
from serve_process import provision, serve, verify_cli
from tally.api_keys import Scope
from tally.bootstrap import open_store
from tally.client import (
    AsyncClient,
    CaptureCommand,
    Client,
    Conflict,
    HoldCommand,
    InvalidRequest,
    NotFound,
    OrderLine,
    Refused,
    ReleaseCommand,
)
from tally.http.app import create_app
from tally.http.compose import open_services

pytest_plugins = ["http_fixtures"]

Poster = Callable[..., httpx.Response]
Unique = Callable[[str], str]


def _recharge(http: httpx.Client, poster: Poster, user: str, amount: str) -> None:
    body = {"user_id": user, "amount": amount, "currency": "USD", "gateway": "paypal"}
    recharged = poster(http, "/v1/recharges", body)
    assert recharged.status_code == 201, recharged.text


def _hold(
    http: httpx.Client, poster: Poster, user: str, hold_id: str, amount: str, **extra: Any
) -> dict[str, Any]:
    body = {"user_id": user, "amount": amount, "currency": "USD", "hold_id": hold_id, **extra}
    held = poster(http, "/v1/holds", body)
    assert held.status_code == 201, held.text
    placed: dict[str, Any] = held.json()
    return placed


def _balance(http: httpx.Client, user: str) -> str:
    balances = http.get(f"/v1/users/{user}/balances").json()["balances"]
    return "0" if not balances else str(balances[0]["balance"])


def _head(live: Any) -> int:
    head = live.services.engine.store.head("shop")
    return 0 if head is None else int(head.seq)


def _entries(transaction: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    return [
        (entry["amount"], entry["balance_after"], entry.get("hold_id"))
        for entry in transaction["entries"]
    ]


def test_a_hold_is_placed_captured_and_its_order_refunded(
    live: Any, unique: Unique, poster: Poster
) -> None:
    user, hold_id, first, second = unique("u"), unique("h"), unique("o"), unique("o")
    with live.client() as http:
        _recharge(http, poster, user, "100.00")
        placed = _hold(http, poster, user, hold_id, "60.00", metadata={"cart": "c-1"})
        assert (placed["event_type"], placed["hold_id"]) == ("hold", hold_id)
        assert (placed["amount"], placed["balance_after"]) == ("-60.00", "40.00")
        assert _entries(placed) == [("-60.00", "40.00", hold_id)]
        assert _balance(http, user) == "40.00"
        opened = http.get(f"/v1/holds/{hold_id}").json()
        assert (opened["status"], opened["amount"], opened["captured"]) == ("open", "60.00", "0.00")
        assert (opened["user_id"], opened["metadata"]) == (user, {"cart": "c-1"})

        orders = [
            {"order_id": first, "amount": "25.00"},
            {"order_id": second, "amount": "10.00", "merchant_id": "m-9"},
        ]
        captured = poster(http, f"/v1/holds/{hold_id}/capture", {"orders": orders})
        assert captured.status_code == 201, captured.text
        capture = captured.json()
        assert (capture["event_type"], capture["hold_id"]) == ("capture", hold_id)
        assert capture["reference_order_ids"] == [first, second]
        # the hold's whole amount back, then each order paid from the wallet
        assert _entries(capture) == [
            ("60.00", "100.00", hold_id),
            ("-25.00", "75.00", hold_id),
            ("-10.00", "65.00", hold_id),
        ]
        assert (capture["amount"], capture["balance_after"]) == ("25.00", "65.00")
        assert _balance(http, user) == "65.00"
        assert http.get(f"/v1/transactions/{capture['transaction_id']}").json() == capture

        settled = http.get(f"/v1/holds/{hold_id}").json()
        assert settled == {
            "hold_id": hold_id,
            "user_id": user,
            "currency": "USD",
            "amount": "60.00",
            "status": "captured",
            "expires_at": None,
            "captured": "35.00",
            "released": "25.00",
            "reference_order_ids": [first, second],
            "metadata": {"cart": "c-1"},
            "transactions": [
                {
                    "transaction_id": t["transaction_id"],
                    "event_type": t["event_type"],
                    "seq": t["seq"],
                    "timestamp": t["timestamp"],
                }
                for t in (placed, capture)
            ],
        }

        refund = {"expense_id": capture["transaction_id"], "order_id": first, "amount": "5.00"}
        refunded = poster(http, "/v1/refunds", refund)
        assert refunded.status_code == 201, refunded.text
        assert "hold_id" not in refunded.json()
        assert _balance(http, user) == "70.00"
        order = http.get(f"/v1/orders/{first}").json()
        assert (order["expense_id"], order["refunded"], order["refundable"]) == (
            capture["transaction_id"],
            "5.00",
            "20.00",
        )
        statement = http.get(f"/v1/users/{user}/statement", params={"currency": "USD"}).json()
    lines = [
        (line["event_type"], line["amount"], line["balance_after"], line.get("hold_id"))
        for line in statement["entries"]
    ]
    assert lines == [
        ("recharge", "100.00", "100.00", None),
        ("hold", "-60.00", "40.00", hold_id),
        ("capture", "60.00", "100.00", hold_id),
        ("capture", "-25.00", "75.00", hold_id),
        ("capture", "-10.00", "65.00", hold_id),
        ("refund", "5.00", "70.00", None),
    ]


def test_a_release_gives_the_whole_hold_back_once(
    live: Any, unique: Unique, poster: Poster
) -> None:
    user, hold_id = unique("u"), unique("h")
    with live.client() as http:
        _recharge(http, poster, user, "50.00")
        _hold(http, poster, user, hold_id, "30.00")
        assert _balance(http, user) == "20.00"
        released = poster(http, f"/v1/holds/{hold_id}/release", {"reason": "order cancelled"})
        assert released.status_code == 201, released.text
        release = released.json()
        assert (release["event_type"], release["hold_id"], release["amount"]) == (
            "release",
            hold_id,
            "30.00",
        )
        assert _entries(release) == [("30.00", "50.00", hold_id)]
        assert _balance(http, user) == "50.00"
        view = http.get(f"/v1/holds/{hold_id}").json()
        assert (view["status"], view["captured"], view["released"]) == ("released", "0.00", "30.00")
        assert [t["event_type"] for t in view["transactions"]] == ["hold", "release"]

        before = _head(live)
        again = poster(http, f"/v1/holds/{hold_id}/release", {})
        capture = {"orders": [{"order_id": unique("o"), "amount": "1.00"}]}
        late = poster(http, f"/v1/holds/{hold_id}/capture", capture)
        for refused in (again, late):
            assert refused.status_code == 409, refused.text
            problem = refused.json()
            assert (problem["code"], problem["field"]) == ("hold_settled", "hold_id")
            assert release["transaction_id"] in problem["detail"]
        assert _head(live) == before
        assert _balance(http, user) == "50.00"


def test_a_second_capture_is_refused_and_changes_nothing(
    live: Any, unique: Unique, poster: Poster
) -> None:
    user, hold_id = unique("u"), unique("h")
    with live.client() as http:
        _recharge(http, poster, user, "10.00")
        _hold(http, poster, user, hold_id, "8.00")
        orders = {"orders": [{"order_id": unique("o"), "amount": "3.00"}]}
        first = poster(http, f"/v1/holds/{hold_id}/capture", orders)
        assert first.status_code == 201, first.text
        assert _balance(http, user) == "7.00"
        before = _head(live)
        second = poster(
            http,
            f"/v1/holds/{hold_id}/capture",
            {"orders": [{"order_id": unique("o"), "amount": "1.00"}]},
        )
        assert second.status_code == 409, second.text
        assert (second.json()["code"], second.json()["field"]) == ("hold_settled", "hold_id")
        assert (_head(live), _balance(http, user)) == (before, "7.00")


def test_an_expired_hold_cannot_be_captured_but_is_released(
    live: Any, unique: Unique, poster: Poster
) -> None:
    user, hold_id = unique("u"), unique("h")
    expires_at = datetime.now(UTC) + timedelta(seconds=1)
    with live.client() as http:
        _recharge(http, poster, user, "10.00")
        _hold(http, poster, user, hold_id, "4.00", expires_at=expires_at.isoformat())
        assert _balance(http, user) == "6.00"
        view = http.get(f"/v1/holds/{hold_id}").json()
        assert view["expires_at"] == expires_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        deadline = time.monotonic() + 10
        while http.get(f"/v1/holds/{hold_id}").json()["status"] != "expired":
            assert time.monotonic() < deadline, "the hold never showed as expired"
            time.sleep(0.05)
        before = _head(live)
        capture = {"orders": [{"order_id": unique("o"), "amount": "1.00"}]}
        refused = poster(http, f"/v1/holds/{hold_id}/capture", capture)
        assert refused.status_code == 409, refused.text
        assert (refused.json()["code"], refused.json()["field"]) == ("hold_expired", "hold_id")
        assert (_head(live), _balance(http, user)) == (before, "6.00")
        released = poster(http, f"/v1/holds/{hold_id}/release", {})
        assert released.status_code == 201, released.text
        assert _balance(http, user) == "10.00"
        assert http.get(f"/v1/holds/{hold_id}").json()["status"] == "released"


@pytest.fixture
def open_hold(live: Any, unique: Unique, poster: Poster) -> tuple[str, str]:
    """A user with 10.00 USD, 6.00 of it in an open hold: (user_id, hold_id)."""
    user, hold_id = unique("u"), unique("h")
    with live.client() as http:
        _recharge(http, poster, user, "10.00")
        _hold(http, poster, user, hold_id, "6.00")
    return user, hold_id


_PAST = "2001-01-01T00:00:00Z"


def _refusals(user: str, hold_id: str, paid_order: str) -> list[tuple[str, Any, int, str, str]]:
    """(path, body, status, code, field): requests the ledger or the edge refuses."""
    placing = {"user_id": user, "amount": "1.00", "currency": "USD", "hold_id": f"{hold_id}-new"}
    capture = f"/v1/holds/{hold_id}/capture"
    unknown = "/v1/holds/no-such-hold/capture"
    line = {"order_id": f"{hold_id}-o", "amount": "1.00"}
    return [
        ("/v1/holds", {**placing, "expires_at": "tomorrow"}, 400, "expiry_invalid", "expires_at"),
        (
            "/v1/holds",
            {**placing, "expires_at": "2099-01-01T00:00:00"},
            400,
            "expiry_invalid",
            "expires_at",
        ),
        ("/v1/holds", {**placing, "expires_at": _PAST}, 400, "expiry_invalid", "expires_at"),
        ("/v1/holds", {**placing, "expires_at": 5}, 400, "field_invalid", "expires_at"),
        ("/v1/holds", {**placing, "hold_id": hold_id}, 409, "hold_already_placed", "hold_id"),
        ("/v1/holds", {**placing, "hold_id": "a b"}, 400, "identifier_invalid", "hold_id"),
        ("/v1/holds", {**placing, "amount": "4.01"}, 422, "insufficient_funds", "amount"),
        ("/v1/holds", {**placing, "amount": "0.001"}, 400, "amount_too_precise", "amount"),
        ("/v1/holds", {**placing, "amount": 1}, 400, "amount_invalid", "amount"),
        ("/v1/holds", {**placing, "currency": "XYZ"}, 400, "currency_unknown", "currency"),
        ("/v1/holds", {**placing, "balance_after": "1"}, 400, "field_unknown", "balance_after"),
        (
            "/v1/holds",
            {k: v for k, v in placing.items() if k != "hold_id"},
            400,
            "field_missing",
            "hold_id",
        ),
        (capture, {"orders": [{**line, "amount": "6.01"}]}, 422, "capture_exceeds_hold", "orders"),
        (
            capture,
            {"orders": [{**line, "amount": "1.001"}]},
            400,
            "amount_too_precise",
            "orders[0].amount",
        ),
        (capture, {"orders": [{**line, "amount": 1}]}, 400, "amount_invalid", "orders[0].amount"),
        (capture, {"orders": []}, 400, "orders_empty", "orders"),
        (capture, {"orders": [line, line]}, 400, "order_duplicated", "orders[1].order_id"),
        (
            capture,
            {"orders": [{**line, "order_id": paid_order}]},
            409,
            "order_already_paid",
            "orders[0].order_id",
        ),
        (capture, {"orders": [line], "currency": "USD"}, 400, "field_unknown", "currency"),
        (unknown, {"orders": [line]}, 404, "hold_unknown", "hold_id"),
        # what outranks an unknown hold in the ledger outranks it here too
        (unknown, {"orders": []}, 400, "orders_empty", "orders"),
        (
            unknown,
            {"orders": [{**line, "amount": "abc"}]},
            400,
            "amount_invalid",
            "orders[0].amount",
        ),
        (
            unknown,
            {"orders": [{**line, "amount": "-1.00"}]},
            400,
            "amount_not_positive",
            "orders[0].amount",
        ),
        (
            unknown,
            {"orders": [{**line, "order_id": "a b"}]},
            400,
            "identifier_invalid",
            "orders[0].order_id",
        ),
        (
            unknown,
            {"orders": [line], "metadata": {"k": "v" * 5000}},
            400,
            "metadata_too_large",
            "metadata",
        ),
        (unknown, {"orders": [line, line]}, 400, "order_duplicated", "orders[1].order_id"),
        ("/v1/holds/a%20b/capture", {"orders": [line]}, 400, "identifier_invalid", "hold_id"),
        ("/v1/holds/no-such-hold/release", {}, 404, "hold_unknown", "hold_id"),
        ("/v1/holds/a%20b/release", {}, 400, "identifier_invalid", "hold_id"),
        (f"/v1/holds/{hold_id}/release", {"reason": 5}, 400, "field_invalid", "reason"),
        (f"/v1/holds/{hold_id}/release", {"why": "x"}, 400, "field_unknown", "why"),
        (
            f"/v1/holds/{hold_id}/release",
            {"metadata": {"k": 1}},
            400,
            "metadata_invalid",
            "metadata",
        ),
    ]


def test_every_refusal_names_its_field_and_writes_nothing(
    live: Any, unique: Unique, poster: Poster, open_hold: tuple[str, str]
) -> None:
    user, hold_id = open_hold
    paid_order = unique("o")
    with live.client() as http:
        paid = poster(
            http,
            "/v1/expenses",
            {
                "user_id": user,
                "currency": "USD",
                "orders": [{"order_id": paid_order, "amount": "0.01"}],
            },
        )
        assert paid.status_code == 201, paid.text
        before = (_head(live), _balance(http, user), http.get(f"/v1/holds/{hold_id}").json())
        assert (before[1], before[2]["status"]) == ("3.99", "open")
        for path, body, status, code, field in _refusals(user, hold_id, paid_order):
            refused = poster(http, path, body)
            assert refused.status_code == status, (path, body, refused.text)
            assert refused.headers["content-type"] == "application/problem+json"
            problem = refused.json()
            assert (problem["code"], problem["field"]) == (code, field), (path, body)
            if code == "amount_invalid":  # in the API's words, never "integer minor units"
                assert "decimal string" in problem["detail"], problem
        after = (_head(live), _balance(http, user), http.get(f"/v1/holds/{hold_id}").json())
    assert after == before


def test_a_hold_id_that_is_no_identifier_or_unknown_is_not_found(live: Any) -> None:
    with live.client("read") as http:
        for path in ("/v1/holds/no-such-hold", "/v1/holds/a%20b", "/v1/holds/a%00b"):
            missing = http.get(path)
            assert missing.status_code == 404, missing.text
            assert (missing.json()["code"], missing.json()["field"]) == ("not_found", "hold_id")


def test_a_replayed_write_is_the_first_answer_and_writes_nothing(
    live: Any, unique: Unique, poster: Poster
) -> None:
    user, hold_id = unique("u"), unique("h")
    placing = {"user_id": user, "amount": "5.00", "currency": "USD", "hold_id": hold_id}
    capture = {"orders": [{"order_id": unique("o"), "amount": "2.00"}]}
    with live.client() as http:
        _recharge(http, poster, user, "10.00")
        writes = [
            ("/v1/holds", placing, {**placing, "amount": "4.00"}),
            (f"/v1/holds/{hold_id}/capture", capture, {"orders": []}),
        ]
        for path, body, other in writes:
            key = unique("k")
            first = poster(http, path, body, key)
            assert first.status_code == 201, first.text
            assert "idempotent-replayed" not in first.headers
            before = (_head(live), _balance(http, user))
            again = poster(http, path, body, key)  # after the capture too: not hold_settled
            assert again.status_code == 201, again.text
            assert again.headers["idempotent-replayed"] == "true"
            assert again.json() == first.json()
            reused = poster(http, path, other, key)
            assert reused.status_code == 422, reused.text
            assert (reused.json()["code"], reused.json()["field"]) == (
                "idempotency_key_reused",
                "Idempotency-Key",
            )
            assert (_head(live), _balance(http, user)) == before
        assert _balance(http, user) == "8.00"

        released_hold = unique("h")
        _hold(http, poster, user, released_hold, "1.00")
        key = unique("k")
        first = poster(http, f"/v1/holds/{released_hold}/release", {}, key)
        again = poster(http, f"/v1/holds/{released_hold}/release", {}, key)
        assert (first.status_code, again.status_code) == (201, 201)
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json() == first.json()
        # the same key for another hold's release is another request
        reused = poster(http, f"/v1/holds/{hold_id}/release", {}, key)
        assert (reused.status_code, reused.json()["code"]) == (422, "idempotency_key_reused")
        assert _balance(http, user) == "8.00"


def test_a_batch_places_captures_and_releases_holds(
    live: Any, unique: Unique, poster: Poster, open_hold: tuple[str, str]
) -> None:
    user, captured = open_hold  # 6.00 held, 4.00 in the wallet
    released, placed, order = unique("h"), unique("h"), unique("o")
    with live.client() as http:
        _hold(http, poster, user, released, "1.00")

        def command(kind: str, **fields: Any) -> dict[str, Any]:
            return {"type": kind, "idempotency_key": unique("bk"), **fields}

        commands = [
            command("hold", user_id=user, amount="2.00", currency="USD", hold_id=placed),
            command("capture", hold_id=captured, orders=[{"order_id": order, "amount": "5.00"}]),
            command("release", hold_id=released, reason="cancelled"),
            # refused, each on its own: a hold placed in this very batch is not known yet when
            # the batch's amounts are read; an id placed already; more than the wallet holds
            command(
                "capture", hold_id=placed, orders=[{"order_id": unique("o"), "amount": "1.00"}]
            ),
            command("hold", user_id=user, amount="1.00", currency="USD", hold_id=captured),
            command("hold", user_id=user, amount="99.00", currency="USD", hold_id=unique("h")),
            command(
                "hold",
                user_id=user,
                amount="1.00",
                currency="USD",
                hold_id=unique("h"),
                expires_at="soon",
            ),
        ]
        answered = poster(http, "/v1/batch", {"commands": commands})
        assert answered.status_code == 200, answered.text
        results = answered.json()["results"]
        assert [r["status"] for r in results] == [201, 201, 201, 404, 409, 422, 400]
        assert [r["transaction"]["hold_id"] for r in results[:3]] == [placed, captured, released]
        assert [(r["problem"]["code"], r["problem"]["field"]) for r in results[3:]] == [
            ("hold_unknown", "hold_id"),
            ("hold_already_placed", "hold_id"),
            ("insufficient_funds", "amount"),
            ("expiry_invalid", "expires_at"),
        ]
        # 4.00 - 1.00 (released's hold) - 2.00 + 6.00 - 5.00 + 1.00
        assert _balance(http, user) == "3.00"
        statuses = [
            http.get(f"/v1/holds/{h}").json()["status"] for h in (placed, captured, released)
        ]
        assert statuses == ["open", "captured", "released"]

        before = _head(live)
        again = poster(http, "/v1/batch", {"commands": commands[:3]})
        assert [r["replayed"] for r in again.json()["results"]] == [True, True, True]
        assert (_head(live), _balance(http, user)) == (before, "3.00")


def test_the_sdks_place_capture_refund_and_release(live: Any, unique: Unique) -> None:
    user, held, released, order = unique("u"), unique("h"), unique("h"), unique("o")
    expires_at = datetime.now(UTC) + timedelta(days=1)
    with Client(live.url, live.keys["admin"]) as tally:
        tally.recharge(user, "20.00", "USD", gateway="paypal")
        placed = tally.hold(user, "12.00", "USD", held, expires_at=expires_at, metadata={"a": "b"})
        assert (placed.event_type, placed.hold_id, placed.balance_after) == ("hold", held, "8.00")
        assert [entry.hold_id for entry in placed.entries] == [held]
        view = tally.get_hold(held)
        assert (view.status, view.amount, view.metadata) == ("open", "12.00", {"a": "b"})
        assert view.expires_at == expires_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        with pytest.raises(Refused) as too_much:
            tally.capture(held, [OrderLine(order_id=order, amount="12.01")])
        assert (too_much.value.code, too_much.value.field) == ("capture_exceeds_hold", "orders")
        captured = tally.capture(held, [OrderLine(order_id=order, amount="7.00")])
        assert (captured.hold_id, captured.balance_after) == (held, "13.00")
        replayed = tally.capture(
            held,
            [OrderLine(order_id=order, amount="7.00")],
            idempotency_key=captured.idempotency_key,
        )
        assert (replayed.replayed, replayed.transaction_id) == (True, captured.transaction_id)
        with pytest.raises(Conflict) as settled:
            tally.capture(held, [OrderLine(order_id=unique("o"), amount="1.00")])
        assert settled.value.code == "hold_settled"
        refunded = tally.refund(captured.transaction_id, order, "2.00")
        assert (refunded.balance_after, refunded.hold_id) == ("15.00", None)
        tally.hold(user, "3.00", "USD", released)
        done = tally.release(released, reason="cancelled")
        assert (done.event_type, done.amount) == ("release", "3.00")
        assert tally.get_hold(released).status == "released"
        with pytest.raises(NotFound) as unknown:
            tally.release(unique("h"))
        assert (unknown.value.code, unknown.value.field) == ("hold_unknown", "hold_id")
        with pytest.raises(NotFound):
            tally.get_hold(unique("h"))
        with pytest.raises(InvalidRequest) as naive:
            tally.hold(user, "1.00", "USD", unique("h"), expires_at=datetime(2099, 1, 1))
        assert (naive.value.code, naive.value.field) == ("expiry_invalid", "expires_at")
        batched = unique("h")
        results = tally.batch(
            [
                HoldCommand(user_id=user, amount="1.00", currency="USD", hold_id=batched),
                ReleaseCommand(hold_id=batched),
                CaptureCommand(hold_id=held, orders=(OrderLine(order_id=unique("o"), amount="1"),)),
            ]
        )
        assert [r.status for r in results] == [201, 201, 409]
        assert [r.problem and r.problem.code for r in results] == [None, None, "hold_settled"]
        assert tally.balances(user).of("USD") == 15

    async def journey() -> None:
        async with AsyncClient(live.url, live.keys["admin"]) as tally:
            again = unique("h")
            placed = await tally.hold(user, "5.00", "USD", again, expires_at="2099-01-01T00:00:00Z")
            assert placed.balance_after == "10.00"
            captured = await tally.capture(again, [OrderLine(order_id=unique("o"), amount="5.00")])
            assert captured.balance_after == "10.00"
            assert (await tally.get_hold(again)).status == "captured"
            with pytest.raises(Conflict) as twice:
                await tally.hold(user, "1.00", "USD", again)
            assert twice.value.code == "hold_already_placed"
            other = unique("h")
            await tally.hold(user, "1.00", "USD", other)
            released = await tally.release(other)
            assert released.balance_after == "10.00"
            (result,) = await tally.batch([ReleaseCommand(hold_id=other, reason="again")])
            assert (result.problem and result.problem.code) == "hold_settled"
            assert (await tally.balances(user)).of("USD") == 10

    asyncio.run(journey())


def test_the_schema_documents_the_hold_routes(live: Any) -> None:
    with live.client(None) as http:
        schema = http.get("/openapi.json").json()
    paths, components = schema["paths"], schema["components"]["schemas"]
    bodies = {
        "/v1/holds": "HoldRequest",
        "/v1/holds/{hold_id}/capture": "CaptureRequest",
        "/v1/holds/{hold_id}/release": "ReleaseRequest",
    }
    for path, model in bodies.items():
        post = paths[path]["post"]
        body = post["requestBody"]["content"]["application/json"]["schema"]
        assert body["$ref"].endswith(f"/{model}"), path
        assert components[model]["additionalProperties"] is False
        answer = post["responses"]["201"]["content"]["application/json"]["schema"]
        assert answer["$ref"].endswith("/Transaction"), path
        assert {"404", "409", "422"} <= set(post["responses"])
    read = paths["/v1/holds/{hold_id}"]["get"]["responses"]["200"]["content"]["application/json"]
    assert read["schema"]["$ref"].endswith("/Hold")
    assert components["Hold"]["properties"]["status"]["enum"] == [
        "open",
        "expired",
        "captured",
        "released",
    ]
    assert "expires_at" in components["HoldRequest"]["properties"]
    assert "hold_id" in components["Transaction"]["properties"]
    batch_kinds = json.dumps(components["BatchRequest"])
    for kind in ("BatchHold", "BatchCapture", "BatchRelease"):
        assert kind in batch_kinds
    assert "hold_id" in components["BatchCapture"]["required"]


# -- the direct path answers a hold as Litestar does -----------------------------------------


@contextmanager
def _app(db: str, *, direct: bool) -> Iterator[tuple[TestClient[Any], str, Any]]:
    store = open_store(db)
    store.ensure_ledger("shop")
    store.close()
    services = open_services(db, key_cache_ttl_s=3600)
    secret = services.keys.create("shop", frozenset({Scope.WRITE, Scope.READ})).secret
    app = create_app(services, direct_writes=direct)
    with TestClient(app) as client:
        yield client, secret, app


_VOLATILE = {"transaction_id", "timestamp", "actor", "expense_id", "detail"}


def _scrub(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items() if k not in _VOLATILE}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def _hold_requests(client: TestClient[Any], secret: str) -> list[Any]:
    answers = []

    def post(path: str, body: Any, key: str) -> None:
        headers = {"Authorization": f"Bearer {secret}", "Idempotency-Key": key}
        response = client.post(path, json=body, headers=headers)
        answers.append(
            (
                response.status_code,
                response.headers.get("idempotent-replayed"),
                _scrub(response.json()),
            )
        )

    recharge = {"user_id": "ann", "amount": "50.00", "currency": "USD", "gateway": "paypal"}
    hold = {"user_id": "ann", "amount": "20.00", "currency": "USD", "hold_id": "h1"}
    post("/v1/recharges", recharge, "r1")  # the key's first use: Litestar
    post("/v1/holds", hold, "h1")
    post("/v1/holds", hold, "h1")  # replayed
    post("/v1/holds", {**hold, "hold_id": "h2", "expires_at": "2099-01-01T00:00:00Z"}, "h2")
    post("/v1/holds", {**hold, "hold_id": "h1"}, "h3")  # placed already
    post("/v1/holds", {**hold, "hold_id": "h4", "expires_at": "nope"}, "h4")
    post("/v1/holds", {**hold, "hold_id": "h5", "amount": "99.00"}, "h5")
    capture = {"type": "capture", "hold_id": "h1", "orders": [{"order_id": "o1", "amount": "5.00"}]}
    post(
        "/v1/batch",
        {
            "commands": [
                {**capture, "idempotency_key": "b1"},
                {"type": "release", "idempotency_key": "b2", "hold_id": "h2"},
            ]
        },
        "batch1",
    )
    unknown = {**capture, "hold_id": "h9", "idempotency_key": "b3"}
    post("/v1/batch", {"commands": [unknown]}, "batch2")  # an unknown hold: Litestar's
    return answers


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_the_direct_path_answers_holds_as_litestar_does(store: str, tmp_path: Path) -> None:
    answers, answered = [], []
    with (
        empty_database(store, tmp_path, "direct") as first,
        empty_database(store, tmp_path, "framework") as second,
    ):
        for db, direct in ((first, True), (second, False)):
            with _app(db, direct=direct) as (client, secret, app):
                answers.append(_hold_requests(client, secret))
                answered.append(0 if app.direct is None else app.direct.answered)
    fast, slow = answers
    assert len(fast) == len(slow)
    for index, (mine, theirs) in enumerate(zip(fast, slow, strict=True)):
        assert mine == theirs, f"request {index}"
    # direct: the five holds after the first and the first batch
    assert answered == [6, 0]


def test_a_capture_through_another_server_finds_the_hold(tmp_path: Path) -> None:
    """The second server's writer has not seen the hold (another process placed it): its
    currency is read from the accounts projection."""
    db = str(tmp_path / "shared.db")
    secret = provision(db, "shop")
    headers = {"Authorization": f"Bearer {secret}"}
    with ExitStack() as stack:
        first, second = (
            stack.enter_context(serve(db, tmp_path / f"serve-{n}.log")) for n in range(2)
        )
        with httpx.Client(base_url=first.url, headers=headers, timeout=30) as client:
            for path, body, key in [
                (
                    "/v1/recharges",
                    {"user_id": "ann", "amount": "9", "currency": "JPY", "gateway": "pp"},
                    "r",
                ),
                (
                    "/v1/holds",
                    {"user_id": "ann", "amount": "7", "currency": "JPY", "hold_id": "h1"},
                    "h",
                ),
            ]:
                done = client.post(path, json=body, headers={"Idempotency-Key": key})
                assert done.status_code == 201, done.text
        with httpx.Client(base_url=second.url, headers=headers, timeout=30) as client:
            # JPY has no decimals: refused so only if the hold's currency was found
            precise = client.post(
                "/v1/holds/h1/capture",
                json={"orders": [{"order_id": "o-1", "amount": "0.5"}]},
                headers={"Idempotency-Key": "p"},
            )
            assert (precise.status_code, precise.json()["code"]) == (400, "amount_too_precise")
            capture = {"type": "capture", "idempotency_key": "b", "hold_id": "h1"}
            line = {"order_id": "o-1", "amount": "5"}
            batch = {"commands": [{**capture, "orders": [line]}]}
            captured = client.post("/v1/batch", json=batch, headers={"Idempotency-Key": "b"})
            (result,) = captured.json()["results"]
            assert result["status"] == 201, result
            assert (result["transaction"]["currency"], result["transaction"]["balance_after"]) == (
                "JPY",
                "4",
            )
            again = client.post(
                "/v1/holds/h1/capture",
                json={"orders": [{**line, "order_id": "o-2"}]},
                headers={"Idempotency-Key": "c"},
            )
            assert (again.status_code, again.json()["code"]) == (409, "hold_settled")
            capture_id = result["transaction"]["transaction_id"]
        with httpx.Client(base_url=first.url, headers=headers, timeout=30) as client:
            # The first server's writer has not seen the capture: its currency is the
            # logged capture's (a refund names a capture as it names an expense).
            refund = {"expense_id": capture_id, "order_id": "o-1", "amount": "2"}
            refunded = client.post("/v1/refunds", json=refund, headers={"Idempotency-Key": "f"})
            assert refunded.status_code == 201, refunded.text
            assert refunded.json()["balance_after"] == "6"
    status, report = verify_cli(db, "shop")
    assert status == 0, report

"""Transfers over HTTP: money moved between a user's wallet and other wallets, revenue and
equity accounts, shown on both users' balances and statements and on the transaction's
`postings`; each refusal with its status, code and field, and nothing of it written; replayed
by its key; admin scope only, on the single route and in a batch; through both SDKs; the
direct path answers as Litestar does; and `tally verify` passes after."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from litestar.testing import TestClient

from pg import empty_database
from serve_process import verify_cli
from served_app import served
from tally import views
from tally.api_keys import Scope
from tally.bootstrap import open_store
from tally.client import (
    AsyncClient,
    Client,
    Forbidden,
    InvalidRequest,
    RechargeCommand,
    Refused,
    Transaction,
    TransferCommand,
    TransferPosting,
)
from tally.client import models as client_models
from tally.http.app import create_app
from tally.http.compose import open_services
from tally.http.services import Services

pytest_plugins = ["http_fixtures"]

Poster = Callable[..., httpx.Response]
Unique = Callable[[str], str]


def _recharge(http: httpx.Client, poster: Poster, user: str, amount: str) -> None:
    body = {"user_id": user, "amount": amount, "currency": "USD", "gateway": "paypal"}
    recharged = poster(http, "/v1/recharges", body)
    assert recharged.status_code == 201, recharged.text


def _balance(http: httpx.Client, user: str) -> str:
    balances = http.get(f"/v1/users/{user}/balances").json()["balances"]
    return "0" if not balances else str(balances[0]["balance"])


def _head(live: Any) -> int:
    head = live.services.engine.store.head("shop")
    return 0 if head is None else int(head.seq)


def _transfer(user: str, *postings: tuple[str, str], **extra: Any) -> dict[str, Any]:
    return {
        "user_id": user,
        "currency": "USD",
        "postings": [{"account": account, "amount": amount} for account, amount in postings],
        **extra,
    }


def _legs(transaction: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [
        (leg["account"], leg["amount"], leg["balance_after"]) for leg in transaction["postings"]
    ]


def _last_line(http: httpx.Client, user: str) -> dict[str, Any]:
    page = http.get(f"/v1/users/{user}/statement", params={"currency": "USD"}).json()
    line: dict[str, Any] = page["entries"][-1]
    return line


def test_a_transfer_moves_money_and_shows_every_posting(
    live: Any, unique: Unique, poster: Poster
) -> None:
    alice, bob, merchant = unique("u"), unique("u"), unique("m")
    with live.client() as http:
        _recharge(http, poster, alice, "20.00")
        _recharge(http, poster, bob, "1.00")
        body = _transfer(
            alice,
            (f"wallet:{alice}", "-5.50"),
            (f"wallet:{bob}", "5.00"),
            (f"revenue:{merchant}", "0.50"),
            reason="dinner split",
            metadata={"bill": "b-1"},
        )
        sent = poster(http, "/v1/transfers", body)
        assert sent.status_code == 201, sent.text
        made = sent.json()
        assert (made["event_type"], made["user_id"], made["currency"]) == (
            "transfer",
            alice,
            "USD",
        )
        assert (made["amount"], made["balance_after"]) == ("-5.50", "14.50")
        assert (made["metadata"], made["reference_order_ids"], made["refund_of"]) == (
            {"bill": "b-1"},
            [],
            None,
        )
        assert "hold_id" not in made
        # the entries are the user's wallet lines; the postings every leg, in the order sent
        assert [(e["user_id"], e["amount"], e["balance_after"]) for e in made["entries"]] == [
            (alice, "-5.50", "14.50")
        ]
        assert _legs(made) == [
            (f"wallet:{alice}:USD", "-5.50", "14.50"),
            (f"wallet:{bob}:USD", "5.00", "6.00"),
            (f"revenue:{merchant}:USD", "0.50", "0.50"),
        ]
        assert (_balance(http, alice), _balance(http, bob)) == ("14.50", "6.00")
        assert http.get(f"/v1/transactions/{made['transaction_id']}").json() == made

        paid, received = _last_line(http, alice), _last_line(http, bob)
        for line in (paid, received):
            assert (line["transaction_id"], line["event_type"]) == (
                made["transaction_id"],
                "transfer",
            )
            assert line["metadata"] == {"bill": "b-1"}
        assert (paid["user_id"], paid["amount"], paid["balance_after"]) == (
            alice,
            "-5.50",
            "14.50",
        )
        assert (received["user_id"], received["amount"], received["balance_after"]) == (
            bob,
            "5.00",
            "6.00",
        )


def test_a_transfer_may_credit_the_user_from_equity_or_take_from_another_wallet(
    live: Any, unique: Unique, poster: Poster
) -> None:
    alice, bob, promotion = unique("u"), unique("u"), unique("promo")
    with live.client() as http:
        credited = poster(
            http,
            "/v1/transfers",
            _transfer(alice, (f"equity:{promotion}", "-3.00"), (f"wallet:{alice}", "3.00")),
        )
        assert credited.status_code == 201, credited.text
        assert _legs(credited.json()) == [
            (f"equity:{promotion}:USD", "-3.00", "-3.00"),
            (f"wallet:{alice}:USD", "3.00", "3.00"),
        ]
        assert "reason" not in credited.json()  # a transaction shows no reason field at all
        # alice's transaction, bob's money: the key's admin scope is what allows it
        _recharge(http, poster, bob, "2.00")
        paid = poster(
            http,
            "/v1/transfers",
            _transfer(alice, (f"wallet:{bob}", "-2.00"), (f"wallet:{alice}", "2.00")),
        )
        assert paid.status_code == 201, paid.text
        assert (paid.json()["user_id"], paid.json()["amount"]) == (alice, "2.00")
        assert (_balance(http, alice), _balance(http, bob)) == ("5.00", "0.00")
        assert _last_line(http, bob)["user_id"] == bob


def test_other_transactions_show_no_postings(live: Any, unique: Unique, poster: Poster) -> None:
    user = unique("u")
    with live.client() as http:
        recharged = poster(
            http,
            "/v1/recharges",
            {"user_id": user, "amount": "1.00", "currency": "USD", "gateway": "paypal"},
        )
        assert "postings" not in recharged.json()
        read = http.get(f"/v1/transactions/{recharged.json()['transaction_id']}").json()
        assert "postings" not in read


def _refusals(alice: str, bob: str) -> list[tuple[dict[str, Any], int, str, str]]:
    """(body, status, code, field): transfers the ledger or the edge refuses. Alice holds
    10.00 USD, bob nothing."""
    mine, theirs = f"wallet:{alice}", f"wallet:{bob}"
    many = [(f"revenue:m-{n}", "0.01") for n in range(100)]
    return [
        (_transfer(alice, (mine, "-1.00")), 400, "postings_invalid", "postings"),
        (_transfer(alice), 400, "postings_invalid", "postings"),
        (_transfer(alice, (mine, "-1.00"), *many), 400, "postings_invalid", "postings"),
        (
            _transfer(alice, (mine, "-1.00"), (bob, "1.00")),
            400,
            "postings_invalid",
            "postings[1].account",
        ),
        (
            _transfer(alice, (mine, "-1.00"), (f"hold:{bob}", "1.00")),
            400,
            "postings_invalid",
            "postings[1].account",
        ),
        (
            _transfer(alice, (mine, "-1.00"), (f"{theirs}:USD", "1.00")),
            400,
            "postings_invalid",
            "postings[1].account",
        ),
        (
            _transfer(alice, (mine, "-1.00"), (f"savings:{bob}", "1.00")),
            400,
            "postings_invalid",
            "postings[1].account",
        ),
        (
            _transfer(alice, (mine, "-1.00"), (theirs, "0.50"), (theirs, "0.50")),
            400,
            "postings_invalid",
            "postings[2].account",
        ),
        (
            _transfer(alice, (theirs, "-1.00"), ("revenue:m-1", "1.00")),
            400,
            "postings_invalid",
            "postings",
        ),
        (
            _transfer("a b", ("wallet:a b", "-1.00"), (theirs, "1.00")),
            400,
            "identifier_invalid",
            "user_id",
        ),
        (
            _transfer(alice, (mine, "-1.00"), ("wallet:", "1.00")),
            400,
            "identifier_invalid",
            "postings[1].account",
        ),
        (
            _transfer(alice, (mine, "-1.00"), ("wallet:b c", "1.00")),
            400,
            "identifier_invalid",
            "postings[1].account",
        ),
        (
            {**_transfer(alice, (mine, "-1.00"), (theirs, "1.00")), "currency": "XYZ"},
            400,
            "currency_unknown",
            "currency",
        ),
        (
            _transfer(alice, (mine, "-1.00"), (theirs, "abc")),
            400,
            "amount_invalid",
            "postings[1].amount",
        ),
        (
            {
                **_transfer(alice),
                "postings": [{"account": mine, "amount": -1}, {"account": theirs, "amount": 1}],
            },
            400,
            "amount_invalid",
            "postings[0].amount",
        ),
        (
            _transfer(alice, (mine, "-1.00"), (theirs, "0.00")),
            400,
            "amount_not_positive",
            "postings[1].amount",
        ),
        (
            _transfer(alice, (mine, "-1.00"), (theirs, "1.001")),
            400,
            "amount_too_precise",
            "postings[1].amount",
        ),
        (
            _transfer(alice, (mine, "-1.00"), (theirs, "99999999999999999999")),
            400,
            "amount_too_large",
            "postings[1].amount",
        ),
        (
            _transfer(alice, (mine, "-1.00"), (theirs, "0.99")),
            422,
            "postings_unbalanced",
            "postings",
        ),
        (
            _transfer(alice, (mine, "-10.01"), (theirs, "10.01")),
            422,
            "insufficient_funds",
            "postings[0].amount",
        ),
        (
            _transfer(alice, (theirs, "-1.00"), (mine, "1.00")),
            422,
            "insufficient_funds",
            "postings[0].amount",
        ),
        (
            {**_transfer(alice, (mine, "-1.00"), (theirs, "1.00")), "reason": 5},
            400,
            "field_invalid",
            "reason",
        ),
        (
            {**_transfer(alice, (mine, "-1.00"), (theirs, "1.00")), "reason": "r" * 1025},
            400,
            "reason_invalid",
            "reason",
        ),
        (
            {**_transfer(alice, (mine, "-1.00"), (theirs, "1.00")), "metadata": {"k": "v" * 5000}},
            400,
            "metadata_too_large",
            "metadata",
        ),
        (
            {**_transfer(alice, (mine, "-1.00"), (theirs, "1.00")), "metadata": {"k": 1}},
            400,
            "metadata_invalid",
            "metadata",
        ),
        (
            {
                **_transfer(alice),
                "postings": [{"account": mine, "amount": "-1", "currency": "USD"}],
            },
            400,
            "field_unknown",
            "postings[0].currency",
        ),
        (
            {k: v for k, v in _transfer(alice, (mine, "-1")).items() if k != "postings"},
            400,
            "field_missing",
            "postings",
        ),
    ]


def test_every_refusal_names_its_field_and_writes_nothing(
    live: Any, unique: Unique, poster: Poster
) -> None:
    alice, bob = unique("u"), unique("u")
    with live.client() as http:
        _recharge(http, poster, alice, "10.00")
        before = (_head(live), _balance(http, alice), _balance(http, bob))
        assert before[1:] == ("10.00", "0")
        for body, status, code, field in _refusals(alice, bob):
            refused = poster(http, "/v1/transfers", body)
            assert refused.status_code == status, (body, refused.text)
            assert refused.headers["content-type"] == "application/problem+json"
            problem = refused.json()
            assert (problem["code"], problem["field"]) == (code, field), (body, problem)
            assert problem["status"] == status
        after = (_head(live), _balance(http, alice), _balance(http, bob))
    assert after == before


@pytest.mark.parametrize("key", ["write", "read_write", "read", "other_admin"])
def test_only_an_admin_key_of_the_ledger_transfers(
    live: Any, unique: Unique, poster: Poster, key: str
) -> None:
    alice, bob = unique("u"), unique("u")
    with live.client() as http:
        _recharge(http, poster, alice, "10.00")
    body = _transfer(alice, (f"wallet:{alice}", "-1.00"), (f"wallet:{bob}", "1.00"))
    before = _head(live)
    with live.client(key) as http:
        refused = poster(http, "/v1/transfers", body)
    if key == "other_admin":  # its ledger's alice has nothing: the transfer is its ledger's
        assert (refused.status_code, refused.json()["code"]) == (422, "insufficient_funds")
    else:
        assert refused.status_code == 403, refused.text
        assert (refused.json()["code"], refused.json()["field"]) == ("forbidden", "Authorization")
    with live.client() as http:
        assert (_head(live), _balance(http, alice), _balance(http, bob)) == (before, "10.00", "0")


def test_a_replayed_transfer_is_the_first_answer_and_writes_nothing(
    live: Any, unique: Unique, poster: Poster
) -> None:
    alice, bob, key = unique("u"), unique("u"), unique("k")
    body = _transfer(alice, (f"wallet:{alice}", "-4.00"), (f"wallet:{bob}", "4.00"))
    with live.client() as http:
        _recharge(http, poster, alice, "10.00")
        first = poster(http, "/v1/transfers", body, key)
        assert first.status_code == 201, first.text
        assert "idempotent-replayed" not in first.headers
        before = (_head(live), _balance(http, alice), _balance(http, bob))
        assert before[1:] == ("6.00", "4.00")
        again = poster(http, "/v1/transfers", body, key)
        assert again.status_code == 201, again.text
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json() == first.json()
        others = [
            {**body, "reason": "another"},
            _transfer(alice, (f"wallet:{bob}", "4.00"), (f"wallet:{alice}", "-4.00")),
            _transfer(alice, (f"wallet:{alice}", "-3.00"), (f"wallet:{bob}", "3.00")),
        ]
        for other in others:
            reused = poster(http, "/v1/transfers", other, key)
            assert reused.status_code == 422, reused.text
            assert (reused.json()["code"], reused.json()["field"]) == (
                "idempotency_key_reused",
                "Idempotency-Key",
            )
        # the same key for another kind of write is another request too
        recharge = {"user_id": alice, "amount": "1.00", "currency": "USD", "gateway": "paypal"}
        reused = poster(http, "/v1/recharges", recharge, key)
        assert (reused.status_code, reused.json()["code"]) == (422, "idempotency_key_reused")
        assert (_head(live), _balance(http, alice), _balance(http, bob)) == before


def _command(unique: Unique, kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "idempotency_key": unique("bk"), **fields}


def test_a_batch_transfers_with_an_admin_key(live: Any, unique: Unique, poster: Poster) -> None:
    alice, bob, merchant = unique("u"), unique("u"), unique("m")
    mine, theirs = f"wallet:{alice}", f"wallet:{bob}"
    commands = [
        _command(
            unique, "recharge", user_id=alice, amount="10.00", currency="USD", gateway="paypal"
        ),
        _command(
            unique,
            "transfer",
            **_transfer(alice, (mine, "-6.00"), (theirs, "5.00"), (f"revenue:{merchant}", "1.00")),
            reason="split",
        ),
        # refused, each on its own
        _command(unique, "transfer", **_transfer(alice, (mine, "-1.00"), (theirs, "0.50"))),
        _command(unique, "transfer", **_transfer(alice, (mine, "-50.00"), (theirs, "50.00"))),
        _command(unique, "transfer", **_transfer(alice, (mine, "-1.00"))),
        _command(unique, "transfer", **_transfer(bob, (theirs, "-2.00"), (mine, "2.00"))),
    ]
    with live.client() as http:
        answered = poster(http, "/v1/batch", {"commands": commands})
        assert answered.status_code == 200, answered.text
        results = answered.json()["results"]
        assert [r["status"] for r in results] == [201, 201, 422, 422, 400, 201]
        transferred = results[1]["transaction"]
        assert (transferred["event_type"], transferred["balance_after"]) == ("transfer", "4.00")
        assert _legs(transferred) == [
            (f"{mine}:USD", "-6.00", "4.00"),
            (f"{theirs}:USD", "5.00", "5.00"),
            (f"revenue:{merchant}:USD", "1.00", "1.00"),
        ]
        assert [(r["problem"]["code"], r["problem"]["field"]) for r in results[2:5]] == [
            ("postings_unbalanced", "postings"),
            ("insufficient_funds", "postings[0].amount"),
            ("postings_invalid", "postings"),
        ]
        # the last one is bob's: the commands before it in the batch are already applied
        assert _legs(results[5]["transaction"]) == [
            (f"{theirs}:USD", "-2.00", "3.00"),
            (f"{mine}:USD", "2.00", "6.00"),
        ]
        read = http.get(f"/v1/transactions/{transferred['transaction_id']}").json()
        assert read == transferred
        assert (_balance(http, alice), _balance(http, bob)) == ("6.00", "3.00")

        before = _head(live)
        again = poster(http, "/v1/batch", {"commands": commands})
        replayed = again.json()["results"]
        assert [r["status"] for r in replayed] == [201, 201, 422, 422, 400, 201]
        assert [r["replayed"] for r in replayed] == [True, True, False, False, False, True]
        assert replayed[1]["transaction"] == transferred
        assert (_head(live), _balance(http, alice), _balance(http, bob)) == (
            before,
            "6.00",
            "3.00",
        )


def test_a_transfer_in_a_batch_of_a_write_key_is_forbidden_alone(
    live: Any, unique: Unique, poster: Poster
) -> None:
    alice, bob = unique("u"), unique("u")
    commands = [
        _command(
            unique, "recharge", user_id=alice, amount="10.00", currency="USD", gateway="paypal"
        ),
        _command(
            unique,
            "transfer",
            **_transfer(alice, (f"wallet:{alice}", "-1.00"), (f"wallet:{bob}", "1.00")),
        ),
        _command(unique, "recharge", user_id=bob, amount="2.00", currency="USD", gateway="paypal"),
    ]
    with live.client("read_write") as http:
        answered = poster(http, "/v1/batch", {"commands": commands})
        assert answered.status_code == 200, answered.text
        results = answered.json()["results"]
        assert [r["status"] for r in results] == [201, 403, 201]
        problem = results[1]["problem"]
        assert (problem["code"], problem["field"]) == ("forbidden", "Authorization")
        assert "transfers need the 'admin' scope" in problem["detail"]
        assert (_balance(http, alice), _balance(http, bob)) == ("10.00", "2.00")
    with live.client() as http:  # the same batch from an admin key: the transfer lands now
        again = poster(http, "/v1/batch", {"commands": commands}).json()["results"]
        assert [(r["status"], r["replayed"]) for r in again] == [
            (201, True),
            (201, False),
            (201, True),
        ]
        assert (_balance(http, alice), _balance(http, bob)) == ("9.00", "3.00")


def test_the_schema_documents_the_transfer_route(live: Any) -> None:
    with live.client(None) as http:
        schema = http.get("/openapi.json").json()
    post, components = schema["paths"]["/v1/transfers"]["post"], schema["components"]["schemas"]
    body = post["requestBody"]["content"]["application/json"]["schema"]
    assert body["$ref"].endswith("/TransferRequest")
    for model in ("TransferRequest", "TransferPostingRequest"):
        assert components[model]["additionalProperties"] is False, model
    assert set(components["TransferRequest"]["required"]) == {"user_id", "currency", "postings"}
    answer = post["responses"]["201"]["content"]["application/json"]["schema"]
    assert answer["$ref"].endswith("/Transaction")
    assert {"400", "403", "422"} <= set(post["responses"])
    assert "Idempotency-Key" in [parameter["name"] for parameter in post["parameters"]]
    assert "postings" not in components["Transaction"]["required"]
    assert "/Leg" in json.dumps(components["Transaction"]["properties"]["postings"])
    assert set(components["Leg"]["required"]) == {"account", "amount", "balance_after"}
    assert "BatchTransfer" in json.dumps(components["BatchRequest"])
    assert "idempotency_key" in components["BatchTransfer"]["required"]


# -- the SDKs ---------------------------------------------------------------------------------


def test_the_sdk_transfers_and_reads_the_postings(live: Any, unique: Unique) -> None:
    alice, bob, merchant = unique("u"), unique("u"), unique("m")
    postings = [
        TransferPosting(account=f"wallet:{alice}", amount=Decimal("-5.50")),
        TransferPosting(account=f"wallet:{bob}", amount="5.00"),
        TransferPosting(account=f"revenue:{merchant}", amount=Decimal("0.5")),
    ]
    with Client(live.url, live.keys["admin"]) as tally:
        tally.recharge(alice, "20.00", "USD", gateway="paypal")
        made = tally.transfer(alice, "USD", postings, reason="dinner", metadata={"bill": "b"})
        assert (made.event_type, made.amount, made.balance_after) == ("transfer", "-5.50", "14.50")
        assert made.metadata == {"bill": "b"}
        assert made.postings == [
            client_models.Leg(account=f"wallet:{alice}:USD", amount="-5.50", balance_after="14.50"),
            client_models.Leg(account=f"wallet:{bob}:USD", amount="5.00", balance_after="5.00"),
            client_models.Leg(
                account=f"revenue:{merchant}:USD", amount="0.50", balance_after="0.50"
            ),
        ]
        assert [(e.user_id, e.amount) for e in made.entries] == [(alice, "-5.50")]
        assert tally.transaction(made.transaction_id) == made
        (logged,) = tally.events(after_seq=made.seq - 1, limit=1).events
        assert (logged.event_type, logged.event["reason"]) == ("transfer", "dinner")
        assert [(leg["account"], leg["amount"]) for leg in logged.event["postings"]] == [
            (f"wallet:{alice}:USD", -550),
            (f"wallet:{bob}:USD", 500),
            (f"revenue:{merchant}:USD", 50),
        ]
        replayed = tally.transfer(
            alice,
            "USD",
            postings,
            reason="dinner",
            metadata={"bill": "b"},
            idempotency_key=made.idempotency_key,
        )
        assert (replayed.replayed, replayed.transaction_id) == (True, made.transaction_id)
        assert (tally.balances(alice).of("USD"), tally.balances(bob).of("USD")) == (
            Decimal("14.50"),
            Decimal("5.00"),
        )
        assert [line.user_id for line in tally.iter_statement(bob, "USD")] == [bob]

        with pytest.raises(Refused) as unbalanced:
            tally.transfer(alice, "USD", postings[:2])
        assert (unbalanced.value.code, unbalanced.value.field) == (
            "postings_unbalanced",
            "postings",
        )
        with pytest.raises(Refused) as poor:
            tally.transfer(
                alice,
                "USD",
                [
                    TransferPosting(account=f"wallet:{alice}", amount="-100"),
                    TransferPosting(account=f"wallet:{bob}", amount=100),
                ],
            )
        assert (poor.value.code, poor.value.field) == ("insufficient_funds", "postings[0].amount")
        with pytest.raises(InvalidRequest) as invalid:
            tally.transfer(alice, "USD", postings[:1])
        assert (invalid.value.code, invalid.value.field) == ("postings_invalid", "postings")
        with pytest.raises(TypeError):
            tally.transfer(
                alice,
                "USD",
                [
                    TransferPosting(account=f"wallet:{alice}", amount=-1.5),  # type: ignore[arg-type]
                    TransferPosting(account=f"wallet:{bob}", amount=1.5),  # type: ignore[arg-type]
                ],
            )

        results = tally.batch(
            [
                RechargeCommand(user_id=bob, amount="1.00", currency="USD", gateway="paypal"),
                TransferCommand(
                    user_id=bob,
                    currency="USD",
                    postings=(
                        TransferPosting(account=f"wallet:{bob}", amount="-6.00"),
                        TransferPosting(account=f"wallet:{alice}", amount="6.00"),
                    ),
                    reason="back",
                ),
                TransferCommand(
                    user_id=bob,
                    currency="USD",
                    postings=(
                        TransferPosting(account=f"wallet:{bob}", amount="-1.00"),
                        TransferPosting(account=f"wallet:{alice}", amount="1.00"),
                    ),
                ),
            ]
        )
        assert [r.status for r in results] == [201, 201, 422]
        transferred = results[1].transaction
        assert transferred is not None
        assert transferred.postings is not None
        assert [leg.balance_after for leg in transferred.postings] == ["0.00", "20.50"]
        assert results[2].problem is not None
        assert results[2].problem.code == "insufficient_funds"

    with Client(live.url, live.keys["read_write"]) as writer:
        with pytest.raises(Forbidden) as forbidden:
            writer.transfer(alice, "USD", postings)
        assert forbidden.value.code == "forbidden"
        (result,) = writer.batch(
            [TransferCommand(user_id=alice, currency="USD", postings=tuple(postings))]
        )
        assert (result.status, result.problem and result.problem.code) == (403, "forbidden")
        assert writer.balances(alice).of("USD") == Decimal("20.50")


def test_the_async_sdk_transfers(live: Any, unique: Unique) -> None:
    alice, bob = unique("u"), unique("u")

    async def journey() -> None:
        async with AsyncClient(live.url, live.keys["admin"]) as tally:
            await tally.recharge(alice, "10.00", "USD", gateway="paypal")
            made = await tally.transfer(
                alice,
                "USD",
                [
                    TransferPosting(account=f"wallet:{alice}", amount="-3.00"),
                    TransferPosting(account=f"wallet:{bob}", amount="3.00"),
                ],
                idempotency_key=f"{alice}-t",
            )
            assert [leg.balance_after for leg in made.postings or []] == ["7.00", "3.00"]
            assert (await tally.transaction(made.transaction_id)).postings == made.postings
            with pytest.raises(Refused) as unbalanced:
                await tally.transfer(
                    alice,
                    "USD",
                    [
                        TransferPosting(account=f"wallet:{alice}", amount="-3.00"),
                        TransferPosting(account=f"wallet:{bob}", amount="2.00"),
                    ],
                )
            assert unbalanced.value.code == "postings_unbalanced"
            (result,) = await tally.batch(
                [
                    TransferCommand(
                        user_id=alice,
                        currency="USD",
                        postings=(
                            TransferPosting(account=f"wallet:{bob}", amount="-1.00"),
                            TransferPosting(account=f"wallet:{alice}", amount="1.00"),
                        ),
                        metadata={"why": "change"},
                    )
                ]
            )
            assert result.transaction is not None
            assert result.transaction.metadata == {"why": "change"}
            assert (await tally.balances(alice)).of("USD") == Decimal("8.00")
            assert (await tally.balances(bob)).of("USD") == Decimal("2.00")
        async with AsyncClient(live.url, live.keys["write"]) as writer:
            with pytest.raises(Forbidden):
                await writer.transfer(
                    alice,
                    "USD",
                    [
                        TransferPosting(account=f"wallet:{alice}", amount="-1.00"),
                        TransferPosting(account=f"wallet:{bob}", amount="1.00"),
                    ],
                )

    asyncio.run(journey())


def test_the_sdk_sends_a_transfer_as_the_api_takes_it() -> None:
    sent: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append({"path": request.url.path, "body": msgspec.json.decode(request.content)})
        return httpx.Response(
            422,
            json={
                "type": "t",
                "title": "t",
                "status": 422,
                "detail": "d",
                "code": "postings_unbalanced",
                "field": "postings",
            },
        )

    postings = [
        TransferPosting(account="wallet:alice", amount=Decimal("-5.5")),
        TransferPosting(account="equity:promotions", amount=5),
    ]
    with Client("http://tally.test", "s", transport=httpx.MockTransport(handler)) as tally:
        with pytest.raises(Refused):
            tally.transfer("alice", "USD", postings)
        with pytest.raises(Refused):
            tally.transfer("alice", "USD", postings, reason="promo", metadata={"a": "b"})
    command = TransferCommand(
        user_id="alice", currency="USD", postings=tuple(postings), idempotency_key="k"
    )
    legs = [
        {"account": "wallet:alice", "amount": "-5.5"},
        {"account": "equity:promotions", "amount": "5"},
    ]
    assert [s["body"] for s in sent] == [
        {"user_id": "alice", "currency": "USD", "postings": legs},
        {
            "user_id": "alice",
            "currency": "USD",
            "postings": legs,
            "reason": "promo",
            "metadata": {"a": "b"},
        },
    ]
    assert {s["path"] for s in sent} == {"/v1/transfers"}
    assert command.to_json() == {
        "type": "transfer",
        "idempotency_key": "k",
        "user_id": "alice",
        "currency": "USD",
        "postings": legs,
    }


def test_the_sdk_reads_transactions_with_and_without_postings() -> None:
    assert set(client_models.Leg.__struct_fields__) == set(views.Leg.__struct_fields__)
    answer = {
        "transaction_id": "txn_1",
        "ledger": "shop",
        "seq": 1,
        "timestamp": "2026-01-01T00:00:00.000000Z",
        "user_id": "alice",
        "event_type": "recharge",
        "amount": "1.00",
        "currency": "USD",
        "balance_after": "1.00",
        "reference_order_ids": [],
        "metadata": {},
        "refund_of": None,
        "idempotency_key": "k",
        "actor": "key_1",
        "entries": [],
    }
    older = msgspec.json.decode(msgspec.json.encode(answer), type=Transaction)
    assert older.postings is None
    legs = [{"account": "wallet:alice:USD", "amount": "1.00", "balance_after": "1.00"}]
    newer = msgspec.json.decode(msgspec.json.encode({**answer, "postings": legs}), type=Transaction)
    assert newer.postings == [
        client_models.Leg(account="wallet:alice:USD", amount="1.00", balance_after="1.00")
    ]


# -- the direct path, and tally verify after -------------------------------------------------


@contextmanager
def _services(db: str) -> Iterator[tuple[Services, dict[str, str]]]:
    """Services on a fresh ledger "shop" of `db`, and the secrets of an admin and a write key
    (kept in the key cache, so the direct path answers their writes after their first)."""
    store = open_store(db)
    store.ensure_ledger("shop")
    store.close()
    services = open_services(db, key_cache_ttl_s=3600)
    secrets = {
        "admin": services.keys.create("shop", frozenset({Scope.ADMIN})).secret,
        "write": services.keys.create("shop", frozenset({Scope.WRITE})).secret,
    }
    try:
        yield services, secrets
    finally:
        services.engine.close()
        services.keys.close()
        services.engine.store.close()


_VOLATILE = {"transaction_id", "timestamp", "actor", "detail"}


def _scrub(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items() if k not in _VOLATILE}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def _transfer_requests(client: TestClient[Any], secrets: dict[str, str]) -> list[Any]:
    answers = []

    def post(path: str, body: Any, key: str, secret: str = "admin") -> None:
        headers = {"Authorization": f"Bearer {secrets[secret]}", "Idempotency-Key": key}
        response = client.post(path, json=body, headers=headers)
        answers.append(
            (
                response.status_code,
                response.headers.get("idempotent-replayed"),
                _scrub(response.json()),
            )
        )

    recharge = {"user_id": "ann", "amount": "50.00", "currency": "USD", "gateway": "paypal"}
    post("/v1/recharges", recharge, "r1")  # the key's first use: Litestar
    post("/v1/recharges", recharge, "r2", "write")
    split = _transfer(
        "ann", ("wallet:ann", "-20.00"), ("wallet:bo", "19.00"), ("revenue:m", "1.00")
    )
    post("/v1/transfers", split, "t1")
    post("/v1/transfers", split, "t1")  # replayed
    post("/v1/transfers", {**split, "reason": "other"}, "t1")  # the key reused
    post("/v1/transfers", split, "t2", "write")  # forbidden
    post("/v1/transfers", _transfer("ann", ("wallet:ann", "-1"), ("wallet:bo", "2")), "t3")
    post("/v1/transfers", _transfer("ann", ("wallet:ann", "-99"), ("wallet:bo", "99")), "t4")
    post("/v1/transfers", _transfer("ann", ("wallet:ann", "-1")), "t5")
    post("/v1/transfers", _transfer("ann", ("wallet:ann", "-1"), ("bo", "1")), "t6")
    post("/v1/transfers", {**split, "currency": "XYZ"}, "t7")
    post("/v1/transfers", _transfer("ann", ("wallet:ann", "-1.001"), ("wallet:bo", "1")), "t8")
    post("/v1/transfers", _transfer("ann", ("wallet:ann", "-0"), ("wallet:bo", "1")), "t9")
    post("/v1/transfers", {**split, "currency": 5}, "t10")
    batch = [
        {
            "type": "transfer",
            "idempotency_key": "b1",
            **_transfer("bo", ("wallet:bo", "-4"), ("wallet:ann", "4")),
        },
        {
            "type": "transfer",
            "idempotency_key": "b2",
            **_transfer("bo", ("wallet:bo", "-1"), ("wallet:ann", "2")),
        },
        {"type": "recharge", "idempotency_key": "b3", **recharge},
    ]
    post("/v1/batch", {"commands": batch}, "batch1")
    post("/v1/batch", {"commands": batch}, "batch2", "write")
    return answers


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_the_direct_path_answers_transfers_as_litestar_does(store: str, tmp_path: Path) -> None:
    answers, answered = [], []
    with (
        empty_database(store, tmp_path, "direct") as first,
        empty_database(store, tmp_path, "framework") as second,
    ):
        for db, direct in ((first, True), (second, False)):
            with _services(db) as (services, secrets):
                app: Any = create_app(services, direct_writes=direct)
                with TestClient(app) as client:
                    answers.append(_transfer_requests(client, secrets))
                answered.append(0 if app.direct is None else app.direct.answered)
            status, report = verify_cli(db, "shop")
            assert status == 0, report
    fast, slow = answers
    assert len(fast) == len(slow)
    for index, (mine, theirs) in enumerate(zip(fast, slow, strict=True)):
        assert mine == theirs, f"request {index}"
    # direct: the admin key's transfers after its first write (but those refused while the
    # body is converted: currency, precision, zero, which Litestar answers) and both batches
    assert answered == [9, 0]


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_tally_verify_passes_after_transfers_over_the_wire(store: str, tmp_path: Path) -> None:
    """Transfers of every shape, through a served app and the SDK, then `tally verify`
    (the auditor and a replay against the projections) on the same database."""
    with empty_database(store, tmp_path, "verified") as db:
        with (
            _services(db) as (services, secrets),
            served(create_app(services, release_expired_every_s=0)) as url,
            Client(url, secrets["admin"]) as tally,
        ):
            tally.recharge("ann", "30.00", "USD", gateway="paypal")
            tally.transfer(
                "ann",
                "USD",
                [
                    TransferPosting(account="wallet:ann", amount="-10.00"),
                    TransferPosting(account="wallet:bo", amount="7.00"),
                    TransferPosting(account="revenue:m-1", amount="2.00"),
                    TransferPosting(account="clearing:paypal", amount="0.50"),
                    TransferPosting(account="equity:fees", amount="0.50"),
                ],
                reason="split",
            )
            tally.transfer(
                "bo",
                "USD",
                [
                    TransferPosting(account="equity:promotions", amount="-5.00"),
                    TransferPosting(account="wallet:bo", amount="5.00"),
                ],
            )
            results = tally.batch(
                [
                    TransferCommand(
                        user_id="bo",
                        currency="USD",
                        postings=(
                            TransferPosting(account="wallet:bo", amount="-12.00"),
                            TransferPosting(account="wallet:ann", amount="12.00"),
                        ),
                    ),
                    TransferCommand(
                        user_id="bo",
                        currency="USD",
                        postings=(
                            TransferPosting(account="wallet:bo", amount="-0.01"),
                            TransferPosting(account="wallet:ann", amount="0.01"),
                        ),
                    ),
                ]
            )
            assert [r.status for r in results] == [201, 422]
            assert (tally.balances("ann").of("USD"), tally.balances("bo").of("USD")) == (
                Decimal("32.00"),
                Decimal("0.00"),
            )
        status, report = verify_cli(db, "shop")
    assert status == 0, report

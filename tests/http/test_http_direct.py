"""The writes' common case is answered beneath Litestar (tally.http.direct). It must answer
exactly as Litestar does: the same status, headers and body for every request, whether it
answered the request itself or handed it over, and it must never submit a command twice.

Each test runs the same requests against two apps over two fresh databases of the same kind,
one with the direct path and one without, and compares the answers field by field (ids,
times, hashes and key ids differ between two databases and are left out)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from litestar.testing import TestClient

from pg import empty_database
from tally.api_keys import Scope
from tally.bootstrap import open_store
from tally.http.app import create_app
from tally.http.compose import open_services
from tally.http.direct import DirectWrites

VOLATILE = {"transaction_id", "timestamp", "actor", "expense_id"}
SKIPPED_HEADERS = {"date"}


@contextmanager
def _client(db: str, *, direct: bool) -> Iterator[tuple[TestClient[Any], dict[str, str], Any]]:
    store = open_store(db)
    store.ensure_ledger("shop")
    store.close()
    # Keys stay cached for the whole test, however slow the machine: what the direct path
    # answers depends on it.
    services = open_services(db, key_cache_ttl_s=3600)
    secrets = {
        name: services.keys.create("shop", frozenset(scopes)).secret
        for name, scopes in {"admin": (Scope.ADMIN,), "write": (Scope.WRITE,)}.items()
    }
    app = create_app(services, direct_writes=direct)
    with TestClient(app) as client:
        yield client, secrets, app


def _scrub(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def _answer(response: Any) -> tuple[int, list[tuple[str, str]], Any]:
    headers = sorted(
        (name.lower(), value if name.lower() != "content-length" else "n")
        for name, value in response.headers.items()
        if name.lower() not in SKIPPED_HEADERS
    )
    return response.status_code, headers, _scrub(response.json())


def _journey(client: TestClient[Any], secrets: dict[str, str]) -> list[Any]:
    """Every kind of write, accepted, replayed and refused, through the direct path's
    common case and past its edges."""
    answers: list[Any] = []

    def post(
        path: str,
        body: Any,
        key: str | None = "k",
        *,
        who: str = "write",
        raw: bytes | None = None,
        content_type: str = "application/json",
    ) -> Any:
        headers = {"Authorization": f"Bearer {secrets[who]}", "Content-Type": content_type}
        if key is not None:
            headers["Idempotency-Key"] = key
        data = raw if raw is not None else json.dumps(body).encode()
        response = client.post(path, content=data, headers=headers)
        answers.append(_answer(response))
        return response.json()

    def recharge(user: str, amount: str) -> dict[str, Any]:
        return {"user_id": user, "amount": amount, "currency": "USD", "gateway": "paypal"}

    def expense(user: str, order: str, amount: str) -> dict[str, Any]:
        return {
            "user_id": user,
            "currency": "USD",
            "orders": [{"order_id": order, "amount": amount, "merchant_id": "shop1"}],
        }

    post("/v1/recharges", recharge("ann", "100.00"), "r1")  # the first lookup: Litestar
    post("/v1/recharges", recharge("ann", "100.00"), "r1")  # replayed
    post("/v1/recharges", recharge("ann", "999.00"), "r1")  # key reused: 422
    paid = post("/v1/expenses", expense("ann", "o1", "30.00"), "e1")
    post("/v1/expenses", expense("ann", "o2", "500.00"), "e2")  # insufficient funds
    post("/v1/expenses", expense("ann", "o1", "1.00"), "e3")  # order already paid
    refund = {"expense_id": paid["transaction_id"], "order_id": "o1", "amount": "10.00"}
    post("/v1/refunds", refund, "f1")
    post("/v1/refunds", {**refund, "amount": "25.00"}, "f2")  # beyond what is refundable
    post("/v1/refunds", {**refund, "expense_id": "txn_nope"}, "f3")  # unknown: Litestar's
    adjustment = {"user_id": "ann", "amount": "-1.00", "currency": "USD", "reason": "fee"}
    post("/v1/adjustments", adjustment, "a1", who="admin")
    post("/v1/adjustments", adjustment, "a2")  # the write scope is not enough
    batch = {
        "commands": [
            {"type": "recharge", "idempotency_key": "b1", **recharge("bob", "5.00")},
            {"type": "expense", "idempotency_key": "b2", **expense("bob", "o3", "9.00")},
            {"type": "refund", "idempotency_key": "b3", **refund, "amount": "1.00"},
            {"type": "adjustment", "idempotency_key": "b4", **adjustment},
        ]
    }
    post("/v1/batch", batch, "batch1")
    post("/v1/expenses", {**expense("ann", "o4", "1.00"), "extra": 1}, "e4")  # unknown field
    post("/v1/expenses", expense("ann", "o5", "1.001"), "e5")  # too many decimals
    post("/v1/expenses", expense("ann", "o6", "1.00"), None)  # no Idempotency-Key
    post("/v1/expenses", None, "e7", raw=b'{"user_id": "ann"')  # malformed JSON
    post("/v1/expenses", None, "e7b", raw=b'{"user_id": "a\xffnn"}')  # a string not UTF-8
    bad_metadata = {"type": "recharge", "idempotency_key": "b5", "metadata": {"k": 5}}
    post("/v1/batch", {"commands": [{**bad_metadata, **recharge("bob", "1.00")}]}, "batch2")
    post("/v1/expenses", expense("ann", "o8", "1.00"), "e8", content_type="text/plain")
    post("/v1/expenses", expense("ann", "o9", "1.00"), "x" * 256)  # key too long
    post("/v1/expenses", expense("ann", "o10", "2.00"), "e10")

    def get(query: str, user: str = "ann", who: str = "admin") -> Any:
        response = client.get(
            f"/v1/users/{user}/statement{query}",
            headers={"Authorization": f"Bearer {secrets[who]}"},
        )
        answers.append(_answer(response))
        return response.json()

    first = get("?currency=USD&limit=2")
    get(f"?currency=USD&limit=2&cursor={first['next_cursor']}")
    get("?currency=USD")
    get("?currency=USD&limit=1000")
    get("?currency=USD", user="nobody")  # no lines
    get("?currency=XYZ")  # unknown currency: Litestar's
    get("?currency=USD&limit=0")  # out of range: Litestar's
    get("?currency=USD&limit=05")
    get("?currency=USD&cursor=nonsense")  # a cursor that does not decode
    get("?currency=USD&from=2026-01-01T00:00:00Z")  # time bounds: Litestar's
    get("?currency=USD&currency=EUR")  # repeated
    get("?currency=USD&color=red")  # unknown parameter
    get("?currency=USD", who="write")  # no read scope
    return answers


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_the_direct_path_answers_exactly_as_litestar(store: str, tmp_path: Any) -> None:
    def database(name: str) -> Any:
        return empty_database(store, tmp_path, name)

    with database("direct") as first, database("framework") as second:
        with _client(first, direct=True) as (client, secrets, app):
            fast = _journey(client, secrets)
            direct: DirectWrites = app.direct
            metrics = client.get("/metrics").text
        with _client(second, direct=False) as (client, secrets, app):
            slow = _journey(client, secrets)
            assert app.direct is None
    assert len(fast) == len(slow)
    for index, (mine, theirs) in enumerate(zip(fast, slow, strict=True)):
        assert mine == theirs, f"request {index}"
    # Answered directly: r1's replay and reuse, e1-e3, f1, f2, the batch and e10. Litestar
    # answered the rest: each key's first use (not cached yet), the unknown expense, the
    # missing scope and the malformed requests. All are counted under their route.
    assert direct.answered == 9
    # Statement pages answered directly: the four well-formed ones with the admin key (its
    # first use was a write, so it is cached) and the empty one.
    assert direct.statements == 5
    assert 'tally_http_requests_total{method="POST",route="/v1/expenses",status="201"}' in metrics


def test_a_write_handed_to_litestar_is_submitted_once(tmp_path: Any) -> None:
    """A body the direct path reads and then hands over reaches Litestar whole."""
    with _client(str(tmp_path / "once.db"), direct=True) as (client, secrets, app):
        headers = {
            "Authorization": f"Bearer {secrets['write']}",
            "Content-Type": "application/json",
        }
        body = {"user_id": "cy", "amount": "7.00", "currency": "USD", "gateway": "paypal"}
        first = client.post("/v1/recharges", json=body, headers={**headers, "Idempotency-Key": "1"})
        assert first.status_code == 201
        before = app.direct.answered
        unknown = client.post(
            "/v1/recharges",
            json={**body, "color": "red"},
            headers={**headers, "Idempotency-Key": "2"},
        )
        assert unknown.status_code == 400
        assert unknown.json()["code"] == "field_unknown"
        assert app.direct.answered == before  # handed over, answered by Litestar
        again = client.post("/v1/recharges", json=body, headers={**headers, "Idempotency-Key": "3"})
        assert again.status_code == 201
        assert app.direct.answered == before + 1
        balance = client.get("/v1/users/cy/balances", headers=headers)
        assert balance.status_code in (200, 403)
        ledger = app.direct.services.engine.writer("shop").state
        assert ledger.balance("wallet:cy:USD") == 1400
        assert ledger.seq == 2


def test_the_state_folded_at_start_is_kept_out_of_the_collector(tmp_path: Any) -> None:
    """`tally serve` freezes what it folded from the log before serving (gc.freeze), so a
    full collection never walks the ledger's state in the middle of a request."""
    import gc

    db = str(tmp_path / "frozen.db")
    with _client(db, direct=True) as (client, secrets, _):
        headers = {"Authorization": f"Bearer {secrets['write']}", "Idempotency-Key": "r"}
        body = {"user_id": "dee", "amount": "1.00", "currency": "USD", "gateway": "paypal"}
        assert client.post("/v1/recharges", json=body, headers=headers).status_code == 201
    gc.unfreeze()
    try:
        with _client(db, direct=True):  # starts again: catches up with the log, then freezes
            assert gc.get_freeze_count() > 0
            assert gc.isenabled()  # off only while the log was folded
    finally:
        gc.unfreeze()


# -- inputs that once broke the direct path, or answered there other than in Litestar -------

_Requests = Callable[[TestClient[Any], dict[str, str]], list[Any]]


@dataclass(frozen=True, slots=True, kw_only=True)
class _BothPaths:
    answers: list[Any]  # the same with the direct path and without it
    direct: DirectWrites
    metrics: str  # the direct app's, after the requests


def _on_both_paths(store: str, tmp_path: Any, requests: _Requests) -> _BothPaths:
    """Run `requests` against an app with the direct path and one without, each over a fresh
    database of `store`, once both keys are cached and the writer runs (so the direct path
    takes what it can)."""
    answers = []
    with (
        empty_database(store, tmp_path, "direct") as first,
        empty_database(store, tmp_path, "framework") as second,
    ):
        for db, direct_writes in ((first, True), (second, False)):
            with _client(db, direct=direct_writes) as (client, secrets, app):
                for who in ("write", "admin"):
                    warm = client.post(
                        "/v1/recharges",
                        json={
                            "user_id": "warm",
                            "amount": "100.00",
                            "currency": "USD",
                            "gateway": "paypal",
                        },
                        headers={
                            "Authorization": f"Bearer {secrets[who]}",
                            "Idempotency-Key": f"warm-{who}",
                        },
                    )
                    assert warm.status_code == 201
                answers.append(requests(client, secrets))
                if direct_writes:
                    direct, metrics = app.direct, client.get("/metrics").text
    fast, slow = answers
    assert len(fast) == len(slow)
    for index, (mine, theirs) in enumerate(zip(fast, slow, strict=True)):
        assert mine == theirs, f"request {index}"
    return _BothPaths(answers=fast, direct=direct, metrics=metrics)


def _post(
    client: TestClient[Any], secrets: dict[str, str], path: str, body: bytes, key: str
) -> Any:
    headers = {  # bytes: httpx would encode a str header as ASCII, and `key` may be latin-1
        b"authorization": f"Bearer {secrets['write']}".encode(),
        b"content-type": b"application/json",
        b"idempotency-key": key.encode("latin-1"),
    }
    return _answer(client.post(path, content=body, headers=headers))


NESTING = 3000  # far beyond what the decoder recurses into
DEEP_BATCH = b'{"commands":[{"x":' + b"[" * NESTING + b"]" * NESTING + b',"type":"recharge"}]}'
DEEP_METADATA = (
    b'{"user_id":"a","amount":"1.00","currency":"USD","gateway":"g","metadata":'
    + b'{"a":' * NESTING
    + b'"x"'
    + b"}" * NESTING
    + b"}"
)


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_json_nested_too_deeply_is_malformed_and_counted_on_both_paths(
    store: str, tmp_path: Any
) -> None:
    def requests(client: TestClient[Any], secrets: dict[str, str]) -> list[Any]:
        return [
            _post(client, secrets, "/v1/batch", DEEP_BATCH, "deep-batch"),
            _post(client, secrets, "/v1/recharges", DEEP_METADATA, "deep-metadata"),
        ]

    both = _on_both_paths(store, tmp_path, requests)
    for status, headers, body in both.answers:
        assert status == 400
        assert ("content-type", "application/problem+json") in headers
        assert (body["code"], body["field"]) == ("json_malformed", None)
    for route in ("/v1/batch", "/v1/recharges"):
        counted = f'tally_http_requests_total{{method="POST",route="{route}",status="400"}} 1.0'
        assert counted in both.metrics


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_a_statement_limit_of_non_ascii_digits_is_refused_on_both_paths(
    store: str, tmp_path: Any
) -> None:
    limits = ["\u00b2", "\u0661\u0660", "\uff11", "9" * 5000]  # '²', Arabic-Indic 10, full-width 1

    def requests(client: TestClient[Any], secrets: dict[str, str]) -> list[Any]:
        return [
            _answer(
                client.get(
                    "/v1/users/warm/statement",
                    params={"currency": "USD", "limit": limit},
                    headers={"Authorization": f"Bearer {secrets['admin']}"},
                )
            )
            for limit in limits
        ]

    both = _on_both_paths(store, tmp_path, requests)
    for status, _, body in both.answers:
        assert (status, body["code"], body["field"]) == (400, "parameter_invalid", "limit")
    assert both.direct.statements == 0


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_a_bad_idempotency_key_header_names_the_header_on_both_paths(
    store: str, tmp_path: Any
) -> None:
    """A batch's header key is checked as a single write's is (a batch's once was only for
    its length): the same problem, and nothing of the request written. In process, so that
    control characters an HTTP/1.1 parser would refuse reach the app."""
    recharge = b'{"user_id":"a","amount":"1.00","currency":"USD","gateway":"g"}'
    batch = b'{"commands":[{"type":"recharge","idempotency_key":"b1",' + recharge[1:] + b"]}"
    refused = ["", "x" * 256, "a\tb", "a\x7fb", "\x7f", "a\x00b", "a\x1bb", "a\x85b", "a\xa0b"]
    cases = [
        (path, body, key)
        for key in refused
        for path, body in [("/v1/recharges", recharge), ("/v1/batch", batch)]
    ]

    def requests(client: TestClient[Any], secrets: dict[str, str]) -> list[Any]:
        answers = [_post(client, secrets, path, body, key) for path, body, key in cases]
        balances = client.get(
            "/v1/users/a/balances", headers={"Authorization": f"Bearer {secrets['admin']}"}
        )
        return [*answers, _answer(balances)]

    both = _on_both_paths(store, tmp_path, requests)
    *answers, (_, _, balances) = both.answers
    for (status, headers, body), (path, _, key) in zip(answers, cases, strict=True):
        code = "idempotency_key_missing" if key == "" else "idempotency_key_invalid"
        assert (status, body["code"], body["field"]) == (400, code, "Idempotency-Key"), (path, key)
        assert ("content-type", "application/problem+json") in headers
    assert balances == {"user_id": "a", "balances": []}  # nothing of any of them was written
    # The direct path refused itself the keys of the right length: both routes, seven keys.
    assert both.direct.answered == 2 * 7


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_a_refund_of_an_expense_id_that_is_no_identifier_is_unknown_on_both_paths(
    store: str, tmp_path: Any
) -> None:
    """Such an id is never looked up in the log (PostgreSQL refuses a NUL in a text)."""
    refund = {"order_id": "o", "amount": "1.00"}
    recharge = {
        "type": "recharge",
        "idempotency_key": "b1",
        "user_id": "a",
        "amount": "1.00",
        "currency": "USD",
        "gateway": "paypal",
    }
    batch = {
        "commands": [
            recharge,
            {"type": "refund", "idempotency_key": "b2", "expense_id": "txn\u0000x", **refund},
        ]
    }

    def requests(client: TestClient[Any], secrets: dict[str, str]) -> list[Any]:
        single = json.dumps({"expense_id": "txn\u0000x", **refund}).encode()
        return [
            _post(client, secrets, "/v1/refunds", single, "nul"),
            _post(client, secrets, "/v1/batch", json.dumps(batch).encode(), "nul-batch"),
        ]

    both = _on_both_paths(store, tmp_path, requests)
    (status, _, body), (batch_status, _, answered) = both.answers
    assert (status, body["code"], body["field"]) == (404, "expense_unknown", "expense_id")
    assert batch_status == 200
    first, second = answered["results"]
    assert first["status"] == 201
    assert (second["status"], second["problem"]["code"]) == (404, "expense_unknown")

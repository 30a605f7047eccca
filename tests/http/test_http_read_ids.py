"""A path id that is no identifier (`tally.domain.accounts.is_identifier`) names nothing: every
read answers it without a query, the same from both stores. PostgreSQL refuses a text holding
NUL, so such an id once reached asyncpg there and was answered 500 (SQLite looked it up).

- a transaction or an order: 404 `not_found`, naming `transaction_id` or `order_id`;
- a user's balances or statement: 400 `identifier_invalid` naming `user_id`, the very problem
  a write with that `user_id` gets (it once was an empty 200), once the statement's own
  parameters have passed. A well-formed user id nobody has used is still an empty 200."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from litestar.testing import TestClient

from pg import empty_database
from tally.api_keys import Scope
from tally.bootstrap import open_store
from tally.http.app import create_app
from tally.http.compose import open_services
from tally.http.direct import DirectWrites

pytest_plugins = ["http_fixtures"]

Poster = Callable[..., httpx.Response]

NUL = "a\u0000b"
NOT_IDENTIFIERS = [
    NUL,
    "\u0000",
    "txn_\u0000",
    "a b",  # a space
    "wallet:a",  # a colon: it would split an account id
    "-a",  # not a letter or digit first
    "x" * 129,  # one longer than the longest
    "caf\u00e9",  # not ASCII
]
# The store's reads that take an id from the path, and those a bounded statement starts with;
# PostgreSQL reads balances, unbounded statement pages, transactions, orders and the log on
# the server's loop (`LoopReads`).
LOOKUPS = (
    "account_balances",
    "account_balances_on_loop",
    "statement",
    "statement_on_loop",
    "event_by_transaction",
    "event_by_transaction_on_loop",
    "order",
    "order_on_loop",
    "order_events",
    "order_events_on_loop",
    "head",
    "events",
    "events_on_loop",
)
PROBLEM_JSON = "application/problem+json"


def _path(value: str) -> str:
    return quote(value, safe="")


@pytest.fixture
def lookups(live: Any, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the store reads made while the test runs (the server is otherwise idle)."""
    store = live.services.engine.store
    made: list[str] = []
    for name in LOOKUPS:
        method = getattr(store, name, None)
        if method is None:  # a read this store does not have
            continue

        def spy(*args: Any, _name: str = name, _method: Any = method, **kwargs: Any) -> Any:
            made.append(_name)
            return _method(*args, **kwargs)

        monkeypatch.setattr(store, name, spy)
    return made


@pytest.mark.parametrize("value", NOT_IDENTIFIERS)
@pytest.mark.parametrize(
    ("route", "field"), [("transactions", "transaction_id"), ("orders", "order_id")]
)
def test_a_transaction_or_order_id_that_is_no_identifier_is_not_found_unread(
    live: Any, lookups: list[str], route: str, field: str, value: str
) -> None:
    with live.client("read") as http:
        response = http.get(f"/v1/{route}/{_path(value)}")
    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert (body["code"], body["field"]) == ("not_found", field)
    assert value in body["detail"]
    assert lookups == []


USER_ID_REFUSED = {
    "type": "urn:tally:problem:identifier_invalid",
    "title": "Bad Request",
    "status": 400,
    "detail": "must be 1 to 128 of A-Z a-z 0-9 _ . @ -, starting with a letter or digit",
    "code": "identifier_invalid",
    "field": "user_id",
}


@pytest.mark.parametrize("value", NOT_IDENTIFIERS)
def test_a_user_id_that_is_no_identifier_is_refused_as_a_write_refuses_it_unread(
    live: Any, lookups: list[str], poster: Poster, value: str
) -> None:
    user = _path(value)
    with live.client("read_write") as http:
        recharge = {"user_id": value, "amount": "1.00", "currency": "USD", "gateway": "paypal"}
        written = poster(http, "/v1/recharges", recharge)
        lookups.clear()  # the write's own reads are not what this test is about
        balances = http.get(f"/v1/users/{user}/balances")
        pages = [
            http.get(f"/v1/users/{user}/statement", params=params)
            for params in (
                {"currency": "USD"},
                {"currency": "JPY", "limit": "1"},
                {"currency": "USD", "cursor": "MS4w"},
                {"currency": "USD", "from": "2020-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"},
            )
        ]
    assert (written.status_code, written.json()) == (400, USER_ID_REFUSED)
    for response in [balances, *pages]:
        assert response.status_code == 400
        assert response.headers["content-type"] == PROBLEM_JSON
        assert response.json() == USER_ID_REFUSED
    assert lookups == []


def test_a_well_formed_user_id_nobody_used_has_no_activity(
    live: Any, unique: Callable[[str], str]
) -> None:
    user = unique("nobody")
    with live.client("read") as http:
        balances = http.get(f"/v1/users/{user}/balances")
        page = http.get(f"/v1/users/{user}/statement", params={"currency": "USD"})
    assert (balances.status_code, balances.json()) == (200, {"user_id": user, "balances": []})
    assert (page.status_code, page.json()) == (200, {"entries": [], "next_cursor": None})


STATEMENT_PARAMETERS_REFUSED: list[tuple[dict[str, str], str, str]] = [
    ({"currency": "US\u0000"}, "currency_unknown", "currency"),
    ({"currency": "\u0000\u0000\u0000"}, "currency_unknown", "currency"),
    ({"currency": "\u0000"}, "parameter_invalid", "currency"),  # not three characters
    ({"currency": "USD", "cursor": "\u0000"}, "cursor_invalid", "cursor"),
    ({"currency": "USD", "cursor": "MS4w\u0000"}, "cursor_invalid", "cursor"),
    ({"currency": "USD", "from": "2026-01-01T00:00:00Z\u0000"}, "parameter_invalid", "from"),
    ({"currency": "USD", "to": "\u0000"}, "parameter_invalid", "to"),
    ({"currency": "USD", "to": "2026-01-01T00:00:00Z\u0000x"}, "parameter_invalid", "to"),
    ({"currency": "USD", "limit": "1\u0000"}, "parameter_invalid", "limit"),
]


@pytest.mark.parametrize("user", ["alice", NUL, "a b"])
@pytest.mark.parametrize(("params", "code", "field"), STATEMENT_PARAMETERS_REFUSED)
def test_statement_parameters_holding_nul_are_refused_unread(
    live: Any, lookups: list[str], user: str, params: dict[str, str], code: str, field: str
) -> None:
    """The statement's own parameters are checked first, whatever the user id."""
    with live.client("read") as http:
        response = http.get(f"/v1/users/{_path(user)}/statement", params=params)
    assert response.status_code == 400
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert (body["code"], body["field"]) == (code, field)
    assert lookups == []


@pytest.mark.parametrize(
    "params", [{"after_seq": "1\u0000"}, {"after_seq": "\u0000"}, {"limit": "\u0000"}]
)
def test_event_feed_parameters_holding_nul_are_refused_unread(
    live: Any, lookups: list[str], params: dict[str, str]
) -> None:
    (field,) = params
    with live.client("read") as http:
        response = http.get("/v1/events", params=params)
    assert response.status_code == 400
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert (body["code"], body["field"]) == ("parameter_invalid", field)
    assert lookups == []


def test_ids_that_are_identifiers_are_still_looked_up(
    live: Any, unique: Callable[[str], str], poster: Poster, lookups: list[str]
) -> None:
    user, order = unique("u"), unique("o")
    with live.client() as http:
        recharge = {"user_id": user, "amount": "9.00", "currency": "USD", "gateway": "paypal"}
        assert poster(http, "/v1/recharges", recharge).status_code == 201
        paid = poster(
            http,
            "/v1/expenses",
            {"user_id": user, "currency": "USD", "orders": [{"order_id": order, "amount": "2.00"}]},
        )
        assert paid.status_code == 201
    transaction_id = paid.json()["transaction_id"]
    postgresql = live.db.startswith("postgresql://")
    made: dict[str, list[str]] = {}  # request -> the store reads it made, in order

    def get(name: str, path: str, **params: str) -> Any:
        lookups.clear()
        with live.client("read") as http:
            response = http.get(path, params=params)
        made[name] = list(lookups)
        return response

    balances = get("balances", f"/v1/users/{user}/balances")
    statement = get("statement", f"/v1/users/{user}/statement", currency="USD")
    bounded = get(
        "bounded", f"/v1/users/{user}/statement", currency="USD", **{"from": "2020-01-01T00:00:00Z"}
    )
    transaction = get("transaction", f"/v1/transactions/{transaction_id}")
    found = get("order", f"/v1/orders/{order}")
    unknown = get("unknown", f"/v1/transactions/txn_{'0' * 32}")
    events = get("events", "/v1/events", after_seq="0", limit="1")
    assert balances.status_code == 200
    assert balances.json() == {
        "user_id": user,
        "balances": [{"currency": "USD", "balance": "7.00"}],
    }
    assert statement.status_code == 200
    assert [line["balance_after"] for line in statement.json()["entries"]] == ["9.00", "7.00"]
    assert bounded.json() == statement.json()
    assert (transaction.status_code, transaction.json()["transaction_id"]) == (200, transaction_id)
    assert (found.status_code, found.json()["order_id"]) == (200, order)
    assert (unknown.status_code, unknown.json()["code"]) == (404, "not_found")
    assert (events.status_code, len(events.json()["events"])) == (200, 1)
    # A bounded page searches the log through the store's thread on every store; the reads
    # of the routes are on the server's loop on PostgreSQL (each route only there), else
    # through it.
    loop = "_on_loop" if postgresql else ""
    assert made["bounded"][:2] == ["head", "events"]  # the search's first probes
    assert set(made["bounded"][2:-1]) <= {"events"}
    assert made["bounded"][-1] == f"statement{loop}"  # then the page
    assert made["balances"] == [f"account_balances{loop}"]
    assert made["statement"] == [f"statement{loop}"]
    assert made["transaction"] == [f"event_by_transaction{loop}"]  # (entries_of: not spied)
    assert made["unknown"] == [f"event_by_transaction{loop}"]
    assert made["order"] == [f"order{loop}", f"order_events{loop}"]
    assert made["events"] == [f"events{loop}"]


# -- the statement's direct path (tally.http.direct) answers as Litestar does -------------
STATEMENT_VOLATILE = {"transaction_id", "timestamp"}


def _statements(db: str, *, direct: bool) -> tuple[list[Any], list[str], DirectWrites | None]:
    """The answers to statement requests of user ids that are and are not identifiers, from an
    app over `db` with or without the direct path; the store reads made for the ones that are
    not; and the app's direct path."""
    store = open_store(db)
    store.ensure_ledger("shop")
    store.close()
    services = open_services(db, key_cache_ttl_s=3600)  # cached however slow the machine
    secret = services.keys.create("shop", frozenset({Scope.ADMIN})).secret
    headers = {"Authorization": f"Bearer {secret}"}
    app: Any = create_app(services, direct_writes=direct)  # its `direct`: the direct path
    answers: list[Any] = []
    made: list[str] = []
    with TestClient(app) as client, pytest.MonkeyPatch.context() as monkeypatch:
        recharge = {"user_id": "ann", "amount": "5.00", "currency": "USD", "gateway": "paypal"}
        written = client.post(
            "/v1/recharges", json=recharge, headers={**headers, "Idempotency-Key": "r1"}
        )
        assert written.status_code == 201  # the key is cached from here on

        def get(user: str, query: str) -> None:
            response = client.get(f"/v1/users/{_path(user)}/statement{query}", headers=headers)
            body = response.json()
            if response.status_code == 200:
                body["entries"] = [
                    {k: v for k, v in line.items() if k not in STATEMENT_VOLATILE}
                    for line in body["entries"]
                ]
            answers.append((response.status_code, response.headers["content-type"], body))

        get("ann", "?currency=USD")
        get("nobody", "?currency=USD")
        for name in LOOKUPS:
            method = getattr(services.engine.store, name, None)
            if method is None:  # a read this store does not have
                continue

            def spy(*args: Any, _name: str = name, _method: Any = method, **kwargs: Any) -> Any:
                made.append(_name)
                return _method(*args, **kwargs)

            monkeypatch.setattr(services.engine.store, name, spy)
        for user in NOT_IDENTIFIERS:
            get(user, "?currency=USD")
            get(user, "?currency=USD&limit=1&cursor=MS4w")
            get(user, "?currency=US%00")  # the currency's problem first
            get(user, "?currency=USD&cursor=%00")  # the cursor's problem first
    return answers, made, app.direct


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_the_direct_statement_path_answers_ids_that_are_no_identifiers_as_litestar(
    store: str, tmp_path: Any
) -> None:
    with (
        empty_database(store, tmp_path, "direct") as first,
        empty_database(store, tmp_path, "framework") as second,
    ):
        fast, fast_lookups, direct = _statements(first, direct=True)
        slow, slow_lookups, _ = _statements(second, direct=False)
    assert len(fast) == len(slow)
    for index, (mine, theirs) in enumerate(zip(fast, slow, strict=True)):
        assert mine == theirs, f"request {index}"
    assert (fast_lookups, slow_lookups) == ([], [])
    (status, _, ann), (_, _, nobody), *unread = fast
    assert status == 200
    assert [line["balance_after"] for line in ann["entries"]] == ["5.00"]
    assert nobody == {"entries": [], "next_cursor": None}
    refusals = [(answer[0], answer[2]["code"], answer[2]["field"]) for answer in unread]
    assert refusals == [
        (400, "identifier_invalid", "user_id"),
        (400, "identifier_invalid", "user_id"),
        (400, "currency_unknown", "currency"),  # the statement's parameters first
        (400, "cursor_invalid", "cursor"),
    ] * len(NOT_IDENTIFIERS)
    assert all(answer[1] == PROBLEM_JSON for answer in unread)
    assert direct is not None
    # It answers the requests whose parameters are valid itself: the two users' pages, and the
    # two refusals of each id that is no identifier.
    assert direct.statements == 2 + 2 * len(NOT_IDENTIFIERS)

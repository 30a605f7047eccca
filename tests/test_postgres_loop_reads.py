"""The reads of the GET routes on the caller's own event loop (`LoopReads`, PostgreSQL).

A server reads statement pages, balances, transactions, orders and the log on its loop, on a
pool of that loop's opened at its start and closed at its shutdown, instead of through the
store's thread. The rows must be the very rows the `Store` methods read, and every route's
answers the same either way; a server whose pool could not open, or a loop that never opened
one (an app run without its lifespan), reads through the store's thread and leaves no
connection behind.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest
from litestar.testing import TestClient

from pg import fresh_database
from rawdb import RawDb, tamper
from tally.api_keys import Scope
from tally.bootstrap import open_store
from tally.domain.commands import Envelope, Expense, OrderLine, Recharge, Refund
from tally.engine.engine import Engine
from tally.engine.ports import AccountRow
from tally.engine.results import Committed
from tally.http.app import create_app
from tally.http.compose import open_services
from tally.store.postgres import PostgresStore

LEDGER = "loop"
WALLET = "wallet:alice:USD"
T = TypeVar("T")


@pytest.fixture
def db() -> Iterator[str]:
    """PostgreSQL only (the loop's reads are asyncpg's), for conftest's `engine`."""
    with fresh_database() as url:
        yield url


def _store(engine: Engine) -> PostgresStore:
    assert isinstance(engine.store, PostgresStore)
    return engine.store


def _on_a_loop(store: PostgresStore, read: Callable[[], Awaitable[T]]) -> T:
    """`read` on a loop of its own, whose pool is opened first and closed before the loop
    ends."""

    async def run() -> T:
        assert await store.open_loop_reads()
        try:
            return await read()
        finally:
            await store.close_loop_reads()

    return asyncio.run(run())


def _connections(store: PostgresStore) -> int:
    (row,) = store.rows("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
    return int(row[0])


def _shop(engine: Engine) -> tuple[Committed, Committed]:
    """30 recharges of alice's, an expense of two orders, a refund of the second: the
    expense and the refund."""
    engine.execute_many(
        LEDGER,
        [
            Envelope(
                idempotency_key=f"r-{i}",
                command=Recharge(user_id="alice", amount=500, currency="USD", gateway="pp"),
            )
            for i in range(30)
        ],
    )
    paid = engine.execute(
        LEDGER,
        Envelope(
            idempotency_key="e-1",
            command=Expense(
                user_id="alice",
                currency="USD",
                orders=(
                    OrderLine(order_id="o-1", amount=700, merchant_id="m1"),
                    OrderLine(order_id="o-2", amount=300, merchant_id="m2"),
                ),
            ),
        ),
    )
    assert isinstance(paid, Committed)
    refunded = engine.execute(
        LEDGER,
        Envelope(
            idempotency_key="f-1",
            command=Refund(
                expense_id=paid.event.transaction_id,
                order_id="o-2",
                amount=100,
                currency="USD",
            ),
        ),
    )
    assert isinstance(refunded, Committed)
    return paid, refunded


def test_a_page_read_on_the_loop_is_the_page_the_store_reads(engine: Engine) -> None:
    _shop(engine)
    store = _store(engine)
    cursors = [(0, 2**31 - 1), (10, 1), (30, 0), (31, 0), (31, 3), (32, 9), (40, 0)]

    async def pages() -> list[object]:
        return [
            await store.statement_on_loop(LEDGER, WALLET, after=after, limit=limit)
            for after in cursors
            for limit in (1, 7, 100)
        ]

    expected = [
        store.statement(LEDGER, WALLET, after=after, limit=limit)
        for after in cursors
        for limit in (1, 7, 100)
    ]
    assert _on_a_loop(store, pages) == expected
    full = store.statement(LEDGER, WALLET, after=(0, 2**31 - 1), limit=100)
    # 30 recharges, the expense's two wallet lines (one per order), the refund's line.
    assert [(line.seq, line.posting_index, line.order_id) for line, _ in full[-3:]] == [
        (31, 0, "o-1"),
        (31, 2, "o-2"),
        (32, 1, "o-2"),
    ]


def test_balances_read_on_the_loop_are_the_balances_the_store_reads(engine: Engine) -> None:
    engine.execute_many(
        LEDGER,
        [
            Envelope(
                idempotency_key=f"r-{currency}",
                command=Recharge(user_id="alice", amount=700, currency=currency, gateway="pp"),
            )
            for currency in ("USD", "EUR", "JPY")
        ],
    )
    store = _store(engine)
    owners = [("wallet", "alice"), ("wallet", "nobody"), ("clearing", "pp")]

    async def read() -> list[list[AccountRow]]:
        return [
            await store.account_balances_on_loop(LEDGER, kind=kind, owner=owner)
            for kind, owner in owners
        ]

    expected = [store.account_balances(LEDGER, kind=kind, owner=owner) for kind, owner in owners]
    assert _on_a_loop(store, read) == expected
    assert [(row.account, row.balance) for row in expected[0]] == [
        ("wallet:alice:EUR", 700),
        ("wallet:alice:JPY", 700),
        ("wallet:alice:USD", 700),
    ]
    assert expected[1] == []


def test_transactions_orders_and_the_log_read_on_the_loop_are_what_the_store_reads(
    engine: Engine,
) -> None:
    paid, refunded = _shop(engine)
    store = _store(engine)
    transactions = [paid.event.transaction_id, refunded.event.transaction_id, "txn_nobody"]
    orders = ["o-1", "o-2", "o-nobody"]
    pages = [(0, 1), (0, 100), (5, 10), (30, 5), (32, 1), (33, 10), (2**62, 3)]

    async def read() -> list[object]:
        found: list[object] = []
        for transaction_id in transactions:
            found.append(await store.event_by_transaction_on_loop(LEDGER, transaction_id))
        for committed in (paid, refunded):
            found.append(await store.entries_of_on_loop(LEDGER, committed.event))
        for order_id in orders:
            found.append(await store.order_on_loop(LEDGER, order_id))
            found.append(await store.order_events_on_loop(LEDGER, order_id))
        for after_seq, limit in pages:
            found.append(await store.events_on_loop(LEDGER, after_seq=after_seq, limit=limit))
        return found

    events = [store.event_by_transaction(LEDGER, t) for t in transactions]
    entries = [store.entries_of(LEDGER, c.event) for c in (paid, refunded)]
    found_orders = [(store.order(LEDGER, o), store.order_events(LEDGER, o)) for o in orders]
    logged = [store.events(LEDGER, after_seq=a, limit=n) for a, n in pages]
    expected: list[object] = [*events, *entries]
    for order, seqs in found_orders:
        expected += [order, seqs]
    expected += logged
    assert _on_a_loop(store, read) == expected
    # and they are the ledger's, not empty where it has rows
    assert [None if row is None else row.seq for row in events] == [31, 32, None]
    assert [len(lines) for lines in entries] == [4, 2]  # two orders' postings; a refund's
    assert [[row.seq for row in rows] for _, rows in found_orders] == [[31], [31, 32], []]
    assert found_orders[2][0] is None
    assert [len(page) for page in logged] == [1, 32, 10, 2, 0, 0, 0]


def test_a_pool_that_could_not_open_leaves_the_loop_without_one(engine: Engine) -> None:
    store = _store(engine)
    url = store.url

    async def down_then_up() -> list[bool]:
        store.url = "postgresql://postgres@127.0.0.1:1/nowhere"  # nothing listens there
        try:
            refused = [await store.open_loop_reads(), store.reads_on_this_loop()]
        finally:
            store.url = url
        opened = [await store.open_loop_reads(), store.reads_on_this_loop()]
        await store.close_loop_reads()
        return refused + opened + [store.reads_on_this_loop()]

    assert asyncio.run(down_then_up()) == [False, False, True, True, False]


def test_closing_the_loop_reads_closes_their_connections(engine: Engine) -> None:
    store = _store(engine)
    before = _connections(store)

    async def read_then_close() -> int:
        assert await store.open_loop_reads()
        assert await store.open_loop_reads()  # twice opens nothing more
        await store.statement_on_loop(LEDGER, WALLET, after=(0, 0), limit=10)
        opened = await asyncio.to_thread(_connections, store)
        await store.close_loop_reads()
        await store.close_loop_reads()  # twice is harmless
        return opened

    assert asyncio.run(read_then_close()) == before + 1
    deadline = time.monotonic() + 10
    while _connections(store) != before and time.monotonic() < deadline:
        time.sleep(0.05)  # a closed connection's backend leaves pg_stat_activity soon after
    assert _connections(store) == before


def test_a_server_reads_pages_on_its_loop_and_closes_that_pool_when_it_stops() -> None:
    with fresh_database() as url:
        store = open_store(url)
        store.ensure_ledger(LEDGER)
        store.close()
        services = open_services(url, key_cache_ttl_s=3600)
        secret = services.keys.create(LEDGER, frozenset({Scope.READ, Scope.WRITE})).secret
        auth = {"Authorization": f"Bearer {secret}"}
        server_store = _store(services.engine)
        assert services.loop_reads is server_store
        with TestClient(create_app(services)) as client:
            recharged = client.post(
                "/v1/recharges",
                json={"user_id": "alice", "amount": "5.00", "currency": "USD", "gateway": "pp"},
                headers={**auth, "Idempotency-Key": "r-1"},
            )
            assert recharged.status_code == 201, recharged.text
            for query in ({"currency": "USD"}, {"currency": "USD", "to": "2999-01-01T00:00:00Z"}):
                page = client.get("/v1/users/alice/statement", params=query, headers=auth)
                assert page.status_code == 200, page.text
                assert [line["balance_after"] for line in page.json()["entries"]] == ["5.00"]
            assert len(server_store._loop_pools) == 1  # the server's loop read it
        assert server_store._loop_pools == {}  # closed on shutdown, before the store


def _recharged_app(url: str) -> tuple[Any, dict[str, str]]:
    store = open_store(url)
    store.ensure_ledger(LEDGER)
    store.close()
    services = open_services(url, key_cache_ttl_s=3600)
    secret = services.keys.create(LEDGER, frozenset({Scope.READ, Scope.WRITE})).secret
    return create_app(services), {"Authorization": f"Bearer {secret}"}


def test_an_app_run_without_its_lifespan_reads_through_the_stores_thread() -> None:
    """A test client used without `with` runs no start-up: each request on a loop of its
    own, which must not keep connections open after it."""
    with fresh_database() as url:
        app, auth = _recharged_app(url)
        services = app.state["tally"]
        server_store = _store(services.engine)
        before = _connections(server_store)
        try:
            client = TestClient(app)
            recharged = client.post(
                "/v1/recharges",
                json={"user_id": "alice", "amount": "5.00", "currency": "USD", "gateway": "pp"},
                headers={**auth, "Idempotency-Key": "r-1"},
            )
            assert recharged.status_code == 201, recharged.text
            for _ in range(3):
                page = client.get("/v1/users/alice/statement?currency=USD", headers=auth)
                assert page.status_code == 200, page.text
                assert [line["amount"] for line in page.json()["entries"]] == ["5.00"]
            assert server_store._loop_pools == {}
            assert _connections(server_store) == before
        finally:
            services.engine.close()
            server_store.close()
            services.keys.close()


def test_every_get_route_answers_the_same_on_the_loop_as_through_the_stores_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The routes' own steps (decoding, views, 404s) are not shared between the two paths:
    the same requests, on the same database, answered both ways, must match."""
    with fresh_database() as url:
        app, auth = _recharged_app(url)
        services = app.state["tally"]
        server_store = _store(services.engine)
        paid, refunded = _shop(services.engine)
        paths = [
            f"/v1/transactions/{paid.event.transaction_id}",
            f"/v1/transactions/{refunded.event.transaction_id}",
            f"/v1/transactions/txn_{'0' * 32}",
            "/v1/orders/o-1",
            "/v1/orders/o-2",
            "/v1/orders/o-nobody",
            "/v1/events?after_seq=0&limit=100",
            "/v1/events?after_seq=30&limit=1",
            "/v1/events?after_seq=40",
            "/v1/users/alice/balances",
            "/v1/users/nobody/balances",
            "/v1/users/alice/statement?currency=USD&limit=7",
            "/v1/users/alice/statement?currency=USD",
        ]
        try:
            threaded = TestClient(app)  # no lifespan: no loop pool, the store's thread
            through_thread = [threaded.get(path, headers=auth) for path in paths]
            assert server_store._loop_pools == {}
            on_loop: list[str] = []
            for name in dir(server_store):
                if name.endswith("_on_loop") and not name.startswith("_"):
                    method = getattr(server_store, name)

                    async def spy(
                        *args: Any, _name: str = name, _m: Any = method, **kwargs: Any
                    ) -> Any:
                        on_loop.append(_name)
                        return await _m(*args, **kwargs)

                    monkeypatch.setattr(server_store, name, spy)
            with TestClient(app) as client:
                looped = [client.get(path, headers=auth) for path in paths]
        finally:
            services.engine.close()
            server_store.close()
            services.keys.close()
    for path, before, after in zip(paths, through_thread, looped, strict=True):
        assert (after.status_code, after.json()) == (before.status_code, before.json()), path
    assert [answer.status_code for answer in looped] == [200] * 2 + [404] + [200] * 2 + [404] + [
        200
    ] * 7
    assert looped[3].json()["transactions"][0]["transaction_id"] == paid.event.transaction_id
    assert set(on_loop) == {
        "event_by_transaction_on_loop",
        "entries_of_on_loop",
        "order_on_loop",
        "order_events_on_loop",
        "events_on_loop",
        "account_balances_on_loop",
        "statement_on_loop",
    }


def test_a_server_whose_loop_pool_could_not_open_still_answers_pages() -> None:
    with fresh_database() as url:
        app, auth = _recharged_app(url)
        server_store = _store(app.state["tally"].engine)
        server_store.url = "postgresql://postgres@127.0.0.1:1/nowhere"  # only the loop's pool
        with TestClient(app) as client:
            assert server_store._loop_pools == {}
            recharged = client.post(
                "/v1/recharges",
                json={"user_id": "alice", "amount": "5.00", "currency": "USD", "gateway": "pp"},
                headers={**auth, "Idempotency-Key": "r-1"},
            )
            assert recharged.status_code == 201, recharged.text
            page = client.get("/v1/users/alice/statement?currency=USD", headers=auth)
            assert page.status_code == 200, page.text
            assert [line["balance_after"] for line in page.json()["entries"]] == ["5.00"]


def _delete_the_second_event(raw: RawDb) -> None:
    raw.execute("DELETE FROM events WHERE seq = 2")


def test_a_line_whose_event_is_gone_is_a_500_not_a_shorter_page() -> None:
    """The loop's read checks what the store's does: an entry without its event (the log
    refuses deletes: only tampering gets there) is a broken ledger, never a page without
    that line."""
    with fresh_database() as url:
        app, auth = _recharged_app(url)
        with TestClient(app, raise_server_exceptions=False) as client:
            for i in range(3):
                recharged = client.post(
                    "/v1/recharges",
                    json={"user_id": "alice", "amount": "5.00", "currency": "USD", "gateway": "pp"},
                    headers={**auth, "Idempotency-Key": f"r-{i}"},
                )
                assert recharged.status_code == 201, recharged.text
            tamper(url, _delete_the_second_event)
            page = client.get("/v1/users/alice/statement?currency=USD", headers=auth)
            assert len(_store(app.state["tally"].engine)._loop_pools) == 1  # read on the loop
        assert page.status_code == 500, page.text
        assert page.headers["content-type"] == "application/problem+json"

"""PostgreSQL crash-restarting under a `tally serve` that is taking writes, seen over HTTP.

A private cluster is crash-stopped (`pg_ctl -m immediate`) and started again while clients
stream expenses, each with its own Idempotency-Key, at one `tally serve` process. Every answer
must be a 201 (and then durable: the same key and body replay the same transaction after the
restart) or a clear 503 problem (RFC 9457, `code` "unavailable": not confirmed, retry with
the same key). Retried with its key, every 503'd request lands exactly once; the server
reconnects by itself (it is never restarted), `tally verify` passes, and the log holds one
event per distinct key. (tests/test_postgres_faults.py proves the same at the engine level.)
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from pgcluster import private_cluster
from serve_process import provision, serve, verify_cli

LEDGER = "shop"
USER = "alice"
STREAMS = 3  # client threads, so that the writer forms real batches
BEFORE_RESTART = 60  # 201s before the cluster is crash-restarted
AFTER_RESTART = 60  # 201s after it, once the server has reconnected
REQUESTS_MAX = 1500  # a bound on the whole stream, whatever happens
STREAM_DEADLINE_S = 90  # a few seconds here; generous for a loaded machine: a bound on a hang
SLEEP_AFTER_503_S = 0.05
RETRY_ROUNDS_MAX = 60
RETRY_SLEEP_S = 0.25
EVENTS_PAGE = 1000
PROBLEM_JSON = "application/problem+json"


def expense_body(key: str) -> dict[str, Any]:
    return {
        "user_id": USER,
        "currency": "USD",
        "orders": [{"order_id": f"order-{key}", "amount": "0.10"}],
    }


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    content_type: str
    replayed: bool
    body: Any


def post_expense(client: httpx.Client, key: str) -> Answer:
    response = client.post("/v1/expenses", json=expense_body(key), headers={"Idempotency-Key": key})
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    return Answer(
        status=response.status_code,
        content_type=response.headers.get("content-type", ""),
        replayed=response.headers.get("idempotent-replayed") == "true",
        body=body,
    )


def is_clear_503(answer: Answer) -> bool:
    """A 503 as docs/http-api.md promises it: problem+json with the stable code."""
    body = answer.body
    return (
        answer.status == 503
        and answer.content_type.split(";")[0].strip() == PROBLEM_JSON
        and isinstance(body, dict)
        and body.get("status") == 503
        and body.get("code") == "unavailable"
        and isinstance(body.get("type"), str)
        and isinstance(body.get("title"), str)
        and isinstance(body.get("detail"), str)
    )


@dataclass
class Stream:
    """Everything the clients sent and heard, in order, shared by the client threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    sent: list[tuple[str, Answer]] = field(default_factory=list)
    transport_errors: list[tuple[str, str]] = field(default_factory=list)
    acknowledged: int = 0
    acknowledged_after_restart: int = 0
    restarted: threading.Event = field(default_factory=threading.Event)
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def next_key(self) -> str | None:
        with self.lock:
            if len(self.sent) + len(self.transport_errors) >= REQUESTS_MAX:
                return None
            if self.acknowledged_after_restart >= AFTER_RESTART:
                return None
            return f"e-{self.run}-{uuid.uuid4().hex[:12]}"

    def record(self, key: str, answer: Answer) -> None:
        with self.lock:
            self.sent.append((key, answer))
            if answer.status == 201:
                self.acknowledged += 1
                if self.restarted.is_set():
                    self.acknowledged_after_restart += 1


def drive(client: httpx.Client, stream: Stream, deadline: float) -> None:
    while time.monotonic() < deadline:
        key = stream.next_key()
        if key is None:
            return
        try:
            answer = post_expense(client, key)
        except httpx.HTTPError as error:
            with stream.lock:
                stream.transport_errors.append((key, repr(error)))
            time.sleep(SLEEP_AFTER_503_S)
            continue
        stream.record(key, answer)
        if answer.status != 201:
            time.sleep(SLEEP_AFTER_503_S)


def all_events(client: httpx.Client) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    after: int | None = 0
    for _page in range(100):
        if after is None:
            return events
        response = client.get("/v1/events", params={"after_seq": after, "limit": EVENTS_PAGE})
        assert response.status_code == 200, response.text
        page = response.json()
        events.extend(page["events"])
        after = page["next_after_seq"]
    raise AssertionError("the log has more pages than expected")


KEY_LOOKUPS = [
    pytest.param("3600", id="keys-cached"),
    pytest.param("0", id="keys-looked-up"),
]


@pytest.mark.parametrize("key_cache_ttl_s", KEY_LOOKUPS)
def test_a_postgresql_crash_restart_under_http_load_loses_nothing(
    tmp_path: Path, key_cache_ttl_s: str
) -> None:
    """`--key-cache-ttl-s 3600` keeps every key lookup off the database after the first, so
    the restart meets the write path alone; 0 looks every key up in the database, so it also
    meets the lookups (with the default, 2 s, whichever the timing gives)."""
    with private_cluster() as cluster:
        db = cluster.url
        secret = provision(db, LEDGER)
        headers = {"Authorization": f"Bearer {secret}"}
        with (
            serve(db, tmp_path / "serve.log", "--key-cache-ttl-s", key_cache_ttl_s) as server,
            httpx.Client(base_url=server.url, headers=headers, timeout=60) as client,
        ):
            funded = client.post(
                "/v1/recharges",
                json={"user_id": USER, "amount": "1000.00", "currency": "USD", "gateway": "paypal"},
                headers={"Idempotency-Key": "fund"},
            )
            assert funded.status_code == 201, funded.text

            stream = Stream()
            restart_errors: list[BaseException] = []

            def restart_midway() -> None:
                try:
                    deadline = time.monotonic() + STREAM_DEADLINE_S
                    while stream.acknowledged < BEFORE_RESTART and time.monotonic() < deadline:
                        time.sleep(0.005)
                    cluster.restart_abruptly()
                except BaseException as error:
                    restart_errors.append(error)
                finally:
                    stream.restarted.set()

            restarter = threading.Thread(target=restart_midway)
            restarter.start()
            deadline = time.monotonic() + STREAM_DEADLINE_S
            clients = [threading.Thread(target=drive, args=(client, stream, deadline))]
            clients += [
                threading.Thread(target=drive, args=(client, stream, deadline))
                for _ in range(STREAMS - 1)
            ]
            for thread in clients:
                thread.start()
            for thread in clients:
                thread.join(STREAM_DEADLINE_S + 30)
            restarter.join(STREAM_DEADLINE_S + 60)
            assert not restart_errors, restart_errors
            assert not any(t.is_alive() for t in [*clients, restarter])

            log = server.log_tail()
            statuses = Counter(answer.status for _, answer in stream.sent)
            # The server itself never went away: no transport error, never restarted.
            assert not stream.transport_errors, (stream.transport_errors[:5], log)
            assert server.alive(), log
            # Every answer is a 201 or a clear 503 problem.
            unclear = [(k, a) for k, a in stream.sent if a.status != 201 and not is_clear_503(a)]
            assert not unclear, (statuses, unclear[:5], log)
            assert statuses[503] > 0, ("the restart should have failed some requests", statuses)
            # The server reconnected by itself: writes landed after the restart.
            assert stream.acknowledged_after_restart >= AFTER_RESTART, (statuses, log)

            # Retried with their keys, the 503'd requests land, each exactly once.
            transactions: dict[str, str] = {
                key: answer.body["transaction_id"]
                for key, answer in stream.sent
                if answer.status == 201
            }
            pending = [key for key, answer in stream.sent if answer.status == 503]
            retried: list[tuple[str, Answer]] = []
            for _round in range(RETRY_ROUNDS_MAX):
                still = []
                for key in pending:
                    answer = post_expense(client, key)
                    retried.append((key, answer))
                    if answer.status == 201:
                        transactions[key] = answer.body["transaction_id"]
                    else:
                        still.append(key)
                pending = still
                if not pending:
                    break
                time.sleep(RETRY_SLEEP_S)
            assert not pending, (pending[:5], Counter(a.status for _, a in retried), log)
            unclear = [(k, a) for k, a in retried if a.status != 201 and not is_clear_503(a)]
            assert not unclear, unclear[:5]

            # Acknowledged means durable: the same key and body replay the same transaction.
            for key, transaction_id in transactions.items():
                again = post_expense(client, key)
                assert again.status == 201, (key, again)
                assert again.replayed, (key, again)
                assert again.body["transaction_id"] == transaction_id, (key, again)

            # The log holds one event per distinct key (plus the funding), gapless, each once.
            keys = {key for key, _ in stream.sent}
            events = all_events(client)
            assert [e["seq"] for e in events] == list(range(1, len(keys) + 2))
            logged = Counter(e["transaction_id"] for e in events[1:])
            assert logged == Counter(transactions.values())
            assert set(transactions) == keys

        status, report = verify_cli(db, LEDGER)
        assert status == 0, report


DOWN_CASES = [
    pytest.param("POST", True, id="write-key-cached"),
    pytest.param("GET", True, id="read-key-cached"),
    pytest.param("POST", False, id="write-key-looked-up"),
    pytest.param("GET", False, id="read-key-looked-up"),
    # Statement pages are read on the server's own loop, on connections of its own.
    pytest.param("STATEMENT", True, id="statement-key-cached"),
    # So are transactions (two reads: the event, then its entries), orders and the log.
    pytest.param("TRANSACTION", True, id="transaction-key-cached"),
    pytest.param("ORDER", True, id="order-key-cached"),  # three reads: any may fail
]


@pytest.mark.parametrize(("method", "key_cached"), DOWN_CASES)
def test_while_postgresql_is_down_a_request_is_a_clear_503_then_recovers(
    tmp_path: Path, method: str, key_cached: bool
) -> None:
    """The deterministic form of the above: the cluster is stopped (not yet restarted) while
    one request is made, then started; the same request, repeated, then succeeds."""
    with private_cluster() as cluster:
        db = cluster.url
        secret = provision(db, LEDGER)
        with (
            serve(db, tmp_path / "serve.log", "--key-cache-ttl-s", "3600") as server,
            httpx.Client(base_url=server.url, timeout=60) as client,
        ):
            auth = {"Authorization": f"Bearer {secret}"}
            funded = client.post(
                "/v1/recharges",
                json={"user_id": USER, "amount": "10.00", "currency": "USD", "gateway": "paypal"},
                headers={**auth, "Idempotency-Key": "fund"},
            )
            assert funded.status_code == 201, funded.text
            if not key_cached:  # a key the server has not seen yet: it must look it up
                auth = {"Authorization": f"Bearer {provision(db, LEDGER)}"}
            key = f"e-{uuid.uuid4().hex[:12]}"
            if method == "ORDER":  # an order to read
                paid = client.post(
                    "/v1/expenses",
                    json=expense_body(key),
                    headers={**auth, "Idempotency-Key": key},
                )
                assert paid.status_code == 201, paid.text
            if method == "STATEMENT":  # its connections open before the restart
                first = client.get(
                    f"/v1/users/{USER}/statement", params={"currency": "USD"}, headers=auth
                )
                assert first.status_code == 200, first.text

            def request() -> Answer:
                if method == "POST":
                    response = client.post(
                        "/v1/expenses",
                        json=expense_body(key),
                        headers={**auth, "Idempotency-Key": key},
                    )
                elif method == "STATEMENT":
                    response = client.get(
                        f"/v1/users/{USER}/statement", params={"currency": "USD"}, headers=auth
                    )
                elif method == "ORDER":
                    order_id = paid.json()["reference_order_ids"][0]
                    response = client.get(f"/v1/orders/{order_id}", headers=auth)
                elif method == "TRANSACTION":
                    response = client.get(
                        f"/v1/transactions/{funded.json()['transaction_id']}", headers=auth
                    )
                else:
                    response = client.get(f"/v1/users/{USER}/balances", headers=auth)
                return Answer(
                    status=response.status_code,
                    content_type=response.headers.get("content-type", ""),
                    replayed=response.headers.get("idempotent-replayed") == "true",
                    body=response.json(),
                )

            cluster.pg_ctl("-w", "-m", "immediate", "stop")
            try:
                while_down = request()
            finally:
                cluster.start()
            after = request()
            for _round in range(RETRY_ROUNDS_MAX):
                if after.status != 503:
                    break
                time.sleep(RETRY_SLEEP_S)
                after = request()
            # The server reconnected by itself ...
            assert server.alive(), server.log_tail()
            assert after.status == (201 if method == "POST" else 200), after
            if method == "STATEMENT":
                assert [line["amount"] for line in after.body["entries"]] == ["10.00"]
            if method == "ORDER":
                assert [t["event_type"] for t in after.body["transactions"]] == ["expense"]
            if method == "TRANSACTION":
                assert (after.body["amount"], after.body["balance_after"]) == ("10.00", "10.00")
            # ... and while the database was down it said so clearly.
            assert is_clear_503(while_down), (while_down, server.log_tail())

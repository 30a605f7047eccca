"""Several `tally serve` processes, one ledger, one database: fenced, never forked, never
overdrawn, nothing lost or doubled, over HTTP.

Each server process has its own engine, hence its own writer for the same ledger; the head
row's compare-and-set fences the stale one (docs/postgresql.md, "Several processes, one
ledger"). Concurrent expenses spread over all the servers drain one wallet past empty. Every
201 must hold its own seq, the log must be gapless and hold each acknowledged transaction
exactly once, the refusals must be `insufficient_funds` and exactly as many expenses must land
as the funds pay for; `tally verify` must pass afterwards. The same runs over one SQLite file
shared by two servers. (tests/test_multiprocess.py proves the same at the engine level.)

How often the writers take turns is a matter of timing (on a loaded machine one may win many
commits in a row): rounds, each draining a wallet of its own, go on, up to a bound, until one
shows every server committing and the writers taking turns.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from pg import fresh_database
from serve_process import Server, provision, serve, verify_cli

LEDGER = "shop"
USER = "shared"
AMOUNT_MINOR = 700  # each expense: 7.00 USD
PAYABLE = 48  # the funds pay for exactly this many expenses ...
FUNDS_MINOR = PAYABLE * AMOUNT_MINOR + 300  # ... and leave 3.00 over
EXPENSES = 72  # a third more than the funds pay for: they run out mid-way
THREADS = 12
RETRIES_MAX = 20  # a 503 ("not confirmed, retry with the same key") is retried this often
RETRY_SLEEP_S = 0.2
EVENTS_PAGE = 1000
ROUNDS_MAX = 4  # until one shows the writers taking turns (see above)


def minor(amount: str) -> int:
    units, _, cents = amount.partition(".")
    sign = -1 if units.startswith("-") else 1
    return sign * (abs(int(units)) * 100 + int(cents or 0))


@pytest.fixture(params=["postgresql", "sqlite"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, int]]:
    """(the database, how many servers share it)."""
    if request.param == "sqlite":
        yield str(tmp_path / "shared.db"), 2
    else:
        with fresh_database() as url:
            yield url, 3


@dataclass(frozen=True, slots=True)
class Answer:
    key: str
    server: int
    status: int
    body: dict[str, Any]
    attempts: int


def expense_body(user: str, key: str) -> dict[str, Any]:
    return {
        "user_id": user,
        "currency": "USD",
        "orders": [{"order_id": f"order-{key}", "amount": f"{AMOUNT_MINOR // 100}.00"}],
    }


def send(client: httpx.Client, server: int, user: str, key: str) -> Answer:
    """POST one expense; a 503 is retried with the same key and body, a bounded number of times."""
    for attempt in range(1, RETRIES_MAX + 1):
        response = client.post(
            "/v1/expenses", json=expense_body(user, key), headers={"Idempotency-Key": key}
        )
        if response.status_code != 503 or attempt == RETRIES_MAX:
            return Answer(key, server, response.status_code, response.json(), attempt)
        time.sleep(RETRY_SLEEP_S)
    raise AssertionError("unreachable")


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


def drain_past_empty(clients: list[httpx.Client], user: str) -> tuple[int, list[Answer]]:
    """Fund `user`, then spend past empty from every server at once: (the funding's seq, the
    answers to the expenses)."""
    funded = clients[0].post(
        "/v1/recharges",
        json={
            "user_id": user,
            "amount": f"{FUNDS_MINOR // 100}.{FUNDS_MINOR % 100:02d}",
            "currency": "USD",
            "gateway": "paypal",
        },
        headers={"Idempotency-Key": f"fund-{user}"},
    )
    assert funded.status_code == 201, funded.text
    run = uuid.uuid4().hex[:8]
    keys = [f"e-{run}-{i}" for i in range(EXPENSES)]
    servers = len(clients)
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        futures = [
            pool.submit(send, clients[i % servers], i % servers, user, key)
            for i, key in enumerate(keys)
        ]
        answers = [future.result(timeout=120) for future in futures]
    return funded.json()["seq"], answers


def check_drained(answers: list[Answer], funded_seq: int, logs: str) -> list[Answer]:
    """How the expenses that drained a wallet must have been answered; returns the 201s."""
    statuses = Counter(a.status for a in answers)
    assert set(statuses) <= {201, 422}, (statuses, [a for a in answers if a.status > 422], logs)
    landed = [a for a in answers if a.status == 201]
    refused = [a for a in answers if a.status == 422]
    # Every refusal is the wallet running dry, never anything else.
    assert {a.body["code"] for a in refused} == {"insufficient_funds"}, refused
    # Exactly as many land as the funds pay for: none lost, none doubled, none overdrawn.
    assert len(landed) == FUNDS_MINOR // AMOUNT_MINOR == PAYABLE, statuses
    # Every 201 holds its own seq: the chain never forked.
    seqs = sorted(a.body["seq"] for a in landed)
    assert seqs == list(range(funded_seq + 1, funded_seq + PAYABLE + 1)), seqs
    # The wallet never went below zero, as each transaction saw it.
    assert all(minor(a.body["balance_after"]) >= 0 for a in landed)
    assert sorted(minor(a.body["balance_after"]) for a in landed) == [
        FUNDS_MINOR - n * AMOUNT_MINOR for n in range(PAYABLE, 0, -1)
    ]
    return landed


def test_several_servers_on_one_ledger_never_fork_lose_or_overdraw(
    database: tuple[str, int], tmp_path: Path
) -> None:
    db, server_count = database
    secret = provision(db, LEDGER)
    headers = {"Authorization": f"Bearer {secret}"}
    with ExitStack() as stack:
        servers: list[Server] = [
            stack.enter_context(serve(db, tmp_path / f"serve-{n}.log")) for n in range(server_count)
        ]
        clients = [
            stack.enter_context(httpx.Client(base_url=s.url, headers=headers, timeout=60))
            for s in servers
        ]
        logs = ""
        users: list[str] = []
        funded_seqs: list[int] = []
        committed: list[Answer] = []  # of every round
        took_turns = False
        while len(users) < ROUNDS_MAX and not took_turns:
            user = f"{USER}-{len(users)}"
            funded_seq, answers = drain_past_empty(clients, user)
            users.append(user)
            funded_seqs.append(funded_seq)
            assert funded_seq == 1 + (len(users) - 1) * (PAYABLE + 1)

            logs = "\n".join(f"--- server {n}\n{s.log_tail()}" for n, s in enumerate(servers))
            landed = check_drained(answers, funded_seq, logs)
            committed += landed
            # Every server took part in committing, and the writers took turns: each was
            # fenced, caught up from the log and carried on.
            by_seq = [a.server for a in sorted(landed, key=lambda a: a.body["seq"])]
            turns = sum(1 for before, after in itertools.pairwise(by_seq) if before != after)
            took_turns = set(by_seq) == set(range(server_count)) and turns >= server_count
        assert took_turns, (f"in none of {len(users)} rounds did every writer take turns", by_seq)

        # The log, read through each server: gapless 1..N, each 201 exactly once.
        for client in clients:
            events = all_events(client)
            assert [e["seq"] for e in events] == list(range(1, len(users) * (PAYABLE + 1) + 1))
            logged = Counter(e["transaction_id"] for e in events)
            assert all(logged[a.body["transaction_id"]] == 1 for a in committed)
            assert {
                e["seq"]: e["transaction_id"] for e in events if e["seq"] not in funded_seqs
            } == {a.body["seq"]: a.body["transaction_id"] for a in committed}
            for user in users:
                balance = client.get(f"/v1/users/{user}/balances")
                assert balance.status_code == 200, balance.text
                assert balance.json()["balances"] == [
                    {
                        "currency": "USD",
                        "balance": f"{(FUNDS_MINOR - PAYABLE * AMOUNT_MINOR) / 100:.2f}",
                    }
                ]
        # An acknowledged key replays its transaction, through another server too.
        for answer in committed[:5]:
            again = clients[(answer.server + 1) % server_count].post(
                "/v1/expenses",
                json=expense_body(users[0], answer.key),
                headers={"Idempotency-Key": answer.key},
            )
            assert again.status_code == 201, again.text
            assert again.headers.get("Idempotent-Replayed") == "true"
            assert again.json()["transaction_id"] == answer.body["transaction_id"]
        assert all(s.alive() for s in servers), logs

    status, report = verify_cli(db, LEDGER)
    assert status == 0, report

"""Crash safety, on both stores: a writer killed with SIGKILL loses nothing it acknowledged.

A child process writes deterministic commands with the engine from several threads (so the
writer forms real batches) and prints `ack KEY TRANSACTION_ID` only after `execute_many` has
returned, i.e. after the batch committed. The test kills it mid-run, reopens the database and
checks that every acknowledged key is in the log exactly once with the transaction id it was
acknowledged with, that the log verifies (gapless seq, chain, head, invariants, projections
equal a replay), and that a new writer carries on. Each round restarts the child from key 0,
so earlier acknowledged keys are resubmitted and must be replayed, not written again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import IO

import pytest

import rawdb
from conftest import audit_offline, subprocess_env
from tally.bootstrap import open_engine
from tally.domain.commands import Envelope, Expense, OrderLine, Recharge
from tally.engine.results import Committed
from tally.verification import verify

LEDGER = "crash"
THREADS = 3
CHUNK = 25  # commands per execute_many call

WRITER = r"""
import sys
import threading

from tally.bootstrap import open_engine
from tally.domain.commands import Envelope, Expense, OrderLine, Recharge
from tally.engine.results import Committed

path, ledger, threads, chunk = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])


def envelope(n):
    user = f"u{n % 4}"
    if n % 5 == 4:  # an expense; refused (and not acknowledged) if the wallet is short
        command = Expense(
            user_id=user, currency="USD", orders=(OrderLine(order_id=f"o-{n}", amount=n % 50 + 1),)
        )
    else:
        currency = "JPY" if n % 3 == 0 else "USD"
        command = Recharge(user_id=user, amount=n % 97 + 1, currency=currency, gateway="paypal")
    return Envelope(idempotency_key=f"k{n}", command=command)


engine = open_engine(path)
out = threading.Lock()


def work(thread):
    n = thread * chunk
    while n < 10_000_000:
        envelopes = [envelope(i) for i in range(n, n + chunk)]
        outcomes = engine.execute_many(ledger, envelopes)
        lines = [
            f"ack {e.idempotency_key} {o.event.transaction_id}\n"
            for e, o in zip(envelopes, outcomes)
            if isinstance(o, Committed)
        ]
        with out:
            sys.stdout.write("".join(lines))
            sys.stdout.flush()
        n += threads * chunk


print("ready", flush=True)
workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
for w in workers:
    w.start()
for w in workers:
    w.join()
"""


def the_envelope(n: int) -> Envelope:
    """The command the child sends under key `k{n}` (kept in step with WRITER)."""
    user = f"u{n % 4}"
    command: Recharge | Expense
    if n % 5 == 4:
        command = Expense(
            user_id=user,
            currency="USD",
            orders=(OrderLine(order_id=f"o-{n}", amount=n % 50 + 1),),
        )
    else:
        currency = "JPY" if n % 3 == 0 else "USD"
        command = Recharge(user_id=user, amount=n % 97 + 1, currency=currency, gateway="paypal")
    return Envelope(idempotency_key=f"k{n}", command=command)


def read_line(stream: IO[str], stderr_path: Path) -> str:
    line = stream.readline()
    if not line:
        raise AssertionError(f"the writer died on its own:\n{stderr_path.read_text()}")
    return line


def run_and_kill(db: str, tmp_path: Path, acks_before_kill: int) -> dict[str, str]:
    """Start the writer, SIGKILL it after `acks_before_kill` acks; return every ack it printed."""
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    stderr_path = tmp_path / "writer.stderr"
    with stderr_path.open("w") as stderr:
        child = subprocess.Popen(
            [sys.executable, str(script), db, LEDGER, str(THREADS), str(CHUNK)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=subprocess_env(),
        )
    assert child.stdout is not None
    acks: dict[str, str] = {}
    try:
        assert read_line(child.stdout, stderr_path) == "ready\n"
        while len(acks) < acks_before_kill:
            _, key, transaction_id = read_line(child.stdout, stderr_path).split()
            assert acks.setdefault(key, transaction_id) == transaction_id
        os.kill(child.pid, signal.SIGKILL)
        # Lines printed before the kill landed are acknowledgements too.
        for line in child.stdout.read().splitlines():
            _, key, transaction_id = line.split()
            assert acks.setdefault(key, transaction_id) == transaction_id
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=30)
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL, stderr_path.read_text()
    wait_for_the_dead_clients_statements(db)
    return acks


def wait_for_the_dead_clients_statements(db: str) -> None:
    """On PostgreSQL, a commit the killed writer had sent (one statement: a small batch is
    its own transaction) still runs and may land after the kill, unacknowledged, like a
    COMMIT in flight. Wait until the dead client's sessions are gone, so the log the checks
    read is the one the auditor reads."""
    if not rawdb.is_postgres(db):
        return
    deadline = time.monotonic() + 30
    with rawdb.connect(db) as raw:
        while time.monotonic() < deadline:
            (others,) = raw.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchone()
            if others == 0:
                return
            time.sleep(0.05)
    raise AssertionError("the killed writer's sessions did not end")


def logged_keys(db: str) -> list[tuple[int, str, str]]:
    """`(seq, idempotency_key, transaction_id)` of every event in the log, read with raw SQL."""
    with rawdb.connect(db) as raw:
        rows = raw.execute(
            "SELECT seq, transaction_id, body FROM events WHERE ledger = ? ORDER BY seq", (LEDGER,)
        ).fetchall()
    return [(seq, json.loads(body)["idempotency_key"], txn) for seq, txn, body in rows]


def check_after_crash(db: str, acked: dict[str, str], tmp_path: Path) -> int:
    """Everything acknowledged is there exactly once and the file verifies; returns the head."""
    log = logged_keys(db)
    assert [seq for seq, _, _ in log] == list(range(1, len(log) + 1))
    counts = Counter(key for _, key, _ in log)
    assert all(count == 1 for count in counts.values()), counts.most_common(3)
    by_key = {key: transaction_id for _, key, transaction_id in log}
    missing = sorted(set(acked) - set(by_key))
    assert not missing, f"acknowledged but not in the log: {missing[:10]}"
    for key, transaction_id in acked.items():
        assert by_key[key] == transaction_id, key

    audit = audit_offline(db, LEDGER, tmp_path)
    assert audit.ok, audit.finding
    assert audit.events == len(log)

    engine = open_engine(db)
    try:
        result = verify(engine, LEDGER)
        assert result.ok, (result.problem, result.first_bad_seq, result.projection_differences)
        assert result.events == len(log)
        head = engine.store.head(LEDGER)
        assert head is not None
        assert head.seq == len(log)
    finally:
        engine.close()
        engine.store.close()
    return len(log)


def check_writer_continues(db: str, acked: dict[str, str], round_: int) -> None:
    engine = open_engine(db)
    try:
        head = engine.store.head(LEDGER)
        assert head is not None
        fresh = engine.execute(
            LEDGER,
            Envelope(
                idempotency_key=f"after-crash-{round_}",
                command=Recharge(user_id="z", amount=1, currency="USD", gateway="paypal"),
            ),
        )
        assert not fresh.replayed
        assert fresh.event.seq == head.seq + 1
        # Resubmitting acknowledged commands answers with their original transactions.
        some = sorted(acked, key=lambda key: int(key[1:]))[:: max(1, len(acked) // 20)]
        outcomes = engine.execute_many(LEDGER, [the_envelope(int(key[1:])) for key in some])
        for key, outcome in zip(some, outcomes, strict=True):
            assert isinstance(outcome, Committed), (key, outcome)
            assert outcome.replayed, key
            assert outcome.event.transaction_id == acked[key]
        after = engine.store.head(LEDGER)
        assert after is not None
        assert after.seq == head.seq + 1
        assert verify(engine, LEDGER).ok
    finally:
        engine.close()
        engine.store.close()


@pytest.mark.slow
@pytest.mark.parametrize(
    "kill_points",
    [(1, 60, 300), (CHUNK, 2 * CHUNK + 1, 900)],
    ids=["early-then-later", "batch-boundaries-then-late"],
)
def test_sigkill_loses_no_acknowledged_write(
    tmp_path: Path, db: str, kill_points: tuple[int, ...]
) -> None:
    acked: dict[str, str] = {}
    for round_, kill_after in enumerate(kill_points):
        # The child starts again from key 0, so it first replays what earlier rounds wrote.
        threshold = len(acked) + kill_after
        acks = run_and_kill(db, tmp_path, threshold)
        assert len(acks) >= threshold
        for key, transaction_id in acks.items():
            # A key acknowledged in an earlier round is replayed with its first transaction.
            assert acked.setdefault(key, transaction_id) == transaction_id, key
        check_after_crash(db, acked, tmp_path)
        check_writer_continues(db, acked, round_)


def test_two_engines_on_one_database_fence_each_other(db: str) -> None:
    """Two writers of one ledger (as after a restart racing a survivor) never fork the log."""
    first, second = open_engine(db), open_engine(db)
    try:
        for n in range(12):
            engine = first if n % 2 else second
            committed = engine.execute(LEDGER, the_envelope(n * 5))  # recharges only
            assert committed.event.seq == n + 1
        # A key written through one engine is replayed by the other.
        again = first.execute(LEDGER, the_envelope(0))
        assert again.replayed
        assert again.event.seq == 1
        # Both see a wallet of 10 minor units; only one 8-unit expense can be paid.
        funds = Recharge(user_id="w", amount=10, currency="USD", gateway="paypal")
        first.execute(LEDGER, Envelope(idempotency_key="fund", command=funds))

        def pay(order_id: str) -> Envelope:
            line = OrderLine(order_id=order_id, amount=8)
            command = Expense(user_id="w", currency="USD", orders=(line,))
            return Envelope(idempotency_key=f"pay-{order_id}", command=command)

        (paid,) = first.execute_many(LEDGER, [pay("a")])
        (refused,) = second.execute_many(LEDGER, [pay("b")])
        assert isinstance(paid, Committed)
        assert not isinstance(refused, Committed)
        assert refused.reason.code == "insufficient_funds"
        result = verify(second, LEDGER)
        assert result.ok, (result.problem, result.projection_differences)
        assert result.events == 14
    finally:
        for engine in (first, second):
            engine.close()
            engine.store.close()

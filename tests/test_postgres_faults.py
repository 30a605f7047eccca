"""PostgreSQL restarting under load: reconnect by itself, lose nothing acknowledged.

A private cluster is crash-stopped and started again while a writer works. Every command
either succeeds (and is then durable) or fails with `CommitFailed`; retried with its
idempotency key it lands exactly once. Afterwards verify passes.
"""

from __future__ import annotations

import threading
import time

from pgcluster import private_cluster
from tally.bootstrap import open_engine
from tally.domain.commands import Envelope, Expense, OrderLine, Recharge
from tally.engine.results import CommitFailed, Committed
from tally.verification import verify

EXPENSES = 300
# The writer goes on past EXPENSES until the restart has failed a command, up to this many:
# on a loaded machine the restart may come late, after the first EXPENSES have all landed.
EXPENSES_MAX = 3 * EXPENSES
RESTART_WAIT_S = 120  # for the restarter to see its cue, and then for the restart to end
RETRY_ROUNDS_MAX = 60


def expense(i: int) -> Envelope:
    return Envelope(
        idempotency_key=f"e-{i}",
        command=Expense(
            user_id="alice", currency="USD", orders=(OrderLine(order_id=f"o-{i}", amount=10),)
        ),
    )


def test_a_crash_restart_of_postgresql_loses_nothing_acknowledged() -> None:
    with private_cluster() as cluster:
        engine = open_engine(cluster.url)
        try:
            engine.execute(
                "default",
                Envelope(
                    idempotency_key="fund",
                    command=Recharge(
                        user_id="alice", amount=10 * EXPENSES_MAX, currency="USD", gateway="paypal"
                    ),
                ),
            )
            acknowledged: dict[int, str] = {}
            failed: list[int] = []
            restarted = threading.Event()

            def restart_midway() -> None:
                deadline = time.monotonic() + RESTART_WAIT_S
                while len(acknowledged) < EXPENSES // 3 and time.monotonic() < deadline:
                    time.sleep(0.005)
                cluster.restart_abruptly()
                restarted.set()

            restarter = threading.Thread(target=restart_midway)
            restarter.start()
            sent = 0
            while sent < EXPENSES or (not failed and sent < EXPENSES_MAX):
                try:
                    written = engine.execute("default", expense(sent))
                    acknowledged[sent] = written.event.transaction_id
                except CommitFailed:
                    failed.append(sent)
                sent += 1
            restarter.join(RESTART_WAIT_S)
            assert restarted.is_set()
            assert failed, "the restart should have failed at least one command"
            # Retrying with the same keys lands each exactly once, on the same connection pool.
            for _ in range(RETRY_ROUNDS_MAX):
                still_failing = []
                for i in failed:
                    try:
                        result = engine.execute("default", expense(i))
                    except CommitFailed:
                        still_failing.append(i)
                        continue
                    assert isinstance(result, Committed)
                    acknowledged[i] = result.event.transaction_id
                failed = still_failing
                if not failed:
                    break
                time.sleep(0.5)
            assert not failed
            # Acknowledged before the restart means durable after it: same transaction back.
            for i, transaction_id in acknowledged.items():
                again = engine.execute("default", expense(i))
                assert again.replayed
                assert again.event.transaction_id == transaction_id
            engine.close()
            verification = verify(engine, "default")
            assert verification.ok, verification
            assert verification.events == sent + 1
        finally:
            engine.close()
            engine.store.close()

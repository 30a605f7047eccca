"""PostgreSQL's pipelined long-form commits take no lock while they wait in Python.

Batch N+1 is decided while N commits. If N+1 wrote its rows and then waited in Python for N's
compare-and-set, a cycle through another process (N waits on its rows, it waits on N+1's,
N+1 on N) would be one PostgreSQL's deadlock detector cannot see: everything would stand
still until the command timeout. So N+1 opens its transaction only once N's compare-and-set
is done. Here a session holding one of N's seqs uncommitted stands in for the other
process: N waits on it, and N+1 must not sit idle in a transaction meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg

from pg import fresh_database
from tally.bootstrap import open_engine
from tally.domain.commands import Envelope, Recharge
from tally.engine.results import Committed
from tally.verification import verify

LEDGER = "default"
WAIT_S = 60  # for what takes milliseconds on an idle machine
LOOK_S = 1.5  # how long N+1 is given to show itself idle in a transaction


def recharge(key: str) -> Envelope:
    return Envelope(
        idempotency_key=key,
        command=Recharge(user_id="u", amount=1, currency="USD", gateway="paypal"),
    )


async def _sessions(admin: asyncpg.Connection) -> list[Any]:
    return list(
        await admin.fetch(
            "SELECT pid, state, wait_event_type FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    )


async def _hold_a_seq_of_n_while_n1_waits(url: str, writer: Any) -> tuple[Any, Any]:
    """Batches N and N+1 submitted while another session holds one of N's seqs; what
    N+1 does while N waits on it is checked; the hold is then let go."""
    base = writer.state.seq
    admin = await asyncpg.connect(url)
    other = await asyncpg.connect(url)  # the other process, mid-commit
    try:
        other_pid = await other.fetchval("SELECT pg_backend_pid()")
        await other.execute("BEGIN")
        await other.execute(
            "INSERT INTO events VALUES ($1, $2, 'txn_other', 'x', '\\x00', '\\x00')",
            LEDGER,
            base + 500,
        )
        batch_n = writer.submit([recharge(f"n-{i}") for i in range(1_000)])
        batch_n1 = writer.submit([recharge(f"m-{i}") for i in range(300)])
        deadline = time.monotonic() + WAIT_S
        while not any(s["wait_event_type"] == "Lock" for s in await _sessions(admin)):
            assert time.monotonic() < deadline, "batch N never reached the held seq"
            await asyncio.sleep(0.01)
        idle: list[Any] = []
        looked_until = time.monotonic() + LOOK_S
        while not idle and time.monotonic() < looked_until:
            idle = [
                s
                for s in await _sessions(admin)
                if s["state"] == "idle in transaction" and s["pid"] != other_pid
            ]
            await asyncio.sleep(0.01)
        assert idle == [], "batch N+1 holds locks while it waits for N in Python"
        assert not batch_n.done()
        assert not batch_n1.done()
    finally:
        await other.execute("ROLLBACK")
        await other.close()
        await admin.close()
    return batch_n, batch_n1


def test_a_pipelined_batch_waits_for_the_previous_compare_and_set_holding_no_lock() -> None:
    with fresh_database() as url:
        engine = open_engine(url)
        try:
            writer = engine.writer(LEDGER)
            writer.submit([recharge("warm")]).result(WAIT_S)
            base = writer.state.seq
            batch_n, batch_n1 = asyncio.run(_hold_a_seq_of_n_while_n1_waits(url, writer))
            outcomes = batch_n.result(WAIT_S) + batch_n1.result(WAIT_S)
            assert all(isinstance(outcome, Committed) for outcome in outcomes)
            seqs = [o.event.seq for o in outcomes if isinstance(o, Committed)]
            assert seqs == list(range(base + 1, base + 1_301))
            engine.close()
            assert verify(engine, LEDGER).ok
        finally:
            engine.close()
            engine.store.close()

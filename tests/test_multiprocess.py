"""Several processes writing one ledger on one database: fenced, never forked, never overdrawn.

Each process runs its own engine (its own writer for the same ledger). The head row's
compare-and-set fences whichever writer is stale; it catches up from the log and decides
again, so the chain never forks, no write is lost or doubled, and the shared wallet never
goes below zero.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from tally.bootstrap import open_engine
from tally.domain.commands import Envelope, Recharge
from tally.verification import verify

WRITER = textwrap.dedent(
    """
    import json, sys
    from tally.bootstrap import open_engine
    from tally.domain.commands import Envelope, Expense, OrderLine
    from tally.domain.rejections import Rejected

    db, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    engine = open_engine(db)
    committed, refused = [], []
    for i in range(count):
        key = f"{name}-{i}"
        command = Expense(user_id="shared", currency="USD",
                          orders=(OrderLine(order_id=f"{key}-order", amount=700),))
        try:
            result = engine.execute("default", Envelope(idempotency_key=key, command=command))
            committed.append([key, result.event.seq])
        except Rejected as rejection:
            refused.append([key, rejection.reason.code])
    engine.close()
    engine.store.close()
    print(json.dumps({"committed": committed, "refused": refused}))
    """
)

PROCESSES = 3
EXPENSES_EACH = 40
FUNDS = 100 * 700 + 300  # enough for exactly 100 of the 120 expenses


def test_concurrent_processes_on_one_ledger(db: str, tmp_path: Path) -> None:
    database = db  # the contract suite's fixture: a SQLite path or a fresh PostgreSQL URL
    engine = open_engine(database)
    engine.execute(
        "default",
        Envelope(
            idempotency_key="fund",
            command=Recharge(user_id="shared", amount=FUNDS, currency="USD", gateway="paypal"),
        ),
    )
    engine.close()
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    children = [
        subprocess.Popen(
            [sys.executable, str(script), database, f"p{n}", str(EXPENSES_EACH)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(PROCESSES)
    ]
    reports = []
    for child in children:
        out, err = child.communicate(timeout=240)
        assert child.returncode == 0, err
        reports.append(json.loads(out))
    committed = [entry for report in reports for entry in report["committed"]]
    refused = [entry for report in reports for entry in report["refused"]]
    assert len(committed) == 100
    assert {code for _, code in refused} == {"insufficient_funds"}
    assert len(committed) + len(refused) == PROCESSES * EXPENSES_EACH
    # Every acknowledged write holds a distinct seq: no fork, nothing doubled.
    assert sorted(seq for _, seq in committed) == list(range(2, 102))
    try:
        verification = verify(engine, "default")
        assert verification.ok, verification
        assert verification.events == 101
        assert engine.writer("default").state.balance("wallet:shared:USD") == 300
    finally:
        engine.close()
        engine.store.close()

"""The finance report's speed on a large ledger, against folding the log for the same sums.

    .venv/bin/python -m bench.report [--store sqlite|postgresql|both] [--expenses N]

Builds a fresh ledger (`--wallets` funded wallets, then `--expenses` expenses of one order
each, spread over them and over `--merchants` merchants: two entries an expense), then
times, best of `--rounds`:
- `report-whole`: `tally.reports.finance_report` over the whole log (the database's sums);
- `report-period`: the same over the second half of the log by timestamp (two searches of
  the log for the seq range, then the sums);
- `baseline-fold`: the conventional way to the same figures without the store's help: read
  every event of the log, decode it and add its postings up per account and per event
  type in Python, as a report folded from the log would.
The baseline's figures are checked equal to the report's, so both compute the same thing.

On PostgreSQL the report is first timed once on the freshly built tables, which have no
statistics yet (`report-whole-unanalyzed`: autovacuum is off on this machine's server, as
after a bulk load or a restore anywhere), then the database gets `VACUUM (ANALYZE)`, as
autovacuum would have done by then, before the timed rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg

from bench import host
from bench.engine import _database, _fund
from tally import reports
from tally.audit.canonical import decode_event
from tally.bootstrap import open_engine
from tally.domain import accounts
from tally.domain.commands import Envelope, Expense, OrderLine
from tally.domain.rejections import Rejected
from tally.engine.engine import log_pages
from tally.engine.ports import Store
from tally.money import format_amount

LEDGER = "bench"


def build(db: str, *, wallets: int, expenses: int, merchants: int) -> tuple[float, int]:
    """The ledger's build time and the timestamp halfway through its expenses."""
    engine = open_engine(db)
    users = [f"user{i}" for i in range(wallets)]
    started = time.perf_counter()
    try:
        _fund(engine, users, amount=100 * (expenses // wallets + 1))
        envelopes = [
            Envelope(
                idempotency_key=f"r-{i}",
                command=Expense(
                    user_id=users[i % wallets],
                    currency="USD",
                    orders=(OrderLine(f"r-o{i}", 100, merchant_id=f"m{i % merchants}"),),
                ),
            )
            for i in range(expenses)
        ]
        half = len(envelopes) // 2
        outcomes = engine.execute_many(LEDGER, envelopes[:half])
        middle_us = time.time_ns() // 1_000
        time.sleep(0.002)
        outcomes += engine.execute_many(LEDGER, envelopes[half:])
        if any(isinstance(outcome, Rejected) for outcome in outcomes):
            raise RuntimeError("an expense was refused")
    finally:
        engine.close()
        engine.store.close()
    return time.perf_counter() - started, middle_us


def folded(store: Store, ledger: str) -> dict[str, Any]:
    """The whole-log figures the report gives, from the log alone (the baseline)."""
    closing: dict[str, int] = {}
    moved: dict[tuple[str, str, str], list[int]] = {}  # (type, kind, currency) -> [out, in]
    events = 0
    for page in log_pages(store, ledger, after=0):
        for row in page:
            _, event = decode_event(row.body)
            events += 1
            for posting in event.postings:
                closing[posting.account] = closing.get(posting.account, 0) + posting.amount
                kind, _, currency = accounts.split(posting.account)
                sums = moved.setdefault((event.event_type, kind, currency), [0, 0])
                sums[posting.amount > 0] += abs(posting.amount)
    wallets = sum(v for a, v in closing.items() if a.startswith(accounts.WALLET_PREFIX))
    return {
        "events": events,
        "wallets": format_amount(wallets, "USD"),
        "movements": {key: [format_amount(v, key[2]) for v in sums] for key, sums in moved.items()},
    }


def of_report(report: dict[str, Any]) -> dict[str, Any]:
    """The same figures, read from the report."""
    (usd,) = report["currencies"]
    (wallets,) = [line for line in usd["accounts"] if line["kind"] == accounts.WALLET]
    movements = {
        (kind["event_type"], movement["kind"], "USD"): [movement["debits"], movement["credits"]]
        for kind in usd["activity"]
        for movement in kind["movements"]
    }
    return {
        "events": report["last_seq"] - report["first_seq"] + 1,
        "wallets": wallets["closing"],
        "movements": movements,
    }


def best_of(rounds: int, run: Callable[[], Any]) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(rounds):
        started = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - started)
    return best, result


def run_store(kind: str, args: argparse.Namespace, folder: Path) -> list[tuple[str, float]]:
    with _database(kind, folder, "report") as db:
        built_s, middle_us = build(
            db, wallets=args.wallets, expenses=args.expenses, merchants=args.merchants
        )
        engine = open_engine(db)
        store = engine.store
        try:
            head = store.head(LEDGER)
            assert head is not None
            extra: list[tuple[str, float]] = []
            if kind == "postgresql":
                unanalyzed_s, _ = best_of(1, lambda: reports.finance_report(store, LEDGER))
                extra.append((f"{kind} report-whole-unanalyzed", unanalyzed_s))
                asyncio.run(_analyze(db))
            whole_s, whole = best_of(args.rounds, lambda: reports.finance_report(store, LEDGER))
            period_s, period = best_of(
                args.rounds, lambda: reports.finance_report(store, LEDGER, since_us=middle_us)
            )
            fold_s, baseline = best_of(1, lambda: folded(store, LEDGER))
        finally:
            engine.close()
            store.close()
    if baseline != of_report(whole):
        raise RuntimeError("the report and the fold of the log disagree")
    if not all(part["balanced"] for part in whole["currencies"]):
        raise RuntimeError("the report does not balance")
    print(
        f"{kind}: {head.seq:,} events, {2 * args.expenses + 2 * args.wallets:,} entries "
        f"(built in {built_s:.1f} s); period from seq {period['first_seq']:,}"
    )
    return [
        *extra,
        (f"{kind} report-whole", whole_s),
        (f"{kind} report-period", period_s),
        (f"{kind} baseline-fold", fold_s),
    ]


async def _analyze(url: str) -> None:
    db = await asyncpg.connect(url)
    try:
        await db.execute("VACUUM (ANALYZE)")
    finally:
        await db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--expenses", type=int, default=500_000)
    parser.add_argument("--wallets", type=int, default=10_000)
    parser.add_argument("--merchants", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(host.describe(host.python_loop_s()))
    kinds = ["sqlite", "postgresql"] if args.store == "both" else [args.store]
    rows: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory() as folder:
        for kind in kinds:
            rows += run_store(kind, args, Path(folder))
    print("| scenario | seconds |\n|---|---:|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.2f} |")
    print("\n| ratio | value |\n|---|---:|")
    for kind in kinds:
        times = {name.split()[1]: seconds for name, seconds in rows if name.startswith(kind)}
        print(
            f"| {kind}: baseline fold / report (whole log) | "
            f"{times['baseline-fold'] / times['report-whole']:.1f} |"
        )


if __name__ == "__main__":
    main()

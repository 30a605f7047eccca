"""In-process engine throughput on SQLite (durable: WAL, synchronous=FULL).

    .venv/bin/python -m bench.engine [--expenses N] [--wallets N] [--out docs/benchmarks.md]

Scenarios, all measured in one run so the ratios compare like with like on a noisy machine:
- tally, batch size 1000, expenses spread uniformly over `--wallets` wallets;
- tally, batch size 1000, every expense on one hot wallet;
- tally, batch size 1 (one commit, so one fsync, per expense), uniform and hot;
- baseline: the conventional ledger on the same SQLite settings, one database transaction
  per expense (read the balance, check it, insert the entries with balance_after, update
  both balances), uniform.
Each expense pays one order of 1.00 USD. Wallets are funded before the clock starts.
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tally.bootstrap import open_engine
from tally.domain.commands import Envelope, Expense, OrderLine, Recharge
from tally.domain.rejections import Rejected
from tally.engine.engine import Engine

USD = "USD"


@dataclass(frozen=True, slots=True)
class Result:
    name: str
    expenses: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.expenses / self.seconds


def _fund(engine: Engine, users: list[str], amount: int) -> None:
    envelopes = [
        Envelope(
            idempotency_key=f"fund-{user}",
            command=Recharge(user_id=user, amount=amount, currency=USD, gateway="paypal"),
        )
        for user in users
    ]
    for outcome in engine.execute_many("bench", envelopes):
        if isinstance(outcome, Rejected):
            raise outcome


def _expenses(users: list[str], count: int, tag: str) -> list[Envelope]:
    return [
        Envelope(
            idempotency_key=f"{tag}-{i}",
            command=Expense(
                user_id=users[i % len(users)],
                currency=USD,
                orders=(OrderLine(order_id=f"{tag}-o{i}", amount=100, merchant_id="shop"),),
            ),
        )
        for i in range(count)
    ]


def run_tally(name: str, *, wallets: int, expenses: int, batch: int, folder: Path) -> Result:
    engine = open_engine(folder / f"{name}.db", batch_commands_max=batch)
    users = [f"user{i}" for i in range(wallets)]
    try:
        _fund(engine, users, amount=100 * (expenses // wallets + 1))
        envelopes = _expenses(users, expenses, name)
        started = time.perf_counter()
        if batch == 1:
            for envelope in envelopes:
                engine.execute("bench", envelope)
        else:
            outcomes = engine.execute_many("bench", envelopes)
        elapsed = time.perf_counter() - started
        if batch != 1 and any(isinstance(o, Rejected) for o in outcomes):
            raise RuntimeError("an expense was refused")
    finally:
        engine.close()
        engine.store.close()
    return Result(name, expenses, elapsed)


def run_baseline(name: str, *, wallets: int, expenses: int, folder: Path) -> Result:
    """The conventional ledger: one transaction per expense, balances read and updated."""
    db = sqlite3.connect(folder / f"{name}.db", isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    db.executescript(
        "CREATE TABLE accounts (id TEXT PRIMARY KEY, balance INTEGER NOT NULL);"
        "CREATE TABLE entries (id INTEGER PRIMARY KEY, account TEXT, txn INTEGER, "
        "amount INTEGER, balance_after INTEGER, order_id TEXT);"
        "CREATE INDEX entries_by_account ON entries (account, id);"
    )
    per_wallet = 100 * (expenses // wallets + 1)
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO accounts VALUES (?, ?)", [(f"wallet:u{i}", per_wallet) for i in range(wallets)]
    )
    db.execute("INSERT INTO accounts VALUES ('revenue:shop', 0)")
    db.execute("COMMIT")
    started = time.perf_counter()
    for i in range(expenses):
        wallet = f"wallet:u{i % wallets}"
        db.execute("BEGIN IMMEDIATE")
        (balance,) = db.execute("SELECT balance FROM accounts WHERE id = ?", (wallet,)).fetchone()
        (revenue,) = db.execute("SELECT balance FROM accounts WHERE id = 'revenue:shop'").fetchone()
        if balance < 100:
            raise RuntimeError("baseline overdraw")
        db.execute(
            "INSERT INTO entries (account, txn, amount, balance_after, order_id) "
            "VALUES (?, ?, ?, ?, ?), ('revenue:shop', ?, ?, ?, ?)",
            (wallet, i, -100, balance - 100, f"o{i}", i, 100, revenue + 100, f"o{i}"),
        )
        db.execute("UPDATE accounts SET balance = ? WHERE id = ?", (balance - 100, wallet))
        db.execute("UPDATE accounts SET balance = ? WHERE id = 'revenue:shop'", (revenue + 100,))
        db.execute("COMMIT")
    elapsed = time.perf_counter() - started
    db.close()
    return Result(name, expenses, elapsed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--expenses", type=int, default=100_000)
    parser.add_argument("--single-expenses", type=int, default=2_000)
    parser.add_argument("--wallets", type=int, default=10_000)
    parser.add_argument("--out", type=Path, help="write the results table to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tally-bench-") as tmp:
        folder = Path(tmp)
        runs: list[Callable[[], Result]] = [
            lambda: run_tally(
                "uniform-batch1000",
                wallets=args.wallets,
                expenses=args.expenses,
                batch=1000,
                folder=folder,
            ),
            lambda: run_tally(
                "hot-batch1000", wallets=1, expenses=args.expenses, batch=1000, folder=folder
            ),
            lambda: run_tally(
                "uniform-batch1",
                wallets=args.wallets,
                expenses=args.single_expenses,
                batch=1,
                folder=folder,
            ),
            lambda: run_tally(
                "hot-batch1", wallets=1, expenses=args.single_expenses, batch=1, folder=folder
            ),
            lambda: run_baseline(
                "baseline-uniform",
                wallets=args.wallets,
                expenses=args.single_expenses,
                folder=folder,
            ),
        ]
        results = {}
        for run in runs:
            result = run()
            results[result.name] = result
            print(
                f"{result.name:>20}: {result.expenses:>7} expenses in "
                f"{result.seconds:6.2f} s = {result.per_second:>9,.0f}/s",
                flush=True,
            )
    table = _table(results)
    print(table)
    if args.out:
        args.out.write_text(table)


def _table(results: dict[str, Result]) -> str:
    def rate(name: str) -> float:
        return results[name].per_second

    lines = [
        "| scenario | expenses | seconds | expenses/s |",
        "|---|---:|---:|---:|",
        *(
            f"| {r.name} | {r.expenses:,} | {r.seconds:.2f} | {r.per_second:,.0f} |"
            for r in results.values()
        ),
        "",
        "| ratio | value |",
        "|---|---:|",
        f"| hot / uniform, batch 1000 | {rate('hot-batch1000') / rate('uniform-batch1000'):.2f} |",
        f"| hot / uniform, batch 1 | {rate('hot-batch1') / rate('uniform-batch1'):.2f} |",
        f"| tally batch 1000 / baseline | "
        f"{rate('uniform-batch1000') / rate('baseline-uniform'):.1f} |",
        f"| tally batch 1 / baseline | {rate('uniform-batch1') / rate('baseline-uniform'):.2f} |",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

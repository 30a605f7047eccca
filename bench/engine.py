"""In-process engine throughput, durable, on SQLite or PostgreSQL.

    .venv/bin/python -m bench.engine [--store sqlite|postgresql] [--expenses N] [--wallets N]

SQLite runs with WAL and synchronous=FULL; PostgreSQL with synchronous_commit=on (the
server's default, checked). Each scenario gets a fresh file or database.

Scenarios, all measured in one run so the ratios compare like with like on a noisy machine:
- tally, batch size 1000, expenses spread uniformly over `--wallets` wallets;
- tally, batch size 1000, every expense on one hot wallet;
- tally, batch size 1 (one commit, so one fsync, per expense), uniform and hot;
- baseline: the conventional ledger on the same SQLite settings, one database transaction
  per expense (lock and read both balances, check, insert the entries with balance_after,
  update both balances), uniform.
Each expense pays one order of 1.00 USD. Wallets are funded before the clock starts.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from bench import host
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
    cpu_seconds: float | None = None  # this process's CPU (all threads; not the database server's)

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


PG_ADMIN_URL = os.environ.get("TALLY_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


@contextmanager
def _database(store: str, folder: Path, name: str) -> Iterator[str]:
    """A fresh SQLite path or PostgreSQL database URL for one scenario."""
    if store == "sqlite":
        yield str(folder / f"{name}.db")
        return
    database = f"tally_bench_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> None:
        db = await asyncpg.connect(PG_ADMIN_URL)
        try:
            if await db.fetchval("SHOW synchronous_commit") != "on":
                raise RuntimeError("benchmarks need synchronous_commit=on")
            await db.execute(sql)
        finally:
            await db.close()

    asyncio.run(admin(f'CREATE DATABASE "{database}"'))
    try:
        yield f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{database}"
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))


def run_tally(name: str, *, wallets: int, expenses: int, batch: int, db: str) -> Result:
    engine = open_engine(db, batch_commands_max=batch)
    users = [f"user{i}" for i in range(wallets)]
    try:
        _fund(engine, users, amount=100 * (expenses // wallets + 1))
        envelopes = _expenses(users, expenses, name)
        cpu_started = time.process_time()
        started = time.perf_counter()
        if batch == 1:
            for envelope in envelopes:
                engine.execute("bench", envelope)
        else:
            outcomes = engine.execute_many("bench", envelopes)
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        if batch != 1 and any(isinstance(o, Rejected) for o in outcomes):
            raise RuntimeError("an expense was refused")
    finally:
        engine.close()
        engine.store.close()
    return Result(name, expenses, elapsed, cpu)


def run_baseline(name: str, *, store: str, wallets: int, expenses: int, db: str) -> Result:
    """The conventional ledger: one database transaction per expense."""
    if store == "sqlite":
        return _baseline_sqlite(name, wallets=wallets, expenses=expenses, path=db)
    return asyncio.run(_baseline_postgres(name, wallets=wallets, expenses=expenses, url=db))


def _baseline_sqlite(name: str, *, wallets: int, expenses: int, path: str) -> Result:
    db = sqlite3.connect(path, isolation_level=None)
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


baseline_connections = 16
BaselineDb = asyncpg.Connection | PoolConnectionProxy


async def baseline_schema(
    db: BaselineDb, *, wallets: list[str], merchants: list[str], per_wallet: int
) -> None:
    """The conventional ledger's tables: accounts with balances, entries with balance_after."""
    await db.execute(
        "CREATE TABLE accounts (id TEXT PRIMARY KEY, balance BIGINT NOT NULL);"
        "CREATE TABLE entries (id BIGSERIAL PRIMARY KEY, account TEXT, txn BIGINT, "
        "amount BIGINT, balance_after BIGINT, order_id TEXT);"
        "CREATE INDEX entries_by_account ON entries (account, id);"
    )
    await db.copy_records_to_table(
        "accounts",
        records=[(wallet, per_wallet) for wallet in wallets] + [(m, 0) for m in merchants],
    )


async def baseline_transfer(
    db: BaselineDb, wallet: str, merchant: str, txn: int, amount: int = 100
) -> None:
    """One transfer, one transaction: lock both accounts in id order, check the wallet's
    balance, insert both entries with balance_after, update both balances."""
    async with db.transaction():
        rows = await db.fetch(
            "SELECT id, balance FROM accounts WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE",
            [wallet, merchant],
        )
        balance = {row[0]: row[1] for row in rows}
        if balance[wallet] < amount:
            raise RuntimeError("baseline overdraw")
        await db.execute(
            "INSERT INTO entries (account, txn, amount, balance_after, order_id) "
            "VALUES ($1, $2, $3, $4, $5), ($6, $2, $7, $8, $5)",
            wallet,
            txn,
            -amount,
            balance[wallet] - amount,
            f"o{txn}",
            merchant,
            amount,
            balance[merchant] + amount,
        )
        await db.execute(
            "UPDATE accounts SET balance = balance + CASE id WHEN $1 THEN $3::bigint "
            "ELSE $4::bigint END WHERE id = ANY($2::text[])",
            wallet,
            [wallet, merchant],
            -amount,
            amount,
        )


async def _baseline_postgres(name: str, *, wallets: int, expenses: int, url: str) -> Result:
    """Each transfer: lock both accounts in id order, check, insert entries, update balances."""
    pool = await asyncpg.create_pool(
        url, min_size=baseline_connections, max_size=baseline_connections
    )
    async with pool.acquire() as db:
        await baseline_schema(
            db,
            wallets=[f"wallet:u{i}" for i in range(wallets)],
            merchants=["revenue:shop"],
            per_wallet=100 * (expenses // wallets + 1),
        )
    counter = iter(range(expenses))

    async def worker() -> None:
        async with pool.acquire() as db:
            for i in counter:
                await baseline_transfer(db, f"wallet:u{i % wallets}", "revenue:shop", i)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(baseline_connections)))
    elapsed = time.perf_counter() - started
    await pool.close()
    return Result(name, expenses, elapsed)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--expenses", type=int, default=100_000)
    parser.add_argument("--single-expenses", type=int, default=2_000)
    parser.add_argument("--wallets", type=int, default=10_000)
    args = parser.parse_args()
    store = args.store
    host.report()
    with tempfile.TemporaryDirectory(prefix="tally-bench-") as tmp:
        folder = Path(tmp)

        def tally(name: str, wallets: int, expenses: int, batch: int) -> Callable[[], Result]:
            def run() -> Result:
                with _database(store, folder, name) as db:
                    return run_tally(name, wallets=wallets, expenses=expenses, batch=batch, db=db)

            return run

        def baseline() -> Result:
            with _database(store, folder, "baseline") as db:
                return run_baseline(
                    "baseline-uniform",
                    store=store,
                    wallets=args.wallets,
                    expenses=args.single_expenses,
                    db=db,
                )

        runs: list[Callable[[], Result]] = [
            tally("uniform-batch1000", args.wallets, args.expenses, 1000),
            tally("hot-batch1000", 1, args.expenses, 1000),
            tally("uniform-batch1", args.wallets, args.single_expenses, 1),
            tally("hot-batch1", 1, args.single_expenses, 1),
            baseline,
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
    print(f"store: {store}")
    print(_table(results))


def _table(results: dict[str, Result]) -> str:
    def rate(name: str) -> float:
        return results[name].per_second

    lines = [
        "| scenario | expenses | seconds | expenses/s | process CPU µs/expense |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {r.name} | {r.expenses:,} | {r.seconds:.2f} | {r.per_second:,.0f} | "
            f"{'' if r.cpu_seconds is None else f'{r.cpu_seconds / r.expenses * 1e6:.1f}'} |"
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

"""One or a few HTTP scenarios of bench.api, quickly: for measuring a change while making it.

    .venv/bin/python -m bench.quick [--store sqlite|postgresql] [--seconds 8]
        [--scenario expense-uniform,expense-hot,mixed-uniform,batch-uniform,statement,balances,
                    order,transaction]
        [--statement-entries 200000] [--profile]

Starts `tally serve` on a fresh database as bench.api does, funds 10,000 wallets, runs each
scenario with wrk (single expenses, and the mix of bench.api's `mixed-uniform` with its 2,000
refund targets: 64 connections; batch: 4 connections of 1,000 expenses;
statement pages: 8 connections over a wallet of `--statement-entries` entries; balances:
8 connections reading the funded wallets' balances; order / transaction: 8 connections
reading the mixed scenario's 2,000 refund targets' orders, or their expenses) and prints
throughput, wrk's p50/p99 and the server's CPU per request. Nothing is written to docs/:
the figures of record come from bench.api, which runs everything against its baseline.
`--profile` samples the server with py-spy (GIL holders, as bench.api's profile) through
the middle of each scenario and prints where its time goes, by function; py-spy shares the
two cores, so that run's throughput and CPU figures are not comparable with others.
Runs of this on a shared 2-core machine differ by ±10%: compare changes in one sitting.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import httpx

from bench import api, host
from bench.engine import _database

SCENARIOS = (
    "expense-uniform",
    "expense-hot",
    "mixed-uniform",
    "batch-uniform",
    "statement",
    "balances",
    "order",
    "transaction",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--scenario", default="expense-uniform,expense-hot")
    parser.add_argument("--statement-entries", type=int, default=200_000)
    parser.add_argument("--profile", action="store_true", help="py-spy the server (GIL)")
    parser.add_argument(
        "--no-settle",
        action="store_true",
        help="no CHECKPOINT after the statement wallet's build (to see what it buys)",
    )
    args = parser.parse_args()
    scenarios = args.scenario.split(",")
    unknown = set(scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s) {sorted(unknown)}; choose from {SCENARIOS}")
    host.report()
    with tempfile.TemporaryDirectory(prefix="tally-bench-quick-") as tmp:
        folder = Path(tmp)
        with _database(args.store, folder, "quick") as db:
            cursors = folder / "cursors.txt"
            read_key = ""
            if "statement" in scenarios:
                api._build_statement(db, args.statement_entries)
                if not args.no_settle:
                    api._settle(db)
                read_key = api._key(db, "statement")
                api._statement_cursors(args.statement_entries, cursors, random.Random(7))
            key = api._key(db, "bench")
            with api._serve(db, folder) as server:
                with httpx.Client(
                    base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=300
                ) as client:
                    api._fund(client, 10_000)
                    if {"mixed-uniform", "order", "transaction"} & set(scenarios):
                        api._refund_targets(client, 2_000, 10_000, folder / "refunds.txt")
                for index, scenario in enumerate(scenarios):
                    _run(server, db, scenario, index, key, read_key, cursors, args)


def _run(
    server: api.Server,
    db: str,
    scenario: str,
    index: int,
    key: str,
    read_key: str,
    cursors: Path,
    args: argparse.Namespace,
) -> None:
    wallets = 1 if scenario == "expense-hot" else 10_000
    options: dict[str, object] = {"wallets": wallets, "merchants": wallets}
    per_request = 1
    if scenario == "batch-uniform":
        mode, connections, per_request = "batch", 4, 1000
        options["batch"] = per_request
    elif scenario == "mixed-uniform":
        mode, connections = "mixed", 64
        options["datafile"] = str(cursors.with_name("refunds.txt"))
    elif scenario == "statement":
        mode, connections = "statement", 8
        options = {"datafile": str(cursors)}
        key = read_key
    elif scenario == "balances":  # the funded wallets of `bench`, read with its admin key
        mode, connections = "balances", 8
    elif scenario in ("order", "transaction"):  # the refund targets' orders or expenses
        mode, connections = scenario, 8
        options["datafile"] = str(cursors.with_name("refunds.txt"))
    else:
        mode, connections = "expense", 64
    before = api.PgMark.now(db) if args.store == "postgresql" else None
    gc_before = api.gc_pause_buckets(server.url)
    cpu = api._cpu_seconds(server.pid)
    load = api._wrk_start(
        server.url,
        mode=mode,
        key=key,
        connections=connections,
        seconds=args.seconds,
        prefix=f"q{index}",
        **options,  # type: ignore[arg-type]
    )
    spied = cursors.with_name(f"spy-{index}.txt")  # in the run's temporary folder
    profile = _spy(server, args.seconds, spied) if args.profile else None
    run = api._wrk_finish(load, args.seconds)
    cpu = api._cpu_seconds(server.pid) - cpu
    if profile is not None:
        _print_profile(profile, requests=round(run.answered * profile[1] / run.seconds))
    rate = run.answered * per_request / run.seconds
    units = {"statement": "pages", "balances": "reads", "order": "reads", "transaction": "reads"}
    unit = units.get(mode, "transfers")
    longest = api.longest_gc_pause_ms(gc_before, api.gc_pause_buckets(server.url))
    activity = {"wal_bytes_per_op": None, "checkpoint_ended": None}
    if before is not None:
        activity = api.PgMark.now(db).since(before, run.answered * per_request)
        if unit != "transfers":  # reads write no WAL worth a rate
            activity["wal_bytes_per_op"] = None
    note = api.activity_note(**activity, gc_pause_max_ms=longest)
    print(
        f"{args.store} {scenario}: {rate:,.0f} {unit}/s, p50 {run.p50_ms:.1f} ms, "
        f"p99 {run.p99_ms:.1f} ms, server CPU {cpu / max(run.requests, 1) * 1e6:,.0f} "
        f"µs/request, errors {run.errors}, refused {run.refused}{note}",
        flush=True,
    )


_SPY_RATE = 200


def _spy(server: api.Server, seconds: float, out: Path) -> tuple[Path, float] | None:
    """py-spy's raw GIL samples over the middle of a scenario (1 s after its start)."""
    spied = max(1.0, seconds - 2)
    time.sleep(1)
    if not api.py_spy_gil(server.pid, seconds=spied, rate=_SPY_RATE, out=out):
        return None
    return out, spied


def _print_profile(profile: tuple[Path, float], *, requests: int) -> None:
    path, seconds = profile
    summary = api._summarize_profile(
        path, seconds=seconds, rate=_SPY_RATE, requests=max(requests, 1)
    )
    if not summary:
        print("py-spy recorded no samples", flush=True)
        return
    print(
        f"  GIL held {summary['gil_busy']:.0%}, {summary['gil_us_per_request']:,.0f} µs a "
        "request; by thread: "
        + ", ".join(f"{name} {share:.0%}" for name, share in summary["threads"]),
        flush=True,
    )
    for title in ("self", "inclusive"):
        print(f"  {title}:", flush=True)
        for name, share in summary[title][:30]:
            print(f"    {share:6.1%}  {name}", flush=True)


if __name__ == "__main__":
    main()

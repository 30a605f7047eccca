"""Two revisions of tally side by side at the API: for measuring a change on a noisy host.

    .venv/bin/python -m bench.ab --a REV [--b REV] [--store sqlite|postgresql]
        [--scenario expense-uniform|expense-hot|batch-uniform|balances|order|transaction|events]
        [--pairs 8] [--seconds 5]

Checks out each revision (`--b` defaults to the working tree) into a temporary git worktree,
starts one `tally serve` per revision on a fresh database (each created by its own
revision's CLI, so migrations match), funds 10,000 wallets on both (and pays 2,000 orders,
which the order and transaction scenarios read, as `bench.quick` does) and settles both
(PostgreSQL: VACUUM (ANALYZE) and a CHECKPOINT, as `bench.api` does), then alternates wrk runs
of the scenario between the two servers, swapping which goes first every pair; the idle
one costs nothing meanwhile. The host's drift over minutes (other tenants, a database that
grows) then falls on both alike, which `bench.quick` runs minutes apart cannot promise.
Prints each run, then per revision the median throughput, p99 and server CPU a request,
and in how many pairs B was faster. Figures from a run of this go to docs/benchmarks.md's
"What each change bought" with the command that made them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench import api, host
from bench.engine import _database

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = (
    "expense-uniform",
    "expense-hot",
    "batch-uniform",
    "balances",
    "order",
    "transaction",
    "events",
)
READS = {"balances", "order", "transaction", "events"}  # 8 connections; single writes 64
BATCH = 1_000  # expenses a request in batch-uniform, over 4 connections (as bench.api)


@dataclass(frozen=True, slots=True)
class Side:
    name: str
    label: str  # the revision, as given
    server: api.Server
    key: str
    targets: Path  # lines "EXPENSE_ID ORDER_ID"


@dataclass(frozen=True, slots=True)
class Run:
    rate: float
    p99_ms: float
    cpu_us: float
    failed: int  # wrk's errors and answers >= 400


@contextlib.contextmanager
def _python_path(source: Path) -> Iterator[None]:
    """Children started meanwhile (the CLI, the server) import tally from `source`."""
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(source), *([before] if before else [])])
    try:
        yield
    finally:
        if before is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = before


@contextlib.contextmanager
def _tree(revision: str | None, folder: Path) -> Iterator[Path]:
    """The `src` folder of `revision` checked out in a worktree (None: this working tree)."""
    if revision is None:
        yield ROOT / "src"
        return
    checkout = folder / "tree"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(checkout), revision],
        check=True,
    )
    try:
        yield checkout / "src"
    finally:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(checkout)], check=False
        )
        subprocess.run(["git", "-C", str(ROOT), "worktree", "prune"], check=False)


def _side(
    stack: contextlib.ExitStack, store: str, name: str, revision: str | None, folder: Path
) -> Side:
    source = stack.enter_context(_tree(revision, folder))
    db = stack.enter_context(_database(store, folder, f"ab_{name.lower()}"))
    with _python_path(source):
        key = api._key(db, "bench")
        server = stack.enter_context(api._serve(db, folder))
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=300
    ) as client:
        api._fund(client, 10_000)
        targets = folder / "targets.txt"
        api._refund_targets(client, 2_000, 10_000, targets)
    api._settle(db)  # statistics and hint bits, as bench.api has before it measures
    return Side(name, revision or "working tree", server, key, targets)


def _run(side: Side, scenario: str, seconds: float, prefix: str) -> Run:
    wallets = 1 if scenario == "expense-hot" else 10_000
    mode, connections = (scenario, 8) if scenario in READS else ("expense", 64)
    batch = BATCH if scenario == "batch-uniform" else 0
    if batch:
        mode, connections = "batch", 4
    cpu = api._cpu_seconds(side.server.pid)
    load = api._wrk_start(
        side.server.url,
        mode=mode,
        key=side.key,
        connections=connections,
        seconds=seconds,
        prefix=prefix,
        wallets=wallets,
        merchants=wallets,
        batch=batch,
        datafile=str(side.targets),
    )
    done = api._wrk_finish(load, seconds)
    cpu = api._cpu_seconds(side.server.pid) - cpu
    per_request = max(batch, 1)  # throughput and CPU per transfer
    return Run(
        done.answered * per_request / done.seconds,
        done.p99_ms,
        cpu / max(done.requests * per_request, 1) * 1e6,
        done.errors + done.refused,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--a", required=True, help="the baseline revision (git rev)")
    parser.add_argument("--b", default=None, help="the revision to compare (default: this tree)")
    parser.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--scenario", choices=SCENARIOS, default="expense-uniform")
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    host.report()
    with (
        tempfile.TemporaryDirectory(prefix="tally-bench-ab-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        sides = []
        for name, revision in (("A", args.a), ("B", args.b)):
            folder = Path(tmp) / name
            folder.mkdir()
            sides.append(_side(stack, args.store, name, revision, folder))
        runs: dict[str, list[Run]] = {"A": [], "B": []}
        unit = "transfer" if args.scenario == "batch-uniform" else "request"
        for pair in range(args.pairs):
            for side in sides if pair % 2 == 0 else reversed(sides):
                run = _run(side, args.scenario, args.seconds, f"{side.name.lower()}{pair}")
                runs[side.name].append(run)
                print(
                    f"{side.name} pair {pair}: {run.rate:,.0f}/s, p99 {run.p99_ms:.1f} ms, "
                    f"server CPU {run.cpu_us:,.0f} µs/{unit}"
                    + (f", FAILED {run.failed:,}" if run.failed else ""),
                    flush=True,
                )
        for side in sides:
            mine = runs[side.name]
            rate = statistics.median(r.rate for r in mine)
            print(
                f"{side.name} ({side.label}): median {rate:,.0f}/s, "
                f"p99 {statistics.median(r.p99_ms for r in mine):.1f} ms, server CPU "
                f"{statistics.median(r.cpu_us for r in mine):,.0f} µs/{unit}",
                flush=True,
            )
        faster = sum(b.rate > a.rate for a, b in zip(runs["A"], runs["B"], strict=True))
        print(f"B faster in {faster} of {args.pairs} pairs ({args.store} {args.scenario})")


if __name__ == "__main__":
    main()

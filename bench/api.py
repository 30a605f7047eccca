"""The HTTP API under load: `tally serve` driven by wrk, against the conventional ledger.

    .venv/bin/python -m bench.api [--store sqlite|postgresql|both] [--seconds 15]

Needs `wrk`, the HTTP load generator (Debian/Ubuntu: `apt-get install -y wrk`; macOS:
`brew install wrk`), PostgreSQL on 127.0.0.1:5432 for the baseline and `--store postgresql`
(`TALLY_BENCH_PG` overrides the admin URL), and py-spy for the profile (the dev extra).

Per store, on a fresh SQLite file or PostgreSQL database:
1. a wallet with `--statement-entries` entries is built in-process (one recharge each, in a
   ledger of its own; PostgreSQL then checkpoints), then `tally serve` starts as a
   subprocess; 10,000 wallets are funded through /v1/batch before any clock starts;
2. wrk scenarios, `--seconds` each, every write with a unique Idempotency-Key and order id:
   single expenses with `--connections` connections uniform over `--wallets` wallets and as
   many merchants, and all on one hot wallet and merchant; a mix of 70% expenses, 15%
   recharges, 15% refunds; /v1/batch with `--batch-size` expenses a request; statement pages
   (100 entries) of the big wallet at random cursors, alone and under the expense load;
3. the server is profiled with py-spy (GIL samples) under the uniform expense load;
4. baseline: the conventional PostgreSQL ledger (one database transaction per transfer, both
   accounts locked with SELECT ... FOR UPDATE in id order; bench/engine.py), driven over SQL
   with the same number of connections, uniform and hot, in the same run;
5. `tally verify` and `tally replay`, timed (CLI wall time); the sum of all balances must be
   zero per ledger and currency.

Results go to stdout, docs/benchmarks-api.json (the latest per store), the "At the HTTP API"
section of docs/benchmarks.md and docs/benchmarks-api.png.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import concurrent.futures
import datetime
import json
import multiprocessing
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench import host
from bench.engine import _database, baseline_schema, baseline_transfer
from tally.bootstrap import open_engine
from tally.domain.commands import Envelope, Recharge
from tally.domain.rejections import Rejected
from tally.http.writes import batch_body_bytes_max

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent
LUA = Path(__file__).with_name("api.lua")
TALLY = str(Path(sys.executable).with_name("tally"))
DOCS = ROOT / "docs" / "benchmarks.md"
RESULTS = ROOT / "docs" / "benchmarks-api.json"
CHART = ROOT / "docs" / "benchmarks-api.png"
BEGIN = "<!-- bench.api: generated from docs/benchmarks-api.json, do not edit by hand -->"
END = "<!-- bench.api: end of generated part -->"
REQUEST_BODY_BYTES_MAX = batch_body_bytes_max
PAST_EVERY_POSTING = 999_999_999  # cursor (seq, this): after every posting of seq (9 digits max)
STORE_TITLES = {"sqlite": "SQLite", "postgresql": "PostgreSQL 15 (local, same machine)"}
IDLE_LEAVES = ("Condition.wait", "Event.wait", "Queue.get", "Thread.join", "select (")


@dataclass(frozen=True, slots=True)
class Row:
    """One measured scenario: `ops` transfers (or statement pages, for reads)."""

    scenario: str
    kind: str  # tally | baseline | read
    ops: int
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_us_per_request: float | None = None
    note: str = ""
    # PostgreSQL only: WAL written per transfer, and whether a checkpoint ended (its fsyncs
    # can hold commits back: a p99 outlier then is the database's flushing).
    wal_bytes_per_op: float | None = None
    checkpoint_ended: bool | None = None
    # tally's writes: the longest pause of Python's garbage collector in the server, as the
    # bound of its histogram bucket (`tally_gc_pause_seconds`), in ms; 0 when none ran.
    gc_pause_max_ms: float | None = None

    @property
    def per_second(self) -> float:
        return self.ops / self.seconds


@dataclass(slots=True)
class StoreRun:
    store: str
    when: str
    settings: dict[str, Any]
    rows: list[Row] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    profile: dict[str, Any] = field(default_factory=dict)

    def row(self, scenario: str) -> Row:
        return next(row for row in self.rows if row.scenario == scenario)


# -- wrk ---------------------------------------------------------------------------------
def _wrk_path() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise SystemExit(
            "bench.api needs wrk, the HTTP load generator: `apt-get install -y wrk` "
            "(Debian/Ubuntu) or `brew install wrk` (macOS), then run again."
        )
    return found


@dataclass(frozen=True, slots=True)
class WrkRun:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int
    refused: int  # answers with a status >= 400

    @property
    def answered(self) -> int:
        """Requests answered with a 2xx."""
        return self.requests - self.refused


def _wrk_start(
    url: str,
    *,
    mode: str,
    key: str,
    connections: int,
    seconds: float,
    prefix: str,
    wallets: int = 1,
    merchants: int = 1,
    batch: int = 0,
    datafile: str = "-",
) -> subprocess.Popen[str]:
    command = [
        _wrk_path(),
        f"-t{min(2, connections)}",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "--timeout",
        "30s",
        "-s",
        str(LUA),
        url,
        "--",
        mode,
        key,
        str(wallets),
        str(merchants),
        prefix,
        str(batch),
        datafile,
    ]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wrk_finish(process: subprocess.Popen[str], seconds: float) -> WrkRun:
    try:
        out, err = process.communicate(timeout=seconds + 90)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise RuntimeError("wrk did not finish") from None
    found = re.search(r"^BENCH_JSON (\{.*\})$", out, re.MULTILINE)
    if process.returncode != 0 or found is None:
        raise RuntimeError(f"wrk failed ({process.returncode}): {out}\n{err}")
    data = json.loads(found[1])
    for refusal in re.findall(r"^BENCH_ERROR (.*)$", out, re.MULTILINE)[:2]:
        print(f"  wrk saw: {refusal}", flush=True)
    errors = sum(data[k] for k in ("connect", "read", "write", "status", "timeout"))
    return WrkRun(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        p50_ms=data["p50"] / 1000,
        p99_ms=data["p99"] / 1000,
        errors=errors,
        refused=data["status"],
    )


settle_seconds = 10  # pause before statement-idle (see run_store)


# -- the server ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Server:
    url: str
    pid: int


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def _serve(db: str, folder: Path) -> Iterator[Server]:
    port = _free_port()
    log_path = folder / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [TALLY, "serve", "--db", db, "--host", HOST, "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            url = f"http://{HOST}:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"tally serve did not start: {log_path.read_text()}")
                time.sleep(0.1)
            yield Server(url=url, pid=process.pid)
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class PgMark:
    """Where PostgreSQL's WAL and checkpoints stood at one moment (the whole cluster's)."""

    wal_bytes: int
    checkpoint_time: datetime.datetime

    @staticmethod
    def now(url: str) -> PgMark:
        async def read() -> PgMark:
            db = await asyncpg.connect(url)
            try:
                row = await db.fetchrow(
                    "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint, "
                    "(SELECT checkpoint_time FROM pg_control_checkpoint())"
                )
            finally:
                await db.close()
            assert row is not None
            return PgMark(int(row[0]), row[1])

        return asyncio.run(read())

    def since(self, before: PgMark, ops: int) -> dict[str, Any]:
        """The Row fields of the span from `before` to this mark, over `ops` transfers."""
        return {
            "wal_bytes_per_op": (self.wal_bytes - before.wal_bytes) / ops if ops else None,
            "checkpoint_ended": self.checkpoint_time != before.checkpoint_time,
        }


def gc_pause_buckets(url: str) -> dict[float, float]:
    """The server's garbage-collector passes so far: bucket bound (s) -> passes up to it."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "tally_gc_pause_seconds":
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    bound = float(sample.labels["le"])
                    buckets[bound] = buckets.get(bound, 0.0) + sample.value
    return buckets


def longest_gc_pause_ms(before: dict[float, float], after: dict[float, float]) -> float:
    """The bucket bound (ms) of the longest pass between two readings; 0 when none ran."""
    bounds = sorted(after)
    passes = [after[b] - before.get(b, 0.0) for b in bounds]  # cumulative counts
    longest = 0.0
    below = 0.0
    for bound, count in zip(bounds, passes, strict=True):
        if count > below:
            longest = bound
        below = count
    return longest * 1000


def _tally(*args: str) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run([TALLY, *args], check=False, capture_output=True, text=True, timeout=1800)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"tally {' '.join(args)} failed: {done.stdout}\n{done.stderr}")
    return elapsed, done.stdout


def _key(db: str, ledger: str) -> str:
    _tally("ledger", "create", ledger, "--db", db)
    _, out = _tally("key", "create", "--ledger", ledger, "--scope", "admin", "--json", "--db", db)
    key: str = json.loads(out)["key"]
    return key


# -- setup ---------------------------------------------------------------------------------
def _build_statement(db: str, entries: int) -> float:
    """`entries` recharges of 0.01 to wallet s0 of ledger `statement`, in-process."""
    engine = open_engine(db)
    started = time.perf_counter()
    try:
        chunk = 20_000
        for start in range(0, entries, chunk):
            envelopes = [
                Envelope(
                    idempotency_key=f"st-{i}",
                    command=Recharge(user_id="s0", amount=1, currency="USD", gateway="paypal"),
                )
                for i in range(start, min(entries, start + chunk))
            ]
            for outcome in engine.execute_many("statement", envelopes):
                if isinstance(outcome, Rejected):
                    raise outcome
    finally:
        engine.close()
        engine.store.close()
    return time.perf_counter() - started


def _settle(db: str) -> None:
    """Let the build's background work end before anything is measured. On PostgreSQL:
    VACUUM (ANALYZE), then a CHECKPOINT. The vacuum does what autovacuum (off on this
    machine) would have done by then: the build's rows get their hint bits set, else the
    server's start-up read of the log sets them, dirtying ~600 MB of pages that the kernel
    writes back ~30 s later, all at once, stalling commits (p99 110-163 ms in whichever
    scenario ran then); and statistics. The checkpoint: the build writes gigabytes of WAL,
    and a checkpoint it forces otherwise runs on into the first scenario (p99 54-73 ms
    instead of 16-17). SQLite copies its WAL back when the build's last connection closes."""
    if db.startswith(("postgresql://", "postgres://")):

        async def checkpoint() -> None:
            connection = await asyncpg.connect(db)
            try:
                await connection.execute("VACUUM (ANALYZE)")
                await connection.execute("CHECKPOINT")
            except asyncpg.InsufficientPrivilegeError:  # a superuser or pg_checkpoint may
                # (VACUUM only warns about tables the role does not own; CHECKPOINT refuses)
                print("no CHECKPOINT (not allowed): the first scenario's p99 may suffer")
            finally:
                await connection.close()

        asyncio.run(checkpoint())


def _post_batch(client: httpx.Client, commands: list[dict[str, Any]], tag: str) -> list[Any]:
    results: list[Any] = []
    step = 200  # stays under the 64 KiB body limit
    for start in range(0, len(commands), step):
        answer = client.post(
            "/v1/batch",
            json={"commands": commands[start : start + step]},
            headers={"Idempotency-Key": f"{tag}-{start}"},
        )
        answer.raise_for_status()
        for result in answer.json()["results"]:
            if result["status"] != 201:
                raise RuntimeError(f"setup command refused: {result}")
            results.append(result["transaction"])
    return results


def _fund(client: httpx.Client, wallets: int) -> None:
    _post_batch(
        client,
        [
            {
                "type": "recharge",
                "idempotency_key": f"fund-{i}",
                "user_id": f"u{i}",
                "amount": "1000000.00",
                "currency": "USD",
                "gateway": "paypal",
            }
            for i in range(wallets)
        ],
        "fund",
    )


def _refund_targets(client: httpx.Client, count: int, wallets: int, path: Path) -> None:
    """`count` expenses of 100.00; a line "EXPENSE_ID ORDER_ID" each for the mixed scenario."""
    commands = [
        {
            "type": "expense",
            "idempotency_key": f"target-{i}",
            "user_id": f"u{i % wallets}",
            "currency": "USD",
            "orders": [{"order_id": f"target-{i}", "amount": "100.00", "merchant_id": "m0"}],
        }
        for i in range(count)
    ]
    transactions = _post_batch(client, commands, "targets")
    lines = [f"{t['transaction_id']} {t['reference_order_ids'][0]}" for t in transactions]
    path.write_text("\n".join(lines) + "\n")


def _cursor(seq: int) -> str:
    """The API's opaque cursor for "after every posting of `seq`" (tally.http.reads)."""
    text = f"{seq}.{PAST_EVERY_POSTING}".encode()
    return base64.urlsafe_b64encode(text).decode().rstrip("=")


def _statement_cursors(entries: int, path: Path, rng: random.Random) -> None:
    """First page, last page, and random pages of wallet s0."""
    cursors = ["-", _cursor(max(0, entries - 100))]
    cursors += [_cursor(rng.randrange(max(1, entries - 100))) for _ in range(2_000)]
    path.write_text("\n".join(["s0", *cursors]) + "\n")


def _check_statement(url: str, key: str, entries: int) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    for cursor in (None, _cursor(entries // 2)):
        params = {
            "currency": "USD",
            "limit": "100",
            **({} if cursor is None else {"cursor": cursor}),
        }
        page = httpx.get(f"{url}/v1/users/s0/statement", params=params, headers=headers, timeout=60)
        page.raise_for_status()
        if len(page.json()["entries"]) != min(100, entries):
            raise RuntimeError(f"statement page has {len(page.json()['entries'])} entries")


def _batch_size_that_fits(wanted: int) -> tuple[int, str]:
    """The largest /v1/batch of expenses (as api.lua writes them) under the body limit."""
    command = (
        '{"type":"expense","idempotency_key":"b123-2-1234567","user_id":"u9999",'
        '"currency":"USD","orders":[{"order_id":"b123-2-1234567","amount":"1.00",'
        '"merchant_id":"m9999"}]}'
    )
    fits = (REQUEST_BODY_BYTES_MAX - 64) // (len(command) + 1)
    if wanted * (len(command) + 1) + 64 <= REQUEST_BODY_BYTES_MAX:
        return wanted, ""
    return fits, (
        f"{wanted} expenses (~{wanted * (len(command) + 1) // 1024} KiB) exceed the server's "
        f"/v1/batch body limit (413 body_too_large); measured with {fits} a request"
    )


def _probe_batch(client: httpx.Client, size: int) -> int:
    commands = [
        {
            "type": "expense",
            "idempotency_key": f"probe-{size}-{i}",
            "user_id": f"u{i}",
            "currency": "USD",
            "orders": [{"order_id": f"probe-{size}-{i}", "amount": "1.00", "merchant_id": "m1"}],
        }
        for i in range(size)
    ]
    body = json.dumps({"commands": commands}, separators=(",", ":"))
    answer = client.post(
        "/v1/batch",
        content=body,
        headers={"Idempotency-Key": f"probe-{size}", "Content-Type": "application/json"},
    )
    return answer.status_code


# -- profile -------------------------------------------------------------------------------
def _package(frame: str) -> str:
    """`func (path/to/file.py:12)` to a package-ish label: tally/http, litestar, asyncio..."""
    found = re.search(r"\(([^():]+):\d+\)$", frame)
    if found is None:
        return "?"
    parts = found[1].split("/")
    if parts[0] == "tally" and len(parts) > 1:
        return "/".join(parts[:2]).removesuffix(".py")
    return parts[0].removesuffix(".py")


def _summarize_profile(path: Path, *, seconds: float, rate: int, requests: int) -> dict[str, Any]:
    """py-spy --gil --threads raw samples: who holds the GIL, in what, per request."""
    threads: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    packages: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        if any(frames[-1].startswith(idle) for idle in IDLE_LEAVES):
            continue
        total += count
        thread = re.sub(r"^thread \(\d+\): ", "", frames[0])
        thread = re.sub(r"_\d+$", "", re.sub(r" \(.*\)$", "", thread))
        threads[thread] += count
        leaves[frames[-1]] += count
        packages[_package(frames[-1])] += count
        for frame in set(frames[1:]):
            inclusive[frame] += count
    if total == 0:
        return {}
    per_request_us = total / rate / requests * 1e6

    def share(counter: collections.Counter[str], top: int) -> list[tuple[str, float]]:
        return [(name, n / total) for name, n in counter.most_common(top)]

    return {
        "samples": total,
        "seconds": seconds,
        "requests": requests,
        "gil_busy": total / (rate * seconds),
        "gil_us_per_request": per_request_us,
        "threads": share(threads, 8),
        "packages": share(packages, 14),
        "self": share(leaves, 20),
        "inclusive": share(inclusive, 60),
    }


def py_spy_gil(pid: int, *, seconds: float, rate: int, out: Path) -> bool:
    """py-spy's raw samples of whoever holds the GIL in `pid`, written to `out`; False (and
    why, printed) when there are none."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        print("py-spy not found (pip install py-spy): no profile", flush=True)
        return False
    spied = subprocess.run(
        [
            *(spy, "record", "--gil", "--threads", "-r", str(rate), "-f", "raw"),
            *("-o", str(out), "--pid", str(pid), "-d", f"{seconds:g}"),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    )
    if spied.returncode != 0 or not out.exists():
        print(f"py-spy failed: {spied.stderr.strip()}", flush=True)
        return False
    return True


def _profile(server: Server, key: str, folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    seconds = min(15.0, args.seconds)
    rate = 100
    out = folder / "profile.txt"
    load = _wrk_start(
        server.url,
        mode="expense",
        key=key,
        connections=args.connections,
        seconds=seconds + 4,
        prefix="f",
        wallets=args.wallets,
        merchants=args.wallets,
    )
    time.sleep(2)
    spied = py_spy_gil(server.pid, seconds=seconds, rate=rate, out=out)
    run = _wrk_finish(load, seconds + 4)
    if not spied:
        return {}
    requests = round(run.answered * seconds / run.seconds)
    summary = _summarize_profile(out, seconds=seconds, rate=rate, requests=requests)
    summary["requests_per_second"] = run.answered / run.seconds
    summary["answered"] = run.answered
    return summary


# -- the baseline --------------------------------------------------------------------------
async def _baseline_connections(
    url: str, wallets: int, connections: int, start_at: float, seconds: float, seed: int
) -> list[float]:
    rng = random.Random(seed)
    pool = await asyncpg.create_pool(url, min_size=connections, max_size=connections)
    latencies: list[float] = []
    end = start_at + seconds
    txn = seed * 1_000_000_000

    async def worker() -> None:
        nonlocal txn
        async with pool.acquire() as db:
            await asyncio.sleep(max(0.0, start_at - time.time()))
            while time.time() < end:
                wallet = f"wallet:u{rng.randrange(wallets)}"
                merchant = f"revenue:m{rng.randrange(wallets)}"
                txn += 1
                started = time.perf_counter()
                await baseline_transfer(db, wallet, merchant, txn)
                if time.time() <= end:
                    latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(worker() for _ in range(connections)))
    await pool.close()
    return latencies


def _baseline_process(
    url: str, wallets: int, connections: int, start_at: float, seconds: float, seed: int
) -> list[float]:
    return asyncio.run(_baseline_connections(url, wallets, connections, start_at, seconds, seed))


def _baseline(name: str, folder: Path, *, wallets: int, args: argparse.Namespace) -> Row:
    """The conventional ledger, `args.connections` connections over `args.processes` clients."""
    with _database("postgresql", folder, name) as url:

        async def schema() -> None:
            db = await asyncpg.connect(url)
            try:
                await baseline_schema(
                    db,
                    wallets=[f"wallet:u{i}" for i in range(wallets)],
                    merchants=[f"revenue:m{i}" for i in range(wallets)],
                    per_wallet=10**15,
                )
            finally:
                await db.close()

        asyncio.run(schema())
        processes = max(1, min(args.processes, args.connections))
        shares = [args.connections // processes] * processes
        shares[0] += args.connections - sum(shares)
        before = PgMark.now(url)
        start_at = time.time() + 5
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(processes, mp_context=context) as pool:
            futures = [
                pool.submit(
                    _baseline_process, url, wallets, share, start_at, args.seconds, 1 + index
                )
                for index, share in enumerate(shares)
            ]
            latencies = sorted(x for future in futures for x in future.result())
        activity = PgMark.now(url).since(before, len(latencies))
    if not latencies:
        raise RuntimeError("the baseline did nothing")
    return Row(
        scenario=name,
        kind="baseline",
        ops=len(latencies),
        requests=len(latencies),
        seconds=args.seconds,
        p50_ms=_percentile(latencies, 50) * 1000,
        p99_ms=_percentile(latencies, 99) * 1000,
        errors=0,
        note=f"{args.connections} connections over {processes} client processes",
        **activity,
    )


def _percentile(values: Sequence[float], percent: float) -> float:
    return values[min(len(values) - 1, int(len(values) * percent / 100))]


# -- checks --------------------------------------------------------------------------------
def _sums(db: str) -> list[tuple[str, str, int]]:
    """Sum of all balances per ledger and currency, straight from the store's tables: an
    account's balance is its last entry's balance_after."""
    sql = (
        "SELECT a.ledger, a.currency, SUM((SELECT balance_after FROM entries n "
        "WHERE n.ledger = a.ledger AND n.account = a.account "
        "ORDER BY n.seq DESC, n.idx DESC LIMIT 1)) FROM accounts a GROUP BY a.ledger, a.currency"
    )
    if not db.startswith("postgresql://"):
        with sqlite3.connect(db) as connection:
            return [(str(a), str(b), int(c)) for a, b, c in connection.execute(sql)]

    async def fetch() -> list[tuple[str, str, int]]:
        connection = await asyncpg.connect(db)
        try:
            return [(row[0], row[1], int(row[2])) for row in await connection.fetch(sql)]
        finally:
            await connection.close()

    return asyncio.run(fetch())


def _audit(db: str, acknowledged: int) -> dict[str, Any]:
    verify_s, out = _tally("verify", "--json", "--db", db, "--ledger", "bench")
    verified = json.loads(out)
    replay_s, _ = _tally("replay", "--json", "--db", db, "--ledger", "bench")
    startup_s, _ = _tally("--help")
    sums = _sums(db)
    events = int(verified["events"])
    return {
        "events": events,
        "acknowledged_writes": acknowledged,
        "verify_ok": bool(verified["ok"]),
        "cli_startup_seconds": startup_s,
        "verify_seconds": verify_s,
        "replay_seconds": replay_s,
        "verify_events_per_second": events / verify_s,
        "replay_events_per_second": events / replay_s,
        "sums": sums,
        "conserved": all(total == 0 for _, _, total in sums),
    }


# -- one store -----------------------------------------------------------------------------
def _tally_row(
    scenario: str, run: WrkRun, *, kind: str = "tally", per_request: int = 1, cpu: float = 0.0
) -> Row:
    return Row(
        scenario=scenario,
        kind=kind,
        ops=run.answered * per_request,
        requests=run.requests,
        seconds=run.seconds,
        p50_ms=run.p50_ms,
        p99_ms=run.p99_ms,
        errors=run.errors,
        cpu_us_per_request=cpu / run.requests * 1e6 if cpu and run.requests else None,
    )


def run_store(store: str, args: argparse.Namespace) -> StoreRun:
    result = StoreRun(
        store=store,
        when=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        settings={
            "seconds": args.seconds,
            "connections": args.connections,
            "wallets": args.wallets,
            "batch_connections": args.batch_connections,
            "read_connections": args.read_connections,
            "statement_entries": args.statement_entries,
            "cpus": os.cpu_count(),
            "host_loop_s": host.python_loop_s(),
        },
    )
    rng = random.Random(7)
    seconds = args.seconds
    with tempfile.TemporaryDirectory(prefix="tally-bench-api-") as tmp:
        folder = Path(tmp)

        def say(text: str) -> None:
            print(f"[{store}] {text}", flush=True)

        say(host.describe(float(result.settings["host_loop_s"])))

        with _database(store, folder, "api") as db:
            say(f"building a wallet with {args.statement_entries:,} entries in-process")
            built_s = _build_statement(db, args.statement_entries)
            result.facts["statement_build_seconds"] = built_s
            _settle(db)
            say(f"  {built_s:.1f} s ({args.statement_entries / built_s:,.0f} recharges/s)")
            key = _key(db, "bench")
            read_key = _key(db, "statement")
            refunds = folder / "refunds.txt"
            cursors = folder / "cursors.txt"
            _statement_cursors(args.statement_entries, cursors, rng)
            acknowledged = 0
            with _serve(db, folder) as server:
                client = httpx.Client(
                    base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=300
                )
                with client:
                    _fund(client, args.wallets)
                    _refund_targets(client, 2_000, args.wallets, refunds)
                    status = _probe_batch(client, args.batch_size)
                    batch, batch_note = args.batch_size, ""
                    if status != 200:
                        batch, batch_note = _batch_size_that_fits(args.batch_size)
                        batch_note += f" (a {args.batch_size}-expense probe got {status})"
                        say(batch_note)
                    result.facts["batch_size"] = batch
                    result.facts["batch_note"] = batch_note
                _check_statement(server.url, read_key, args.statement_entries)

                def mark() -> PgMark | None:
                    return PgMark.now(db) if store == "postgresql" else None

                def with_pg(row: Row, before: PgMark | None) -> Row:
                    after = mark()
                    if before is None or after is None:
                        return row
                    return replace(row, **after.since(before, row.ops))

                def wrk(scenario: str, mode: str, **options: Any) -> Row:
                    nonlocal acknowledged
                    before = mark()
                    gc_before = gc_pause_buckets(server.url)
                    cpu = _cpu_seconds(server.pid)
                    prefix = f"p{len(result.rows)}"  # short: a batch must fit the body limit
                    run = _wrk_finish(
                        _wrk_start(
                            server.url,
                            mode=mode,
                            key=key,
                            seconds=seconds,
                            prefix=prefix,
                            **options,
                        ),
                        seconds,
                    )
                    per = batch if mode == "batch" else 1
                    row = _tally_row(
                        scenario, run, per_request=per, cpu=_cpu_seconds(server.pid) - cpu
                    )
                    row = with_pg(row, before)
                    gc_after = gc_pause_buckets(server.url)
                    row = replace(row, gc_pause_max_ms=longest_gc_pause_ms(gc_before, gc_after))
                    acknowledged += row.ops
                    result.rows.append(row)
                    say(_line(row))
                    return row

                uniform = {"wallets": args.wallets, "merchants": args.wallets}
                warm = _wrk_start(
                    server.url,
                    mode="expense",
                    key=key,
                    connections=args.connections,
                    seconds=3,
                    prefix="w",
                    **uniform,
                )
                acknowledged += _wrk_finish(warm, 3).answered
                wrk("expense-uniform", "expense", connections=args.connections, **uniform)
                wrk("expense-hot", "expense", connections=args.connections)
                wrk(
                    "mixed-uniform",
                    "mixed",
                    connections=args.connections,
                    datafile=str(refunds),
                    **uniform,
                )
                wrk(
                    f"batch{batch}-uniform",
                    "batch",
                    connections=args.batch_connections,
                    batch=batch,
                    **uniform,
                )
                # "Idle" reads: after the writes' background work (SQLite copying a WAL of
                # hundreds of MB back, PostgreSQL's own flushing) has settled.
                time.sleep(settle_seconds)
                reads = _wrk_finish(
                    _wrk_start(
                        server.url,
                        mode="statement",
                        key=read_key,
                        connections=args.read_connections,
                        seconds=seconds,
                        prefix="read",
                        datafile=str(cursors),
                    ),
                    seconds,
                )
                result.rows.append(_tally_row("statement-idle", reads, kind="read"))
                say(_line(result.rows[-1]))
                before = mark()
                gc_before = gc_pause_buckets(server.url)
                cpu = _cpu_seconds(server.pid)
                writing = _wrk_start(
                    server.url,
                    mode="expense",
                    key=key,
                    connections=args.connections,
                    seconds=seconds,
                    prefix="l",
                    **uniform,
                )
                reading = _wrk_start(
                    server.url,
                    mode="statement",
                    key=read_key,
                    connections=args.read_connections,
                    seconds=seconds,
                    prefix="read2",
                    datafile=str(cursors),
                )
                written, read = _wrk_finish(writing, seconds), _wrk_finish(reading, seconds)
                cpu = _cpu_seconds(server.pid) - cpu
                both = with_pg(_tally_row("expense-uniform+reads", written, cpu=cpu), before)
                longest = longest_gc_pause_ms(gc_before, gc_pause_buckets(server.url))
                result.rows.append(replace(both, gc_pause_max_ms=longest))
                acknowledged += written.answered
                say(_line(result.rows[-1]))
                result.rows.append(_tally_row("statement-under-writes", read, kind="read"))
                say(_line(result.rows[-1]))
                if args.profile:
                    say("profiling the server under the uniform expense load (py-spy --gil)")
                    result.profile = _profile(server, key, folder, args)
                    acknowledged += int(result.profile.get("answered", 0))
            say("verify, replay (timed); conservation")
            result.facts["audit"] = _audit(db, acknowledged)
            say(json.dumps({k: v for k, v in result.facts["audit"].items() if k != "sums"}))
        say("baseline: the conventional PostgreSQL ledger")
        for name, wallets in (("baseline-uniform", args.wallets), ("baseline-hot", 1)):
            result.rows.append(_baseline(name, folder, wallets=wallets, args=args))
            say(_line(result.rows[-1]))
    return result


def activity_note(
    *, wal_bytes_per_op: float | None, checkpoint_ended: bool | None, gc_pause_max_ms: float | None
) -> str:
    """A scenario's WAL per transfer, checkpoint and longest GC pause, for a printed line."""
    note = "" if wal_bytes_per_op is None else f", WAL {wal_bytes_per_op:,.0f} B/transfer"
    if checkpoint_ended:
        note += ", a checkpoint ended"
    if gc_pause_max_ms:
        note += f", longest GC pause ≤ {gc_pause_max_ms:g} ms"
    return note


def _line(row: Row) -> str:
    cpu = "" if row.cpu_us_per_request is None else f", {row.cpu_us_per_request:,.0f} µs CPU/req"
    activity = activity_note(
        wal_bytes_per_op=row.wal_bytes_per_op,
        checkpoint_ended=row.checkpoint_ended,
        gc_pause_max_ms=row.gc_pause_max_ms,
    )
    return (
        f"{row.scenario:>24}: {row.ops:>9,} in {row.seconds:5.1f} s = {row.per_second:>9,.0f}/s"
        f"  p50 {row.p50_ms:7.2f} ms  p99 {row.p99_ms:7.2f} ms  errors {row.errors}{cpu}{activity}"
    )


# -- reporting -----------------------------------------------------------------------------
def _ratios(run: StoreRun) -> list[tuple[str, float]]:
    rate = {row.scenario: row.per_second for row in run.rows}
    batch = next(row for row in run.rows if row.scenario.startswith("batch"))
    return [
        ("hot / uniform (single expenses)", rate["expense-hot"] / rate["expense-uniform"]),
        ("tally / baseline, uniform", rate["expense-uniform"] / rate["baseline-uniform"]),
        ("tally / baseline, hot", rate["expense-hot"] / rate["baseline-hot"]),
        (f"{batch.scenario} / baseline, uniform", batch.per_second / rate["baseline-uniform"]),
        ("baseline hot / uniform", rate["baseline-hot"] / rate["baseline-uniform"]),
    ]


def _verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def _targets(run: StoreRun) -> list[tuple[str, str]]:
    uniform, hot = run.row("expense-uniform"), run.row("expense-hot")
    batch = next(row for row in run.rows if row.scenario.startswith("batch"))
    reads = run.row("statement-idle")
    loaded = run.row("statement-under-writes")
    audit = run.facts["audit"]
    batch_target = 50_000 if run.store == "postgresql" else 35_000
    single = all(r.per_second >= 6000 and r.p99_ms <= 25 for r in (uniform, hot))
    replay = min(audit["replay_events_per_second"], audit["verify_events_per_second"])
    batch_text = f"{batch.per_second:,.0f}/s ({batch.scenario})"
    if run.facts.get("batch_note"):
        batch_text += "; the wanted batch size is refused by the body limit"
    return [
        (
            "single expenses ≥ 6,000/s with p99 ≤ 25 ms",
            f"{_verdict(single)}: uniform {uniform.per_second:,.0f}/s p99 {uniform.p99_ms:.1f} ms;"
            f" hot {hot.per_second:,.0f}/s p99 {hot.p99_ms:.1f} ms",
        ),
        (
            "hot wallet ≥ 0.9x uniform",
            f"{_verdict(hot.per_second >= 0.9 * uniform.per_second)}: "
            f"{hot.per_second / uniform.per_second:.2f}x",
        ),
        (
            "≥ 4x the baseline at hot contention",
            f"{_verdict(hot.per_second >= 4 * run.row('baseline-hot').per_second)}: "
            f"{hot.per_second / run.row('baseline-hot').per_second:.1f}x",
        ),
        (
            f"/v1/batch ≥ {batch_target:,} transfers/s durable",
            f"{_verdict(batch.per_second >= batch_target and not run.facts.get('batch_note'))}: "
            + batch_text,
        ),
        (
            "replay and verify ≥ 200,000 events/s each",
            f"{_verdict(replay >= 200_000)}: replay {audit['replay_events_per_second']:,.0f}/s, "
            f"verify {audit['verify_events_per_second']:,.0f}/s ({audit['events']:,} events, "
            f"CLI wall time incl. {audit['cli_startup_seconds']:.1f} s start-up)",
        ),
        (
            "statement page (100 entries) p99 ≤ 10 ms at 1,000,000 entries",
            f"{_verdict(reads.p99_ms <= 10)}: idle p99 {reads.p99_ms:.1f} ms "
            f"({run.settings['read_connections']} connections); under writes p99 "
            f"{loaded.p99_ms:.1f} ms",
        ),
        (
            "every request answered 2xx",
            f"{_verdict(not any(r.errors for r in run.rows))}: "
            + (", ".join(f"{r.scenario} {r.errors}" for r in run.rows if r.errors) or "0 errors"),
        ),
        (
            "verify passes, money conserved",
            f"{_verdict(audit['verify_ok'] and audit['conserved'])}: verify "
            f"{'ok' if audit['verify_ok'] else 'FAILED'}, sums per ledger and currency "
            f"{sorted({total for *_, total in audit['sums']})}",
        ),
    ]


def _host_note(run: StoreRun) -> str:
    """The host's speed that day, for runs that recorded it (runs before 2026-11-27 did not)."""
    loop_s = run.settings.get("host_loop_s")
    return "" if loop_s is None else f"; {host.describe(float(loop_s))}"


def _store_markdown(run: StoreRun) -> str:
    lines = [
        f"### {STORE_TITLES[run.store]}",
        "",
        "```sh",
        f".venv/bin/python -m bench.api --store {run.store}",
        "```",
        "",
        f"Measured {run.when}; {run.settings['seconds']:g} s a scenario{_host_note(run)}.",
        "",
        "| scenario | transfers (pages) | seconds | per second | p50 ms | p99 ms | errors "
        "| server CPU µs/request | longest GC pause ≤ ms | PostgreSQL WAL bytes/transfer "
        "| PostgreSQL checkpoint ended |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in run.rows:
        cpu = "" if row.cpu_us_per_request is None else f"{row.cpu_us_per_request:,.0f}"
        wal = "" if row.wal_bytes_per_op is None else f"{row.wal_bytes_per_op:,.0f}"
        ended = {None: "", True: "yes", False: "no"}[row.checkpoint_ended]
        pause = "" if row.gc_pause_max_ms is None else f"{row.gc_pause_max_ms:g}"
        lines.append(
            f"| {row.scenario} | {row.ops:,} | {row.seconds:.1f} | {row.per_second:,.0f} "
            f"| {row.p50_ms:.2f} | {row.p99_ms:.2f} | {row.errors} | {cpu} | {pause} | {wal} "
            f"| {ended} |"
        )
    lines += ["", "| ratio | value |", "|---|---:|"]
    lines += [f"| {name} | {value:.2f} |" for name, value in _ratios(run)]
    lines += ["", "| target | result |", "|---|---|"]
    lines += [f"| {name} | {text} |" for name, text in _targets(run)]
    if run.facts.get("batch_note"):
        lines += ["", f"/v1/batch: {run.facts['batch_note']}."]
    audit = run.facts["audit"]
    lines += [
        "",
        f"The wallet with {run.settings['statement_entries']:,} entries took "
        f"{run.facts['statement_build_seconds']:.1f} s to build in-process. After the run the "
        f"`bench` ledger held {audit['events']:,} events ({audit['acknowledged_writes']:,} "
        f"writes acknowledged to wrk, which does not count answers still in flight when it "
        f"stops); `tally verify` took {audit['verify_seconds']:.2f} s, `tally replay` "
        f"{audit['replay_seconds']:.2f} s.",
    ]
    profile = run.profile
    if profile:
        lines += [
            "",
            f"py-spy (`record --gil --threads`, {profile['seconds']:g} s at "
            f"{profile['requests_per_second']:,.0f} requests/s): the GIL is held "
            f"{profile['gil_busy']:.0%} of the time, {profile['gil_us_per_request']:,.0f} µs "
            "per request. Share of GIL samples:",
            "",
            "| thread | share |",
            "|---|---:|",
            *(f"| {name} | {value:.0%} |" for name, value in profile["threads"][:5]),
            "",
            "| code running (leaf frame's package) | share |",
            "|---|---:|",
            *(f"| {name} | {value:.0%} |" for name, value in profile["packages"][:10]),
        ]
    return "\n".join(lines)


INTRO = """\
`tally serve` (one process: uvicorn + Litestar, the ledger's writer and committer threads)
on a fresh SQLite file (WAL, `synchronous=FULL`) or PostgreSQL database
(`synchronous_commit=on`), driven by [wrk](https://github.com/wg/wrk) (2 threads) with
`bench/api.lua`: every write has its own Idempotency-Key and order id; expenses pay one order
of 1.00 USD. 10,000 wallets are funded through `/v1/batch` before any clock starts; before
the server starts, PostgreSQL gets `VACUUM (ANALYZE)` and a `CHECKPOINT` after the statement
wallet's build, as autovacuum (off here) would have done by then: left to themselves, the
checkpoint the build forced ran on into the first scenario (p99 54-73 ms instead of 16-17),
and the hint bits the server's start-up read of the unvacuumed log set were written back by
the kernel ~30 s later in one burst (p99 110-163 ms instead of 17-19). A 10 s scenario may
or may not contain one of the server's own checkpoints; under sustained writes at these
rates one ends every minute or two (`max_wal_size` 1 GB here).

- `expense-uniform`: `POST /v1/expenses`, 64 connections, wallet and merchant uniform over
  10,000 each. `expense-hot`: the same, all on one wallet and one merchant.
- `mixed-uniform`: 70% expenses, 15% recharges, 15% refunds (0.01 of one of 2,000 orders).
- `batch*-uniform`: `POST /v1/batch`, 4 connections, N expenses a request.
- `statement-idle`: `GET /v1/users/s0/statement?currency=USD&limit=100`, 8 connections, the
  first, the last and random pages of a wallet with 1,000,000 entries (built in-process),
  10 s (`settle_seconds`) after the write scenarios end (right after a burst SQLite is still
  copying its WAL back: p99 ~18 ms instead of ~10 for a few seconds).
  `expense-uniform+reads` / `statement-under-writes`: both loads at once.
- `baseline-*`: the conventional PostgreSQL ledger, one database transaction per transfer
  (lock wallet and merchant with `SELECT … FOR UPDATE` in id order, check, insert both
  entries with `balance_after`, update both balances), over SQL (asyncpg), 64 connections
  over 2 client processes, uniform over 10,000 wallets and merchants, and hot.
- Latencies are per HTTP request (per transaction for the baseline), as wrk measures them
  (closed loop). "server CPU" is user + system CPU of the `tally serve` process per request.
- On PostgreSQL (tally's writes and the baseline): the WAL the cluster wrote per transfer
  (`pg_current_wal_lsn()` before and after), and whether a checkpoint ended during the
  scenario (`pg_control_checkpoint()`): its fsyncs can hold every commit back for a moment,
  so a p99 outlier in such a scenario is the database's flushing.
- "longest GC pause": the longest pass of Python's garbage collector in the server during a
  write scenario, as the upper bound of its bucket in the server's own
  `tally_gc_pause_seconds` histogram (`/metrics`); a pass stops every thread, so it shows
  in every request in flight.
- Afterwards: `tally verify` (which also compares every projection with a fresh replay) and
  `tally replay`, timed as CLI wall time, start-up included; the sum of all balances per
  ledger and currency must be zero.
"""


def _section(runs: dict[str, StoreRun]) -> str:
    parts = [
        BEGIN,
        "",
        INTRO,
        "![throughput and latency per scenario](benchmarks-api.png)",
        "",
    ]
    for store in ("sqlite", "postgresql"):
        if store in runs:
            parts += [_store_markdown(runs[store]), ""]
    parts.append(END)
    return "\n".join(parts)


def _write_docs(runs: dict[str, StoreRun]) -> None:
    text = DOCS.read_text()
    section = _section(runs)
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        text = head + section + tail
    else:
        block = "## At the HTTP API (issue: the benchmark suite)\n\n" + section + "\n\n"
        anchor = "## What each change bought"
        text = text.replace(anchor, block + anchor, 1) if anchor in text else text + block
    DOCS.write_text(text)


def _chart(runs: dict[str, StoreRun]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stores = [store for store in ("sqlite", "postgresql") if store in runs]
    scenarios: list[str] = []
    for store in stores:
        for row in runs[store].rows:
            name = re.sub(r"^batch\d+", "batch", row.scenario)
            if name not in scenarios:
                scenarios.append(name)

    def find(store: str, name: str) -> Row | None:
        for row in runs[store].rows:
            if re.sub(r"^batch\d+", "batch", row.scenario) == name:
                return row
        return None

    figure, (top, bottom) = plt.subplots(2, 1, figsize=(12, 8.5), constrained_layout=True)
    width = 0.8 / len(stores)
    colors = {"sqlite": ("#4c72b0", "#a6bddb"), "postgresql": ("#dd8452", "#fdd0a2")}
    for index, store in enumerate(stores):
        xs = [i + (index - (len(stores) - 1) / 2) * width for i in range(len(scenarios))]
        rows = [find(store, name) for name in scenarios]
        rates = [row.per_second if row else 0.0 for row in rows]
        bars = top.bar(
            xs, rates, width, label=STORE_TITLES[store].split(" (")[0], color=colors[store][0]
        )
        top.bar_label(
            bars,
            labels=[f"{r:,.0f}" if r else "" for r in rates],
            fontsize=7,
            rotation=90,
            padding=2,
        )
        p50 = [row.p50_ms if row else 0.0 for row in rows]
        p99 = [row.p99_ms if row else 0.0 for row in rows]
        bottom.bar(xs, p99, width, color=colors[store][1], label=f"{store} p99")
        bottom.bar(xs, p50, width, color=colors[store][0], label=f"{store} p50")
    for axis in (top, bottom):
        axis.set_xticks(range(len(scenarios)), scenarios, rotation=20, ha="right", fontsize=8)
        axis.set_yscale("log")
        axis.grid(axis="y", alpha=0.3)
        axis.legend(fontsize=8)
    top.set_ylabel("transfers/s (pages/s for statement)")
    top.set_title("tally at the HTTP API vs the conventional PostgreSQL ledger (baseline-*)")
    bottom.set_ylabel("latency per request, ms (p50 dark, p99 light)")
    bottom.axhline(25, color="red", lw=0.8, ls="--")
    bottom.axhline(10, color="purple", lw=0.8, ls=":")
    figure.savefig(CHART, dpi=110)
    plt.close(figure)


def _load_previous() -> dict[str, StoreRun]:
    if not RESULTS.exists():
        return {}
    runs: dict[str, StoreRun] = {}
    for store, data in json.loads(RESULTS.read_text()).items():
        runs[store] = StoreRun(
            store=store,
            when=data["when"],
            settings=data["settings"],
            rows=[Row(**row) for row in data["rows"]],
            facts=data["facts"],
            profile=data["profile"],
        )
    return runs


def _save(runs: dict[str, StoreRun]) -> None:
    data = {
        store: {
            "when": run.when,
            "settings": run.settings,
            "rows": [asdict(row) for row in run.rows],
            "facts": run.facts,
            "profile": run.profile,
        }
        for store, run in runs.items()
    }
    RESULTS.write_text(json.dumps(data, indent=1) + "\n")


def _print_profile(profile: dict[str, Any]) -> None:
    if not profile:
        return
    print(
        f"profile: GIL busy {profile['gil_busy']:.0%}, {profile['gil_us_per_request']:,.0f} µs "
        f"of GIL per request at {profile['requests_per_second']:,.0f} requests/s"
    )
    for title in ("threads", "packages", "self", "inclusive"):
        print(f"  {title}:")
        for name, value in profile[title][: 40 if title == "inclusive" else 20]:
            print(f"    {value:6.1%}  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--store", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--seconds", type=float, default=15.0, help="per scenario (1-60)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--wallets", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--batch-connections", type=int, default=4)
    parser.add_argument("--read-connections", type=int, default=8)
    parser.add_argument("--statement-entries", type=int, default=1_000_000)
    parser.add_argument("--processes", type=int, default=2, help="baseline client processes")
    parser.add_argument("--no-profile", dest="profile", action="store_false")
    parser.add_argument("--no-docs", dest="docs", action="store_false", help="print only")
    args = parser.parse_args()
    args.seconds = max(1.0, min(60.0, args.seconds))
    _wrk_path()
    stores = ["sqlite", "postgresql"] if args.store == "both" else [args.store]
    runs = _load_previous() if args.docs else {}
    for store in stores:
        run = run_store(store, args)
        runs[store] = run
        print(f"\nstore: {store}")
        print(_store_markdown(run))
        _print_profile(run.profile)
        if args.docs:
            _save(runs)
            _write_docs(runs)
            _chart(runs)
    if args.docs:
        print(f"\nwrote {DOCS.relative_to(ROOT)}, {CHART.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

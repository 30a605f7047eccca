"""What the handlers share: the engine, the key store, the key cache, in-flight keys, metrics."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import anyio.to_thread
from litestar.connection import ASGIConnection
from prometheus_client import Counter

from tally.api_keys import ApiKey, KeyStore
from tally.engine.engine import Engine
from tally.engine.ports import LoopReads
from tally.engine.results import Outcome
from tally.engine.writer import Answer, LedgerWriter
from tally.http.metrics import Metrics

keys_cached_max = 10_000
# Threads that run store reads for the HTTP layer. Few: each page is one query plus Python
# rendering under the GIL, and more threads only queue for the GIL behind the event loop
# (statement p99 at 8 connections: 9.3 ms with 2 readers, 11.4 with 4, 14.1 with 8, 13-30
# with anyio's default pool of 40; docs/benchmarks.md).
reader_threads = 2
report_threads = 1  # finance reports: seconds each, kept off the readers every other GET needs

T = TypeVar("T")


class Answers:
    """The writer's answers, handed to one event loop: one wake-up per burst of answers
    (a committed batch answers all its requests at once), not one per request.

    A request cancelled meanwhile (the client went away) just leaves its answer unread; the
    writer never waits for the loop. Its `answer` callbacks run on the writer's thread.
    """

    __slots__ = ("_loop", "_pending", "_scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._pending: deque[tuple[asyncio.Future[list[Outcome]], Any, Any]] = deque()
        self._scheduled = False

    def waiting(self) -> tuple[asyncio.Future[list[Outcome]], Answer]:
        """A future on the loop, and the callback for the writer that settles it."""
        future: asyncio.Future[list[Outcome]] = self._loop.create_future()

        def answer(outcomes: list[Outcome] | None, error: BaseException | None) -> None:
            self._pending.append((future, outcomes, error))
            if not self._scheduled:
                self._scheduled = True
                if not self._loop.is_closed():
                    self._loop.call_soon_threadsafe(self._deliver)

        return future, answer

    def _deliver(self) -> None:  # on the loop
        self._scheduled = False  # first: an answer appended from now on schedules again
        pending = self._pending
        while pending:
            future, outcomes, error = pending.popleft()
            if future.cancelled():
                continue
            if error is None:
                future.set_result(outcomes)
            else:
                future.set_exception(error)


@dataclass(kw_only=True)
class Services:
    engine: Engine
    keys: KeyStore
    key_cache_ttl_s: float = 2.0
    """How long an authenticated (or refused) secret is remembered: a revocation made by
    another process takes effect within this time."""
    metrics: Metrics = field(default_factory=Metrics)
    in_flight: set[tuple[str, str]] = field(default_factory=set)
    startup_error: BaseException | None = None  # what stopped the server's start-up
    _key_cache: dict[str, tuple[float, ApiKey | None]] = field(default_factory=dict)
    _lookups: dict[str, asyncio.Future[ApiKey | None]] = field(default_factory=dict)
    _writers: dict[str, LedgerWriter] = field(default_factory=dict)
    _command_counts: dict[tuple[str, str], Counter] = field(default_factory=dict)
    _readers: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(reader_threads, thread_name_prefix="tally-read")
    )
    _reporters: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(report_threads, thread_name_prefix="tally-rep")
    )

    _answers: tuple[asyncio.AbstractEventLoop, Answers] | None = None
    # The store, when it reads on the server's loop itself (PostgreSQL): see `LoopReads`.
    loop_reads: LoopReads | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        store = self.engine.store
        if hasattr(store, "account_balances_on_loop") and hasattr(store, "open_loop_reads"):
            self.loop_reads = cast(LoopReads, store)

    def reads_here(self) -> LoopReads | None:
        """The store's reads on the running loop, when it has them open (else read on a
        reader thread)."""
        on_loop = self.loop_reads
        return on_loop if on_loop is not None and on_loop.reads_on_this_loop() else None

    def answers(self) -> Answers:
        """The running loop's `Answers` (one per loop; a server has one)."""
        loop = asyncio.get_running_loop()
        answers = self._answers
        if answers is None or answers[0] is not loop:
            answers = self._answers = (loop, Answers(loop))
        return answers[1]

    def read(self, function: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Run a blocking store read on a reader thread; await the result."""
        return asyncio.get_running_loop().run_in_executor(self._readers, function, *args)

    def report(self, function: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Run a finance report on the report thread; await the result. A report sums a
        ledger's entries for seconds: on the reader threads, two of them in flight would
        hold up every other read of every ledger for as long. Reports queue behind each
        other here instead."""
        return asyncio.get_running_loop().run_in_executor(self._reporters, function, *args)

    def close_readers(self) -> None:
        self._readers.shutdown()
        self._reporters.shutdown()

    async def authenticate(self, secret: str) -> ApiKey | None:
        now = time.monotonic()
        cached = self._key_cache.get(secret)
        if cached is not None and cached[0] > now:
            return cached[1]
        # One lookup per secret at a time: when a cached key expires under load, the requests
        # in flight share a single database read instead of each starting their own.
        lookup = self._lookups.get(secret)
        if lookup is None:
            lookup = asyncio.ensure_future(anyio.to_thread.run_sync(self.keys.authenticate, secret))
            self._lookups[secret] = lookup
            lookup.add_done_callback(lambda _: self._lookups.pop(secret, None))
        key = await asyncio.shield(lookup)
        if len(self._key_cache) >= keys_cached_max:
            self._key_cache.clear()
        if self.key_cache_ttl_s > 0:
            self._key_cache[secret] = (now + self.key_cache_ttl_s, key)
        return key

    def cached_key(self, secret: str) -> ApiKey | None:
        """The live key `secret` authenticated as within the cache's time; None when it was
        refused, or is not cached (then only `authenticate` can tell)."""
        cached = self._key_cache.get(secret)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        return None

    def known_writer(self, ledger: str) -> LedgerWriter | None:
        """The ledger's writer if it is running already (no catch-up)."""
        return self._writers.get(ledger)

    def count_command(self, kind: str, outcome: str, count: int = 1) -> None:
        """`count` more commands of `kind` with `outcome` (labels resolved once per pair)."""
        counter = self._command_counts.get((kind, outcome))
        if counter is None:
            counter = self._command_counts[kind, outcome] = self.metrics.commands.labels(
                kind, outcome
            )
        counter.inc(count)

    def forget_keys(self) -> None:
        self._key_cache.clear()

    async def writer(self, ledger: str) -> LedgerWriter:
        """The ledger's writer; the first call catches it up with the log off the loop."""
        writer = self._writers.get(ledger)
        if writer is None:
            writer = await anyio.to_thread.run_sync(self.engine.writer, ledger)
            self._writers[ledger] = writer
        return writer


def services_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Services:
    return cast(Services, connection.app.state["tally"])


def api_key_of(connection: ASGIConnection[Any, Any, Any, Any]) -> ApiKey:
    return cast(ApiKey, connection.scope["state"]["tally_api_key"])

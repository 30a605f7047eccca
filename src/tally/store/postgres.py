"""The production store: PostgreSQL through asyncpg, with the SQLite store's exact semantics.

The engine is thread-based (one writer thread per ledger), asyncpg is asyncio-based: the
store owns a private event loop on a thread of its own; the writer starts each commit on it
(`commit_soon`) and every other call hops onto it. A batch costs a constant number of round
trips whatever its size: a small one (`one_statement_events_max`) is one statement; a
larger one is one binary COPY per table with rows, the head's compare-and-set, one `unnest`
update of the refunded orders, and the commit.

Correctness rests only on the compare-and-set of the head row under any isolation level:
a second writer's UPDATE waits for the first to commit, re-reads the row, no longer matches
`(seq, hash)` and changes nothing, which the engine sees as `HeadMoved`. The rows go in
before the compare-and-set, so that batch N+1 is written on a second connection while batch
N commits; its compare-and-set then waits for N's and lands only if N did. A stale writer's
rows may meet rows another writer committed first (same seq, key or order): that unique
violation is a fence too, once the head is seen to have moved.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import asyncpg
import structlog

from tally.audit.chain import GENESIS_HASH
from tally.domain import accounts
from tally.domain.events import Event
from tally.domain.limits import INT64_MAX
from tally.domain.rejections import InvariantViolated
from tally.engine.ports import (
    AccountRow,
    AccountTotals,
    BatchWrite,
    EntryRow,
    EventRow,
    Head,
    HeadMoved,
    HoldRow,
    KeyRow,
    Movement,
    OrderRow,
    Projections,
    StoreUnavailable,
)
from tally.store import accounts_as_named, with_account_columns
from tally.store.migrate import migrations

# Rows read in bulk become their NamedTuple without its Python-level __new__.
_new_tuple = tuple.__new__

log = structlog.get_logger(__name__)

T = TypeVar("T")
_Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy

_TRANSIENT = (asyncpg.SerializationError, asyncpg.DeadlockDetectedError)
# The server is down, restarting or out of reach: nothing was done, the pool reconnects later.
_UNREACHABLE = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)
# What a read answers 503 for: that, or a server full (a connection reopened after a
# restart can find it so): retry later.
_UNAVAILABLE = (*_UNREACHABLE, asyncpg.TooManyConnectionsError)


def _unavailable(error: BaseException) -> StoreUnavailable:
    return StoreUnavailable(f"PostgreSQL unreachable: {type(error).__name__}")


pool_connections_max = 8
# A server's GET routes read on its own loop, on a pool of that loop's (`LoopReads`): at
# most this many connections more per server process.
loop_read_connections_max = 4
loop_reads_close_timeout_s = 10.0
# A batch of at most this many events commits in one
# statement, one round trip; larger ones by COPY. At the HTTP API batches are small and the
# seven round trips of the long form each waited for the GIL (docs/benchmarks.md).
one_statement_events_max = 200
command_timeout_s = 60.0
# A replay's anti-joins take about a second per million rows here: a ledger of tens of
# millions of rows needs more than a write's timeout.
replay_statement_timeout_s = 3600.0
# A replay compares the staged rows with the tables by hashing one side: room to do it in
# memory for a few million rows (disk batches beyond, still correct).
replay_work_mem_mb = 256

_EVENT_COLUMNS = ("ledger", "seq", "transaction_id", "event_type", "body", "hash")
_ENTRY_COLUMNS = ("ledger", "account", "seq", "idx", "amount", "balance_after", "order_id")
_KEY_COLUMNS = ("ledger", "idempotency_key", "command_digest", "seq")
# The head's compare-and-set. The row is matched by name alone, so that the statement waits
# for a writer holding it (its commit in progress) and then sees that writer's head; moving
# it only from `(seq, hash) = ($4, $5)`. With the match on seq and hash in WHERE, a batch
# whose base is a head not yet committed would skip the row without waiting.
_MOVE_HEAD = """
UPDATE ledgers SET
    seq = CASE WHEN seq = $4 AND hash = $5 THEN $1 ELSE seq END,
    hash = CASE WHEN seq = $4 AND hash = $5 THEN $2 ELSE hash END
WHERE name = $3
RETURNING seq = $1 AND hash = $2
"""
_ACCOUNT_COLUMNS = ("ledger", "account", "kind", "owner", "currency")
# An account's balance and last seq are those of its last entry: two primary-key seeks.
_ACCOUNT_ROWS = """
SELECT a.account,
    (SELECT balance_after FROM entries n WHERE n.ledger = a.ledger AND n.account = a.account
     ORDER BY n.seq DESC, n.idx DESC LIMIT 1),
    (SELECT max(seq) FROM entries n WHERE n.ledger = a.ledger AND n.account = a.account)
FROM accounts a WHERE a.ledger = $1
"""
_PROJECTED_ACCOUNT_ROWS = with_account_columns(_ACCOUNT_ROWS)
_OWNER_BALANCES = _ACCOUNT_ROWS + "AND a.kind = $2 AND a.owner = $3 ORDER BY a.currency"
# A report's sums (`Store.report`): sum() of bigint is numeric, exact; a debit is negated as
# numeric, so a (tampered) -2^63 is summed, not an error of bigint's range
_REPORT_ACCOUNTS = (
    "SELECT a.account, a.kind, a.owner, a.currency, "
    "coalesce(sum(CASE WHEN n.seq <= $2 THEN n.amount END), 0), "
    "coalesce(sum(CASE WHEN n.seq > $2 AND n.amount < 0 THEN -(n.amount::numeric) END), 0), "
    "coalesce(sum(CASE WHEN n.seq > $2 AND n.amount > 0 THEN n.amount END), 0) "
    "FROM accounts a JOIN entries n ON n.ledger = a.ledger AND n.account = a.account "
    "WHERE a.ledger = $1 AND n.seq <= $3 GROUP BY a.account, a.kind, a.owner, a.currency "
    'ORDER BY a.currency COLLATE "C", a.kind COLLATE "C", a.owner COLLATE "C"'
)
_REPORT_MOVEMENTS = (
    "SELECT v.event_type, a.kind, a.currency, count(*) FILTER (WHERE n.idx = 0), "
    "coalesce(sum(CASE WHEN n.amount < 0 THEN -(n.amount::numeric) END), 0), "
    "coalesce(sum(CASE WHEN n.amount > 0 THEN n.amount END), 0) "
    "FROM entries n JOIN events v ON v.ledger = n.ledger AND v.seq = n.seq "
    "JOIN accounts a ON a.ledger = n.ledger AND a.account = n.account "
    "WHERE n.ledger = $1 AND n.seq > $2 AND n.seq <= $3 "
    "GROUP BY v.event_type, a.kind, a.currency "
    'ORDER BY v.event_type COLLATE "C", a.currency COLLATE "C", a.kind COLLATE "C"'
)
_ORDER_COLUMNS = (
    "ledger",
    "order_id",
    "expense_id",
    "user_id",
    "currency",
    "merchant_id",
    "paid",
    "refunded",
)
_ORDER_MISSING = "tally: an order to update is missing"


class _OrdersNotSeen(Exception):
    """A one-statement commit found fewer refunded orders than it had to update."""


_UPDATE_ORDERS = """
UPDATE orders SET refunded = u.refunded
FROM unnest($2::text[], $3::bigint[]) AS u (order_id, refunded)
WHERE orders.ledger = $1 AND orders.order_id = u.order_id
"""
_HOLD_COLUMNS = (
    "ledger",
    "hold_id",
    "transaction_id",
    "seq",
    "user_id",
    "currency",
    "amount",
    "expires_at_us",
    "settled_by",
)
# A batch's settled holds, as whole rows: each row is updated, or inserted should it be
# missing (a hold placed by a tally older than the holds projection, during a rolling
# upgrade; `tally verify` compares the rows with a replay either way). The conflict is checked
# against the newest committed row, whatever the statement's snapshot (READ COMMITTED's
# INSERT ... ON CONFLICT): a row another batch inserted is always updated. The holds a batch
# places are plain inserts (`_INSERT_HOLDS`), as every other new row is: a stale row in the
# way fails the batch, and placing a hold needs no UPDATE privilege.
_HOLDS_INSERT = """
INSERT INTO holds (ledger, hold_id, transaction_id, seq, user_id, currency, amount,
    expires_at_us, settled_by)
SELECT {ledger}, * FROM unnest({arrays})
{gate}{conflict}
"""
_SETTLE = "ON CONFLICT (ledger, hold_id) DO UPDATE SET settled_by = excluded.settled_by"
_HOLD_ARRAY_TYPES = ("text", "text", "bigint", "text", "text", "bigint", "bigint", "text")


def _holds_insert(ledger: str, first: int, gate: str, conflict: str) -> str:
    """`_HOLDS_INSERT` reading the ledger from `ledger` and the eight columns from
    parameters `first`.., its SELECT filtered by `gate` (a WHERE clause, or nothing)."""
    arrays = ", ".join(f"${first + i}::{kind}[]" for i, kind in enumerate(_HOLD_ARRAY_TYPES))
    sql = _HOLDS_INSERT.format(ledger=ledger, arrays=arrays, gate=gate, conflict=conflict)
    return sql.strip()


_UPSERT_HOLDS = _holds_insert("$1", 2, "", _SETTLE)
# The whole of a small batch: the compare-and-set (as `_MOVE_HEAD`), every table's rows as
# arrays, inserted only when the head moved, and the refunded orders that existed before the
# batch (`up`: the CTEs share one snapshot, so it could not see rows inserted by `od`; the
# writer never lists those). Each data-modifying CTE runs whether or not the main query reads
# it; `moved` gates them. Should an order to update be missing, the cast of a text that is not
# a number fails the statement, so nothing of the batch is written (no stored procedure). A
# batch that places holds adds `hp`, one that settles them `hu` (`_HOLDS_INSERT`); the others
# leave them out, with their eight parameters each (measured: ~15% of a one-command commit's
# time).
_COMMIT_ONE_STATEMENT = f"""
WITH head AS ({_MOVE_HEAD.strip()} AS moved),
go AS (SELECT 1 FROM head WHERE moved),
ev AS (
    INSERT INTO events (ledger, seq, transaction_id, event_type, body, hash)
    SELECT $3, * FROM unnest($6::bigint[], $7::text[], $8::text[], $9::bytea[], $10::bytea[])
    WHERE EXISTS (SELECT FROM go)
), en AS (
    INSERT INTO entries (ledger, account, seq, idx, amount, balance_after, order_id)
    SELECT $3, * FROM unnest($11::text[], $12::bigint[], $13::integer[], $14::bigint[],
        $15::bigint[], $16::text[])
    WHERE EXISTS (SELECT FROM go)
), ac AS (
    INSERT INTO accounts (ledger, account, kind, owner, currency)
    SELECT $3, * FROM unnest($17::text[], $18::text[], $19::text[], $20::text[])
    WHERE EXISTS (SELECT FROM go)
), od AS (
    INSERT INTO orders (ledger, order_id, expense_id, user_id, currency, merchant_id, paid,
        refunded)
    SELECT $3, * FROM unnest($21::text[], $22::text[], $23::text[], $24::text[], $25::text[],
        $26::bigint[], $27::bigint[])
    WHERE EXISTS (SELECT FROM go)
), ky AS (
    INSERT INTO idempotency_keys (ledger, idempotency_key, command_digest, seq)
    SELECT $3, * FROM unnest($28::text[], $29::text[], $30::bigint[])
    WHERE EXISTS (SELECT FROM go)
), up AS (
    UPDATE orders SET refunded = u.refunded
    FROM unnest($31::text[], $32::bigint[]) AS u (order_id, refunded)
    WHERE orders.ledger = $3 AND orders.order_id = u.order_id AND EXISTS (SELECT FROM go)
    RETURNING 1
){{holds}}
SELECT CASE WHEN moved AND (SELECT count(*) FROM up) <> cardinality($31::text[])
    THEN ('{_ORDER_MISSING} ' || (SELECT count(*) FROM up))::integer = 0
    ELSE moved END
FROM head
"""
_GO = "WHERE EXISTS (SELECT FROM go)\n"
# By (places holds, settles holds): the statement, its holds' parameters from $33 on.
_COMMIT_HOLDS = {
    (True, False): _COMMIT_ONE_STATEMENT.format(
        holds=f", hp AS (\n{_holds_insert('$3', 33, _GO, '')}\n)"
    ),
    (False, True): _COMMIT_ONE_STATEMENT.format(
        holds=f", hu AS (\n{_holds_insert('$3', 33, _GO, _SETTLE)}\n)"
    ),
    (True, True): _COMMIT_ONE_STATEMENT.format(
        holds=f", hp AS (\n{_holds_insert('$3', 33, _GO, '')}\n), "
        f"hu AS (\n{_holds_insert('$3', 41, _GO, _SETTLE)}\n)"
    ),
}
_COMMIT_ONE_STATEMENT = _COMMIT_ONE_STATEMENT.format(holds="")
# A page of the log. A gapless log's next `limit` events are exactly the seqs after_seq + 1 to
# after_seq + limit (`$4`, computed in Python so that it cannot overflow), and saying so keeps
# the plan narrow on a table without statistics (a new database, a restore, a bulk load
# before autovacuum's analyze): there PostgreSQL guessed a couple of thousand rows and sorted
# every event after `after_seq` for each page (250-600 ms a page at 310,000 events, against
# 30 ms; with statistics both are an index scan of ~8 ms). A shorter answer is asked again
# without the bound, so that a gap still shows.
_EVENTS_IN_RANGE = """
SELECT seq, transaction_id, event_type, body, hash FROM events
WHERE ledger = $1 AND seq > $2 AND seq <= $4 ORDER BY seq LIMIT $3
"""
_EVENTS_AFTER = """
SELECT seq, transaction_id, event_type, body, hash FROM events
WHERE ledger = $1 AND seq > $2 ORDER BY seq LIMIT $3
"""
_EVENT_BY_TRANSACTION = """
SELECT seq, transaction_id, event_type, body, hash FROM events
WHERE ledger = $1 AND transaction_id = $2
"""
# A user's holds in the order they were placed (the index holds_by_user), each with its
# placement's body and its settlement's (NULL while open); a hold whose event is gone (only
# tampering) keeps its row, which the view refuses.
_HOLDS_OF_ALL = """
SELECT h.hold_id, h.transaction_id, h.seq, h.user_id, h.currency, h.amount, h.expires_at_us,
    h.settled_by, p.body, s.body
FROM holds h
LEFT JOIN events p ON p.ledger = h.ledger AND p.seq = h.seq
LEFT JOIN events s ON s.ledger = h.ledger AND s.transaction_id = h.settled_by
WHERE h.ledger = $1 AND h.user_id = $2 AND h.seq > $3 {} ORDER BY h.seq LIMIT $4
"""
_HOLDS_OF = {
    None: _HOLDS_OF_ALL.format(""),
    False: _HOLDS_OF_ALL.format("AND h.settled_by IS NULL"),
    True: _HOLDS_OF_ALL.format("AND h.settled_by IS NOT NULL"),
}
_ENTRIES_OF = """
SELECT account, seq, idx, amount, balance_after, order_id FROM entries
WHERE ledger = $1 AND account = ANY($3::text[]) AND seq = $2 ORDER BY idx
"""
_ORDER = """
SELECT order_id, expense_id, user_id, currency, merchant_id, paid, refunded
FROM orders WHERE ledger = $1 AND order_id = $2
"""
# The page's entries first, then one primary-key lookup of its event each (a scalar subquery,
# run only for the lines the LIMIT lets through). Joined before the LIMIT, the planner (once
# tables have statistics) merge-joins `events` from seq 1 up to the cursor: 248 ms for a page
# deep in a 1,000,000-entry wallet, against 0.4 ms this way; joined after it, PostgreSQL spent
# a fifth more CPU on a 100-line page (a join and a second sort). The account is the
# caller's, so it is not sent back 100 times.
_STATEMENT_PAGE = """
SELECT n.seq, n.idx, n.amount, n.balance_after, n.order_id,
       (SELECT e.body FROM events e WHERE e.ledger = $1 AND e.seq = n.seq)
FROM entries n
WHERE n.ledger = $1 AND n.account = $2 AND (n.seq, n.idx) > ($3, $4)
ORDER BY n.seq, n.idx LIMIT $5
"""
# The order's expense, then its refunds: the lines that credit a wallet for an order
# (migration 0003 indexes exactly those; the predicate must match the index's). An event
# missing from the log (deleted: tampering) comes back as a seq without its columns.
_ORDER_EVENTS = """
SELECT s.seq, e.transaction_id, e.event_type, e.body, e.hash
FROM (
    SELECT seq FROM events WHERE ledger = $1 AND transaction_id =
        (SELECT expense_id FROM orders WHERE ledger = $1 AND order_id = $2)
    UNION
    SELECT seq FROM entries WHERE ledger = $1 AND order_id = $2 AND order_id IS NOT NULL
        AND amount > 0 AND substr(account, 1, 7) = 'wallet:'
) s LEFT JOIN events e ON e.ledger = $1 AND e.seq = s.seq
ORDER BY s.seq
"""


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion on a fresh event loop (for tools and tests)."""
    return asyncio.run(coroutine)


def _new_loop() -> asyncio.AbstractEventLoop:
    """The store's own loop: uvloop where it exists (asyncpg spends about half the CPU on
    it that it does on asyncio's loop: a 100-line statement page 160 against 320 µs)."""
    try:
        import uvloop
    except ImportError:  # Windows
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class PostgresStore:
    """`Store` on PostgreSQL (and engines that speak its protocol and SQL profile)."""

    # Batch N+1's rows go in on a second connection while N commits (module docstring).
    concurrent_commits = 2

    def __init__(self, url: str) -> None:
        self.url = url
        self._loop = _new_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="tally-postgres", daemon=True
        )
        self._thread.start()
        self._pool: asyncpg.Pool | None = None
        # The commits in progress, by the head each moves to: batch N+1 issues its
        # compare-and-set only after N has issued its own (else it finds the head still
        # before N and is fenced for nothing). Touched only on the loop.
        self._cas_turns: dict[tuple[str, Head], asyncio.Future[None]] = {}
        # The same commits, done (committed or failed): see `_commit_in_one_statement`.
        self._finished: dict[tuple[str, Head], asyncio.Future[None]] = {}
        # The pools of other loops (a server's): see `open_loop_reads`.
        self._loop_pools: dict[asyncio.AbstractEventLoop, asyncpg.Pool] = {}
        try:
            self._pool = self._call(self._open())
        except BaseException:
            self._stop_loop()
            raise

    # -- the loop ----------------------------------------------------------------------
    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        try:
            return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()
        except _UNAVAILABLE as error:
            raise _unavailable(error) from error

    async def _open(self) -> asyncpg.Pool:
        pool = await _create_pool(self.url, pool_connections_max)
        try:
            async with pool.acquire() as db:
                await _migrate(db)
        except BaseException:
            await pool.close()
            raise
        return pool

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            self._call(pool.close())
            self._stop_loop()

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the PostgreSQL store is closed")
        return self._pool

    async def _fetch(self, query: str, *args: object) -> list[asyncpg.Record]:
        async with self.pool.acquire() as db:
            rows: list[asyncpg.Record] = await db.fetch(query, *args)
            return rows

    def rows(self, query: str, *args: object) -> list[asyncpg.Record]:
        """Run one statement on the pool and return its rows (for sibling stores)."""
        return self._call(self._fetch(query, *args))

    def server_warnings(self) -> list[str]:
        """What the server does that docs/postgresql.md advises against (`tally serve` logs
        it at start)."""
        found = []
        if self.rows("SHOW autovacuum")[0][0] == "off":
            found.append(
                "autovacuum is off on this server: dead row versions of the head row and of "
                "orders pile up, statistics go stale, and a log loaded in bulk dirties all "
                "its pages when tally first reads it (docs/postgresql.md); VACUUM (ANALYZE) "
                "by hand"
            )
        return found

    # -- the write path ----------------------------------------------------------------
    def ensure_ledger(self, ledger: str) -> None:
        self.rows(
            "INSERT INTO ledgers VALUES ($1, 0, $2, $3) ON CONFLICT (name) DO NOTHING",
            ledger,
            GENESIS_HASH,
            time.time_ns() // 1000,
        )

    def commit(self, batch: BatchWrite) -> None:
        self._call(self._commit_or_fence(batch))

    def commit_soon(self, batch: BatchWrite) -> concurrent.futures.Future[None]:
        """The commit, started on the store's loop straight from the writer's thread: no
        committer thread to wake and to wait for (the loop already runs it)."""
        return asyncio.run_coroutine_threadsafe(self._commit_or_fence(batch), self._loop)

    async def _commit_or_fence(self, batch: BatchWrite) -> None:
        try:
            await self._commit(batch)
        except _TRANSIENT as error:
            # Nothing was written. The writer treats it like a fence: it catches up from the
            # log and decides the batch again, a bounded number of times.
            raise HeadMoved(f"{batch.ledger}: {error!r}") from error
        except _UNREACHABLE as error:
            raise _unavailable(error) from error

    async def _commit(self, batch: BatchWrite) -> None:
        ledger = batch.ledger
        turn = self._loop.create_future()
        self._cas_turns[(ledger, batch.head)] = turn
        finished = self._loop.create_future()
        self._finished[(ledger, batch.head)] = finished
        try:
            if len(batch.events) <= one_statement_events_max:
                try:
                    await self._commit_in_one_statement(batch)
                    return
                except _OrdersNotSeen:
                    # Nothing was written. An order the statement's snapshot could not see
                    # (a replay that rewrote its row committed meanwhile) is seen by the long
                    # form, which updates after the compare-and-set; one truly missing fails
                    # there too.
                    pass
            # Batch N's compare-and-set first, before this transaction takes any lock: a
            # wait in Python with locks held is one PostgreSQL's deadlock detector cannot see
            # (N waiting on another process's rows, that process on ours, we on N: all stood
            # until the command timeout). Once N's compare-and-set is done, N only commits,
            # and every wait of ours is on a lock PostgreSQL knows about.
            before = self._cas_turns.get((ledger, batch.base))
            if before is not None:
                await asyncio.shield(before)
            # READ COMMITTED only makes the updates after the compare-and-set see the rows
            # of the batch committed just before; any other level is equally correct (a
            # serialization failure counts as a fence), only slower when commits overlap.
            async with self.pool.acquire() as db, db.transaction(isolation="read_committed"):
                await _copy(db, "events", _EVENT_COLUMNS, [(ledger, *r) for r in batch.events])
                await _write_projections(db, ledger, batch.projections)
                moved = await db.fetchval(
                    _MOVE_HEAD,
                    batch.head.seq,
                    batch.head.hash,
                    ledger,
                    batch.base.seq,
                    batch.base.hash,
                )
                turn.set_result(None)
                if moved is not True:
                    raise HeadMoved(ledger)
                await _update(
                    db,
                    _UPDATE_ORDERS,
                    ledger,
                    [(o.order_id, o.refunded) for o in batch.order_updates],
                )
                if batch.hold_updates:
                    await db.execute(_UPSERT_HOLDS, ledger, *_columns(batch.hold_updates, 8))
        except asyncpg.UniqueViolationError as error:
            # Another writer's committed rows hold a key of ours, so it moved the head on:
            # a fence. With the head still at our base it is no fence but a bug: raise it.
            if await self._head(ledger) != batch.base:
                raise HeadMoved(f"{ledger}: {error!r}") from error
            raise
        finally:
            if not turn.done():
                turn.set_result(None)  # failed before its compare-and-set: let N+1 fail on
            finished.set_result(None)  # before anything else can raise: N+1 waits on these
            self._cas_turns.pop((ledger, batch.head), None)
            self._finished.pop((ledger, batch.head), None)

    async def _commit_in_one_statement(self, batch: BatchWrite) -> None:
        """A small batch in one round trip: one statement, its own transaction. It waits
        for the previous batch's compare-and-set to be issued, like the long form; its own
        turn then comes when it has committed (when it ran is not known before).

        A batch that updates refunded orders waits for the previous batch to be done: the
        statement's one snapshot is taken when it starts, and its update must see orders a
        long-form batch N inserted (that one's turn comes before its commit). After a
        one-statement N, the common case, both waits are the same. Settled holds need no
        such wait: their upsert sees the newest committed row, whatever the snapshot."""
        ledger = batch.ledger
        waits_for = self._finished if batch.order_updates else self._cas_turns
        before = waits_for.get((ledger, batch.base))
        if before is not None:
            await asyncio.shield(before)
        p = batch.projections
        arguments = [
            batch.head.seq,
            batch.head.hash,
            ledger,
            batch.base.seq,
            batch.base.hash,
            *_columns(batch.events, 5),
            *_columns(p.entries, 6),
            *_columns([(r.account, *accounts.split(r.account)) for r in p.accounts], 4),
            *_columns(p.orders, 7),
            *_columns(p.keys, 3),
            *_columns([(o.order_id, o.refunded) for o in batch.order_updates], 2),
        ]
        statement = _COMMIT_ONE_STATEMENT
        if p.holds or batch.hold_updates:
            statement = _COMMIT_HOLDS[bool(p.holds), bool(batch.hold_updates)]
            for rows in (p.holds, batch.hold_updates):
                if rows:
                    arguments += _columns(rows, 8)
        async with self.pool.acquire() as db:
            try:
                moved = await db.fetchval(statement, *arguments)
            except asyncpg.InvalidTextRepresentationError as error:
                if _ORDER_MISSING not in str(error):
                    raise
                raise _OrdersNotSeen(ledger) from error
        if moved is not True:
            raise HeadMoved(ledger)

    async def _head(self, ledger: str) -> Head | None:
        rows = await self._fetch("SELECT seq, hash FROM ledgers WHERE name = $1", ledger)
        return Head(rows[0][0], bytes(rows[0][1])) if rows else None

    def replace_projections(self, ledger: str, head: Head, parts: Iterable[Projections]) -> None:
        self._call(self._replace(ledger, head, iter(parts)))

    async def _replace(self, ledger: str, head: Head, parts: Iterator[Projections]) -> None:
        """The parts are staged in temporary tables of one session as the log folds (no
        lock, no WAL, no index), then one transaction locks the head row, checks it and
        applies the difference: rows the replay does not produce are deleted, rows it
        produces that are missing are inserted. A replay that finds the projections intact
        writes nothing. (Deleting every row and inserting it again made each insert check
        the unique index against its own dead predecessor: 6.5 s for 620,000 entries, against
        0.9 + 0.7 s for the two anti-joins; and it left a table's worth of dead rows.)"""
        loop = asyncio.get_running_loop()
        async with self.pool.acquire() as db:
            for stage in _STAGES:
                await db.execute(stage.create)
            try:
                # The parts may be produced by a fold that reads the log through this store,
                # on this loop: wait for each on another thread, never on the loop itself.
                while (part := await loop.run_in_executor(None, next, parts, None)) is not None:
                    await _stage(db, part)
                async with db.transaction():
                    row = await db.fetchrow(
                        "SELECT seq, hash FROM ledgers WHERE name = $1 FOR UPDATE", ledger
                    )
                    if row is None or Head(row[0], bytes(row[1])) != head:
                        raise HeadMoved(ledger)
                    # Hash anti-joins: a merge join sorts the staged text keys (twice as slow).
                    await db.execute(
                        f"SET LOCAL work_mem = '{replay_work_mem_mb}MB'; "
                        "SET LOCAL enable_mergejoin = off"
                    )
                    for stage in _STAGES:
                        await db.execute(stage.stale, ledger, timeout=replay_statement_timeout_s)
                        await db.execute(stage.missing, ledger, timeout=replay_statement_timeout_s)
            finally:
                await _drop_stages(db)

    # -- reads -------------------------------------------------------------------------
    def ledgers(self) -> list[str]:
        return [r[0] for r in self.rows("SELECT name FROM ledgers ORDER BY 1")]

    def head(self, ledger: str) -> Head | None:
        return self._call(self._head(ledger))

    # The reads the GET routes make are each one coroutine over a `fetch`: the store's own
    # pool, through its loop's thread (the `Store` method), or the calling loop's pool (its
    # `LoopReads` twin, `…_on_loop`): the same statements and the same rows either way.
    def events(self, ledger: str, *, after_seq: int, limit: int) -> list[EventRow]:
        # Rows made on the caller's thread: a catch-up's or replay's page of 10,000 would hold
        # the loop that every ledger's commits run on.
        return _event_rows(self._call(_events(self._fetch, ledger, after_seq, limit)))

    def projections(self, ledger: str) -> Projections:
        return self._call(self._projections(ledger))

    async def _projections(self, ledger: str) -> Projections:
        async with self.pool.acquire() as db:
            account_rows = await db.fetch(
                _PROJECTED_ACCOUNT_ROWS + 'ORDER BY a.account COLLATE "C"',
                ledger,
            )
            entry_rows = await db.fetch(
                "SELECT account, seq, idx, amount, balance_after, order_id FROM entries "
                'WHERE ledger = $1 ORDER BY account COLLATE "C", seq, idx',
                ledger,
            )
            order_rows = await db.fetch(
                "SELECT order_id, expense_id, user_id, currency, merchant_id, paid, refunded "
                'FROM orders WHERE ledger = $1 ORDER BY order_id COLLATE "C"',
                ledger,
            )
            key_rows = await db.fetch(
                "SELECT idempotency_key, command_digest, seq FROM idempotency_keys "
                'WHERE ledger = $1 ORDER BY idempotency_key COLLATE "C"',
                ledger,
            )
            hold_rows = await db.fetch(
                f"SELECT {', '.join(_HOLD_COLUMNS[1:])} FROM holds "
                'WHERE ledger = $1 ORDER BY hold_id COLLATE "C"',
                ledger,
            )
        return Projections(
            accounts=accounts_as_named(account_rows),
            entries=[_new_tuple(EntryRow, r) for r in entry_rows],
            orders=[_new_tuple(OrderRow, r) for r in order_rows],
            keys=[_new_tuple(KeyRow, r) for r in key_rows],
            holds=[_new_tuple(HoldRow, r) for r in hold_rows],
        )

    def highest_projected_seq(self, ledger: str) -> int:
        rows = self.rows(
            "SELECT greatest((SELECT max(seq) FROM entries WHERE ledger = $1), "
            "(SELECT max(seq) FROM idempotency_keys WHERE ledger = $1))",
            ledger,
        )
        return int(rows[0][0] or 0)

    def entries_of(self, ledger: str, event: Event) -> list[EntryRow]:
        return self._call(_entries_of(self._fetch, ledger, event))

    def event_by_transaction(self, ledger: str, transaction_id: str) -> EventRow | None:
        return self._call(_event_by_transaction(self._fetch, ledger, transaction_id))

    def account_balances(self, ledger: str, *, kind: str, owner: str) -> list[AccountRow]:
        return self._call(_account_balances(self._fetch, ledger, kind, owner))

    def statement(
        self, ledger: str, account: str, *, after: tuple[int, int], limit: int
    ) -> list[tuple[EntryRow, bytes]]:
        return self._call(_statement(self._fetch, ledger, account, after, limit))

    def order(self, ledger: str, order_id: str) -> OrderRow | None:
        return self._call(_order(self._fetch, ledger, order_id))

    def order_events(self, ledger: str, order_id: str) -> list[EventRow]:
        return self._call(_order_events(self._fetch, ledger, order_id))

    def holds_of(
        self, ledger: str, user_id: str, *, after_seq: int, limit: int, settled: bool | None
    ) -> list[tuple[HoldRow, bytes, bytes | None]]:
        rows = self.rows(_HOLDS_OF[settled], ledger, user_id, after_seq, limit)
        return [(_new_tuple(HoldRow, tuple(row[:8])), row[8], row[9]) for row in rows]

    def report(
        self, ledger: str, *, after_seq: int, upto_seq: int
    ) -> tuple[list[AccountTotals], list[Movement]]:
        return self._call(self._report(ledger, after_seq, upto_seq))

    async def _report(
        self, ledger: str, after_seq: int, upto_seq: int
    ) -> tuple[list[AccountTotals], list[Movement]]:
        async with self.pool.acquire() as db, db.transaction(isolation="repeatable_read"):
            # both sums of one snapshot (a replay may swap rows meanwhile); sum() of bigint
            # is numeric in PostgreSQL: exact, turned back into Python's ints here
            totals = await db.fetch(_REPORT_ACCOUNTS, ledger, after_seq, upto_seq)
            movements = await db.fetch(_REPORT_MOVEMENTS, ledger, after_seq, upto_seq)
        return (
            [AccountTotals(*row[:4], *(int(value) for value in row[4:])) for row in totals],
            [Movement(*row[:3], *(int(value) for value in row[3:])) for row in movements],
        )

    # -- reads on the caller's loop (`LoopReads`) ------------------------------------------
    # A page read through `statement` hands off twice (a server's reader thread to the
    # store's loop and back) and waits for the GIL at each: a PostgreSQL page at the API cost
    # ~1.0 ms of the server's CPU that way, ~0.75 ms read here (docs/benchmarks.md). A loop's
    # pool is opened and closed by its owner (a server's start and shutdown), never by a read:
    # a loop that ended without closing it would hold its connections for ever.
    async def open_loop_reads(self) -> bool:
        loop = asyncio.get_running_loop()
        if self._pool is None:
            raise RuntimeError("the PostgreSQL store is closed")
        if loop in self._loop_pools:
            return True
        try:
            pool = await _create_pool(self.url, loop_read_connections_max)
        except (*_UNREACHABLE, asyncpg.PostgresError) as error:  # too many connections, say
            log.warning(
                "the GET routes read through the store's thread: no connections of the "
                "server's loop",
                error=repr(error),
            )
            return False
        self._loop_pools[loop] = pool
        return True

    def reads_on_this_loop(self) -> bool:
        return asyncio.get_running_loop() in self._loop_pools

    async def statement_on_loop(
        self, ledger: str, account: str, *, after: tuple[int, int], limit: int
    ) -> list[tuple[EntryRow, bytes]]:
        return await _statement(self._on_loop, ledger, account, after, limit)

    async def account_balances_on_loop(
        self, ledger: str, *, kind: str, owner: str
    ) -> list[AccountRow]:
        return await _account_balances(self._on_loop, ledger, kind, owner)

    async def events_on_loop(self, ledger: str, *, after_seq: int, limit: int) -> list[EventRow]:
        return _event_rows(await _events(self._on_loop, ledger, after_seq, limit))

    async def event_by_transaction_on_loop(
        self, ledger: str, transaction_id: str
    ) -> EventRow | None:
        return await _event_by_transaction(self._on_loop, ledger, transaction_id)

    async def entries_of_on_loop(self, ledger: str, event: Event) -> list[EntryRow]:
        return await _entries_of(self._on_loop, ledger, event)

    async def order_on_loop(self, ledger: str, order_id: str) -> OrderRow | None:
        return await _order(self._on_loop, ledger, order_id)

    async def order_events_on_loop(self, ledger: str, order_id: str) -> list[EventRow]:
        return await _order_events(self._on_loop, ledger, order_id)

    async def _on_loop(self, query: str, *args: object) -> list[asyncpg.Record]:
        pool = self._loop_pools[asyncio.get_running_loop()]
        try:
            rows: list[asyncpg.Record] = await pool.fetch(query, *args)
        except _UNAVAILABLE as error:
            raise _unavailable(error) from error
        return rows

    async def close_loop_reads(self) -> None:
        pool = self._loop_pools.pop(asyncio.get_running_loop(), None)
        if pool is None:
            return
        try:  # a borrowed connection is given back within a page's read, or else let go
            await asyncio.wait_for(pool.close(), timeout=loop_reads_close_timeout_s)
        except Exception:
            pool.terminate()


async def _create_pool(url: str, connections_max: int) -> asyncpg.Pool:
    pool: asyncpg.Pool = await asyncpg.create_pool(
        url,
        min_size=1,
        max_size=connections_max,
        command_timeout=command_timeout_s,
        init=_session_settings,
        reset=_keep_session,
    )
    return pool


# -- the reads, over either pool (see `PostgresStore.events`) ------------------------------
_Fetch = Callable[..., Awaitable[list[asyncpg.Record]]]  # (query, *args) -> rows


def _event_rows(rows: list[asyncpg.Record]) -> list[EventRow]:
    return [EventRow(r[0], r[1], r[2], bytes(r[3]), bytes(r[4])) for r in rows]


async def _events(fetch: _Fetch, ledger: str, after_seq: int, limit: int) -> list[asyncpg.Record]:
    upto = min(after_seq + limit, INT64_MAX)
    rows = await fetch(_EVENTS_IN_RANGE, ledger, after_seq, limit, upto)
    if len(rows) < limit:  # the log's end, or a gap in it: ask without the upper bound
        rows = await fetch(_EVENTS_AFTER, ledger, after_seq, limit)
    return rows


async def _event_by_transaction(fetch: _Fetch, ledger: str, transaction_id: str) -> EventRow | None:
    rows = await fetch(_EVENT_BY_TRANSACTION, ledger, transaction_id)
    return _event_rows(rows)[0] if rows else None


async def _entries_of(fetch: _Fetch, ledger: str, event: Event) -> list[EntryRow]:
    accounts_of = sorted({p.account for p in event.postings})
    return [EntryRow(*r) for r in await fetch(_ENTRIES_OF, ledger, event.seq, accounts_of)]


async def _account_balances(fetch: _Fetch, ledger: str, kind: str, owner: str) -> list[AccountRow]:
    return [AccountRow(*r) for r in await fetch(_OWNER_BALANCES, ledger, kind, owner)]


async def _statement(
    fetch: _Fetch, ledger: str, account: str, after: tuple[int, int], limit: int
) -> list[tuple[EntryRow, bytes]]:
    rows = await fetch(_STATEMENT_PAGE, ledger, account, after[0], after[1], limit)
    page = [(EntryRow(account, *r[:5]), r[5]) for r in rows]
    for line, body in page:
        if body is None:  # the log refuses deletes: only tampering gets here
            raise InvariantViolated(f"{ledger}: entry at seq {line.seq} has no event")
    return page


async def _order(fetch: _Fetch, ledger: str, order_id: str) -> OrderRow | None:
    rows = await fetch(_ORDER, ledger, order_id)
    return OrderRow(*rows[0]) if rows else None


async def _order_events(fetch: _Fetch, ledger: str, order_id: str) -> list[EventRow]:
    rows = await fetch(_ORDER_EVENTS, ledger, order_id)
    for row in rows:
        if row[1] is None:  # the log refuses deletes: only tampering gets here
            raise InvariantViolated(f"{ledger}: order {order_id} has no event at seq {row[0]}")
    return _event_rows(rows)


async def _write_projections(db: _Connection, ledger: str, p: Projections) -> None:
    await _copy(db, "entries", _ENTRY_COLUMNS, [(ledger, *row) for row in p.entries])
    await _copy(
        db,
        "accounts",
        _ACCOUNT_COLUMNS,
        [(ledger, row.account, *accounts.split(row.account)) for row in p.accounts],
    )
    await _copy(db, "orders", _ORDER_COLUMNS, [(ledger, *row) for row in p.orders])
    await _copy(db, "idempotency_keys", _KEY_COLUMNS, [(ledger, *row) for row in p.keys])
    await _copy(db, "holds", _HOLD_COLUMNS, [(ledger, *row) for row in p.holds])


class _Stage:
    """A replay's temporary copy of one projection table, less the ledger column, and the
    two statements that make the table equal to it (see `PostgresStore._replace`)."""

    def __init__(self, table: str, keys: Sequence[str], values: Sequence[str]) -> None:
        self.table = f"replay_{table}"
        self.name = f"pg_temp.{self.table}"  # never a table of that name on the search path
        self.columns = (*keys, *values)
        listed = ", ".join(self.columns)
        self.create = (
            f"DROP TABLE IF EXISTS {self.name}; "
            f"CREATE TEMP TABLE {self.table} AS SELECT {listed} FROM {table} WITH NO DATA; "
            # Keyed like the table: rows staged twice under one key fail here, as they would
            # in the table, instead of leaving the difference ambiguous.
            f"ALTER TABLE {self.name} ADD PRIMARY KEY ({', '.join(keys)})"
        )
        same_key = " AND ".join(f"s.{k} = m.{k}" for k in keys)
        same_values = "".join(f" AND s.{v} IS NOT DISTINCT FROM m.{v}" for v in values)
        self.stale = (
            f"DELETE FROM {table} m WHERE m.ledger = $1 AND NOT EXISTS "
            f"(SELECT 1 FROM {self.name} s WHERE {same_key}{same_values})"
        )
        self.missing = (
            f"INSERT INTO {table} (ledger, {listed}) "
            f"SELECT $1, {', '.join(f's.{c}' for c in self.columns)} FROM {self.name} s "
            f"WHERE NOT EXISTS (SELECT 1 FROM {table} m WHERE m.ledger = $1 AND {same_key})"
        )


_STAGE_ENTRIES, _STAGE_ACCOUNTS, _STAGE_ORDERS, _STAGE_KEYS, _STAGE_HOLDS = _STAGES = (
    _Stage("entries", ("account", "seq", "idx"), ("amount", "balance_after", "order_id")),
    _Stage("accounts", ("account",), ("kind", "owner", "currency")),
    _Stage("orders", ("order_id",), _ORDER_COLUMNS[2:]),
    _Stage("idempotency_keys", ("idempotency_key",), ("command_digest", "seq")),
    _Stage("holds", ("hold_id",), _HOLD_COLUMNS[2:]),
)


async def _drop_stages(db: _Connection) -> None:
    """Drop a replay's staging tables from its pooled session; the error that ended the
    replay, if any, is the one to report (a dead session drops them itself)."""
    try:
        await db.execute("; ".join(f"DROP TABLE IF EXISTS {s.name}" for s in _STAGES))
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as error:
        log.warning("replay staging tables not dropped", error=repr(error))


async def _stage(db: _Connection, p: Projections) -> None:
    """One part of a replay into the staging tables (its last part holds every order and
    account of the ledger: one COPY each, hence the replay's timeout)."""
    parts = (
        (_STAGE_ENTRIES, p.entries),
        (_STAGE_ACCOUNTS, [(row.account, *accounts.split(row.account)) for row in p.accounts]),
        (_STAGE_ORDERS, p.orders),
        (_STAGE_KEYS, p.keys),
        (_STAGE_HOLDS, p.holds),
    )
    for stage, records in parts:
        await _copy(
            db,
            stage.table,
            stage.columns,
            records,
            schema="pg_temp",
            timeout=replay_statement_timeout_s,
        )


async def _copy(
    db: _Connection,
    table: str,
    columns: Sequence[str],
    records: Sequence[Sequence[object]],
    *,
    schema: str | None = None,
    timeout: float | None = None,
) -> None:
    """Binary COPY of `records` into `table`; no round trip when there are none (a batch
    of expenses opens no account, one of recharges creates no order)."""
    if records:
        await db.copy_records_to_table(
            table, records=records, columns=columns, schema_name=schema, timeout=timeout
        )


def _columns(rows: Sequence[Sequence[object]], width: int) -> list[list[object]]:
    """Rows as `width` column lists (empty lists when there are no rows)."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(column) for column in zip(*rows, strict=True)]


_warnings_given: set[str] = set()  # each once a process: the pool reopens sessions all day


async def _session_settings(db: asyncpg.Connection) -> None:
    """Every new session of the pool.

    Never `synchronous_commit = off`, which acknowledges a COMMIT before its WAL is on disk
    (a write tally answered could vanish in a crash). Any other setting (`local`, or the
    stronger `remote_write` / `remote_apply`) is kept.

    `plan_cache_mode = force_custom_plan`: every execution of a prepared statement is
    planned for the tables as they are now. By default a session may switch to a generic
    plan after five executions and keep it until the table's statistics change. One made
    while `orders` was small (a new database) hash-joins every order of the ledger to update
    the few a batch refunds, and keeps doing so as the table grows, until the next analyze
    (never, without autovacuum): 1,100-1,500 instead of 6,300 mixed requests/s at the API
    (docs/benchmarks.md, "What each change bought"). Planning costs ~0.13 ms of server CPU a
    statement: within noise at the API, where a commit carries tens of transfers. A server
    that refuses the setting (before PostgreSQL 12, some compatible engines) keeps its
    default: the setting is an optimisation, so no refusal may stop tally from connecting.
    """
    try:
        await db.execute("SET plan_cache_mode = force_custom_plan")
    except _UNREACHABLE:  # the connection went away: no refusal, nor a session to go on
        raise
    except asyncpg.PostgresError as refusal:  # outside a transaction: the session goes on
        _warn_once("plan_cache_mode", f"plan_cache_mode refused ({refusal!r}); plans may go stale")
    if await db.fetchval("SHOW synchronous_commit") == "off":
        await db.execute("SET synchronous_commit = on")
        _warn_once(
            "synchronous_commit",
            "synchronous_commit is off on this server; tally's sessions set it on",
        )


def _warn_once(setting: str, message: str) -> None:
    if setting not in _warnings_given:
        _warnings_given.add(setting)
        log.warning(message)


async def _keep_session(db: asyncpg.Connection) -> None:
    """The pool's reset between borrowers. asyncpg's default (`RESET ALL`, `UNLISTEN *`,
    `pg_advisory_unlock_all()`, ...) costs a round trip per acquire; tally changes session
    state only in `_session_settings` (which must outlive borrowers: `RESET ALL` would undo it),
    and asyncpg itself rolls back a transaction left open before this runs."""


async def _update(db: _Connection, sql: str, ledger: str, rows: Sequence[Sequence[object]]) -> None:
    """Rows that exist already: each is `(key, new values...)`; every one must be there."""
    if not rows:
        return
    status = await db.execute(sql, ledger, *_columns(rows, len(rows[0])))
    if status != f"UPDATE {len(rows)}":
        raise RuntimeError(f"ledger {ledger}: a row to update is missing ({status})")


_MIGRATING = int.from_bytes(b"tally:mg")  # the advisory lock of a database's migrator


async def _migrate(db: _Connection) -> None:
    """Apply the PostgreSQL migrations not yet applied, each in its own transaction.

    When everything is applied this only reads `schema_migrations`, so tally can run as a
    role that may not create tables (docs/postgresql.md).
    """
    applied: set[int] = set()
    if await db.fetchval("SELECT to_regclass('schema_migrations')") is not None:
        applied = {row[0] for row in await db.fetch("SELECT version FROM schema_migrations")}
    pending = [m for m in migrations("postgresql") if m.version not in applied]
    if not pending:
        return
    async with db.transaction():
        # Processes opening a new database together: `IF NOT EXISTS` alone lets two of them
        # both create the table, and the second fails on the catalog's unique index.
        await db.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATING)
        await db.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at_us BIGINT NOT NULL)"
        )
    for migration in pending:
        async with db.transaction():
            # Serialize concurrent migrators: the first takes the lock, the others wait
            # and then find the version applied.
            await db.execute("LOCK TABLE schema_migrations IN EXCLUSIVE MODE")
            done = await db.fetchval(
                "SELECT 1 FROM schema_migrations WHERE version = $1", migration.version
            )
            if done:
                continue
            await db.execute(migration.sql)
            await db.execute(
                "INSERT INTO schema_migrations VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                time.time_ns() // 1000,
            )

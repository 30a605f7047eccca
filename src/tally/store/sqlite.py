"""The embedded store: one SQLite file, WAL, `synchronous=FULL`.

Each thread gets its own connection (the writer thread of each ledger, and readers), so the
writer never shares a connection. A batch is one statement in its own transaction: an
INSERT into a view whose trigger does a compare-and-set on the ledger's head row, then one
`INSERT ... SELECT FROM json_each(...)` per table (a batch too large for that: the same in
`BEGIN IMMEDIATE ... COMMIT`, a statement per chunk).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import msgspec
import structlog

from tally.audit.chain import GENESIS_HASH
from tally.domain import accounts
from tally.domain.events import Event
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
)
from tally.store import accounts_as_named, with_account_columns
from tally.store.migrate import migrations
from tally.store.sqlite_threads import ThreadConnections, busy_timeout_ms, connect

# Rows read in bulk become their NamedTuple without its Python-level __new__.
_new_tuple = tuple.__new__

log = structlog.get_logger(__name__)

# Checkpoints (copying the WAL back into the database file) run on a thread of their own, at
# most this often while batches keep committing; the committer never waits for one. Should
# that thread fall behind, the connection that commits checkpoints itself past this many
# WAL pages (4 KiB each), as SQLite does by default past 1,000.
checkpoint_interval_s = 0.25
wal_autocheckpoint_pages = 50_000

json_chunk_rows = 20_000  # rows per statement: bounds the JSON text of one parameter
hash_bytes = 32  # SHA-256

_encode_rows = msgspec.json.Encoder().encode


class _JsonInsert:
    """`INSERT ... SELECT ... FROM json_each(?)`: all of a batch's rows for one table in one
    statement with one parameter, a JSON array of row arrays.

    The obvious alternative, binding every value of a multi-row `VALUES` list, makes the
    committer thread hold the GIL for each of tens of thousands of bindings a batch, and
    every time it needs the GIL back it waits for the writer thread (which decides the next
    batch in pure Python) to yield it: measured, that doubled the commit's wall time. Here
    the rows become one JSON text in a single C call (msgspec), and SQLite takes them apart
    while the GIL is released (docs/benchmarks.md).
    """

    def __init__(self, table: str, columns: int, *, on_conflict: str = "") -> None:
        self.table = table
        self.columns = columns
        self.on_conflict = on_conflict
        self.sql = self.statement("?1", "?2")

    def statement(self, ledger: str, rows: str) -> str:
        """The INSERT, reading the ledger and the JSON rows from these SQL expressions."""
        picks = ", ".join(f"value ->> {i}" for i in range(self.columns))
        sql = f"INSERT INTO {self.table} SELECT {ledger}, {picks} FROM json_each({rows})"
        # WHERE true: without it SQLite would read ON as a join's (its documented ambiguity)
        return f"{sql} WHERE true {self.on_conflict}" if self.on_conflict else sql

    def run(self, db: sqlite3.Connection, ledger: str, rows: Sequence[Sequence[object]]) -> None:
        """Insert `rows`, each prefixed with `ledger`."""
        for start in range(0, len(rows), json_chunk_rows):
            chunk = rows[start : start + json_chunk_rows]
            db.execute(self.sql, (ledger, _encode_rows(chunk).decode()))


def _order_updates(batch: BatchWrite) -> str:
    """The batch's refunded orders that existed before it, as a JSON object of order id to
    refunded (`_orders_updated`)."""
    return _encode_rows({o.order_id: o.refunded for o in batch.order_updates}).decode()


def _update_orders(db: sqlite3.Connection, batch: BatchWrite) -> None:
    """The batch view trigger's update of refunded orders, as a statement of its own for a
    batch written in chunks; checked by count, as RAISE runs only in a trigger."""
    if not batch.order_updates:
        return
    before = db.total_changes
    db.execute(_UPDATE_ORDERS_LISTED, (batch.ledger, _order_updates(batch)))
    if db.total_changes - before != len(batch.order_updates):
        raise RuntimeError(f"ledger {batch.ledger}: a row to update is missing")


def _write_in_one_statement(db: sqlite3.Connection, batch: BatchWrite) -> None:
    rows = batch.projections
    spans, bodies, hashes = _event_columns(batch.events)
    try:
        db.execute(
            _INSERT_BATCH,
            (
                batch.ledger,
                batch.base.seq,
                batch.base.hash,
                batch.head.seq,
                batch.head.hash,
                spans,
                bodies,
                hashes,
                _encode_rows(rows.entries).decode(),
                _encode_rows([_account_values(r) for r in rows.accounts]).decode(),
                _encode_rows(rows.orders).decode(),
                _encode_rows(rows.keys).decode(),
                _order_updates(batch),
                _encode_rows(rows.holds).decode(),
                _encode_rows(batch.hold_updates).decode(),
            ),
        )
    except sqlite3.IntegrityError as error:
        if str(error) == _HEAD_MOVED:
            raise HeadMoved(batch.ledger) from error
        if str(error) == _ORDER_MISSING:
            raise RuntimeError(f"ledger {batch.ledger}: a row to update is missing") from error
        raise


@contextmanager
def _transaction(db: sqlite3.Connection, begin: str) -> Iterator[None]:
    db.execute(begin)
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _insert_events(db: sqlite3.Connection, ledger: str, events: Sequence[EventRow]) -> None:
    for start in range(0, len(events), json_chunk_rows):
        chunk = events[start : start + json_chunk_rows]
        db.execute(_INSERT_EVENTS, (ledger, *_event_columns(chunk)))


def _event_columns(events: Sequence[EventRow]) -> tuple[str, bytes, bytes]:
    """Events as one JSON array of their text columns plus two blobs: the bodies end to end
    (each row carries its offset and length) and the 32-byte hashes end to end."""
    spans = []
    offset = 1  # substr() counts from 1
    for event in events:
        length = len(event.body)
        spans.append((event.seq, event.transaction_id, event.event_type, offset, length))
        offset += length
    hashes = b"".join(event.hash for event in events)
    if len(hashes) != hash_bytes * len(events):
        raise ValueError("every event hash must be 32 bytes")
    bodies = b"".join(event.body for event in events)
    return _encode_rows(spans).decode(), bodies, hashes


def _events_insert(ledger: str, spans: str, bodies: str, hashes: str) -> str:
    """The events INSERT (see `_event_columns`), reading from these SQL expressions."""
    return (
        f"INSERT INTO events SELECT {ledger}, value ->> 0, value ->> 1, value ->> 2, "
        f"substr({bodies}, value ->> 3, value ->> 4), "
        f"substr({hashes}, key * {hash_bytes} + 1, {hash_bytes}) FROM json_each({spans})"
    )


_INSERT_EVENTS = _events_insert("?1", "?2", "?3", "?4")
_INSERT_ENTRY = _JsonInsert("entries", 6)
_INSERT_ACCOUNT = _JsonInsert("accounts", 4)
# An account's balance and last seq are those of its last entry: two primary-key seeks.
_ACCOUNT_ROWS = (
    "SELECT a.account, "
    "(SELECT balance_after FROM entries n WHERE n.ledger = a.ledger AND n.account = a.account "
    "ORDER BY n.seq DESC, n.idx DESC LIMIT 1), "
    "(SELECT max(seq) FROM entries n WHERE n.ledger = a.ledger AND n.account = a.account) "
    "FROM accounts a WHERE a.ledger = ?1"
)
_PROJECTED_ACCOUNT_ROWS = with_account_columns(_ACCOUNT_ROWS)
# A user's balances: the same two seeks, but a last entry whose seq or index is no integer
# (tampering: the columns take any type, and text or a BLOB sorts after every integer, so
# such an entry comes first) gives no balance, which the view refuses: its balance_after is
# not the account's balance.
_OWNER_BALANCES = (
    "SELECT a.account, "
    "(SELECT CASE WHEN typeof(n.seq) = 'integer' AND typeof(n.idx) = 'integer' "
    "THEN n.balance_after END FROM entries n WHERE n.ledger = a.ledger "
    "AND n.account = a.account ORDER BY n.seq DESC, n.idx DESC LIMIT 1), "
    "(SELECT max(seq) FROM entries n WHERE n.ledger = a.ledger AND n.account = a.account) "
    "FROM accounts a WHERE a.ledger = ?1 AND a.kind = ?2 AND a.owner = ?3 ORDER BY a.currency"
)


# A report's sums (`Store.report`). An account's opening sum adds up its balances' steps,
# which stay within 64 bits; its debits and credits over a period need not (SQLite's sum()
# refuses past 64 bits, where PostgreSQL's is exact), so each is two sums, of the amounts'
# high and low 32 bits (SQLite's / and % truncate toward zero: a = a / 2^32 * 2^32 + a % 2^32),
# put back together exactly in Python: exact up to 2^31 entries a line. CROSS JOIN pins
# SQLite's join order (entries, then a seek into events and accounts for each): planned
# the other way round, events first, each event scanned the ledger's entries again. SQLite's columns
# take any type: a seq or amount of another type than INTEGER (tampering) is counted apart,
# over every entry of the ledger (a text seq sorts after every integer: a bound would drop
# it unseen), and the report refuses to add it up.
def _split_sum(value: str) -> str:
    return f"coalesce(sum(({value}) / 4294967296), 0), coalesce(sum(({value}) % 4294967296), 0)"


_IN_PERIOD = "n.seq > ?2 AND n.seq <= ?3"
# what no posting holds: another type than INTEGER, or -2^63, whose negation (a debit) SQLite
# turns into a REAL
_NOT_AN_AMOUNT = "(typeof(n.amount) <> 'integer' OR n.amount = -9223372036854775808)"
_REPORT_ACCOUNTS = (
    "SELECT a.account, a.kind, a.owner, a.currency, "
    "coalesce(sum(CASE WHEN n.seq <= ?2 THEN n.amount END), 0), "
    f"{_split_sum(f'CASE WHEN {_IN_PERIOD} AND n.amount < 0 THEN -n.amount END')}, "
    f"{_split_sum(f'CASE WHEN {_IN_PERIOD} AND n.amount > 0 THEN n.amount END')}, "
    f"sum({_NOT_AN_AMOUNT} OR typeof(n.seq) <> 'integer') "
    "FROM accounts a CROSS JOIN entries n ON n.ledger = a.ledger AND n.account = a.account "
    "WHERE a.ledger = ?1 GROUP BY a.account, a.kind, a.owner, a.currency "
    f"HAVING min(n.seq) <= ?3 OR sum({_NOT_AN_AMOUNT} OR typeof(n.seq) <> 'integer') "
    "ORDER BY a.currency, a.kind, a.owner"
)
_REPORT_MOVEMENTS = (
    "SELECT v.event_type, a.kind, a.currency, sum(n.idx = 0), "
    f"{_split_sum('CASE WHEN n.amount < 0 THEN -n.amount END')}, "
    f"{_split_sum('CASE WHEN n.amount > 0 THEN n.amount END')}, "
    f"sum({_NOT_AN_AMOUNT}) "
    "FROM entries n CROSS JOIN events v ON v.ledger = n.ledger AND v.seq = n.seq "
    "CROSS JOIN accounts a ON a.ledger = n.ledger AND a.account = n.account "
    f"WHERE n.ledger = ?1 AND {_IN_PERIOD} "
    "GROUP BY v.event_type, a.kind, a.currency ORDER BY v.event_type, a.currency, a.kind"
)


def _joined(high: int, low: int) -> int:
    return high * 4294967296 + low


_INSERT_ORDER = _JsonInsert("orders", 7)
_INSERT_KEY = _JsonInsert("idempotency_keys", 3)
_INSERT_HOLD = _JsonInsert("holds", 8)
# A batch's settled holds, as whole rows: each row is updated, or inserted should it be
# missing (a hold placed by a tally older than the holds projection, during a rolling
# upgrade; `tally verify` compares the rows with a replay either way). The holds a batch
# places are plain inserts, as every other new row is: a stale row in the way fails it.
_UPSERT_HOLD = _JsonInsert(
    "holds",
    8,
    on_conflict="ON CONFLICT (ledger, hold_id) DO UPDATE SET settled_by = excluded.settled_by",
)
_PROJECTED = (_INSERT_ENTRY, _INSERT_ACCOUNT, _INSERT_ORDER, _INSERT_KEY, _INSERT_HOLD)


class _Stage:
    """A replay's temporary copy of one projection table (see `replace_projections`), keyed
    as the table is (less the ledger), so that the copy reads it in the table's key order:
    each row lands next to the last in the table's B-tree, with no sort while locked."""

    def __init__(self, of: str, columns: str, key: str) -> None:
        self.of = of
        self.name = f"replay_{of}"
        self.table = f"temp.{self.name}"
        self.create = (
            f"CREATE TEMP TABLE {self.name} ({columns}, PRIMARY KEY ({key})) WITHOUT ROWID"
        )
        self.copy = f"INSERT INTO main.{of} SELECT * FROM {self.table} ORDER BY {key}"


_STAGES = (
    _Stage(
        "entries", "ledger, account, seq, idx, amount, balance_after, order_id", "account, seq, idx"
    ),
    _Stage("accounts", "ledger, account, kind, owner, currency", "account"),
    _Stage(
        "orders",
        "ledger, order_id, expense_id, user_id, currency, merchant_id, paid, refunded",
        "order_id",
    ),
    _Stage("idempotency_keys", "ledger, idempotency_key, command_digest, seq", "idempotency_key"),
    _Stage(
        "holds",
        "ledger, hold_id, transaction_id, seq, user_id, currency, amount, expires_at_us, "
        "settled_by",
        "hold_id",
    ),
)
_STAGED = (
    _JsonInsert(_STAGES[0].table, 6),
    _JsonInsert(_STAGES[1].table, 4),
    _JsonInsert(_STAGES[2].table, 7),
    _JsonInsert(_STAGES[3].table, 3),
    _JsonInsert(_STAGES[4].table, 8),
)
_HOLD_COLUMNS = "hold_id, transaction_id, seq, user_id, currency, amount, expires_at_us, settled_by"
# A user's holds in the order they were placed (the index holds_by_user), each with its
# placement's body and its settlement's (found by transaction id; NULL while open). LEFT
# JOINs keep the holds first, and keep a hold whose event is gone (only tampering: the view
# refuses it).
_HOLDS_OF_ALL = (
    "SELECT h.hold_id, h.transaction_id, h.seq, h.user_id, h.currency, h.amount, "
    "h.expires_at_us, h.settled_by, p.body, s.body FROM holds h "
    "LEFT JOIN events p ON p.ledger = h.ledger AND p.seq = h.seq "
    "LEFT JOIN events s ON s.ledger = h.ledger AND s.transaction_id = h.settled_by "
    "WHERE h.ledger = ?1 AND h.user_id = ?2 AND h.seq > ?3 {} ORDER BY h.seq LIMIT ?4"
)
_HOLDS_OF = {
    None: _HOLDS_OF_ALL.format(""),
    False: _HOLDS_OF_ALL.format("AND h.settled_by IS NULL"),
    True: _HOLDS_OF_ALL.format("AND h.settled_by IS NOT NULL"),
}
# The order's expense, then its refunds: the lines that credit a wallet for an order
# (migration 0003 indexes exactly those). Without statistics SQLite would rather scan the
# ledger's entries; INDEXED BY makes it use the index, or fail loudly if the terms drift.
_ORDER_EVENTS = (  # a deleted event (tampering) comes back as a seq without its columns
    "SELECT s.seq, e.transaction_id, e.event_type, e.body, e.hash FROM ("
    "SELECT seq FROM events WHERE ledger = ?1 AND transaction_id = "
    "(SELECT expense_id FROM orders WHERE ledger = ?1 AND order_id = ?2) "
    "UNION SELECT seq FROM entries INDEXED BY refund_lines_by_order "
    "WHERE ledger = ?1 AND order_id = ?2 AND amount > 0 "
    "AND substr(account, 1, 7) = 'wallet:') s "
    "LEFT JOIN events e ON e.ledger = ?1 AND e.seq = s.seq ORDER BY s.seq"
)
# Integers only: the column takes any type, and text or a BLOB sorts after every integer
# (int() of it failed, or made one of b'9'). A value that is no integer is no seq, so no
# trace of an event cut off the log: a tampered projection, which replay rewrites.
_HIGHEST_PROJECTED_SEQ = (
    "SELECT max(coalesce((SELECT max(seq) FROM entries "
    "WHERE ledger = ?1 AND typeof(seq) = 'integer'), 0), "
    "coalesce((SELECT max(seq) FROM idempotency_keys "
    "WHERE ledger = ?1 AND typeof(seq) = 'integer'), 0))"
)
_MOVE_HEAD = "UPDATE ledgers SET seq = ?, hash = ? WHERE name = ? AND seq = ? AND hash = ?"
# A whole batch in one statement: an INSERT into a view of this connection whose trigger
# moves the head (refusing a base that is not the head) and inserts every table's rows with
# the same INSERTs as the long form (`_write_in_chunks`), reading the view's row instead.
# Statement by statement, Python's sqlite3 retakes the GIL between them and the committer
# queued for it behind the event loop and the writer seven times a commit (docs/benchmarks.md).
# It runs in autocommit, its own transaction: no BEGIN and COMMIT around it (two more waits
# for the GIL), and no statement journal, which inside BEGIN ... COMMIT SQLite kept for the
# statement and spilled to a new temporary file past 64 KiB (every commit of the benchmark's
# batches). Another statement still running on the connection would bring it back: the
# committing connection runs nothing else.
_HEAD_MOVED = "tally: head moved"
_ORDER_MISSING = "tally: an order to update is missing"


def _orders_updated(ledger: str, updates: str) -> tuple[str, str]:
    """Refunded orders that existed before the batch (`updates`: a JSON object of order id to
    refunded), for the batch view's trigger, where a CTE is not allowed: a check that every
    one is there, then the update. Both seek the orders by primary key through the `IN` list
    of keys (joined to json_each, the planner, without statistics, scanned the ledger's
    orders once per order to update), and each new value is looked up in the object by its
    key (order ids are identifiers: no quote to escape), not by scanning the JSON per row
    (tests/test_store_plans.py)."""
    listed = f"(SELECT key FROM json_each({updates}))"
    check = (
        f"SELECT RAISE(ABORT, '{_ORDER_MISSING}') WHERE (SELECT count(*) FROM json_each"
        f"({updates})) != (SELECT count(*) FROM orders WHERE ledger = {ledger} AND order_id IN "
        f"{listed})"
    )
    update = (
        f"UPDATE orders SET refunded = {updates} ->> ('$.\"' || order_id || '\"') "
        f"WHERE ledger = {ledger} AND order_id IN {listed}"
    )
    return check, update


_CHECK_ORDERS_UPDATED, _UPDATE_ORDERS_LISTED = _orders_updated("?1", "?2")
_BATCH_VIEW = f"""
CREATE TEMP VIEW IF NOT EXISTS batch_in (ledger, base_seq, base_hash, head_seq, head_hash,
    spans, bodies, hashes, entries, accounts, orders, keys, order_updates, holds,
    hold_updates)
AS SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
    NULL WHERE 0;
CREATE TEMP TRIGGER IF NOT EXISTS batch_in_insert INSTEAD OF INSERT ON batch_in
BEGIN
    SELECT RAISE(ABORT, '{_HEAD_MOVED}') WHERE NOT EXISTS (SELECT 1 FROM ledgers
        WHERE name = NEW.ledger AND seq = NEW.base_seq AND hash = NEW.base_hash);
    UPDATE ledgers SET seq = NEW.head_seq, hash = NEW.head_hash WHERE name = NEW.ledger;
    {_events_insert("NEW.ledger", "NEW.spans", "NEW.bodies", "NEW.hashes")};
    {_INSERT_ENTRY.statement("NEW.ledger", "NEW.entries")};
    {_INSERT_ACCOUNT.statement("NEW.ledger", "NEW.accounts")};
    {_INSERT_ORDER.statement("NEW.ledger", "NEW.orders")};
    {_INSERT_KEY.statement("NEW.ledger", "NEW.keys")};
    {"; ".join(_orders_updated("NEW.ledger", "NEW.order_updates"))};
    {_INSERT_HOLD.statement("NEW.ledger", "NEW.holds")};
    {_UPSERT_HOLD.statement("NEW.ledger", "NEW.hold_updates")};
END;
"""
_INSERT_BATCH = f"INSERT INTO batch_in VALUES ({', '.join('?' * 15)})"
# A statement page in one step: the lines as one JSON array, their event bodies end to end
# in one blob, each followed by a NUL (canonical JSON holds none). Row by row, Python's
# sqlite3 releases and retakes the GIL for every row, and a server's worker thread then
# waited for the event loop a hundred times a page (docs/benchmarks.md). Bodies as JSON
# strings in the array cost SQLite their quoting and msgspec their unquoting (a third of the
# read, measured); parsed with json(), more. Both aggregates take the page's rows in the
# same order; a line whose event is gone (tampering) adds no body, and says so by its flag.
_STATEMENT_PAGE = (
    "SELECT json_group_array(json_array(n.seq, n.idx, n.amount, n.balance_after, n.order_id, "
    "e.seq IS NOT NULL)), CAST(group_concat(e.body || X'00', '') AS BLOB) "
    "FROM (SELECT seq, idx, amount, balance_after, order_id FROM entries "
    "WHERE ledger = ?1 AND account = ?2 AND (seq, idx) > (?3, ?4) "
    "ORDER BY seq, idx LIMIT ?5) AS n "
    "LEFT JOIN events e ON e.ledger = ?1 AND e.seq = n.seq"
)
# One event's entries: a primary-key seek per account it posted to. By seq alone, SQLite
# walked every entry of the ledger (68 ms at 620,000 entries, against 0.24 ms).
_ENTRIES_OF = (
    "SELECT account, seq, idx, amount, balance_after, order_id FROM entries "
    "WHERE ledger = ?1 AND account IN (SELECT value FROM json_each(?2)) AND seq = ?3 "
    "ORDER BY idx"
)
_StatementRow = tuple[int, int, int, int, str | None, int]  # ..., whether its event is there
_decode_statement_page = msgspec.json.Decoder(list[_StatementRow]).decode
_BLOB_IN_JSON = "JSON cannot hold BLOB values"  # SQLite's error for json_array() of a BLOB


def _by_position(line: tuple[EntryRow, bytes]) -> tuple[int, int]:
    return line[0].seq, line[0].posting_index


def _enter_wal(connection: sqlite3.Connection) -> None:
    """`journal_mode = WAL`, waiting as any statement waits for a busy database: SQLite
    answers "database is locked" at once, without its busy handler, while another
    connection turns a new file to WAL (processes opening it together)."""
    deadline = time.monotonic() + busy_timeout_ms / 1000
    while True:
        try:
            connection.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


class _Checkpointer:
    """Runs `wal_checkpoint(PASSIVE)` after commits, off the committer's path.

    A passive checkpoint never blocks a writer or a reader; what it cannot copy yet it copies
    next time. Started on the first commit, so read-only uses of a store start no thread.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._due = threading.Event()
        self._closed = False
        self._thread = threading.Thread(
            target=self._run, name="tally-sqlite-checkpoint", daemon=True
        )
        self._thread.start()

    def poke(self) -> None:
        self._due.set()

    def close(self) -> None:
        self._closed = True
        self._due.set()
        self._thread.join()

    def _run(self) -> None:
        db = connect(self._path)
        try:
            while True:
                self._due.wait()
                if self._closed:
                    return
                self._due.clear()
                try:
                    _, wal_frames, copied = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    if copied < wal_frames:
                        # Readers held pages back: try again even if no commit follows. Until
                        # the WAL is all copied, every reader looks pages up in it (and reads
                        # them with a system call each, past the file's memory map).
                        self._due.set()
                except sqlite3.Error as error:  # the committer's backstop takes over
                    log.warning("checkpoint failed", path=self._path, error=repr(error))
                time.sleep(checkpoint_interval_s)
        finally:
            db.close()


class SqliteStore:
    """`Store` on a SQLite file."""

    concurrent_commits = 1  # SQLite runs one writing transaction at a time

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._local = threading.local()  # per thread: the connection given the batch view
        self._connections = ThreadConnections(self._connect)
        self._lock = threading.Lock()
        self._checkpointer: _Checkpointer | None = None
        self._migrate()

    # -- connections -------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        connection = connect(self.path)
        _enter_wal(connection)
        connection.execute("PRAGMA synchronous = FULL")
        connection.execute("PRAGMA cache_size = -65536")
        connection.execute("PRAGMA mmap_size = 1073741824")
        connection.execute(f"PRAGMA wal_autocheckpoint = {wal_autocheckpoint_pages}")
        return connection

    def _connection(self) -> sqlite3.Connection:
        return self._connections.get()

    def server_warnings(self) -> list[str]:
        return []  # every setting that matters is tally's own (WAL, synchronous=FULL)

    def close(self) -> None:
        with self._lock:
            checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:
            checkpointer.close()
        self._connections.close()
        self._local = threading.local()

    def _migrate(self) -> None:
        db = self._connection()
        db.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at_us INTEGER NOT NULL)"
        )
        applied = {row[0] for row in db.execute("SELECT version FROM schema_migrations")}
        for migration in migrations("sqlite"):
            if migration.version in applied:
                continue
            # The version's row first, under the write lock: a process that opened the same
            # new file at the same moment and applied it already makes this insert fail,
            # before the migration's own statements would (`table … already exists`).
            try:
                db.executescript(
                    f"BEGIN IMMEDIATE;\nINSERT INTO schema_migrations VALUES "
                    f"({migration.version}, '{migration.name}', {time.time_ns() // 1000});\n"
                    f"{migration.sql}\nCOMMIT;"
                )
            except sqlite3.IntegrityError:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                if not db.execute(
                    "SELECT 1 FROM schema_migrations WHERE version = ?", (migration.version,)
                ).fetchone():
                    raise

    # -- the write path ----------------------------------------------------------------
    def ensure_ledger(self, ledger: str) -> None:
        self._connection().execute(
            "INSERT INTO ledgers VALUES (?, 0, ?, ?) ON CONFLICT (name) DO NOTHING",
            (ledger, GENESIS_HASH, time.time_ns() // 1000),
        )

    def commit(self, batch: BatchWrite) -> None:
        db = self._connection()
        if db.in_transaction:  # the statement would join it and commit nothing
            raise RuntimeError(f"ledger {batch.ledger}: a transaction was left open")
        rows = batch.projections
        sizes = (len(batch.events), len(rows.entries), len(rows.accounts), len(rows.orders))
        in_one_statement = max(*sizes, len(rows.keys)) <= json_chunk_rows
        if in_one_statement and getattr(self._local, "batch_view", None) is not db:
            db.executescript(_BATCH_VIEW)  # a TEMP view: one per connection
            self._local.batch_view = db
        if in_one_statement:  # refunded orders included
            _write_in_one_statement(db, batch)  # its own transaction: autocommit
        else:  # a batch too large for one JSON text per table: a statement per chunk
            with _transaction(db, "BEGIN IMMEDIATE"):
                self._write_in_chunks(db, batch)
                _update_orders(db, batch)
                _UPSERT_HOLD.run(db, batch.ledger, batch.hold_updates)
        self._checkpoint_soon()

    def commit_soon(self, batch: BatchWrite) -> None:
        """None: SQLite's commit blocks in C with the GIL released; the writer's committer
        thread runs it."""

    def _write_in_chunks(self, db: sqlite3.Connection, batch: BatchWrite) -> None:
        ledger = batch.ledger
        moved = db.execute(
            _MOVE_HEAD,
            (batch.head.seq, batch.head.hash, ledger, batch.base.seq, batch.base.hash),
        ).rowcount
        if moved != 1:
            raise HeadMoved(ledger)
        _insert_events(db, ledger, batch.events)
        self._write_projections(db, ledger, batch.projections)

    def _checkpoint_soon(self) -> None:
        checkpointer = self._checkpointer
        if checkpointer is None:
            with self._lock:
                if self._checkpointer is None:
                    self._checkpointer = _Checkpointer(self.path)
                checkpointer = self._checkpointer
        checkpointer.poke()

    def replace_projections(self, ledger: str, head: Head, parts: Iterable[Projections]) -> None:
        """The parts are staged in temporary tables of this connection first, outside any
        write lock (folding a large log takes a while, and SQLite's write lock is the whole
        file's: writers of every other ledger would wait); then one short transaction checks
        the head and swaps the ledger's projections for the staged rows, in C."""
        db = self._connection()
        for stage in _STAGES:
            db.execute(f"DROP TABLE IF EXISTS {stage.table}")
            db.execute(stage.create)
        try:
            with _transaction(db, "BEGIN"):  # temp tables only: the file stays unlocked
                for part in parts:
                    self._write_projections(db, ledger, part, _STAGED)
            with _transaction(db, "BEGIN IMMEDIATE"):
                if self.head(ledger) != head:
                    raise HeadMoved(ledger)
                for stage in _STAGES:
                    db.execute(f"DELETE FROM main.{stage.of} WHERE ledger = ?", (ledger,))
                    db.execute(stage.copy)
        finally:
            for stage in _STAGES:
                db.execute(f"DROP TABLE IF EXISTS {stage.table}")

    @staticmethod
    def _write_projections(
        db: sqlite3.Connection,
        ledger: str,
        p: Projections,
        into: tuple[_JsonInsert, ...] = _PROJECTED,
    ) -> None:
        entries, accounts_, orders, keys, holds = into
        entries.run(db, ledger, p.entries)
        accounts_.run(db, ledger, [_account_values(row) for row in p.accounts])
        orders.run(db, ledger, p.orders)
        keys.run(db, ledger, p.keys)
        holds.run(db, ledger, p.holds)

    # -- reads -------------------------------------------------------------------------
    def ledgers(self) -> list[str]:
        return [r[0] for r in self._connection().execute("SELECT name FROM ledgers ORDER BY 1")]

    def head(self, ledger: str) -> Head | None:
        row = (
            self._connection()
            .execute("SELECT seq, hash FROM ledgers WHERE name = ?", (ledger,))
            .fetchone()
        )
        if row is None:
            return None
        seq, hash_ = row
        if type(seq) is not int or type(hash_) is not bytes:  # columns take any type: edited
            raise InvariantViolated(f"ledger {ledger}: the head row holds no (seq, hash)")
        return Head(seq, hash_)

    def events(self, ledger: str, *, after_seq: int, limit: int) -> list[EventRow]:
        rows = self._connection().execute(
            "SELECT seq, transaction_id, event_type, body, hash FROM events "
            "WHERE ledger = ? AND seq > ? ORDER BY seq LIMIT ?",
            (ledger, after_seq, limit),
        )
        page = [_new_tuple(EventRow, row) for row in rows]
        # The column takes any type (an edit), and SQLite sorts text after every integer
        if page and type(page[-1].seq) is not int:
            bad = next(row.seq for row in page if type(row.seq) is not int)
            raise InvariantViolated(f"ledger {ledger}: a log row's seq is {bad!r}, no integer")
        return page

    def projections(self, ledger: str) -> Projections:
        """Every value as stored: one of another type than its column's (SQLite's columns take
        any) is another Python type, never equal to the replay's (an INTEGER column stores a
        REAL as an integer wherever 64 bits hold it exactly, so a REAL left there equals no
        replayed integer); the accounts' kind, owner and currency, compared with their name,
        keep their types too (`accounts_as_named`)."""
        db = self._connection()
        return Projections(
            accounts=accounts_as_named(
                db.execute(_PROJECTED_ACCOUNT_ROWS + " ORDER BY a.account", (ledger,))
            ),
            entries=[
                _new_tuple(EntryRow, r)
                for r in db.execute(
                    "SELECT account, seq, idx, amount, balance_after, order_id FROM entries "
                    "WHERE ledger = ? ORDER BY account, seq, idx",
                    (ledger,),
                )
            ],
            orders=[
                _new_tuple(OrderRow, r)
                for r in db.execute(
                    "SELECT order_id, expense_id, user_id, currency, merchant_id, paid, refunded "
                    "FROM orders WHERE ledger = ? ORDER BY order_id",
                    (ledger,),
                )
            ],
            keys=[
                _new_tuple(KeyRow, r)
                for r in db.execute(
                    "SELECT idempotency_key, command_digest, seq FROM idempotency_keys "
                    "WHERE ledger = ? ORDER BY idempotency_key",
                    (ledger,),
                )
            ],
            holds=[
                _new_tuple(HoldRow, r)
                for r in db.execute(
                    f"SELECT {_HOLD_COLUMNS} FROM holds WHERE ledger = ? ORDER BY hold_id",
                    (ledger,),
                )
            ],
        )

    def highest_projected_seq(self, ledger: str) -> int:
        row = self._connection().execute(_HIGHEST_PROJECTED_SEQ, (ledger,)).fetchone()
        return int(row[0])

    def entries_of(self, ledger: str, event: Event) -> list[EntryRow]:
        accounts = _encode_rows(sorted({p.account for p in event.postings})).decode()
        rows = self._connection().execute(_ENTRIES_OF, (ledger, accounts, event.seq))
        return [EntryRow(*r) for r in rows]

    def event_by_transaction(self, ledger: str, transaction_id: str) -> EventRow | None:
        row = (
            self._connection()
            .execute(
                "SELECT seq, transaction_id, event_type, body, hash FROM events "
                "WHERE ledger = ? AND transaction_id = ?",
                (ledger, transaction_id),
            )
            .fetchone()
        )
        return None if row is None else EventRow(*row)

    def account_balances(self, ledger: str, *, kind: str, owner: str) -> list[AccountRow]:
        rows = self._connection().execute(_OWNER_BALANCES, (ledger, kind, owner))
        return [AccountRow(*r) for r in rows]

    def statement(
        self, ledger: str, account: str, *, after: tuple[int, int], limit: int
    ) -> list[tuple[EntryRow, bytes]]:
        try:
            lines, bodies = (
                self._connection()
                .execute(_STATEMENT_PAGE, (ledger, account, after[0], after[1], limit))
                .fetchone()
            )
            rows = _decode_statement_page(lines)
        except (sqlite3.OperationalError, msgspec.ValidationError) as error:
            # Only tampering gets here (the column takes any type): a BLOB, which json_array
            # refuses, or text or a real where an integer belongs, which the decoder refuses.
            # Checked once a page, by what reads it anyway: never a line shown as if it held
            # an amount.
            if isinstance(error, sqlite3.OperationalError) and str(error) != _BLOB_IN_JSON:
                raise
            raise InvariantViolated(
                f"{ledger}: a statement line of {account} holds a value of another type "
                f"than its column's ({error})"
            ) from error
        for row in rows:
            if not row[5]:  # the log refuses deletes: only tampering gets here
                raise InvariantViolated(f"{ledger}: entry at seq {row[0]} has no event")
        found = bodies.split(b"\0")[:-1] if bodies else []
        if len(found) != len(rows):  # a NUL inside a body: not canonical JSON
            raise InvariantViolated(f"{ledger}: a statement page's event bodies do not split")
        page = [(EntryRow(account, *row[:5]), body) for row, body in zip(rows, found, strict=True)]
        page.sort(key=_by_position)  # aggregates keep their input's order; make sure
        return page

    def order(self, ledger: str, order_id: str) -> OrderRow | None:
        row = (
            self._connection()
            .execute(
                "SELECT order_id, expense_id, user_id, currency, merchant_id, paid, refunded "
                "FROM orders WHERE ledger = ? AND order_id = ?",
                (ledger, order_id),
            )
            .fetchone()
        )
        return None if row is None else OrderRow(*row)

    def holds_of(
        self, ledger: str, user_id: str, *, after_seq: int, limit: int, settled: bool | None
    ) -> list[tuple[HoldRow, bytes, bytes | None]]:
        rows = self._connection().execute(_HOLDS_OF[settled], (ledger, user_id, after_seq, limit))
        return [(_new_tuple(HoldRow, row[:8]), row[8], row[9]) for row in rows]

    def report(
        self, ledger: str, *, after_seq: int, upto_seq: int
    ) -> tuple[list[AccountTotals], list[Movement]]:
        db = self._connection()
        bounds = (ledger, after_seq, upto_seq)
        db.execute("BEGIN")  # both sums of one snapshot (a replay may swap rows meanwhile)
        try:
            totals = db.execute(_REPORT_ACCOUNTS, bounds).fetchall()
            movements = db.execute(_REPORT_MOVEMENTS, bounds).fetchall()
        finally:
            db.execute("COMMIT")
        if any(row[-1] for row in (*totals, *movements)):
            raise InvariantViolated(f"{ledger}: an entry holds a value that is not an integer")
        return (
            [
                AccountTotals(
                    account, kind, owner, currency, opening, _joined(dh, dl), _joined(ch, cl)
                )
                for account, kind, owner, currency, opening, dh, dl, ch, cl, _ in totals
            ],
            [
                Movement(event_type, kind, currency, events, _joined(dh, dl), _joined(ch, cl))
                for event_type, kind, currency, events, dh, dl, ch, cl, _ in movements
            ],
        )

    def order_events(self, ledger: str, order_id: str) -> list[EventRow]:
        rows = self._connection().execute(_ORDER_EVENTS, (ledger, order_id)).fetchall()
        for row in rows:
            if row[1] is None:  # the log refuses deletes: only tampering gets here
                raise InvariantViolated(f"{ledger}: order {order_id} has no event at seq {row[0]}")
        return [_new_tuple(EventRow, row) for row in rows]


def _account_values(row: AccountRow) -> tuple[object, ...]:
    return (row.account, *accounts.split(row.account))

"""The embedded store: one SQLite file, WAL, `synchronous=FULL`.

Each thread gets its own connection (the writer thread of each ledger, and readers), so the
writer never shares a connection. A batch is one `BEGIN IMMEDIATE ... COMMIT` with one
`executemany` per table and a compare-and-set on the ledger's head row.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from tally.audit.chain import GENESIS_HASH
from tally.domain import accounts
from tally.engine.ports import (
    AccountRow,
    BatchWrite,
    EntryRow,
    EventRow,
    Head,
    HeadMoved,
    KeyRow,
    OrderRow,
    Projections,
)
from tally.store.migrate import migrations

busy_timeout_ms = 30_000

chunk_rows = (512, 256, 128, 64, 32, 16, 8, 4, 2, 1)  # multi-row VALUES sizes, largest first


class _Insert:
    """Multi-row INSERTs of a few fixed sizes, largest first.

    Fixed sizes keep the SQL texts few, so sqlite3's statement cache reuses them (preparing a
    512-row statement costs more than running it). Few statements per batch matter too: each
    one releases the GIL for its whole run, which is what lets the writer decide the next
    batch meanwhile.
    """

    def __init__(self, table: str, columns: int, suffix: str = "") -> None:
        row = "(" + ",".join("?" * columns) + ")"
        self.columns = columns
        self.sql = {
            size: f"INSERT INTO {table} VALUES {','.join([row] * size)} {suffix}"
            for size in chunk_rows
        }

    def run(self, db: sqlite3.Connection, ledger: str, rows: Sequence[Sequence[object]]) -> None:
        """Insert `rows`, each prefixed with `ledger`, in as few statements as the sizes allow."""
        if not rows:
            return
        width = self.columns
        # Flatten column by column: C-level transposes and slice assignments, no per-row work.
        flat: list[object] = [ledger] * (len(rows) * width)
        for index, column in enumerate(zip(*rows, strict=True), start=1):
            flat[index::width] = column
        start = 0
        for size in chunk_rows:
            while len(rows) - start >= size:
                db.execute(self.sql[size], flat[start * width : (start + size) * width])
                start += size


_INSERT_EVENT = _Insert("events", 6)
_INSERT_ENTRY = _Insert("entries", 7)
_UPSERT_ACCOUNT = _Insert(
    "accounts",
    7,
    "ON CONFLICT (ledger, account) "
    "DO UPDATE SET balance = excluded.balance, last_seq = excluded.last_seq",
)
_UPSERT_ORDER = _Insert(
    "orders", 8, "ON CONFLICT (ledger, order_id) DO UPDATE SET refunded = excluded.refunded"
)
_INSERT_KEY = _Insert("idempotency_keys", 4)
_MOVE_HEAD = "UPDATE ledgers SET seq = ?, hash = ? WHERE name = ? AND seq = ? AND hash = ?"


class SqliteStore:
    """`Store` on a SQLite file."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._migrate()

    # -- connections -------------------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(
                self.path,
                isolation_level=None,
                timeout=busy_timeout_ms / 1000,
                check_same_thread=False,
            )
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = FULL")
            connection.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
            connection.execute("PRAGMA cache_size = -65536")
            self._local.connection = connection
            with self._lock:
                self._connections.append(connection)
        return connection

    def close(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()
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
            db.executescript(
                f"BEGIN IMMEDIATE;\n{migration.sql}\n"
                f"INSERT INTO schema_migrations VALUES ({migration.version}, "
                f"'{migration.name}', {time.time_ns() // 1000});\nCOMMIT;"
            )

    # -- the write path ----------------------------------------------------------------
    def ensure_ledger(self, ledger: str) -> None:
        self._connection().execute(
            "INSERT INTO ledgers VALUES (?, 0, ?, ?) ON CONFLICT (name) DO NOTHING",
            (ledger, GENESIS_HASH, time.time_ns() // 1000),
        )

    def commit(self, batch: BatchWrite) -> None:
        db = self._connection()
        ledger = batch.ledger
        db.execute("BEGIN IMMEDIATE")
        try:
            moved = db.execute(
                _MOVE_HEAD,
                (batch.head.seq, batch.head.hash, ledger, batch.base.seq, batch.base.hash),
            ).rowcount
            if moved != 1:
                raise HeadMoved(ledger)
            _INSERT_EVENT.run(db, ledger, batch.events)
            self._write_projections(db, ledger, batch.projections)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def replace_projections(self, ledger: str, projections: Projections, head: Head) -> None:
        db = self._connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            if self.head(ledger) != head:
                raise HeadMoved(ledger)
            for table in ("entries", "accounts", "orders", "idempotency_keys"):
                db.execute(f"DELETE FROM {table} WHERE ledger = ?", (ledger,))
            self._write_projections(db, ledger, projections)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    @staticmethod
    def _write_projections(db: sqlite3.Connection, ledger: str, p: Projections) -> None:
        _INSERT_ENTRY.run(db, ledger, p.entries)
        _UPSERT_ACCOUNT.run(db, ledger, [_account_values(row) for row in p.accounts])
        _UPSERT_ORDER.run(db, ledger, p.orders)
        _INSERT_KEY.run(db, ledger, p.keys)

    # -- reads -------------------------------------------------------------------------
    def ledgers(self) -> list[str]:
        return [r[0] for r in self._connection().execute("SELECT name FROM ledgers ORDER BY 1")]

    def head(self, ledger: str) -> Head | None:
        row = (
            self._connection()
            .execute("SELECT seq, hash FROM ledgers WHERE name = ?", (ledger,))
            .fetchone()
        )
        return None if row is None else Head(row[0], bytes(row[1]))

    def events(self, ledger: str, *, after_seq: int, limit: int) -> list[EventRow]:
        rows = self._connection().execute(
            "SELECT seq, transaction_id, event_type, body, hash FROM events "
            "WHERE ledger = ? AND seq > ? ORDER BY seq LIMIT ?",
            (ledger, after_seq, limit),
        )
        return [EventRow(*row) for row in rows]

    def projections(self, ledger: str) -> Projections:
        db = self._connection()
        return Projections(
            accounts=[
                AccountRow(*r)
                for r in db.execute(
                    "SELECT account, balance, last_seq FROM accounts WHERE ledger = ? "
                    "ORDER BY account",
                    (ledger,),
                )
            ],
            entries=[
                EntryRow(*r)
                for r in db.execute(
                    "SELECT account, seq, idx, amount, balance_after, order_id FROM entries "
                    "WHERE ledger = ? ORDER BY account, seq, idx",
                    (ledger,),
                )
            ],
            orders=[
                OrderRow(*r)
                for r in db.execute(
                    "SELECT order_id, expense_id, user_id, currency, merchant_id, paid, refunded "
                    "FROM orders WHERE ledger = ? ORDER BY order_id",
                    (ledger,),
                )
            ],
            keys=[
                KeyRow(*r)
                for r in db.execute(
                    "SELECT idempotency_key, command_digest, seq FROM idempotency_keys "
                    "WHERE ledger = ? ORDER BY idempotency_key",
                    (ledger,),
                )
            ],
        )

    def entries_of(self, ledger: str, seq: int) -> list[EntryRow]:
        rows = self._connection().execute(
            "SELECT account, seq, idx, amount, balance_after, order_id FROM entries "
            "WHERE ledger = ? AND seq = ? ORDER BY idx",
            (ledger, seq),
        )
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
        rows = self._connection().execute(
            "SELECT account, balance, last_seq FROM accounts "
            "WHERE ledger = ? AND kind = ? AND owner = ? ORDER BY currency",
            (ledger, kind, owner),
        )
        return [AccountRow(*r) for r in rows]

    def statement(
        self, ledger: str, account: str, *, after: tuple[int, int], limit: int
    ) -> list[tuple[EntryRow, bytes]]:
        rows = self._connection().execute(
            "SELECT n.account, n.seq, n.idx, n.amount, n.balance_after, n.order_id, e.body "
            "FROM entries n JOIN events e ON e.ledger = n.ledger AND e.seq = n.seq "
            "WHERE n.ledger = ? AND n.account = ? AND (n.seq, n.idx) > (?, ?) "
            "ORDER BY n.seq, n.idx LIMIT ?",
            (ledger, account, after[0], after[1], limit),
        )
        return [(EntryRow(*r[:6]), r[6]) for r in rows]

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

    def order_event_seqs(self, ledger: str, order_id: str) -> list[int]:
        rows = self._connection().execute(
            "SELECT DISTINCT seq FROM entries WHERE ledger = ? AND order_id = ? ORDER BY seq",
            (ledger, order_id),
        )
        return [r[0] for r in rows]


def _account_values(row: AccountRow) -> tuple[object, ...]:
    kind, owner, currency = accounts.split(row.account)
    return (row.account, kind, owner, currency, row.balance, row.last_seq)

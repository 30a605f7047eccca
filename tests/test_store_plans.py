"""The stores' statements keep their query plans (SQLite's write path; a PostgreSQL page).

SQLite plans without statistics. A statement that joins a table to `json_each` can come out
as "scan the ledger's whole table for each row of the batch", which passes every functional
test on a small ledger and is quadratic on a real one. These tests pin the plans on a ledger
with enough rows for a bad plan to be plausible.
"""

from __future__ import annotations

import json
import re
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pg import fresh_database
from tally.bootstrap import open_engine
from tally.domain.commands import Envelope, Expense, OrderLine, Recharge, Refund
from tally.engine.ports import BatchWrite, EventRow, Head, Projections
from tally.store import postgres
from tally.store import sqlite as store
from tally.verification import verify

Plan = Callable[..., list[str]]


@pytest.fixture(scope="module")
def plan_of(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plan]:
    path = Path(tmp_path_factory.mktemp("plans")) / "plans.db"
    engine = open_engine(path)
    try:
        users = [f"u{i}" for i in range(300)]
        engine.execute_many(
            "plans",
            [
                Envelope(
                    idempotency_key=f"r-{user}",
                    command=Recharge(user_id=user, amount=500, currency="USD", gateway="pp"),
                )
                for user in users
            ]
            + [
                Envelope(
                    idempotency_key=f"e-{user}",
                    command=Expense(
                        user_id=user, currency="USD", orders=(OrderLine(f"o-{user}", 100),)
                    ),
                )
                for user in users
            ],
        )
        connection = engine.store._connection()  # type: ignore[attr-defined]

        def plan(sql: str, *params: object) -> list[str]:
            rows = connection.execute(f"EXPLAIN QUERY PLAN {sql}", params).fetchall()
            return [str(row[3]) for row in rows]

        yield plan
    finally:
        engine.close()
        engine.store.close()


def test_refunded_orders_are_sought_by_primary_key(plan_of: Plan) -> None:
    """The batch view trigger's check and update (the update also runs alone for a batch
    written in chunks) seek each order through an `IN` list (RAISE runs only in a trigger,
    so the check is planned as a SELECT)."""
    check = store._CHECK_ORDERS_UPDATED.replace(f"RAISE(ABORT, '{store._ORDER_MISSING}')", "1")
    for sql in (check, store._UPDATE_ORDERS_LISTED):
        steps = plan_of(sql, "plans", '{"o-u1": 1}')
        assert "SEARCH orders USING PRIMARY KEY (ledger=? AND order_id=?)" in steps, steps
        assert not any(step.startswith("SCAN orders") for step in steps), steps


def test_a_users_holds_are_found_through_their_index(plan_of: Plan) -> None:
    """A user's holds: the index holds_by_user (the open ones: open_holds_by_user, which
    holds no settled hold), each event sought by its key (the placement
    by seq, the settlement by transaction id), never a scan of the log."""
    for settled, sql in store._HOLDS_OF.items():
        steps = plan_of(sql, "plans", "u1", 0, 100)
        index = "open_holds_by_user" if settled is False else "holds_by_user"
        assert steps[0].startswith(f"SEARCH h USING INDEX {index} (ledger=? AND user_id=?"), steps
        assert any(
            step.startswith("SEARCH p USING") and "(ledger=? AND seq=?)" in step for step in steps
        ), steps
        assert any("events_by_transaction" in step for step in steps), steps
        assert not any(step.startswith("SCAN") for step in steps), steps


def test_a_balance_is_its_last_entry_found_by_primary_key(plan_of: Plan) -> None:
    for sql in (store._ACCOUNT_ROWS + " AND a.kind = ?2 AND a.owner = ?3", store._OWNER_BALANCES):
        steps = plan_of(sql, "plans", "w", "u1")
        assert steps[0].startswith("SEARCH a USING"), steps
        seeks = [step for step in steps if step.startswith(("SEARCH n", "SCAN n"))]
        assert seeks == ["SEARCH n USING PRIMARY KEY (ledger=? AND account=?)"] * 2, steps


def test_an_order_finds_its_refunds_through_their_index(plan_of: Plan) -> None:
    steps = plan_of(store._ORDER_EVENTS, "plans", "o-u1")
    assert "SEARCH entries USING INDEX refund_lines_by_order (ledger=? AND order_id=?)" in steps
    assert any(step.startswith("SEARCH e USING INDEX sqlite_autoindex_events_1") for step in steps)
    # no table scanned: only the few seqs the union found (`s`)
    assert [step for step in steps if step.startswith("SCAN")] == ["SCAN s"], steps


def test_a_transactions_entries_are_found_by_primary_key(plan_of: Plan) -> None:
    steps = plan_of(store._ENTRIES_OF, "plans", '["wallet:u1:USD", "revenue:platform:USD"]', 7)
    assert steps[0] == "SEARCH entries USING PRIMARY KEY (ledger=? AND account=? AND seq=?)", steps


@pytest.mark.parametrize(
    "insert", ["entries", "accounts", "orders", "keys", "holds", "hold_updates", "events"]
)
def test_inserts_scan_only_their_json(plan_of: Plan, insert: str) -> None:
    sql = {
        "entries": store._INSERT_ENTRY.sql,
        "accounts": store._INSERT_ACCOUNT.sql,
        "orders": store._INSERT_ORDER.sql,
        "keys": store._INSERT_KEY.sql,
        "holds": store._INSERT_HOLD.sql,
        "hold_updates": store._UPSERT_HOLD.sql,  # the conflict's seek is no step of the plan
        "events": store._INSERT_EVENTS,
    }[insert]
    params: tuple[object, ...] = (
        ("plans", "[]") if insert != "events" else ("plans", "[]", b"", b"")
    )
    steps = plan_of(sql, *params)
    assert steps == ["SCAN json_each VIRTUAL TABLE INDEX 1:"]


def test_a_batch_is_one_statement_whose_trigger_only_scans_its_json(plan_of: Plan) -> None:
    """The commit's INSERT into the batch view runs the trigger: its head check is a primary
    key seek and its inserts scan only their JSON (EXPLAIN shows the trigger's program)."""
    connection = sqlite3.connect(":memory:")
    try:
        connection.executescript(
            "CREATE TABLE ledgers (name TEXT PRIMARY KEY, seq INTEGER, hash BLOB) WITHOUT ROWID;"
            "CREATE TABLE events (ledger, seq, transaction_id, event_type, body, hash);"
            "CREATE TABLE entries (ledger, account, seq, idx, amount, balance_after, order_id);"
            "CREATE TABLE accounts (ledger, account, kind, owner, currency);"
            "CREATE TABLE orders (ledger, order_id, expense_id, user_id, currency, merchant_id,"
            " paid, refunded);"
            "CREATE TABLE idempotency_keys (ledger, idempotency_key, command_digest, seq);"
            "CREATE TABLE holds (ledger, hold_id, transaction_id, seq, user_id, currency, amount,"
            " expires_at_us, settled_by, PRIMARY KEY (ledger, hold_id));"
        )
        connection.executescript(store._BATCH_VIEW)
        program = " ".join(
            str(row[5])
            for row in connection.execute(
                f"EXPLAIN {store._INSERT_BATCH}", [None] * store._INSERT_BATCH.count("?")
            )
        )
    finally:
        connection.close()
    assert "-- TRIGGER batch_in_insert" in program, program[:500]
    trigger = plan_of("SELECT 1 FROM ledgers WHERE name = ? AND seq = ? AND hash = ?", "p", 1, b"")
    assert trigger == ["SEARCH ledgers USING PRIMARY KEY (name=?)"], trigger


def _trigger_statements() -> list[str]:
    """The statements of the batch view's trigger, each `NEW.column` a parameter, and RAISE
    (which runs only in a trigger) a constant."""
    body = store._BATCH_VIEW.split("BEGIN", 1)[1].rsplit("END;", 1)[0]
    statements = [s.strip() for s in body.split(";") if s.strip()]
    raises = (store._HEAD_MOVED, store._ORDER_MISSING)
    for message in raises:
        statements = [s.replace(f"RAISE(ABORT, '{message}')", "1") for s in statements]
    return [re.sub(r"NEW\.\w+", "?", s) for s in statements]


def test_each_statement_of_the_batch_trigger_seeks_or_scans_only_its_json(
    plan_of: Plan,
) -> None:
    """Planned one by one, as the trigger runs them: every insert (events, the projections,
    holds placed and settled) scans only its JSON, and every read of a table seeks by primary
    key or through an index, never a scan of a table."""
    statements = _trigger_statements()
    inserts = [s for s in statements if s.startswith("INSERT")]
    assert len(inserts) == 7, inserts  # events, entries, accounts, orders, keys, holds x2
    assert any("ON CONFLICT (ledger, hold_id) DO UPDATE" in s for s in inserts), inserts
    for sql in statements:
        steps = plan_of(sql, *([None] * sql.count("?")))
        scans = [step for step in steps if step.startswith("SCAN")]
        assert all(
            step == "SCAN CONSTANT ROW" or step.startswith("SCAN json_each ") for step in scans
        ), (sql, steps)
        if sql.startswith("INSERT"):
            assert steps == ["SCAN json_each VIRTUAL TABLE INDEX 1:"], (sql, steps)


def test_a_batch_commits_as_one_statement_in_its_own_transaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A small batch is the INSERT into the batch view alone, in autocommit: no BEGIN and
    COMMIT around it (two more waits for the GIL), and no statement journal, which SQLite
    spilled to a new temporary file at every commit (docs/benchmarks.md)."""
    traced: list[str] = []
    connect = store.SqliteStore._connect

    def tracing(self: store.SqliteStore) -> sqlite3.Connection:
        connection = connect(self)
        if threading.current_thread().name.startswith("tally-commit"):
            connection.set_trace_callback(traced.append)
        return connection

    monkeypatch.setattr(store.SqliteStore, "_connect", tracing)
    engine = open_engine(tmp_path / "one.db")
    try:
        fund = Recharge(user_id="u", amount=1_000, currency="USD", gateway="pp")
        engine.execute("one", _envelope("fund", fund))
        traced.clear()  # the first commit also creates the view
        spend = Expense(user_id="u", currency="USD", orders=(OrderLine("o", 100),))
        engine.execute("one", _envelope("spend", spend))
        # the trigger's statements are traced as the statement that runs them
        assert traced, "the commit was not traced"
        statements = {s.split(" (", 1)[0] for s in traced}
        assert statements == {"INSERT INTO batch_in VALUES"}, statements
        assert engine.store.order("one", "o") is not None
    finally:
        engine.close()
        engine.store.close()


def test_a_commit_refuses_a_connection_left_inside_a_transaction(tmp_path: Path) -> None:
    """The one statement runs in autocommit: on a connection left inside a transaction it
    would join that transaction and commit nothing, while the writer answered its callers.
    The commit refuses instead, and writes nothing."""
    engine = open_engine(tmp_path / "open.db")
    try:
        fund = Recharge(user_id="u", amount=1_000, currency="USD", gateway="pp")
        engine.execute("open", _envelope("fund", fund))
        store = engine.store
        base = store.head("open")
        assert base is not None
        event = EventRow(base.seq + 1, "txn-open", "expense", b"{}", b"\x01" * 32)
        batch = BatchWrite(
            ledger="open",
            base=base,
            head=Head(event.seq, event.hash),
            events=[event],
            projections=Projections(accounts=[], entries=[], orders=[], keys=[], holds=[]),
        )
        connection = store._connection()  # type: ignore[attr-defined]
        connection.execute("BEGIN")
        with pytest.raises(RuntimeError, match="a transaction was left open"):
            store.commit(batch)
        connection.execute("ROLLBACK")
        assert store.head("open") == base
        assert len(store.events("open", after_seq=0, limit=10)) == 1
    finally:
        engine.close()
        engine.store.close()


def test_a_batch_larger_than_one_json_text_is_written_in_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past `json_chunk_rows` rows a table, a commit falls back to a statement per chunk;
    the result is the same ledger."""
    monkeypatch.setattr(store, "json_chunk_rows", 3)
    engine = open_engine(tmp_path / "chunks.db")
    try:
        outcomes = engine.execute_many(
            "chunks",
            [
                Envelope(
                    idempotency_key=f"r{i}",
                    command=Recharge(user_id=f"u{i}", amount=10, currency="USD", gateway="pp"),
                )
                for i in range(10)
            ],
        )
        assert [o.event.seq for o in outcomes] == list(range(1, 11))  # type: ignore[union-attr]
        engine.close()
        result = verify(engine, "chunks")
        assert result.ok, result
        assert result.events == 10
    finally:
        engine.close()
        engine.store.close()


def test_refunds_in_a_batch_written_in_chunks_update_their_orders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chunked fallback updates refunded orders by a statement of its own (the batch
    view trigger's update); tests/test_writer.py fails a batch whose order is missing."""
    monkeypatch.setattr(store, "json_chunk_rows", 3)
    engine = open_engine(tmp_path / "chunks.db")
    try:
        fund = Recharge(user_id="u", amount=1_000, currency="USD", gateway="pp")
        engine.execute("chunks", _envelope("fund", fund))
        orders = tuple(OrderLine(f"o{i}", 100) for i in range(5))
        paid = engine.execute(
            "chunks", _envelope("pay", Expense(user_id="u", currency="USD", orders=orders))
        )
        refunds = [
            _envelope(
                f"r{i}",
                Refund(
                    expense_id=paid.event.transaction_id,
                    order_id=f"o{i}",
                    amount=10 * (i + 1),
                    currency="USD",
                ),
            )
            for i in range(5)
        ]
        outcomes = engine.execute_many("chunks", refunds)
        assert [o.event.seq for o in outcomes] == [3, 4, 5, 6, 7]  # type: ignore[union-attr]
        refunded = [engine.store.order("chunks", f"o{i}") for i in range(5)]
        assert [o.refunded for o in refunded if o is not None] == [10, 20, 30, 40, 50]
        engine.close()
        result = verify(engine, "chunks")
        assert result.ok, result
    finally:
        engine.close()
        engine.store.close()


def _envelope(key: str, command: Recharge | Expense | Refund) -> Envelope:
    return Envelope(idempotency_key=key, command=command)


def _wal_frames(db: Path) -> tuple[int, int]:
    """(frames in the WAL, frames copied back) from the WAL index (`-shm`): mxFrame at byte
    16 of its header, nBackfill at byte 96 (sqlite.org/walformat.html), native order."""
    shm = Path(f"{db}-shm").read_bytes()
    return int.from_bytes(shm[16:20], sys.byteorder), int.from_bytes(shm[96:100], sys.byteorder)


def test_checkpoints_finish_after_a_reader_held_them_back(tmp_path: Path) -> None:
    """A reader holding an old snapshot stops a checkpoint halfway; once it is gone the
    store's checkpointer finishes the job without waiting for another commit (until then
    every read looks its pages up in the WAL)."""
    path = tmp_path / "wal.db"
    engine = open_engine(path)
    reader = sqlite3.connect(path, isolation_level=None)
    try:

        def recharge(i: int) -> Envelope:
            command = Recharge(user_id=f"u{i}", amount=10, currency="USD", gateway="pp")
            return Envelope(idempotency_key=f"r{i}", command=command)

        engine.execute_many("wal", [recharge(i) for i in range(200)])
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM events").fetchone()  # holds this snapshot
        engine.execute_many("wal", [recharge(i) for i in range(200, 2_000)])
        time.sleep(3 * store.checkpoint_interval_s)
        frames, copied = _wal_frames(path)
        assert copied < frames  # held back by the reader
        reader.execute("COMMIT")
        # Bounded generously: on a loaded machine copying the WAL back can take a while.
        deadline = time.monotonic() + 60
        while _wal_frames(path)[1] < _wal_frames(path)[0] and time.monotonic() < deadline:
            time.sleep(store.checkpoint_interval_s)
        frames, copied = _wal_frames(path)
        assert copied == frames, (frames, copied)
    finally:
        reader.close()
        engine.close()
        engine.store.close()


def test_a_postgres_statement_page_reads_only_its_own_events() -> None:
    """Deep in a wallet with table statistics, the page's events are sought one by one by
    primary key, only for the lines the LIMIT lets through (a join planned before the LIMIT
    merge-joined `events` from seq 1 up to the cursor: 248 ms a page at 1,000,000 entries)."""
    with fresh_database() as url:
        engine = open_engine(url)
        try:
            engine.execute_many(
                "plans",
                [
                    Envelope(
                        idempotency_key=f"r-{i}",
                        command=Recharge(user_id="s0", amount=1, currency="USD", gateway="pp"),
                    )
                    for i in range(3_000)
                ],
            )
            pg_store = engine.store
            pg_store.rows("ANALYZE")  # type: ignore[attr-defined]
            (row,) = pg_store.rows(  # type: ignore[attr-defined]
                "EXPLAIN (ANALYZE, FORMAT JSON) " + postgres._STATEMENT_PAGE,
                "plans",
                "wallet:s0:USD",
                2_500,
                9,  # past every posting of seq 2,500
                100,
            )
            lines = pg_store.statement("plans", "wallet:s0:USD", after=(2_500, 9), limit=100)
        finally:
            engine.close()
            engine.store.close()
    assert [line.seq for line, _ in lines] == list(range(2_501, 2_601))

    def nodes(node: dict[str, object]) -> Iterator[dict[str, object]]:
        yield node
        for child in node.get("Plans", []):  # type: ignore[attr-defined]
            yield from nodes(child)

    plan = json.loads(row[0])[0]["Plan"]
    on_events = [node for node in nodes(plan) if node.get("Relation Name") == "events"]
    assert on_events, plan
    for node in on_events:
        assert node["Node Type"] == "Index Scan", node
        assert node["Index Name"] == "events_pkey", node
        read = int(node["Actual Rows"]) * int(node["Actual Loops"])  # type: ignore[call-overload]
        assert read == 100, node
    assert not any(node["Node Type"] in ("Merge Join", "Hash Join") for node in nodes(plan))

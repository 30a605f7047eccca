"""Replay folds the log on a thread of its own and hands the store its rows page by page; the
store stages them and puts them in place in one short transaction: these pin what that must
not change. On both stores unless named."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from pg import fresh_database
from tally.bootstrap import open_engine
from tally.domain.commands import Envelope, Expense, OrderLine, Recharge, Refund
from tally.domain.rejections import InvariantViolated
from tally.engine import engine as engine_module
from tally.engine.engine import Engine
from tally.engine.ports import EventRow, Head, HeadMoved, Projections
from tally.store.postgres import PostgresStore

LEDGER = "replay"
WAIT_S = 60  # a bound on waits for threads that end in milliseconds


def _write_log(engine: Engine) -> Head:
    """23 events: recharges, expenses paying two orders each, refunds of some of them; the
    writer is closed afterwards (replay needs that). Returns the head."""
    envelopes = [
        Envelope(
            idempotency_key=f"r{user}",
            command=Recharge(user_id=f"u{user}", amount=10_000, currency="USD", gateway="pp"),
        )
        for user in range(5)
    ]
    envelopes += [
        Envelope(
            idempotency_key=f"e{index}",
            command=Expense(
                user_id=f"u{index % 5}",
                currency="USD",
                orders=(OrderLine(f"o{index}a", 300, "shop"), OrderLine(f"o{index}b", 200, "mall")),
            ),
        )
        for index in range(12)
    ]
    outcomes = engine.execute_many(LEDGER, envelopes)
    expenses = [outcome.event.transaction_id for outcome in outcomes[5:]]  # type: ignore[union-attr]
    refunds = [
        Envelope(
            idempotency_key=f"f{index}",
            command=Refund(
                expense_id=expenses[index],
                order_id=f"o{index}a",
                amount=100,
                currency="USD",
                reason="damaged",
            ),
        )
        for index in range(6)
    ]
    engine.execute_many(LEDGER, refunds)
    engine.close()
    head = engine.store.head(LEDGER)
    assert head is not None
    assert head.seq == 23
    return head


@pytest.fixture
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pages of 4 events and one page folded ahead: a replay of 23 events takes many parts."""
    monkeypatch.setattr(engine_module, "replay_page_events", 4)
    monkeypatch.setattr(engine_module, "replay_pages_ahead_max", 1)


@pytest.mark.usefixtures("small_pages")
def test_a_replay_in_many_parts_rewrites_the_projections_as_they_were(engine: Engine) -> None:
    head = _write_log(engine)
    store = engine.store
    before = store.projections(LEDGER)
    assert engine.replay(LEDGER) == head
    assert store.projections(LEDGER) == before
    rebuilt, _ = engine.rebuild(LEDGER)
    assert rebuilt == before


class _PartsCounted:
    """The store, counting the parts replay hands it."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.parts = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def replace_projections(self, ledger: str, head: Head, parts: Any) -> None:
        def counted() -> Iterator[Projections]:
            for part in parts:
                self.parts += 1
                yield part

        self._store.replace_projections(ledger, head, counted())


@pytest.mark.usefixtures("small_pages")
def test_the_rows_reach_the_store_page_by_page(engine: Engine) -> None:
    _write_log(engine)
    counted = _PartsCounted(engine.store)
    Engine(counted, currencies=engine.currencies).replay(LEDGER)
    assert counted.parts == 6 + 1  # six pages of up to 4 events, then accounts and orders


class _BrokenOnPage:
    """The store, with one row's hash wrong in the `broken`-th page of the log it reads."""

    def __init__(self, store: Any, broken: int) -> None:
        self._store = store
        self._pages = 0
        self._broken = broken

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def events(self, ledger: str, *, after_seq: int, limit: int) -> list[EventRow]:
        page: list[EventRow] = self._store.events(ledger, after_seq=after_seq, limit=limit)
        self._pages += 1
        if self._pages == self._broken and page:
            page[-1] = page[-1]._replace(hash=bytes(32))
        return page


@pytest.mark.usefixtures("small_pages")
def test_a_log_that_breaks_after_parts_were_written_changes_nothing(engine: Engine) -> None:
    _write_log(engine)
    store = engine.store
    before = store.projections(LEDGER)
    broken = Engine(_BrokenOnPage(store, broken=4), currencies=engine.currencies)
    with pytest.raises(InvariantViolated, match="log broken at seq 16"):
        broken.replay(LEDGER)
    assert store.projections(LEDGER) == before


def test_a_head_moved_before_the_rewrite_changes_nothing(engine: Engine) -> None:
    head = _write_log(engine)
    store = engine.store
    before = store.projections(LEDGER)
    stale = Head(head.seq - 1, head.hash)
    with pytest.raises(HeadMoved):
        store.replace_projections(
            LEDGER,
            stale,
            iter([Projections(accounts=[], entries=[], orders=[], keys=[], holds=[])]),
        )
    assert store.projections(LEDGER) == before


def test_an_unknown_ledger_is_named(engine: Engine) -> None:
    with pytest.raises(LookupError, match="no ledger 'nowhere'"):
        engine.replay("nowhere")


def test_a_page_after_the_last_possible_seq_is_empty(engine: Engine) -> None:
    _write_log(engine)
    top = 2**63 - 1
    assert engine.store.events(LEDGER, after_seq=top - 50, limit=100) == []
    assert engine.store.events(LEDGER, after_seq=top, limit=1) == []


class _SlowLog(_BrokenOnPage):
    """The store, its log reads held until `gate` opens."""

    def __init__(self, store: Any, gate: threading.Event) -> None:
        super().__init__(store, broken=0)
        self._gate = gate

    def events(self, ledger: str, *, after_seq: int, limit: int) -> list[EventRow]:
        self._gate.wait()
        return super().events(ledger, after_seq=after_seq, limit=limit)


def test_a_store_waiting_for_a_part_is_let_go_when_the_replay_is_left(engine: Engine) -> None:
    """An interrupt leaves the replay's block while the store (on another thread, as on
    PostgreSQL) waits for the next part: it must get an error, not wait for ever."""
    head = _write_log(engine)
    gate = threading.Event()
    failures: list[BaseException] = []

    def store_side(parts: Iterator[Projections]) -> None:
        try:
            next(parts)
        except BaseException as error:  # what the store would see
            failures.append(error)

    def release_once_the_store_side_is_answered() -> None:
        # The fold's read ends after the block does, whatever the threads' timing: only
        # leaving the block answers the store side. (Bounded: should it never be answered,
        # the read ends anyway, and the block with it.)
        waiting.join(timeout=WAIT_S)
        gate.set()

    with engine_module._FoldAhead(_SlowLog(engine.store, gate), LEDGER, head) as parts:
        waiting = threading.Thread(target=store_side, args=(parts,))
        waiting.start()
        threading.Thread(target=release_once_the_store_side_is_answered).start()
    waiting.join(timeout=WAIT_S)
    assert not waiting.is_alive()
    assert [str(error) for error in failures] == ["replay abandoned"]


def test_writers_of_other_ledgers_commit_while_a_sqlite_replay_folds(tmp_path: Any) -> None:
    """SQLite's write lock is the whole file's: a replay stages its rows in temporary tables
    while it folds and takes the lock only for the swap at the end."""
    path = tmp_path / "shared.db"
    engine = open_engine(str(path))
    try:
        _write_log(engine)
        before = engine.store.projections(LEDGER)
        committed_meanwhile: list[str] = []

        class _OtherWriterMidway(_PartsCounted):
            def replace_projections(self, ledger: str, head: Head, parts: Any) -> None:
                def midway() -> Iterator[Projections]:
                    for part in parts:
                        if self.parts == 1:  # rows staged, more to come: another ledger writes
                            _write_elsewhere(path)  # "database is locked" if it waited 2 s
                            committed_meanwhile.append("elsewhere")
                        self.parts += 1
                        yield part

                self._store.replace_projections(ledger, head, midway())

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(engine_module, "replay_page_events", 4)
            Engine(_OtherWriterMidway(engine.store), currencies=engine.currencies).replay(LEDGER)
        assert committed_meanwhile == ["elsewhere"]
        assert engine.store.projections(LEDGER) == before
        assert engine.store.head("elsewhere") is not None
    finally:
        engine.close()
        engine.store.close()


def _write_elsewhere(path: Any) -> None:
    """Another process's writer commits to ledger 'elsewhere', waiting at most 2 s for the lock."""
    db = sqlite3.connect(path, isolation_level=None, timeout=2)
    try:
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO ledgers VALUES ('elsewhere', 0, zeroblob(32), 0)")
        db.execute("COMMIT")
    finally:
        db.close()


def test_sqlite_replays_leave_no_connection_of_their_folds_open(tmp_path: Any) -> None:
    path = tmp_path / "replays.db"
    engine = open_engine(str(path))
    try:
        _write_log(engine)
        opened = _open_descriptors(path)
        for _ in range(4):
            engine.replay(LEDGER)
        # Each fold's thread opened a connection; the next one's closes it.
        assert _open_descriptors(path) <= opened + 2
    finally:
        engine.close()
        engine.store.close()


def _open_descriptors(path: Any) -> int:
    """This process's open files that are the database (not its -wal or -shm)."""
    target = str(path)
    count = 0
    for fd in Path("/proc/self/fd").iterdir():
        try:
            if os.readlink(fd) == target:
                count += 1
        except OSError:
            continue
    return count


def test_a_postgresql_replay_of_intact_projections_rewrites_no_row() -> None:
    """Replay stages its rows and applies only the difference: intact projections (of the
    replayed ledger and of any other) keep every row version (`xmin`) they had."""
    with fresh_database() as url:
        engine = open_engine(url)
        try:
            _write_log(engine)
            store = engine.store
            assert isinstance(store, PostgresStore)
            engine.execute(  # another ledger, never replayed
                "other",
                Envelope(
                    idempotency_key="o",
                    command=Recharge(user_id="x", amount=1, currency="USD", gateway="pp"),
                ),
            )
            engine.close()

            def versions() -> list[tuple[str, str, int]]:
                found = []
                for table in ("entries", "accounts", "orders", "idempotency_keys"):
                    found += [
                        (table, row[0], row[1])
                        for row in store.rows(f"SELECT ledger, xmin::text::bigint FROM {table}")
                    ]
                return sorted(found)

            before = versions()
            assert {ledger for _, ledger, _ in before} == {LEDGER, "other"}
            for _ in range(3):  # pooled sessions that staged before: their tables anew
                engine.replay(LEDGER)
                assert versions() == before
        finally:
            engine.close()
            engine.store.close()


@pytest.mark.usefixtures("small_pages")
def test_a_write_while_the_log_folds_makes_the_replay_change_nothing(
    engine: Engine, db: str
) -> None:
    """Another process appends to the ledger while replay stages its rows: the fold reads
    past the head it started from, which is a moved head, not a broken ledger."""
    _write_log(engine)
    other = open_engine(db)

    class _WrittenMidway(_PartsCounted):
        def replace_projections(self, ledger: str, head: Head, parts: Any) -> None:
            def midway() -> Iterator[Projections]:
                for part in parts:
                    if self.parts == 1:
                        _append_meanwhile(other)
                    self.parts += 1
                    yield part

            self._store.replace_projections(ledger, head, midway())

    try:
        with pytest.raises(HeadMoved):
            Engine(_WrittenMidway(engine.store), currencies=engine.currencies).replay(LEDGER)
        rebuilt, head = engine.rebuild(LEDGER)
        assert head.seq == 24
        assert engine.store.projections(LEDGER) == rebuilt
    finally:
        other.close()
        other.store.close()


def test_rows_staged_twice_under_one_key_change_nothing(engine: Engine) -> None:
    """A fold never produces two rows with one key; should one, the store refuses it as the
    table would, rather than keep either."""
    head = _write_log(engine)
    store = engine.store
    before = store.projections(LEDGER)
    entry = before.entries[0]
    twice = Projections(
        accounts=[],
        entries=[entry, entry._replace(balance_after=entry.balance_after + 1)],
        orders=[],
        keys=[],
        holds=[],
    )
    with pytest.raises((sqlite3.IntegrityError, asyncpg.UniqueViolationError)):
        store.replace_projections(LEDGER, head, iter([twice]))
    assert store.projections(LEDGER) == before


@pytest.mark.usefixtures("small_pages")
def test_a_log_broken_on_the_way_is_broken_even_while_written_to(engine: Engine, db: str) -> None:
    """A write during the fold must not turn a broken log into a retryable moved head."""
    _write_log(engine)
    other = open_engine(db)

    class _BrokenAndWrittenMidway(_BrokenOnPage):
        def replace_projections(self, ledger: str, head: Head, parts: Any) -> None:
            def midway() -> Iterator[Projections]:
                for index, part in enumerate(parts):
                    if index == 1:
                        _append_meanwhile(other)
                    yield part

            self._store.replace_projections(ledger, head, midway())

    try:
        broken = _BrokenAndWrittenMidway(engine.store, broken=4)
        with pytest.raises(InvariantViolated, match="log broken at seq 16"):
            Engine(broken, currencies=engine.currencies).replay(LEDGER)
        assert engine.store.head(LEDGER).seq == 24  # type: ignore[union-attr]
    finally:
        other.close()
        other.store.close()


def _append_meanwhile(other: Engine) -> None:
    """Another process's writer appends one recharge to the ledger being replayed."""
    other.execute(
        LEDGER,
        Envelope(
            idempotency_key="meanwhile",
            command=Recharge(user_id="u1", amount=5, currency="USD", gateway="pp"),
        ),
    )

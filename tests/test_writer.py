"""The writer's pipeline under failure, on both stores: failed commits, fencing, bugs."""

from __future__ import annotations

import gc
import itertools
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

import rawdb
from tally.bootstrap import open_engine, open_store
from tally.domain.commands import Envelope, Expense, OrderLine, Recharge, Refund
from tally.domain.decide import decide as real_decide
from tally.domain.rejections import InvariantViolated, Rejected, Rejection
from tally.domain.state import LedgerState, OrderState
from tally.engine import writer as writer_module
from tally.engine.engine import Engine
from tally.engine.ports import BatchWrite, EventRow, Head, HeadMoved, OrderRow, Projections
from tally.engine.results import CommitFailed, Committed, DecidingFailed, WriterStopped
from tally.verification import verify

LEDGER = "default"
# A bound on waits for what takes milliseconds (a held commit, a handshake with the writer's
# thread): generous, so that a slow, loaded machine never reaches it.
WAIT_S = 60


def recharge(key: str, user: str, amount: int) -> Envelope:
    return Envelope(
        idempotency_key=key,
        command=Recharge(user_id=user, amount=amount, currency="USD", gateway="paypal"),
    )


def expense(key: str, user: str, order: str, amount: int) -> Envelope:
    return Envelope(
        idempotency_key=key,
        command=Expense(
            user_id=user, currency="USD", orders=(OrderLine(order_id=order, amount=amount),)
        ),
    )


class FlakyStore:
    """A real store (either kind) whose first commit of a batch starting at each seq in
    `failing` fails before writing anything; `gate` holds commits back while it is clear.

    Failures go by the batch's base, not by call order: on PostgreSQL two commits run side
    by side and reach `commit` in either order."""

    def __init__(self, db: str, failing: set[int]) -> None:
        self.inner = open_store(db)
        self.failing = set(failing)
        self.commits = 0
        self.moved = 0  # commits refused by the compare-and-set
        self.overlapped = 0  # commits that began while another was running
        self.gate = threading.Event()
        self.gate.set()
        self._lock = threading.Lock()
        self._running = 0

    def commit(self, batch: BatchWrite) -> None:
        self.gate.wait(WAIT_S)
        with self._lock:
            self.commits += 1
            self.overlapped += self._running > 0
            self._running += 1
            fail = batch.base.seq in self.failing
            self.failing.discard(batch.base.seq)
        try:
            if fail:
                raise OSError("disk unplugged")
            self.inner.commit(batch)
        except HeadMoved:
            self.moved += 1
            raise
        finally:
            with self._lock:
                self._running -= 1

    def commit_soon(self, batch: BatchWrite) -> None:
        """None: through `commit`, on the writer's committer thread."""

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class CountingStore:
    """A real store whose commits, started the way the writer starts them (`commit_soon`
    where the store has it), are counted: fenced ones, and ones begun while another ran."""

    def __init__(self, db: str) -> None:
        self.inner = open_store(db)
        self.moved = 0
        self.overlapped = 0
        self._running = 0
        self._lock = threading.Lock()

    def _began(self) -> None:
        with self._lock:
            self.overlapped += self._running > 0
            self._running += 1

    def _ended(self, error: BaseException | None) -> None:
        with self._lock:
            self._running -= 1
            self.moved += isinstance(error, HeadMoved)

    def commit_soon(self, batch: BatchWrite) -> Future[None] | None:
        self._began()
        started = self.inner.commit_soon(batch)
        if started is None:
            self._ended(None)  # the writer calls `commit` instead
            return None
        started.add_done_callback(lambda done: self._ended(done.exception()))
        return started

    def commit(self, batch: BatchWrite) -> None:
        self._began()
        try:
            self.inner.commit(batch)
        except BaseException as error:
            self._ended(error)
            raise
        self._ended(None)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def wallet_balance(engine: Engine, user: str) -> int:
    return engine.writer(LEDGER).state.balance(f"wallet:{user}:USD")


def test_the_state_kept_per_event_and_order_is_left_alone_by_the_garbage_collector(
    tmp_path: Path,
) -> None:
    """What a writer keeps for each event and order lives as long as the server: once the
    collector has passed over it, it must stop tracking it, or every later pass of the old
    generations traverses all of it (262 ms at 300,000 expenses, docs/benchmarks.md)."""
    engine = open_engine(tmp_path / "gc.db")
    try:
        engine.execute(LEDGER, recharge("r", "u", 1_000))
        paid = engine.execute(LEDGER, expense("e", "u", "o-1", 300))
        engine.execute(
            LEDGER,
            Envelope(
                idempotency_key="f",
                command=Refund(
                    expense_id=paid.event.transaction_id,
                    order_id="o-1",
                    amount=100,
                    currency="USD",
                ),
            ),
        )
        engine.execute(LEDGER, expense("e2", "u", "o-2", 200))
        state = engine.writer(LEDGER).state
        gc.collect()
        records = [*state.keys.values(), *state.orders.values()]
        assert len(records) == 6
        assert [record for record in records if gc.is_tracked(record)] == []
        order = state.order("o-1")  # the named view, for the code that decides
        assert order is not None
        assert (order.paid, order.refunded, order.refundable) == (300, 100, 200)
        # A refund rewrites the plain tuple with `refunded` as its last field.
        assert OrderState._fields[-1] == "refunded"
        assert state.orders["o-1"] == tuple(order)
    finally:
        engine.close()
        engine.store.close()


def test_a_failed_commit_leaves_state_as_the_database_has_it(db: str) -> None:
    store = FlakyStore(db, failing={1})  # the batch after the first
    engine = Engine(store, currencies={"USD"})
    try:
        engine.execute(LEDGER, recharge("r1", "alice", 1000))
        with pytest.raises(CommitFailed):
            engine.execute(LEDGER, expense("e1", "alice", "o1", 600))
        assert wallet_balance(engine, "alice") == 1000
        assert "o1" not in engine.writer(LEDGER).state.orders
        # The retry with the same key succeeds exactly once.
        retried = engine.execute(LEDGER, expense("e1", "alice", "o1", 600))
        assert retried.event.seq == 2
        assert not retried.replayed
        assert wallet_balance(engine, "alice") == 400
        engine.close()
        assert verify(engine, LEDGER).ok
    finally:
        engine.close()
        store.close()


def test_a_batch_decided_behind_a_failed_commit_is_decided_again(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FlakyStore(db, failing={1})
    engine = Engine(store, currencies={"USD"}, batch_commands_max=1)

    # e1 is decided only once e2 is queued: the writer then takes e2 as soon as e1's commit
    # has started, whatever the threads' timing, and decides it behind e1.
    queued = threading.Event()
    decided: list[str] = []

    def decide_once_both_are_queued(
        state: LedgerState, envelope: Envelope, *a: Any, **k: Any
    ) -> Any:
        if envelope.idempotency_key == "e1":
            assert queued.wait(WAIT_S), "e2 was never queued"
        decided.append(envelope.idempotency_key)
        return real_decide(state, envelope, *a, **k)

    try:
        engine.execute(LEDGER, recharge("r1", "alice", 1000))
        writer = engine.writer(LEDGER)
        monkeypatch.setattr(writer_module, "decide", decide_once_both_are_queued)
        first = writer.submit([expense("e1", "alice", "o1", 600)])
        second = writer.submit([expense("e2", "alice", "o2", 600)])
        queued.set()
        with pytest.raises(CommitFailed):
            first.result(WAIT_S)
        (outcome,) = second.result(WAIT_S)
        # e2 was decided behind e1 (refused: e1 had spent the funds), then again on the true
        # state once e1 had failed: e1 never landed, so e2 has the funds.
        assert decided == ["e1", "e2", "e2"]
        assert isinstance(outcome, Committed)
        assert outcome.event.seq == 2
        assert wallet_balance(engine, "alice") == 400
        engine.close()
        assert verify(engine, LEDGER).ok
    finally:
        engine.close()
        store.close()


def test_two_writers_on_one_database_are_fenced_and_never_overdraw(db: str) -> None:
    engines = [open_engine(db), open_engine(db)]
    try:
        engines[0].execute(LEDGER, recharge("r1", "alice", 1000))
        results: list[list[object]] = [[], []]

        def spend(which: int) -> None:
            for i in range(20):
                try:
                    results[which].append(
                        engines[which].execute(
                            LEDGER, expense(f"w{which}-{i}", "alice", f"w{which}-o{i}", 30)
                        )
                    )
                except Rejected as rejection:
                    results[which].append(rejection.reason)

        threads = [threading.Thread(target=spend, args=(n,)) for n in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        committed = [r for rs in results for r in rs if isinstance(r, Committed)]
        refused = [r for rs in results for r in rs if not isinstance(r, Committed)]
        assert len(committed) == 33  # 1000 // 30, whoever wins each race
        assert set(refused) == {Rejection.INSUFFICIENT_FUNDS}
        assert sorted(c.event.seq for c in committed) == list(range(2, 35))
        for engine in engines:
            engine.close()
        verification = verify(engines[0], LEDGER)
        assert verification.ok, verification
        assert verification.events == 34
    finally:
        for engine in engines:
            engine.close()
            engine.store.close()


def test_a_stale_writer_does_not_refuse_on_a_balance_it_has_not_seen(db: str) -> None:
    """A refusal moves no head, so the writer checks the head before it refuses."""
    engines = [open_engine(db), open_engine(db)]
    try:
        engines[1].writer(LEDGER)  # caught up now, at seq 0: then it idles
        engines[0].execute(LEDGER, recharge("r1", "alice", 1000))
        paid = engines[1].execute(LEDGER, expense("e1", "alice", "o1", 600))
        assert paid.event.seq == 2
        with pytest.raises(Rejected) as refused:
            engines[0].execute(LEDGER, expense("e2", "alice", "o2", 600))
        assert refused.value.reason == Rejection.INSUFFICIENT_FUNDS
    finally:
        for engine in engines:
            engine.close()
            engine.store.close()


def test_an_update_of_a_row_that_is_not_there_writes_nothing(db: str) -> None:
    """A batch updates the orders it did not create (refunds); should one of them be missing
    from the database (a bug, or a tampered table), the whole batch fails."""
    store = open_store(db)
    try:
        store.ensure_ledger(LEDGER)
        base = store.head(LEDGER)
        assert base is not None
        ghost_order = [OrderRow("o-ghost", "txn-ghost", "ghost", "USD", "shop", 5, 1)]
        batch = BatchWrite(
            ledger=LEDGER,
            base=base,
            head=Head(base.seq + 1, b"\x01" * 32),
            events=[],
            projections=Projections(accounts=[], entries=[], orders=[], keys=[], holds=[]),
            order_updates=ghost_order,
        )
        with pytest.raises(RuntimeError, match="missing"):
            store.commit(batch)
        assert store.head(LEDGER) == base
    finally:
        store.close()


@pytest.mark.parametrize("batch", [20, 300])
def test_overlapping_commits_land_in_order_without_fencing_each_other(db: str, batch: int) -> None:
    """On PostgreSQL batch N+1 is written while N commits; its compare-and-set waits for
    N's, so none is fenced and the log holds every batch in order. SQLite commits one at a
    time. (Batches of 20 commit in one statement on PostgreSQL, of 300 by COPY.)"""
    store = CountingStore(db)
    engine = Engine(store, currencies={"USD"}, batch_commands_max=batch)
    try:
        engine.execute(LEDGER, recharge("r1", "alice", 1_000_000))
        # Whether two commits overlap is a matter of timing (on a loaded machine the writer
        # may decide slower than the store commits): rounds go on, up to a bound, until one
        # did where the store lets them.
        rounds = 0
        while rounds < 5 and not (rounds and (store.overlapped or store.concurrent_commits < 2)):
            first = 2 + rounds * 3_000
            envelopes = [
                expense(f"e{rounds}-{i}", "alice", f"o{rounds}-{i}", 7) for i in range(3_000)
            ]
            outcomes = engine.execute_many(LEDGER, envelopes)
            seqs = [o.event.seq for o in outcomes if isinstance(o, Committed)]
            assert seqs == list(range(first, first + 3_000))
            rounds += 1
        assert store.moved == 0
        if store.concurrent_commits > 1:
            assert store.overlapped > 0
        else:
            assert store.overlapped == 0
        assert wallet_balance(engine, "alice") == 1_000_000 - 7 * 3_000 * rounds
        engine.close()
        verification = verify(engine, LEDGER)
        assert verification.ok, verification
        assert verification.events == 1 + 3_000 * rounds
    finally:
        engine.close()
        store.close()


def test_a_clash_with_rows_of_an_unmoved_head_is_an_error_not_a_fence(db: str) -> None:
    """Rows that collide with the log while the head is still at the batch's base mean a
    bug (or a tampered table), not another writer: the commit fails and writes nothing."""
    engine = open_engine(db)
    try:
        engine.execute(LEDGER, recharge("r1", "alice", 1000))
        store = engine.store
        base = store.head(LEDGER)
        assert base is not None
        (logged,) = store.events(LEDGER, after_seq=0, limit=1)
        clash = EventRow(1, "txn-clash", logged.event_type, logged.body, b"\x02" * 32)
        batch = BatchWrite(
            ledger=LEDGER,
            base=base,
            head=Head(base.seq + 1, b"\x01" * 32),
            events=[clash],
            projections=Projections(accounts=[], entries=[], orders=[], keys=[], holds=[]),
        )
        with pytest.raises(Exception) as raised:
            store.commit(batch)
        assert not isinstance(raised.value, HeadMoved)
        assert "unique" in str(raised.value).lower() or "constraint" in str(raised.value).lower()
        assert store.head(LEDGER) == base
    finally:
        engine.close()
        engine.store.close()


def test_a_refund_of_an_order_missing_from_its_table_commits_nothing(
    engine: Engine, db: str
) -> None:
    """A refunded order is updated in the batch's one statement (both stores): should its row
    be gone (a tampered projection), the whole batch fails, log and head untouched."""
    engine.execute(
        "m",
        Envelope(
            idempotency_key="r",
            command=Recharge(user_id="u", amount=1_000, currency="USD", gateway="pp"),
        ),
    )
    paid = engine.execute(
        "m",
        Envelope(
            idempotency_key="e",
            command=Expense(user_id="u", currency="USD", orders=(OrderLine("o1", 500, "m"),)),
        ),
    )
    assert isinstance(paid, Committed)
    with rawdb.connect(db) as raw:
        raw.execute("DELETE FROM orders WHERE ledger = ? AND order_id = 'o1'", ("m",))
    head = engine.store.head("m")
    refund = Refund(
        expense_id=paid.event.transaction_id, order_id="o1", amount=100, currency="USD", reason="r"
    )
    with pytest.raises(CommitFailed, match="a row to update is missing"):
        engine.execute("m", Envelope(idempotency_key="f", command=refund))
    assert engine.store.head("m") == head
    assert engine.store.events("m", after_seq=head.seq, limit=10) == []  # type: ignore[union-attr]


# A bug stops the writer; the thread's own traceback is expected, not a test failure.
_WRITER_BUG = pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")


@_WRITER_BUG
@pytest.mark.parametrize("log_fails", [False, True], ids=["logged", "log-fails"])
def test_a_bug_while_deciding_fails_the_batch_instead_of_leaving_it_waiting(
    db: str, monkeypatch: pytest.MonkeyPatch, log_fails: bool
) -> None:
    """Also when the writer cannot even log the bug (a closed stream): its callers are
    answered first, never left waiting."""
    engine = open_engine(db)
    try:
        engine.execute(LEDGER, recharge("r1", "u1", 1_000))
        writer = engine.writer(LEDGER)

        def bug(*_: object, **__: object) -> None:
            raise InvariantViolated("a state no command can make")  # what stops a writer

        monkeypatch.setattr(writer_module, "decide", bug)
        if log_fails:
            monkeypatch.setattr(writer_module, "log", _BrokenLog())
        waiting = writer.submit([expense("e1", "u1", "o1", 100)])
        with pytest.raises(WriterStopped):
            waiting.result(timeout=WAIT_S)
        with pytest.raises(WriterStopped):
            writer.submit([expense("e2", "u1", "o2", 100)])
    finally:
        engine.close()
        engine.store.close()


class _BrokenLog:
    """A logger whose every line fails, as one writing to a closed stream does."""

    def __getattr__(self, level: str) -> Any:
        def write(*_: object, **__: object) -> None:
            raise ValueError("I/O operation on closed file.")

        return write


@_WRITER_BUG
def test_a_bug_while_answering_a_commit_fails_its_callers_instead_of_leaving_them_waiting(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = open_engine(db)
    try:
        engine.execute(LEDGER, recharge("r1", "u1", 1_000))
        writer = engine.writer(LEDGER)

        def bug(self: LedgerState) -> None:
            raise InvariantViolated("a journal out of step")

        monkeypatch.setattr(LedgerState, "release_oldest", bug)
        waiting = writer.submit([expense("e1", "u1", "o1", 100)])
        with pytest.raises(WriterStopped):
            waiting.result(timeout=10)
    finally:
        engine.close()
        engine.store.close()
    # The commit itself landed: a retry with the same key, on a new engine, replays it.
    monkeypatch.undo()
    engine = open_engine(db)
    try:
        again = engine.execute(LEDGER, expense("e1", "u1", "o1", 100))
        assert again.replayed
        assert again.event.seq == 2
    finally:
        engine.close()
        engine.store.close()


def test_a_caller_cancelling_its_future_does_not_stop_the_writer(db: str) -> None:
    store = FlakyStore(db, failing=set())
    engine = Engine(store, currencies={"USD"})
    try:
        engine.execute(LEDGER, recharge("r1", "alice", 1000))
        store.gate.clear()  # the next commit waits, so the future is still pending
        waiting = engine.writer(LEDGER).submit([expense("e1", "alice", "o1", 600)])
        assert waiting.cancel()
        store.gate.set()
        # The writer answered (nobody) and goes on: the cancelled command was still written.
        after = engine.execute(LEDGER, expense("e2", "alice", "o2", 100))
        assert after.event.seq == 3
        assert wallet_balance(engine, "alice") == 300
    finally:
        engine.close()
        store.close()


def test_a_command_whose_deciding_fails_unexpectedly_fails_only_its_request(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FlakyStore(db, failing=set())
    engine = Engine(store, currencies={"USD"})

    # e1 is taken alone and decided only once the two requests after it are queued: the
    # writer then takes both into one batch, whatever the threads' timing.
    deciding_first = threading.Event()
    queued = threading.Event()

    def decide_with_a_bug(state: LedgerState, envelope: Envelope, *args: Any, **kw: Any) -> Any:
        if envelope.idempotency_key == "e1":
            deciding_first.set()
            assert queued.wait(WAIT_S), "the requests after e1 were never queued"
        if envelope.idempotency_key.startswith("poison"):
            raise RuntimeError("a bug in deciding")
        return real_decide(state, envelope, *args, **kw)

    monkeypatch.setattr(writer_module, "decide", decide_with_a_bug)
    try:
        engine.execute(LEDGER, recharge("r1", "alice", 1000))
        writer = engine.writer(LEDGER)
        first = writer.submit([expense("e1", "alice", "o1", 100)])
        assert deciding_first.wait(WAIT_S), "the writer never took e1"
        # One request holding the bad command with a good one before it, and a request of
        # its own beside it in the same batch: the whole first request fails, the other is
        # written.
        poisoned = writer.submit(
            [expense("e2", "alice", "o2", 100), expense("poison-1", "alice", "o3", 100)]
        )
        innocent = writer.submit([expense("e3", "alice", "o4", 100)])
        queued.set()
        assert isinstance(first.result(timeout=WAIT_S)[0], Committed)
        with pytest.raises(DecidingFailed) as failed:
            poisoned.result(timeout=WAIT_S)
        assert isinstance(failed.value.__cause__, RuntimeError)
        written = innocent.result(timeout=WAIT_S)[0]
        assert isinstance(written, Committed)
        assert written.event.seq == 3  # right after e1: nothing of the failed request
        assert wallet_balance(engine, "alice") == 800
        # The writer goes on, and the failed request's good command was not written.
        again = engine.execute(LEDGER, expense("e2", "alice", "o2", 100))
        assert isinstance(again, Committed)
        assert not again.replayed
        assert again.event.seq == 4
    finally:
        engine.close()
        store.close()
    engine = open_engine(db)
    try:
        assert verify(engine, LEDGER).ok
        assert engine.store.head(LEDGER).seq == 4  # type: ignore[union-attr]
    finally:
        engine.close()
        engine.store.close()


def test_every_command_submitted_while_the_writer_closes_is_answered(db: str) -> None:
    """Commands race `close()` from several threads: each is either refused at `submit`
    (WriterStopped) or decided and answered; none is left waiting."""
    engine = open_engine(db)
    writer = engine.writer(LEDGER)
    waiting: list[Future[Any]] = []
    refused = threading.Event()
    lock = threading.Lock()

    def submit_until_refused(thread: int) -> None:
        for index in itertools.count():
            try:
                future = writer.submit([recharge(f"t{thread}-{index}", f"u{thread}", 1)])
            except WriterStopped:
                refused.set()
                return
            with lock:
                waiting.append(future)

    threads = [threading.Thread(target=submit_until_refused, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + WAIT_S
    while len(waiting) < 200 and time.monotonic() < deadline:
        time.sleep(0.001)
    writer.close()
    for thread in threads:
        thread.join(timeout=WAIT_S)
    try:
        assert len(waiting) >= 200, len(waiting)
        assert not any(thread.is_alive() for thread in threads)
        assert refused.is_set()
        for future in waiting:
            outcome = future.result(timeout=WAIT_S)  # raises TimeoutError if left behind
            assert isinstance(outcome[0], Committed)
        assert engine.store.head(LEDGER).seq == len(waiting)  # type: ignore[union-attr]
    finally:
        engine.close()
        engine.store.close()

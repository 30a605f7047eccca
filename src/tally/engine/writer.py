"""One writer per ledger: queue -> batch -> decide -> chain -> one commit -> reply.

The writer thread owns the ledger's in-memory state. It takes every queued command up to
`batch_commands_max`, decides each against the state (a refused command leaves no trace),
chains the accepted events, and hands the batch to the store (`Store.commit_soon`, or else a
committer thread of its own), which writes it in one database transaction that moves the
ledger's head by compare-and-set. Only after that
commit does any caller hear back.

The threads form a pipeline: while batch N is being committed (database and fsync work
that runs without the GIL), the writer decides batch N+1 on top of N's state. A store that
can run commits side by side (`Store.concurrent_commits`, 2 on PostgreSQL) gets N+1 as soon
as it is decided: N+1's rows go in while N commits, and its compare-and-set of the head waits
for N's. On SQLite (one writing transaction at a time) N+1 is handed over after N commits.
Callers hear back in batch order. If N's commit fails, the writer waits for the younger
commits to end (they cannot land without N: each one's compare-and-set starts from the head
before it), the journal rolls every open batch back, newest first, so the state is again
exactly what the database holds; N's callers get the error (or, when another process moved
the head, N is decided again after catching up from the log with the same `evolve` replay
uses), and the younger batches are decided again.
"""

from __future__ import annotations

import contextlib
import os
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Container, Sequence
from concurrent.futures import Future, InvalidStateError, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast

import structlog

from tally.audit.canonical import command_digest, decode_event, encode_event
from tally.audit.chain import GENESIS_HASH, link
from tally.domain import limits
from tally.domain.commands import Envelope
from tally.domain.decide import Stamp, decide, recall
from tally.domain.rejections import InvariantViolated, Rejected, Rejection
from tally.domain.state import LedgerState, check_logged, evolve
from tally.engine.ports import (
    AccountRow,
    BatchWrite,
    EventRow,
    Head,
    HeadMoved,
    KeyRow,
    Projections,
    Store,
)
from tally.engine.projection import hold_rows, order_rows
from tally.engine.results import CommitFailed, Committed, DecidingFailed, Outcome, WriterStopped

log = structlog.get_logger(__name__)

fence_retries_max = 32  # consecutive fenced commits before a batch gives up
fence_backoff_s_max = 0.05  # jittered backoff after a fence, so two writers stop thrashing
catch_up_page_events = 10_000


# Called once, on the writer's thread, with the outcomes or with the error.
Answer = Callable[[list[Outcome] | None, BaseException | None], None]


class _Submission:
    """Commands queued together, and whom to tell: a `Future`, or a callback (`submit_to`)."""

    __slots__ = ("_answer", "envelopes", "fenced", "future")

    def __init__(self, envelopes: Sequence[Envelope], answer: Answer | None = None) -> None:
        self.envelopes = envelopes
        self.fenced = 0  # how many times its batch lost the compare-and-set
        self._answer = answer
        self.future: Future[list[Outcome]] | None = Future() if answer is None else None

    def done(self) -> bool:
        return self.future.done() if self.future is not None else self._answer is None

    def set_result(self, outcomes: list[Outcome]) -> None:
        if self.future is not None:
            with contextlib.suppress(InvalidStateError):  # the caller cancelled it
                self.future.set_result(outcomes)
        else:
            self._call(outcomes, None)

    def set_exception(self, error: BaseException) -> None:
        if self.future is not None:
            with contextlib.suppress(InvalidStateError):
                self.future.set_exception(error)
        else:
            self._call(None, error)

    def _call(self, outcomes: list[Outcome] | None, error: BaseException | None) -> None:
        answer, self._answer = self._answer, None
        if answer is None:
            return
        try:
            answer(outcomes, error)
        except Exception as failure:  # the caller's bug must not stop the writer
            log.error("answer callback failed", error=repr(failure))


@dataclass(slots=True)
class _Decided:
    """A decided batch whose state changes are journaled until its commit is known."""

    submissions: list[_Submission]
    outcomes: list[Outcome | int]
    batch: BatchWrite
    head_before: bytes
    commit: Future[None] | None = None

    def commit_done(self) -> bool:
        return self.commit is not None and self.commit.done()


class _CommandFailed(Exception):
    """Deciding `envelopes[index]` of a batch raised `error`, which is neither a refusal nor
    a broken invariant."""

    def __init__(self, index: int, envelope: Envelope, error: Exception) -> None:
        super().__init__(index, envelope, error)
        self.index = index
        self.envelope = envelope
        self.error = error


def _holder(submissions: list[_Submission], index: int) -> _Submission:
    """The submission holding the batch's `index`th envelope."""
    for submission in submissions:
        if index < len(submission.envelopes):
            return submission
        index -= len(submission.envelopes)
    raise InvariantViolated(f"no submission holds envelope {index}")


_STOP = object()
_new_tuple = tuple.__new__  # a NamedTuple without its Python-level __new__ (state._new_tuple)


def transaction_ids(count: int, unix_ms: int) -> list[str]:
    """`count` fresh ids `txn_<12 hex: Unix ms><20 hex: 80 random bits>`: time-ordered."""
    randomness = os.urandom(10 * count).hex()
    prefix = f"txn_{unix_ms & 0xFFFF_FFFF_FFFF:012x}"
    return [prefix + randomness[i : i + 20] for i in range(0, 20 * count, 20)]


class LedgerWriter:
    """The single writer of one ledger, on a thread of its own (plus its committer)."""

    def __init__(
        self,
        store: Store,
        ledger: str,
        *,
        currencies: Container[str],
        batch_commands_max: int = limits.batch_commands_max,
    ) -> None:
        self.store = store
        self.ledger = ledger
        self.currencies = currencies
        self.batch_commands_max = batch_commands_max
        self.state = LedgerState(ledger)
        self.head_hash = GENESIS_HASH
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._closed = False
        self._broken: BaseException | None = None
        # Held while checking `_closed`/`_broken` and queueing, and while setting either: a
        # command is queued before `_STOP` (so it is decided) or refused, never left behind.
        self._gate = threading.Lock()
        self._stale = True  # the state must catch up with the log before deciding
        self._commits_max = max(1, store.concurrent_commits)
        self._committer = ThreadPoolExecutor(
            self._commits_max, thread_name_prefix=f"tally-commit-{ledger}"
        )
        # A daemon: a process that exits without closing its engine must not hang. Nothing
        # is lost if it dies mid-batch: no caller hears back before the commit is durable.
        self._thread = threading.Thread(
            target=self._run, name=f"tally-writer-{ledger}", daemon=True
        )
        store.ensure_ledger(ledger)
        self._catch_up()
        self._thread.start()

    # -- the callers' side -------------------------------------------------------------
    def submit(self, envelopes: Sequence[Envelope]) -> Future[list[Outcome]]:
        """Queue commands; the future resolves once their batch has committed."""
        submission = _Submission(envelopes)
        self._enqueue(submission)
        assert submission.future is not None
        return submission.future

    def submit_to(self, envelopes: Sequence[Envelope], answer: Answer) -> None:
        """Queue commands; `answer` is called on the writer's thread once their batch has
        committed (or failed). Cheaper than a `Future` when the caller hands the result on
        to an event loop anyway."""
        self._enqueue(_Submission(envelopes, answer))

    def _enqueue(self, submission: _Submission) -> None:
        with self._gate:
            if self._closed or self._broken is not None:
                raise WriterStopped(self.ledger) from self._broken
            self._queue.put(submission)

    def close(self) -> None:
        with self._gate:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self._thread.join()
        self._committer.shutdown()

    # -- the writer thread -------------------------------------------------------------
    def _run(self) -> None:
        in_flight: deque[_Decided] = deque()  # commits started, oldest first
        carried: list[_Submission] = []
        submissions: list[_Submission] = []
        stop = False
        try:
            while True:
                if carried:
                    submissions, carried = carried, []
                elif stop:
                    submissions = []
                else:
                    submissions, stop = self._take(block=not in_flight)
                decided = self._decide_or_fail(submissions) if submissions else None
                carried = self._reap(in_flight, newer=decided)
                if carried:
                    decided = None  # rolled back with the failed commit
                if decided is not None:
                    started, stale = self._start_commit(decided)
                    if started is not None:
                        in_flight.append(started)
                    carried += stale
                if stop and not in_flight and not carried:
                    return
        except BaseException as error:  # a bug: fail everyone loudly, accept nothing more
            with self._gate:
                self._broken = error  # from now on `_enqueue` refuses: the queue is ours to fail
            # Everyone not yet answered: those in flight (a commit being answered stays in
            # `in_flight` until it has been), carried over, and the ones being decided.
            # First, before the log line: logging can fail too (a closed stream), and a
            # caller left unanswered would wait for ever.
            self._fail_all(error, in_flight, carried + submissions)
            with contextlib.suppress(Exception):
                log.error("writer stopped by a bug", ledger=self.ledger, error=repr(error))
            raise

    def _reap(self, in_flight: deque[_Decided], *, newer: _Decided | None) -> list[_Submission]:
        """Answer the commits that ended, oldest first; returns what to decide again.

        Waits for the oldest commit when the pipeline is full, when nothing newer came in
        (there is nothing else to do), and before a batch that writes nothing (its head
        check needs the database to hold everything decided before it).
        """
        waited = False
        while in_flight:
            must_wait = (
                len(in_flight) >= self._commits_max
                or (newer is None and not waited)
                or (newer is not None and not newer.batch.events)
            )
            if not (must_wait or in_flight[0].commit_done()):
                return []
            waited = True
            carried = self._finish(in_flight, newer=newer)
            if carried:
                return carried
            if newer is None and not in_flight:
                return []
        return []

    def _take(self, *, block: bool) -> tuple[list[_Submission], bool]:
        taken: list[_Submission] = []
        count = 0
        while count < self.batch_commands_max:
            try:
                item = self._queue.get() if block and not taken else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return taken, True
            assert isinstance(item, _Submission)
            taken.append(item)
            count += len(item.envelopes)
        return taken, False

    def _decide_batch(self, submissions: list[_Submission]) -> _Decided:
        head_before = self.head_hash
        self.state.begin()
        envelopes = [e for s in submissions for e in s.envelopes]
        outcomes, batch = self._decide(envelopes)
        return _Decided(submissions, outcomes, batch, head_before)

    def _decide_or_fail(self, submissions: list[_Submission]) -> _Decided | None:
        """Decide a batch. If the store fails while we catch up, fail it (retryable); if
        deciding one command fails unexpectedly (a bug), fail only that command's request and
        decide the rest again without it."""
        try:
            if self._stale:
                self._catch_up()
        except InvariantViolated:
            raise
        except Exception as error:  # e.g. the database went away
            self._stale = True
            log.warning("catch-up failed", ledger=self.ledger, error=repr(error))
            self._fail(submissions, error)
            return None
        levels = self.state.open_batches
        while submissions:
            try:
                return self._decide_batch(submissions)
            except _CommandFailed as failed:
                while self.state.open_batches > levels:
                    self.state.rollback_newest()
                culprit = _holder(submissions, failed.index)
                log.error(
                    "deciding a command failed; its request was not written",
                    ledger=self.ledger,
                    idempotency_key=failed.envelope.idempotency_key,
                    exc_info=failed.error,
                )
                failure = DecidingFailed(f"ledger {self.ledger}: {failed.error!r}")
                failure.__cause__ = failed.error
                culprit.set_exception(failure)
                submissions = [s for s in submissions if s is not culprit]
        return None

    def _start_commit(self, decided: _Decided) -> tuple[_Decided | None, list[_Submission]]:
        """Hand the batch to the committer; returns it (in flight) and what to decide again."""
        if decided.batch.events:
            decided.commit = self._commit_soon(decided.batch)
            return decided, []
        # Only refusals and replays: nothing to write, so no compare-and-set proves the state
        # was current. Check the head instead: another process may have written meanwhile
        # (a refusal such as insufficient_funds must not rest on a stale balance).
        try:
            current = self.store.head(self.ledger) == decided.batch.base
        except Exception as error:  # the database is unreachable: retryable, like a commit
            self.state.rollback_newest()
            self.head_hash = decided.head_before
            self._stale = True
            self._fail(decided.submissions, error)
            return None, []
        if current:
            self._answer(decided)
            return None, []
        self.state.rollback_newest()
        self.head_hash = decided.head_before
        self._stale = True
        return None, self._fenced(decided.submissions)

    def _commit_soon(self, batch: BatchWrite) -> Future[None]:
        try:
            started = self.store.commit_soon(batch)
        except Exception as error:  # e.g. the store's loop is gone: a failed commit
            failed: Future[None] = Future()
            failed.set_exception(error)
            return failed
        return started if started is not None else self._committer.submit(self.store.commit, batch)

    def _fenced(self, submissions: list[_Submission]) -> list[_Submission]:
        """Back off, then return the submissions that may be decided again."""
        fenced = max(s.fenced for s in submissions) + 1
        time.sleep(random.uniform(0, min(fence_backoff_s_max, 0.001 * 2**fenced)))
        retry = []
        for submission in submissions:
            submission.fenced += 1
            if submission.fenced < fence_retries_max:
                retry.append(submission)
            else:
                submission.set_exception(
                    CommitFailed(f"ledger {self.ledger}: fenced {fence_retries_max} times")
                )
        return retry

    def _fail(self, submissions: list[_Submission], error: BaseException) -> None:
        failure = CommitFailed(f"ledger {self.ledger}: {error!r}")
        failure.__cause__ = error
        for submission in submissions:
            if not submission.done():
                submission.set_exception(failure)

    def _finish(self, in_flight: deque[_Decided], *, newer: _Decided | None) -> list[_Submission]:
        """Wait for the oldest commit; returns the submissions to decide again."""
        oldest = in_flight[0]
        assert oldest.commit is not None
        error = oldest.commit.exception()
        if error is None:
            self._answer(oldest)
            in_flight.popleft()  # only now: should answering fail, `_run` fails the rest
            return []
        # The younger commits cannot land without this one; let them end before rolling
        # back (even one that landed, had this one landed unseen, is only decided again:
        # its keys then replay what it wrote).
        younger = list(in_flight)[1:]
        for decided in younger:
            assert decided.commit is not None
            decided.commit.exception()
        while self.state.open_batches:
            self.state.rollback_newest()
        self.head_hash = oldest.head_before
        self._stale = True  # the commit may even have landed: learn it from the log
        again = [s for d in younger for s in d.submissions]
        if newer is not None:
            again += newer.submissions
        in_flight.clear()
        if isinstance(error, HeadMoved):
            return self._fenced(oldest.submissions) + again
        log.warning("commit failed", ledger=self.ledger, error=repr(error))
        self._fail(oldest.submissions, error)
        return again

    def _answer(self, decided: _Decided) -> None:
        self.state.release_oldest()
        outcomes = decided.outcomes
        replays = any(type(o) is int for o in outcomes)
        in_batch = {o.event.seq: o for o in outcomes if isinstance(o, Committed)} if replays else {}
        start = 0
        for submission in decided.submissions:
            end = start + len(submission.envelopes)
            try:
                mine = outcomes[start:end]
                # Without replays every outcome is final: no int (a prior seq) among them.
                answer = self._resolve_replays(mine, in_batch) if replays else cast(Any, mine)
                submission.set_result(answer)
            except InvariantViolated:
                raise
            except Exception as error:  # reading an earlier transaction back failed
                failure = CommitFailed(f"ledger {self.ledger}: answer unavailable: {error!r}")
                failure.__cause__ = error
                submission.set_exception(failure)
            start = end

    def _fail_all(
        self, error: BaseException, in_flight: deque[_Decided], carried: list[_Submission]
    ) -> None:
        pending = list(carried)
        for decided in in_flight:
            pending.extend(decided.submissions)
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Submission):
                pending.append(item)
        for submission in pending:
            if not submission.done():
                submission.set_exception(WriterStopped(self.ledger))

    def _decide(self, envelopes: list[Envelope]) -> tuple[list[Outcome | int], BatchWrite]:
        """Decide every command, applying accepted events to the (journaled) state."""
        state = self.state
        ledger = self.ledger
        base = Head(state.seq, self.head_hash)
        now_us = max(time.time_ns() // 1000, state.last_timestamp_us)
        ids = transaction_ids(len(envelopes), now_us // 1000)
        outcomes: list[Outcome | int] = []
        event_rows: list[EventRow] = []
        entry_rows = []
        key_rows: list[KeyRow] = []
        head_hash = self.head_hash
        index = 0
        try:
            for index, envelope in enumerate(envelopes):
                try:
                    digest = command_digest(envelope.command)
                except (UnicodeEncodeError, TypeError, ValueError) as error:
                    # A lone surrogate, or (through the Python API, which types nothing)
                    # metadata that is no pairs: let the ladder name the field.
                    outcomes.append(self._unencodable(envelope, error))
                    continue
                try:
                    prior_seq = recall(state, envelope, digest)
                    if prior_seq is not None:
                        outcomes.append(prior_seq)
                        continue
                    # Stamp(seq, transaction_id, timestamp_us, command_digest); see state._new_tuple
                    stamp = _new_tuple(Stamp, (state.seq + 1, ids[index], now_us, digest))
                    event = decide(state, envelope, stamp, currencies=self.currencies)
                except Rejected as rejection:
                    outcomes.append(rejection)
                    continue
                entries = evolve(state, event)
                body = encode_event(ledger, event)
                head_hash = link(head_hash, body)
                seq = event.seq
                event_rows.append(
                    _new_tuple(
                        EventRow, (seq, event.transaction_id, event.event_type, body, head_hash)
                    )
                )
                entry_rows.extend(entries)
                key_rows.append(_new_tuple(KeyRow, (event.idempotency_key, digest, seq)))
                committed = (ledger, event, head_hash, tuple(entries), False)  # not replayed
                outcomes.append(_new_tuple(Committed, committed))
        except (Rejected, InvariantViolated):
            raise
        except Exception as error:  # a bug, or input the checks did not foresee
            raise _CommandFailed(index, envelopes[index], error) from error
        self.head_hash = head_hash
        balances = state.balances
        orders = state.orders
        created = state.created_orders
        holds, placed = state.holds, state.created_holds
        opened = state.created_accounts
        last_seq = {e.account: e.seq for e in entry_rows if e.account in opened} if opened else {}
        batch = BatchWrite(
            ledger=ledger,
            base=base,
            head=Head(state.seq, head_hash),
            events=event_rows,
            projections=Projections(
                accounts=[AccountRow(a, balances[a], last_seq[a]) for a in opened],
                entries=entry_rows,
                orders=order_rows(orders[o] for o in created),
                keys=key_rows,
                holds=hold_rows(holds[h] for h in placed) if placed else [],
            ),
            order_updates=order_rows(orders[o] for o in state.dirty_orders if o not in created),
            hold_updates=(
                hold_rows(holds[h] for h in state.dirty_holds if h not in placed)
                if state.dirty_holds
                else []
            ),
        )
        return outcomes, batch

    def _unencodable(self, envelope: Envelope, error: Exception) -> Rejected:
        stamp = Stamp(seq=0, transaction_id="", timestamp_us=0, command_digest="")
        try:
            decide(self.state, envelope, stamp, currencies=self.currencies)
        except Rejected as rejection:
            return rejection
        if not isinstance(error, UnicodeEncodeError):
            raise error  # the ladder found nothing wrong: a bug, not a rejection
        return Rejected(
            Rejection.METADATA_INVALID, field="command", detail="text must be valid Unicode"
        )

    def _resolve_replays(
        self, outcomes: list[Outcome | int], in_batch: dict[int, Committed]
    ) -> list[Outcome]:
        """Answer repeated requests with the transaction their key first produced."""
        resolved: list[Outcome] = []
        for outcome in outcomes:
            if isinstance(outcome, int):
                original = in_batch.get(outcome) or self._load_committed(outcome)
                resolved.append(
                    Committed(
                        ledger=original.ledger,
                        event=original.event,
                        hash=original.hash,
                        entries=original.entries,
                        replayed=True,
                    )
                )
            else:
                resolved.append(outcome)
        return resolved

    def _load_committed(self, seq: int) -> Committed:
        rows = self.store.events(self.ledger, after_seq=seq - 1, limit=1)
        if not rows or rows[0].seq != seq:
            raise InvariantViolated(f"ledger {self.ledger}: idempotency points at missing {seq}")
        _, event = decode_event(rows[0].body)
        entries = tuple(self.store.entries_of(self.ledger, event))
        return Committed(ledger=self.ledger, event=event, hash=rows[0].hash, entries=entries)

    def _catch_up(self) -> None:
        """Apply every event the log has beyond our state, checking the chain as we go."""
        reaches: int | None = None  # where a head row read before this page said the log ends
        while True:
            rows = self.store.events(
                self.ledger, after_seq=self.state.seq, limit=catch_up_page_events
            )
            for row in rows:
                self._apply_logged(row)
            if len(rows) == catch_up_page_events:
                continue
            if reaches is not None and self.state.seq < reaches:
                # A head moves in the transaction that appends its events: read after it,
                # the log holds them. It does not: the tail was cut (reading again would
                # loop for ever).
                raise InvariantViolated(
                    f"ledger {self.ledger}: the log ends at seq {self.state.seq}, "
                    f"the head row says {reaches}"
                )
            head = self.store.head(self.ledger)
            if head is not None and head.seq > self.state.seq:
                reaches = head.seq  # another writer committed meanwhile: read on
                continue
            if head is None or head != Head(self.state.seq, self.head_hash):
                raise InvariantViolated(f"ledger {self.ledger}: head row disagrees with the log")
            self._stale = False
            return

    def _apply_logged(self, row: EventRow) -> None:
        if type(row.body) is not bytes:  # SQLite's BLOB column takes any type: a tampered row
            raise InvariantViolated(f"ledger {self.ledger}: log broken at seq {row.seq}")
        ledger, event = decode_event(row.body)
        expected = link(self.head_hash, row.body)
        if (
            ledger != self.ledger
            or event.seq != row.seq
            or expected != row.hash
            or event.transaction_id != row.transaction_id
            or event.event_type != row.event_type
        ):
            raise InvariantViolated(f"ledger {self.ledger}: log broken at seq {row.seq}")
        check_logged(self.state, event)
        evolve(self.state, event)
        self.head_hash = expected

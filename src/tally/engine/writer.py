"""One writer per ledger: queue -> batch -> decide -> chain -> one commit -> reply.

The writer thread owns the ledger's in-memory state. It takes every queued command up to
`batch_commands_max`, decides each against the state (a refused command leaves no trace),
chains the accepted events, and writes the whole batch in one database transaction that
moves the ledger's head by compare-and-set. Only after that commit does any caller hear back.

If the commit fails the journal puts the state back as it was. If another process moved the
head (`HeadMoved`), the writer catches up from the log with the same `evolve` replay uses and
decides the batch again.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Container, Sequence
from concurrent.futures import Future

import structlog

from tally.audit.canonical import command_digest, decode_event, encode_event
from tally.audit.chain import GENESIS_HASH, link
from tally.domain import limits
from tally.domain.commands import Envelope
from tally.domain.decide import Stamp, decide, recall
from tally.domain.rejections import InvariantViolated, Rejected
from tally.domain.state import LedgerState, evolve
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
from tally.engine.projection import order_row
from tally.engine.results import CommitFailed, Committed, Outcome, WriterStopped

log = structlog.get_logger(__name__)

fence_retries_max = 16  # catch-up-and-redecide rounds before a batch gives up
catch_up_page_events = 10_000


class _Submission:
    __slots__ = ("envelopes", "future")

    def __init__(self, envelopes: Sequence[Envelope]) -> None:
        self.envelopes = envelopes
        self.future: Future[list[Outcome]] = Future()


_STOP = object()


def transaction_ids(count: int, unix_ms: int) -> list[str]:
    """`count` fresh UUIDv7-shaped ids (time-ordered, 74 random bits), as `txn_<hex>`."""
    randomness = os.urandom(10 * count)
    prefix = (unix_ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76
    ids = []
    for offset in range(0, 10 * count, 10):
        r = int.from_bytes(randomness[offset : offset + 10], "big")
        value = prefix | (r >> 68) << 64 | 0b10 << 62 | (r & 0x3FFF_FFFF_FFFF_FFFF)
        ids.append(f"txn_{value:032x}")
    return ids


class LedgerWriter:
    """The single writer of one ledger, on a thread of its own."""

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
        self._stale = True  # the state must catch up with the log before deciding
        self._thread = threading.Thread(target=self._run, name=f"tally-writer-{ledger}")
        store.ensure_ledger(ledger)
        self._catch_up()
        self._thread.start()

    # -- the callers' side -------------------------------------------------------------
    def submit(self, envelopes: Sequence[Envelope]) -> Future[list[Outcome]]:
        """Queue commands; the future resolves once their batch has committed."""
        if self._closed:
            raise WriterStopped(self.ledger)
        submission = _Submission(envelopes)
        self._queue.put(submission)
        return submission.future

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put(_STOP)
            self._thread.join()

    # -- the writer thread -------------------------------------------------------------
    def _run(self) -> None:
        while True:
            submissions, stop = self._take()
            if submissions:
                self._process(submissions)
            if stop:
                return

    def _take(self) -> tuple[list[_Submission], bool]:
        first = self._queue.get()
        if first is _STOP:
            return [], True
        assert isinstance(first, _Submission)
        taken = [first]
        count = len(first.envelopes)
        while count < self.batch_commands_max:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return taken, True
            assert isinstance(item, _Submission)
            taken.append(item)
            count += len(item.envelopes)
        return taken, False

    def _process(self, submissions: list[_Submission]) -> None:
        envelopes = [e for s in submissions for e in s.envelopes]
        try:
            outcomes = self._decide_and_commit(envelopes)
        except Exception as error:  # the batch failed as a whole: tell every caller
            log.warning("batch failed", ledger=self.ledger, error=repr(error))
            for submission in submissions:
                submission.future.set_exception(error)
            if isinstance(error, InvariantViolated):
                raise
            return
        start = 0
        for submission in submissions:
            end = start + len(submission.envelopes)
            submission.future.set_result(outcomes[start:end])
            start = end

    def _decide_and_commit(self, envelopes: list[Envelope]) -> list[Outcome]:
        for _ in range(fence_retries_max):
            if self._stale:
                self._catch_up()
            mark = self.state.begin()
            head_before = self.head_hash
            try:
                outcomes, batch = self._decide(envelopes)
                if batch.events:
                    self.store.commit(batch)
            except HeadMoved:
                self.state.rollback(mark)
                self.head_hash = head_before
                self._stale = True
                continue
            except Exception as error:
                self.state.rollback(mark)
                self.head_hash = head_before
                self._stale = True  # the commit may have landed: learn it from the log
                if isinstance(error, InvariantViolated | Rejected):
                    raise
                raise CommitFailed(f"ledger {self.ledger}: {error!r}") from error
            self.state.commit()
            return self._resolve_replays(outcomes, batch)
        raise CommitFailed(f"ledger {self.ledger}: fenced {fence_retries_max} times in a row")

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
        for index, envelope in enumerate(envelopes):
            digest = command_digest(envelope.command)
            try:
                prior_seq = recall(state, envelope, digest)
                if prior_seq is not None:
                    outcomes.append(prior_seq)
                    continue
                stamp = Stamp(
                    seq=state.seq + 1,
                    transaction_id=ids[index],
                    timestamp_us=now_us,
                    command_digest=digest,
                )
                event = decide(state, envelope, stamp, currencies=self.currencies)
            except Rejected as rejection:
                outcomes.append(rejection)
                continue
            entries = evolve(state, event)
            body = encode_event(ledger, event)
            head_hash = link(head_hash, body)
            event_rows.append(
                EventRow(event.seq, event.transaction_id, event.event_type, body, head_hash)
            )
            entry_rows.extend(entries)
            key_rows.append(KeyRow(event.idempotency_key, digest, event.seq))
            outcomes.append(
                Committed(ledger=ledger, event=event, hash=head_hash, entries=tuple(entries))
            )
        self.head_hash = head_hash
        balances = state.balances
        last_seq = {entry.account: entry.seq for entry in entry_rows}
        batch = BatchWrite(
            ledger=ledger,
            base=base,
            head=Head(state.seq, head_hash),
            events=event_rows,
            projections=Projections(
                accounts=[AccountRow(a, balances[a], last_seq[a]) for a in state.dirty_accounts],
                entries=entry_rows,
                orders=[order_row(state.orders[o]) for o in state.dirty_orders],
                keys=key_rows,
            ),
        )
        return outcomes, batch

    def _resolve_replays(self, outcomes: list[Outcome | int], batch: BatchWrite) -> list[Outcome]:
        """Answer repeated requests with the transaction their key first produced."""
        resolved: list[Outcome] = []
        in_batch: dict[int, Committed] = {}
        for outcome in outcomes:
            if isinstance(outcome, Committed):
                in_batch[outcome.event.seq] = outcome
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
        entries = tuple(self.store.entries_of(self.ledger, seq))
        return Committed(ledger=self.ledger, event=event, hash=rows[0].hash, entries=entries)

    def _catch_up(self) -> None:
        """Apply every event the log has beyond our state, checking the chain as we go."""
        while True:
            rows = self.store.events(
                self.ledger, after_seq=self.state.seq, limit=catch_up_page_events
            )
            for row in rows:
                self._apply_logged(row)
            if len(rows) < catch_up_page_events:
                break
        head = self.store.head(self.ledger)
        if head is None or head != Head(self.state.seq, self.head_hash):
            raise InvariantViolated(f"ledger {self.ledger}: head row disagrees with the log")
        self._stale = False

    def _apply_logged(self, row: EventRow) -> None:
        ledger, event = decode_event(row.body)
        expected = link(self.head_hash, row.body)
        if ledger != self.ledger or event.seq != row.seq or expected != row.hash:
            raise InvariantViolated(f"ledger {self.ledger}: log broken at seq {row.seq}")
        evolve(self.state, event)
        self.head_hash = expected

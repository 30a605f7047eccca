"""The engine: writers per ledger, plus replay and the projection check.

This is the Python API the CLI (and the HTTP layer) stand on:

    engine = Engine(store, currencies=...)
    committed = engine.execute("default", Envelope(idempotency_key="k1", command=Recharge(...)))
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Container, Iterator, Sequence
from dataclasses import dataclass

from tally.audit.canonical import decode_event
from tally.audit.chain import GENESIS_HASH, link
from tally.domain import limits
from tally.domain.commands import Envelope
from tally.domain.rejections import InvariantViolated, Rejected
from tally.domain.state import LedgerState, check_logged, evolve
from tally.engine.ports import EventRow, Head, HeadMoved, Projections, Store
from tally.engine.projection import Rebuild
from tally.engine.results import Committed, Outcome
from tally.engine.writer import LedgerWriter

replay_page_events = 10_000
replay_pages_ahead_max = 4  # pages a replay folds ahead of the store's writes


class Engine:
    """Owns one writer per ledger it has written to, all over one store."""

    def __init__(
        self,
        store: Store,
        *,
        currencies: Container[str],
        batch_commands_max: int = limits.batch_commands_max,
    ) -> None:
        self.store = store
        self.currencies = currencies
        self.batch_commands_max = batch_commands_max
        self._writers: dict[str, LedgerWriter] = {}
        self._lock = threading.Lock()

    def writer(self, ledger: str) -> LedgerWriter:
        with self._lock:
            writer = self._writers.get(ledger)
            if writer is None:
                writer = LedgerWriter(
                    self.store,
                    ledger,
                    currencies=self.currencies,
                    batch_commands_max=self.batch_commands_max,
                )
                self._writers[ledger] = writer
            return writer

    def execute(self, ledger: str, envelope: Envelope) -> Committed:
        """Run one command; returns its transaction or raises `Rejected`."""
        (outcome,) = self.writer(ledger).submit((envelope,)).result()
        if isinstance(outcome, Rejected):
            raise outcome
        return outcome

    def execute_many(self, ledger: str, envelopes: Sequence[Envelope]) -> list[Outcome]:
        """Run many commands, each atomic on its own; one outcome per command, in order."""
        writer = self.writer(ledger)
        step = self.batch_commands_max
        futures = [
            writer.submit(envelopes[start : start + step])
            for start in range(0, len(envelopes), step)
        ]
        return [outcome for future in futures for outcome in future.result()]

    def close(self) -> None:
        with self._lock:
            writers, self._writers = list(self._writers.values()), {}
        for writer in writers:
            writer.close()

    # -- replay and the projection check -----------------------------------------------
    def rebuild(self, ledger: str) -> tuple[Projections, Head]:
        """Fold the log alone into fresh projections (checks the chain as it goes)."""
        replayer = Replayer(ledger)
        for page in log_pages(self.store, ledger):
            replayer.feed(page)
        return replayer.finish()

    def replay(self, ledger: str) -> Head:
        """Rebuild every projection of `ledger` from its log; returns the head replayed to.

        The log is folded on a thread of its own that hands the store each page's rows as
        it goes, so the store stages them (SQLite in C, without the GIL; PostgreSQL in its
        own process) while the next pages fold; then one short transaction checks the head
        row and puts them in place. A log that breaks on the way, or does not end at the
        head row's (seq, hash), changes nothing (`InvariantViolated`); so does a write to the
        ledger while it folds (`HeadMoved`: the fold read past the head it started from, or
        the head row moved before the rows were put in place).
        """
        if ledger in self._writers:
            raise RuntimeError("close the ledger's writer before replaying it")
        head = self.store.head(ledger)
        if head is None:
            raise LookupError(f"no ledger {ledger!r}")
        beyond = self.store.highest_projected_seq(ledger)
        if beyond > head.seq:
            if self.store.head(ledger) != head:  # a writer committed after we read it
                raise HeadMoved(ledger)
            # Rebuilding now would erase the only trace of events cut off the log's tail.
            raise InvariantViolated(
                f"ledger {ledger}: projections hold seq {beyond}, beyond the log's head "
                f"{head.seq}: events were removed from the log; refusing to replay over them"
            )
        try:
            with _FoldAhead(self.store, ledger, head) as parts:
                self.store.replace_projections(ledger, head, parts)
        except _LogPastHead as error:
            # A log running past the head row is a broken ledger, unless a writer appended
            # to it while the fold read: then the head row has moved too. (A log that breaks
            # on the way is broken, whoever writes meanwhile.)
            if self.store.head(ledger) != head:
                raise HeadMoved(ledger) from error
            raise
        return head

    def projection_differences(
        self,
        ledger: str,
        expected: Projections | None = None,
        actual: Projections | None = None,
    ) -> list[ProjectionDifference]:
        """Where the stored projections (`actual`, when the caller has read them) differ from
        a fresh replay of the log (`expected`, when the caller has replayed it already)."""
        if expected is None:
            expected, _ = self.rebuild(ledger)
        if actual is None:
            actual = self.store.projections(ledger)
        differences = []
        for table in ("accounts", "entries", "orders", "keys", "holds"):
            rows_expected, rows_found = getattr(expected, table), getattr(actual, table)
            if rows_expected == rows_found:
                # Both sides come sorted by the same key (stores sort by code point, as
                # Python does), so a match - the usual case - is one comparison in C.
                continue
            want, have = set(rows_expected), set(rows_found)
            missing = sorted(want - have, key=_typed)
            extra = sorted(have - want, key=_typed)
            if missing or extra:
                differences.append(
                    ProjectionDifference(
                        table=table, expected=tuple(missing[:5]), found=tuple(extra[:5])
                    )
                )
        return differences


def _typed(row: tuple[object, ...]) -> tuple[tuple[str, object], ...]:
    """A row's sort key that orders values of different types by their type's name, never
    comparing them: a tampered SQLite column may hold text where an integer belongs."""
    return tuple((type(value).__name__, value) for value in row)


class Replayer:
    """Folds a ledger's log, page by page in seq order, into fresh projections, checking
    seq and the chain as it goes, with the same `evolve` the writer uses."""

    def __init__(self, ledger: str) -> None:
        self.ledger = ledger
        self.state = LedgerState(ledger)
        self.head_hash = GENESIS_HASH
        self._rebuild = Rebuild()

    def feed(self, rows: Sequence[EventRow]) -> None:
        ledger, state, rebuild = self.ledger, self.state, self._rebuild
        head_hash = self.head_hash
        for row in rows:
            body = row.body
            if type(body) is not bytes:  # SQLite's BLOB column takes any type: a tampered row
                raise InvariantViolated(f"ledger {ledger}: log broken at seq {row.seq} (no bytes)")
            event_ledger, event = decode_event(body)
            head_hash = link(head_hash, body)
            if (
                event_ledger != ledger
                or event.seq != row.seq
                or head_hash != row.hash
                # the columns beside the body, which lookups by transaction id use
                or event.transaction_id != row.transaction_id
                or event.event_type != row.event_type
            ):
                raise InvariantViolated(f"ledger {ledger}: log broken at seq {row.seq}")
            check_logged(state, event)
            rebuild.add(event, evolve(state, event))
        self.head_hash = head_hash

    def finish(self) -> tuple[Projections, Head]:
        return self._rebuild.finish(self.state), Head(self.state.seq, self.head_hash)

    def take(self) -> Projections:
        """The entries and keys of the events fed since the last take."""
        return self._rebuild.take()

    def rest(self) -> Projections:
        """Once every event is fed: the accounts, orders and holds, and the last entries and
        keys."""
        return self._rebuild.rest(self.state)


class _LogPastHead(InvariantViolated):
    """The log goes on, unbroken, past the head row the replay started from."""


class _FoldAhead:
    """A replay's fold on a thread of its own, its rows handed over page by page (`with`
    gives the iterator of parts). Leaving the block stops the fold wherever it is."""

    def __init__(self, store: Store, ledger: str, head: Head) -> None:
        self._parts: queue.Queue[Projections | BaseException | None] = queue.Queue(
            maxsize=replay_pages_ahead_max
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._fold, args=(store, ledger, head), name=f"tally-replay-{ledger}"
        )

    def __enter__(self) -> Iterator[Projections]:
        self._thread.start()
        return self._handed_over()

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        while self._thread.is_alive():  # a fold blocked on a full queue sees the stop
            self._thread.join(timeout=0.05)

    def _handed_over(self) -> Iterator[Projections]:
        # Polled, not a plain get(): once the block is left (an interrupt while the store
        # waits for a part on another thread), the waiter must not wait for ever.
        while not self._stop.is_set():
            try:
                part = self._parts.get(timeout=0.05)
            except queue.Empty:
                continue
            if part is None:
                return
            if isinstance(part, BaseException):
                raise part
            yield part
        raise RuntimeError("replay abandoned")

    def _fold(self, store: Store, ledger: str, head: Head) -> None:
        try:
            replayer = Replayer(ledger)
            # The whole log, to its end: one that runs past the head row disagrees with it
            # (`Engine.replay` tells that from a writer appending meanwhile: HeadMoved).
            for page in log_pages(store, ledger):
                replayer.feed(page)
                if not self._hand_over(replayer.take()):
                    return
            if Head(replayer.state.seq, replayer.head_hash) != head:
                raise (_LogPastHead if replayer.state.seq > head.seq else InvariantViolated)(
                    f"ledger {ledger}: head row disagrees with the log (the log ends at seq "
                    f"{replayer.state.seq}, the head row says {head.seq}); refusing to replay"
                )
            self._hand_over(replayer.rest())
            self._hand_over(None)
        except BaseException as error:  # the store's thread raises it
            self._hand_over(error)

    def _hand_over(self, part: Projections | BaseException | None) -> bool:
        while not self._stop.is_set():
            try:
                self._parts.put(part, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False


def log_pages(
    store: Store, ledger: str, *, after: int = limits.INT64_MIN
) -> Iterator[list[EventRow]]:
    """The ledger's log after seq `after` in pages of `replay_page_events`, in seq order; by
    default every row, so a row slipped in below seq 1 is read too (and breaks the fold:
    the log starts at 1)."""
    while True:
        page = store.events(ledger, after_seq=after, limit=replay_page_events)
        if page:
            yield page
        if len(page) < replay_page_events:
            return
        after = page[-1].seq


@dataclass(frozen=True, slots=True, kw_only=True)
class ProjectionDifference:
    """Rows a replay expects but the table lacks (`expected`), and rows it has but shouldn't."""

    table: str
    expected: tuple[tuple[object, ...], ...]
    found: tuple[tuple[object, ...], ...]

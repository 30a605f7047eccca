"""`tally verify`: the independent auditor on the log, then projections against a replay.

Both read every event. On a log of `parallel_from_events` events or more they run side by
side: the auditor (standard library only, `tally_audit`) in a child process that receives
the pages the parent reads, the engine's replay in the parent, so the wall time is about
the slower of the two rather than their sum.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection

from tally.domain import limits
from tally.domain.rejections import InvariantViolated
from tally.engine.engine import Engine, ProjectionDifference, Replayer, log_pages
from tally.engine.ports import EventRow, Head, Projections, Store
from tally_audit import Report, verify_events
from tally_audit.verify import UNFINISHED, verify_log, verify_received

parallel_from_events = 20_000
log_catch_ups_max = 100  # reads of the head row while a writer keeps the log moving
projection_reads_max = 10  # reads of the projections while a writer keeps them moving


@dataclass(frozen=True, slots=True, kw_only=True)
class Verification:
    ledger: str
    events: int
    head_hash: str
    first_bad_seq: int | None = None
    problem: str | None = None
    projection_differences: tuple[ProjectionDifference, ...] = ()
    # Writes kept coming faster than verify could find a still moment: nothing was found
    # wrong, nothing was proven either (`problem` says which part was left unchecked).
    inconclusive: bool = False

    @property
    def ok(self) -> bool:
        return self.problem is None and not self.projection_differences


def verify(engine: Engine, ledger: str) -> Verification:
    """Check seq, chain, head and invariants offline-style, then projections == replay.

    A ledger may be written to while it is verified: the log is read to its end and the
    head row after it (reading on while the head is ahead), so the auditor checks the log
    as it stood then; projections are compared once a read of them began and ended at the
    head the replay has reached (feeding the replay the events written meanwhile). If the
    writes never let the log's end be read, what was read is still checked: a finding in
    it is the verdict (tampering is tampering whatever the writers do); only a clean part
    of the log makes verify inconclusive.
    """
    store = engine.store
    first = store.head(ledger)
    reader = _LogReader(store, ledger)
    if first is not None and first.seq >= parallel_from_events:
        checked = _side_by_side(ledger, reader)
    else:
        checked = _in_process(ledger, reader)
    report, replayed = checked.report, checked.replayed
    if report.finding is not None:
        return Verification(
            ledger=ledger,
            events=report.events,
            head_hash=report.head_hash.hex(),
            first_bad_seq=report.finding.seq,
            problem=report.finding.problem,
        )
    assert replayed is not None  # a log the auditor passes is always replayed
    if isinstance(replayed, Exception):  # the auditor accepted what the engine refuses
        return Verification(
            ledger=ledger,
            events=report.events,
            head_hash=report.head_hash.hex(),
            problem=f"replay failed: {replayed}",
        )
    if checked.unfinished is not None:  # nothing wrong in what was read, but not all was
        return Verification(
            ledger=ledger,
            events=report.events,
            head_hash=report.head_hash.hex(),
            problem=checked.unfinished,
            inconclusive=True,
        )
    try:
        expected, actual = _quiet_projections(store, ledger, replayed)
    except _NeverQuiet as busy:
        return Verification(
            ledger=ledger,
            events=report.events,
            head_hash=report.head_hash.hex(),
            problem=str(busy),
            inconclusive=True,
        )
    except Exception as error:  # an event written meanwhile breaks the log
        return Verification(
            ledger=ledger,
            events=report.events,
            head_hash=report.head_hash.hex(),
            problem=f"replay failed: {error}",
        )
    return Verification(
        ledger=ledger,
        events=report.events,
        head_hash=report.head_hash.hex(),
        projection_differences=tuple(engine.projection_differences(ledger, expected, actual)),
    )


class _LogReader:
    """A ledger's log page by page, from its first row to its end; then its head row, read
    after the end, and the log read on while that head is further on (a writer's commits
    meanwhile). Rows beyond a head that does not move are read too: the auditor's to see."""

    def __init__(self, store: Store, ledger: str) -> None:
        self._store = store
        self._ledger = ledger
        self._head: Head | None = None
        self._done = False

    def __iter__(self) -> Iterator[list[EventRow]]:
        last = limits.INT64_MIN  # the seq read up to: every row stored, at first
        head: Head | None = None
        for _ in range(log_catch_ups_max):
            read_on = last
            for page in log_pages(self._store, self._ledger, after=last):
                last = page[-1].seq
                yield page
            if head is not None and last == read_on:
                break  # the head row read said more than the log holds: the auditor's to say
            head = self._store.head(self._ledger)
            if head is None or head.seq <= max(last, 0):
                break
        else:
            raise _NeverQuiet(
                f"ledger {self._ledger} was written to faster than it could be read; verify "
                "again when it is quieter"
            )
        self._head, self._done = head, True

    def head_row(self) -> tuple[int, bytes] | None:
        if not self._done:
            raise RuntimeError("the head row is known once the log has been read")
        return None if self._head is None else (self._head.seq, self._head.hash)


def _quiet_projections(
    store: Store, ledger: str, replayer: Replayer
) -> tuple[Projections, Projections]:
    """The replay's projections and the stored ones, as of one head: the stored ones are read
    between two reads of the head row that agree with the replay (every commit moves the
    head row, so nothing was committed while they were read)."""
    for _ in range(projection_reads_max):
        before = store.head(ledger)
        if before is not None and before.seq > replayer.state.seq:
            for page in log_pages(store, ledger, after=replayer.state.seq):
                replayer.feed(page)  # written meanwhile: checked as the replay goes
            continue
        if before != Head(replayer.state.seq, replayer.head_hash):  # moved back, or edited
            raise InvariantViolated(f"ledger {ledger}: head row disagrees with the log")
        actual = store.projections(ledger)
        if store.head(ledger) == before:
            return replayer.finish()[0], actual
    raise _NeverQuiet(
        f"ledger {ledger} was written to throughout: its projections were not compared with "
        "the replay; verify again when it is quieter"
    )


class _NeverQuiet(Exception):
    """Writes kept coming faster than verify could catch a still moment."""


@dataclass(frozen=True, slots=True, kw_only=True)
class _LogChecked:
    """The auditor's report on the log, and the replay of the same pages or what stopped it
    (None if it did not run: the auditor had found something). When the log's end was never
    reached, `unfinished` says why, and both cover only the pages read (no head row)."""

    report: Report
    replayed: Replayer | Exception | None
    unfinished: str | None = None


def _in_process(ledger: str, reader: _LogReader) -> _LogChecked:
    """The auditor, then the replay, over the pages read, one after the other."""
    pages_read: list[list[EventRow]] = []
    unfinished: str | None = None
    try:
        for page in reader:
            pages_read.append(page)
    except _NeverQuiet as busy:
        unfinished = str(busy)
    if unfinished is None:
        report = verify_events(ledger, _rows(pages_read), reader.head_row())
    else:  # what was read is checked all the same: a finding in it is a finding
        report = verify_log(ledger, _rows(pages_read))
    replayed = None if report.finding is not None else _replay(ledger, pages_read)
    return _LogChecked(report=report, replayed=replayed, unfinished=unfinished)


def _rows(pages: Iterable[list[EventRow]]) -> Iterator[tuple[int, bytes, bytes]]:
    for page in pages:
        for row in page:
            yield row.seq, row.body, row.hash


def _replay(ledger: str, pages: Iterable[list[EventRow]]) -> Replayer | Exception:
    replayer = Replayer(ledger)
    try:
        for page in pages:
            replayer.feed(page)
    except Exception as error:  # reported after the auditor, which names the first bad seq
        return error
    return replayer


class _AuditorDied(Exception):
    """The pipe to the auditor's process broke: it is gone."""


def _sender(connection: Connection) -> Callable[[object], None]:
    """`connection.send`, a broken pipe told apart from the store's failures."""

    def send(message: object) -> None:
        try:
            connection.send(message)
        except (BrokenPipeError, ConnectionResetError):
            raise _AuditorDied from None

    return send


def _side_by_side(ledger: str, reader: _LogReader) -> _LogChecked:
    """The auditor in a child process, the replay here, over the same pages read once."""
    # fork: the child runs only tally_audit on what it receives, never this process's
    # threads or connections, and starts in milliseconds (spawn would re-import tally).
    context = multiprocessing.get_context("fork")
    ours, theirs = context.Pipe()
    child = context.Process(target=verify_received, args=(theirs,), daemon=True)
    child.start()
    theirs.close()
    answered = False
    try:
        send = _sender(ours)
        send(ledger)
        replayer: Replayer | None = Replayer(ledger)
        failure: Exception | None = None
        unfinished: str | None = None
        try:
            for page in reader:
                send([(row.seq, row.body, row.hash) for row in page])
                if replayer is not None:
                    try:
                        replayer.feed(page)
                    except Exception as error:  # keep feeding the auditor: it names the seq
                        failure, replayer = error, None
        except _NeverQuiet as busy:  # the auditor's verdict on the pages it was sent
            unfinished = str(busy)
            send(UNFINISHED)
        else:
            send(None)
            send(reader.head_row())
        try:
            report: Report = ours.recv()
        except (EOFError, ConnectionResetError):
            raise _AuditorDied from None
        answered = True
    except _AuditorDied:
        child.join(timeout=1.0)
        raise RuntimeError(f"the auditor process died (exit code {child.exitcode})") from None
    finally:
        ours.close()
        if not answered:  # it holds a copy of our end of the pipe: it would wait forever
            child.kill()
        child.join()
    if failure is not None or replayer is None:
        replayed: Replayer | Exception = failure or RuntimeError("replay failed")
    else:
        replayed = replayer
    return _LogChecked(report=report, replayed=replayed, unfinished=unfinished)

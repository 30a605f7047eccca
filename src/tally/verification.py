"""`tally verify`: the independent auditor on the log, then projections against a replay.

Both read every event. On a log of `parallel_from_events` events or more they run side by
side: the auditor (standard library only, `tally_audit`) in a child process that receives
the pages the parent reads, the engine's replay in the parent, so the wall time is about
the slower of the two rather than their sum.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from tally.engine.engine import Engine, ProjectionDifference, Replayer, log_pages
from tally.engine.ports import EventRow, Head, Projections
from tally_audit import Report, verify_events
from tally_audit.verify import verify_received

parallel_from_events = 20_000


@dataclass(frozen=True, slots=True, kw_only=True)
class Verification:
    ledger: str
    events: int
    head_hash: str
    first_bad_seq: int | None = None
    problem: str | None = None
    projection_differences: tuple[ProjectionDifference, ...] = ()

    @property
    def ok(self) -> bool:
        return self.problem is None and not self.projection_differences


def verify(engine: Engine, ledger: str) -> Verification:
    """Check seq, chain, head and invariants offline-style, then projections == replay."""
    head = engine.store.head(ledger)
    pages = log_pages(engine.store, ledger)
    replayed: Projections | Exception | None
    if head is not None and head.seq >= parallel_from_events:
        report, replayed = _side_by_side(ledger, head, pages)
    else:
        pages_read = list(pages)
        report = verify_events(ledger, _rows(pages_read), head)
        replayed = None if report.finding is not None else _replay(ledger, pages_read)
    if report.finding is not None:
        return Verification(
            ledger=ledger,
            events=report.events,
            head_hash=report.head_hash.hex(),
            first_bad_seq=report.finding.seq,
            problem=report.finding.problem,
        )
    if isinstance(replayed, Exception):  # the auditor accepted what the engine refuses
        return Verification(
            ledger=ledger,
            events=report.events,
            head_hash=report.head_hash.hex(),
            problem=f"replay failed: {replayed}",
        )
    assert replayed is not None
    return Verification(
        ledger=ledger,
        events=report.events,
        head_hash=report.head_hash.hex(),
        projection_differences=tuple(engine.projection_differences(ledger, replayed)),
    )


def _rows(pages: Iterable[list[EventRow]]) -> Iterator[tuple[int, bytes, bytes]]:
    for page in pages:
        for row in page:
            yield row.seq, row.body, row.hash


def _replay(ledger: str, pages: Iterable[list[EventRow]]) -> Projections | Exception:
    replayer = Replayer(ledger)
    try:
        for page in pages:
            replayer.feed(page)
    except Exception as error:  # reported after the auditor, which names the first bad seq
        return error
    return replayer.finish()[0]


def _side_by_side(
    ledger: str, head: Head, pages: Iterator[list[EventRow]]
) -> tuple[Report, Projections | Exception]:
    """The auditor in a child process, the replay here, over the same pages read once."""
    # fork: the child runs only tally_audit on what it receives, never this process's
    # threads or connections, and starts in milliseconds (spawn would re-import tally).
    context = multiprocessing.get_context("fork")
    ours, theirs = context.Pipe()
    child = context.Process(target=verify_received, args=(theirs,), daemon=True)
    child.start()
    theirs.close()
    try:
        ours.send((ledger, (head.seq, head.hash)))
        replayer: Replayer | None = Replayer(ledger)
        failure: Exception | None = None
        for page in pages:
            ours.send([(row.seq, row.body, row.hash) for row in page])
            if replayer is not None:
                try:
                    replayer.feed(page)
                except Exception as error:  # keep feeding the auditor: it names the seq
                    failure, replayer = error, None
        ours.send(None)
        try:
            report: Report = ours.recv()
        except EOFError:
            raise RuntimeError(f"the auditor process died (exit code {child.exitcode})") from None
    finally:
        ours.close()
        child.join()
    if failure is not None or replayer is None:
        return report, failure or RuntimeError("replay failed")
    return report, replayer.finish()[0]

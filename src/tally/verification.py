"""`tally verify`: the independent auditor on the log, then projections against a replay."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from tally.engine.engine import Engine, ProjectionDifference
from tally.engine.ports import Store
from tally_audit import verify_events

page_events = 10_000


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


def _rows(store: Store, ledger: str) -> Iterator[tuple[int, bytes, bytes]]:
    after = 0
    while True:
        page = store.events(ledger, after_seq=after, limit=page_events)
        for row in page:
            yield row.seq, row.body, row.hash
        if len(page) < page_events:
            return
        after = page[-1].seq


def verify(engine: Engine, ledger: str) -> Verification:
    """Check seq, chain, head and invariants offline-style, then projections == replay."""
    store = engine.store
    report = verify_events(ledger, _rows(store, ledger), store.head(ledger))
    if report.finding is not None:
        return Verification(
            ledger=ledger,
            events=report.events,
            head_hash=report.head_hash.hex(),
            first_bad_seq=report.finding.seq,
            problem=report.finding.problem,
        )
    return Verification(
        ledger=ledger,
        events=report.events,
        head_hash=report.head_hash.hex(),
        projection_differences=tuple(engine.projection_differences(ledger)),
    )

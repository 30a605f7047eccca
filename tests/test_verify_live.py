"""`tally verify` and `tally replay` of a ledger that another process writes to meanwhile:
verify checks the ledger as it stood at a moment it found, replay refuses with `HeadMoved`;
neither calls a commit tampering. The other process is a second engine on the same
database, writing at a chosen point of the interleaving (inside a read of the head row)."""

from __future__ import annotations

import itertools
import signal
from collections.abc import Callable
from typing import Any

import pytest

from tally import verification
from tally.bootstrap import open_engine
from tally.domain.commands import Envelope, Recharge
from tally.engine.engine import Engine
from tally.engine.ports import Head, HeadMoved
from test_tamper import EVENTS, LEDGER, build_ledger

_keys = itertools.count()


def write_elsewhere(db: str) -> None:
    other = open_engine(db)
    try:
        other.execute(
            LEDGER,
            Envelope(
                idempotency_key=f"live-{next(_keys)}",
                command=Recharge(user_id="carol", amount=100, currency="USD", gateway="paypal"),
            ),
        )
    finally:
        other.close()
        other.store.close()


def writing_at(engine: Engine, db: str, calls: set[int], *, before: bool) -> list[int]:
    """Make the `calls`-th reads of the head row (from 1) commit an event in another engine,
    just `before` the read or just after it; returns the list that counts the reads."""
    real: Callable[[str], Head | None] = engine.store.head
    count = [0]

    def head(ledger: str) -> Head | None:
        count[0] += 1
        if before and count[0] in calls:
            write_elsewhere(db)
        found = real(ledger)
        if not before and count[0] in calls:
            write_elsewhere(db)
        return found

    engine.store.head = head  # type: ignore[method-assign]
    return count


@pytest.mark.parametrize("before", [True, False], ids=["before-the-read", "after-the-read"])
@pytest.mark.parametrize("call", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("parallel", [False, True], ids=["in-process", "side-by-side"])
def test_verify_of_a_ledger_written_meanwhile_passes(
    db: str, monkeypatch: pytest.MonkeyPatch, call: int, before: bool, parallel: bool
) -> None:
    build_ledger(db)
    if parallel:
        monkeypatch.setattr(verification, "parallel_from_events", 1)
    engine = open_engine(db)
    try:
        writing_at(engine, db, {call}, before=before)
        result = verification.verify(engine, LEDGER)
        assert result.ok, (result.problem, result.projection_differences)
        assert result.events in (EVENTS, EVENTS + 1)
    finally:
        engine.close()
        engine.store.close()


def test_verify_of_a_ledger_written_at_every_turn_says_so(db: str) -> None:
    build_ledger(db)
    engine = open_engine(db)
    try:
        writing_at(engine, db, set(range(1, 1000)), before=False)
        result = verification.verify(engine, LEDGER)
        assert not result.ok
        assert result.inconclusive
        assert "written to throughout" in str(result.problem)
        assert "removed" not in str(result.problem)
    finally:
        engine.close()
        engine.store.close()


def test_replay_while_written_to_says_head_moved_not_events_removed(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_ledger(db)
    engine = open_engine(db)
    real = engine.store.highest_projected_seq

    def write_then_read(ledger: str) -> int:
        write_elsewhere(db)  # a commit lands between the head read and this read
        return real(ledger)

    monkeypatch.setattr(engine.store, "highest_projected_seq", write_then_read)
    try:
        with pytest.raises(HeadMoved):
            engine.replay(LEDGER)
    finally:
        engine.close()
        engine.store.close()


@pytest.mark.parametrize("before", [True, False], ids=["before-the-read", "after-the-read"])
@pytest.mark.parametrize("call", [1, 2, 3])
def test_verify_of_an_empty_ledger_whose_first_event_is_written_meanwhile_passes(
    db: str, call: int, before: bool
) -> None:
    engine = open_engine(db)
    try:
        engine.store.ensure_ledger(LEDGER)
        writing_at(engine, db, {call}, before=before)
        result = verification.verify(engine, LEDGER)
        assert result.ok, (result.problem, result.projection_differences)
    finally:
        engine.close()
        engine.store.close()


class _Hung(BaseException):
    """Raised by an alarm: verify did not return."""


def test_a_store_error_while_the_auditor_runs_beside_is_raised_not_waited_on(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_ledger(db)
    monkeypatch.setattr(verification, "parallel_from_events", 1)
    monkeypatch.setattr("tally.engine.engine.replay_page_events", 2)
    engine = open_engine(db)
    real = engine.store.events
    calls = [0]

    def failing_events(ledger: str, *, after_seq: int, limit: int) -> Any:
        calls[0] += 1
        if calls[0] == 2:
            raise ConnectionError("the database went away")
        return real(ledger, after_seq=after_seq, limit=limit)

    def hung(*_: object) -> None:
        raise _Hung("verify waited on its auditor process")

    monkeypatch.setattr(engine.store, "events", failing_events)
    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(20)
    try:
        with pytest.raises(ConnectionError):
            verification.verify(engine, LEDGER)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        engine.close()
        engine.store.close()

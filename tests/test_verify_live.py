"""`tally verify` and `tally replay` of a ledger that another process writes to meanwhile:
verify checks the ledger as it stood at a moment it found, replay refuses with `HeadMoved`;
neither calls a commit tampering. The other process is a second engine on the same
database, writing at a chosen point of the interleaving (inside a read of the head row).
Written to faster than it can be read, verify is inconclusive (exit status 4), unless what
it did read was tampered with: that is a failure (exit status 1) however busy the ledger."""

from __future__ import annotations

import itertools
import json
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from tally import verification
from tally.bootstrap import open_engine
from tally.cli import app as cli_app
from tally.cli import ledger_access
from tally.domain.commands import Envelope, Recharge
from tally.engine.engine import Engine
from tally.engine.ports import Head, HeadMoved
from test_tamper import (
    EVENTS,
    LEDGER,
    Tamper,
    build_ledger,
    change_amount_in_body,
    corrupt_a_hash,
    edit_event_columns,
    tamper,
)

_keys = itertools.count()


def recharge_carol(engine: Engine) -> None:
    engine.execute(
        LEDGER,
        Envelope(
            idempotency_key=f"live-{next(_keys)}",
            command=Recharge(user_id="carol", amount=100, currency="USD", gateway="paypal"),
        ),
    )


def write_elsewhere(db: str) -> None:
    other = open_engine(db)
    try:
        recharge_carol(other)
    finally:
        other.close()
        other.store.close()


def writing_at(
    engine: Engine,
    db: str,
    calls: set[int],
    *,
    before: bool,
    write: Callable[[], None] | None = None,
) -> list[int]:
    """Make the `calls`-th reads of the head row (from 1) commit an event in another engine
    (a fresh one, unless `write` says how), just `before` the read or just after it; returns
    the list that counts the reads."""
    real: Callable[[str], Head | None] = engine.store.head
    count = [0]
    commit = write or (lambda: write_elsewhere(db))

    def head(ledger: str) -> Head | None:
        count[0] += 1
        if before and count[0] in calls:
            commit()
        found = real(ledger)
        if not before and count[0] in calls:
            commit()
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


# -- written to faster than the log can be read ----------------------------------------------

CATCH_UPS_MAX = 3  # the log reader gives up after this many reads of a head row further on


@contextmanager
def outrun(
    db: str, monkeypatch: pytest.MonkeyPatch, edit: Tamper | None
) -> Iterator[Callable[[Engine], Engine]]:
    """A ledger (its log edited by `edit`, if any) that verify cannot read to the end: the
    function yielded makes an engine commit an event, through a writer beside it, before
    each of its reads of the head row, so the reader always finds the head further on and
    gives up. Pages of 2 events: the log is read (and sent to the auditor) in several."""
    build_ledger(db)
    monkeypatch.setattr(verification, "log_catch_ups_max", CATCH_UPS_MAX)
    monkeypatch.setattr("tally.engine.engine.replay_page_events", 2)
    beside = open_engine(db)
    try:
        recharge_carol(beside)  # its writer has folded the log: later edits do not stop it
        if edit is not None:
            tamper(db, edit)

        def outrunning(engine: Engine) -> Engine:
            calls = set(range(1, 1000))
            writing_at(engine, db, calls, before=True, write=lambda: recharge_carol(beside))
            return engine

        yield outrunning
    finally:
        beside.close()
        beside.store.close()


def verify_outrun(
    db: str, monkeypatch: pytest.MonkeyPatch, edit: Tamper | None
) -> verification.Verification:
    with outrun(db, monkeypatch, edit) as outrunning:
        engine = outrunning(open_engine(db))
        try:
            return verification.verify(engine, LEDGER)
        finally:
            engine.close()
            engine.store.close()


@dataclass(frozen=True, slots=True)
class EarlyEdit:
    edit: Tamper
    first_bad_seq: int | None
    problem: str  # a fragment of what verify says


EARLY_EDITS = {
    # found by the auditor (in the child process, side by side)
    "amount-in-body": EarlyEdit(change_amount_in_body, 3, "hash does not chain"),
    "corrupt-a-hash": EarlyEdit(corrupt_a_hash, 6, "hash does not chain"),
    # found by the replay only: the columns beside the body are not the auditor's
    "event-columns": EarlyEdit(edit_event_columns, None, "replay failed: ledger shop: log broken"),
}


@pytest.mark.parametrize("case", list(EARLY_EDITS.values()), ids=list(EARLY_EDITS))
@pytest.mark.parametrize("parallel", [False, True], ids=["in-process", "side-by-side"])
def test_tampering_in_what_was_read_is_reported_though_the_reader_gave_up(
    db: str, monkeypatch: pytest.MonkeyPatch, parallel: bool, case: EarlyEdit
) -> None:
    if parallel:
        monkeypatch.setattr(verification, "parallel_from_events", 1)
    result = verify_outrun(db, monkeypatch, case.edit)
    assert not result.ok
    assert not result.inconclusive, result.problem
    assert result.first_bad_seq == case.first_bad_seq
    assert case.problem in str(result.problem)
    if case.first_bad_seq is not None:
        assert result.events == case.first_bad_seq - 1  # the intact prefix


@pytest.mark.parametrize("parallel", [False, True], ids=["in-process", "side-by-side"])
def test_an_untampered_ledger_the_reader_gave_up_on_is_inconclusive(
    db: str, monkeypatch: pytest.MonkeyPatch, parallel: bool
) -> None:
    if parallel:
        monkeypatch.setattr(verification, "parallel_from_events", 1)
    result = verify_outrun(db, monkeypatch, None)
    assert not result.ok
    assert result.inconclusive
    assert result.first_bad_seq is None
    assert result.projection_differences == ()
    assert "written to faster than it could be read" in str(result.problem)


def tally_verify_outrun(
    db: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    edit: Tamper | None,
    *args: str,
) -> tuple[object, str, str]:
    """`tally verify --db DB --ledger shop ARGS` by the `tally` script's entry point, in this
    process (the writes beside it are injected into the engine it opens): its exit status,
    stdout and stderr. (The entry point reads sys.argv, which cyclopts warns about under
    pytest: the tests below ignore that warning.)"""
    with outrun(db, monkeypatch, edit) as outrunning:
        monkeypatch.setattr(ledger_access, "open_engine", lambda url: outrunning(open_engine(url)))
        argv = ["tally", "verify", "--db", db, "--ledger", LEDGER, *args]
        monkeypatch.setattr(sys, "argv", argv)
        with pytest.raises(SystemExit) as exited:
            cli_app.main()
    captured = capsys.readouterr()
    return exited.value.code, captured.out, captured.err


@pytest.mark.filterwarnings("ignore:Cyclopts application invoked without tokens")
@pytest.mark.parametrize("as_json", [True, False], ids=["json", "text"])
def test_cli_verify_inconclusive_exits_4(
    db: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], as_json: bool
) -> None:
    args = ["--json"] if as_json else []
    status, out, err = tally_verify_outrun(db, monkeypatch, capsys, None, *args)
    assert status == 4, (out, err)
    if as_json:
        report = json.loads(out)
        assert (report["ok"], report["inconclusive"], report["first_bad_seq"]) == (
            False,
            True,
            None,
        )
        assert "verify again when it is quieter" in report["problem"]
    else:
        assert f"NOT VERIFIED ledger {LEDGER}" in err
        assert "FAILED" not in err


@pytest.mark.filterwarnings("ignore:Cyclopts application invoked without tokens")
def test_cli_verify_of_tampering_found_while_outrun_exits_1(
    db: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = tally_verify_outrun(db, monkeypatch, capsys, change_amount_in_body, "--json")
    assert status == 1, (out, err)
    report = json.loads(out)
    assert report["ok"] is False
    assert report["inconclusive"] is False
    assert report["first_bad_seq"] == 3
    assert "hash does not chain" in report["problem"]

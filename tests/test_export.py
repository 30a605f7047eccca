"""`tally export` + `tally-audit FILE.jsonl`: the offline audit of any store's ledger.

The export is the log as JSON Lines (docs/log-format.md, "Exporting a log"); the auditor
checks it as it checks a SQLite file, line by line. Round trips on both stores; any flipped
byte, dropped or reordered line is caught; the export is a consistent snapshot even while a
writer appends.
"""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

import rawdb
from conftest import Run, TallyRunner
from rawdb import RawDb
from tally.bootstrap import open_engine, open_store
from tally.cli import export as export_module
from tally.cli.export import write_export
from tally.domain.commands import (
    Envelope,
    Expense,
    OrderLine,
    Recharge,
    Refund,
    metadata_from,
)
from tally.engine.engine import Engine
from tally.engine.ports import EventRow
from tally_audit import verify_export
from tally_audit.export import NotAnExport

LEDGER = "shop"
EVENTS = 5


def envelope(key: str, command: Recharge | Expense | Refund) -> Envelope:
    return Envelope(idempotency_key=key, command=command)


def usd(user: str, amount: int, gateway: str = "paypal") -> Recharge:
    return Recharge(user_id=user, amount=amount, currency="USD", gateway=gateway)


def build(engine: Engine, ledger: str = LEDGER) -> None:
    """Five events, with non-ASCII text and characters JSON must escape in the bodies."""
    note = metadata_from({"note": 'café "quoted" \\ back\nslash ✓ 𝄞'})
    engine.execute(
        ledger,
        envelope(
            "r1",
            Recharge(user_id="zoe", amount=20000, currency="USD", gateway="paypal", metadata=note),
        ),
    )
    engine.execute(
        ledger,
        envelope("r2", Recharge(user_id="bob", amount=5000, currency="JPY", gateway="stripe")),
    )
    paid = engine.execute(
        ledger,
        envelope(
            "e1",
            Expense(
                user_id="zoe",
                currency="USD",
                orders=(
                    OrderLine(order_id="order-1", amount=5000),
                    OrderLine(order_id="order-2", amount=3500),
                ),
            ),
        ),
    )
    engine.execute(
        ledger,
        envelope(
            "f1",
            Refund(
                expense_id=paid.event.transaction_id,
                order_id="order-1",
                amount=2000,
                currency="USD",
                reason="returned — broken",
            ),
        ),
    )
    engine.execute(ledger, envelope("r3", usd("zoe", 1000)))


@pytest.fixture
def ledger_db(db: str) -> str:
    engine = open_engine(db)
    try:
        build(engine)
    finally:
        engine.close()
        engine.store.close()
    return db


def stored_log(db: str, ledger: str = LEDGER) -> tuple[dict[str, Any], list[EventRow]]:
    store = open_store(db)
    try:
        head = store.head(ledger)
        assert head is not None
        rows = store.events(ledger, after_seq=0, limit=1_000_000)
        header = {"ledger": ledger, "head_seq": head.seq, "head_hash": head.hash.hex()}
        return header, rows
    finally:
        store.close()


def export(tally: TallyRunner, db: str, out: Path, ledger: str = LEDGER) -> Run:
    return tally("export", "--db", db, "--ledger", ledger, "--out", str(out))


def test_export_round_trip(
    ledger_db: str, tally: TallyRunner, tally_audit: TallyRunner, tmp_path: Path
) -> None:
    out = tmp_path / "shop.jsonl"
    run = export(tally, ledger_db, out)
    assert run.returncode == 0, run.describe()
    assert f"exported ledger {LEDGER}: {EVENTS} events" in run.stderr

    header, rows = stored_log(ledger_db)
    lines = out.read_bytes().split(b"\n")
    assert lines[-1] == b""  # every line ends with a newline, the last one too
    assert json.loads(lines[0]) == header
    assert list(json.loads(lines[0])) == ["ledger", "head_seq", "head_hash"]
    events = [json.loads(line) for line in lines[1:-1]]
    assert [list(event) for event in events] == [["seq", "body", "hash"]] * EVENTS
    assert [(e["seq"], e["body"].encode("utf-8"), bytes.fromhex(e["hash"])) for e in events] == [
        (row.seq, row.body, row.hash) for row in rows
    ]
    assert "café" in events[0]["body"]  # UTF-8 text, not \u escapes inside the body

    audited = tally_audit(str(out))
    assert audited.returncode == 0, audited.describe()
    assert audited.stdout == f"ok {LEDGER}: {EVENTS} events, head {header['head_hash']}\n"
    verified = tally("verify", "--db", ledger_db, "--ledger", LEDGER, "--json")
    assert verified.json()["head_hash"] == header["head_hash"]
    narrowed = tally_audit(str(out), "--ledger", LEDGER)
    assert narrowed.returncode == 0, narrowed.describe()


def test_export_json_summary_and_stdout(ledger_db: str, tally: TallyRunner, tmp_path: Path) -> None:
    out = tmp_path / "shop.jsonl"
    run = tally("export", "--db", ledger_db, "--ledger", LEDGER, "--out", str(out), "--json")
    assert run.returncode == 0, run.describe()
    header, _ = stored_log(ledger_db)
    assert run.json() == {
        "ledger": LEDGER,
        "events": EVENTS,
        "head_seq": EVENTS,
        "head_hash": header["head_hash"],
        "out": str(out),
    }
    to_stdout = tally("export", "--db", ledger_db, "--ledger", LEDGER, "--out=-")
    assert to_stdout.returncode == 0, to_stdout.describe()
    assert to_stdout.stdout == out.read_text(encoding="utf-8")


def test_export_of_an_unknown_ledger_fails_and_writes_nothing(
    ledger_db: str, tally: TallyRunner, tmp_path: Path
) -> None:
    out = tmp_path / "nope.jsonl"
    run = export(tally, ledger_db, out, ledger="nope")
    assert run.returncode == 1, run.describe()
    assert "no ledger 'nope'" in run.stderr
    assert list(tmp_path.glob("nope.jsonl*")) == []


def test_an_empty_ledger_exports_and_audits(
    db: str, tally: TallyRunner, tally_audit: TallyRunner, tmp_path: Path
) -> None:
    store = open_store(db)
    try:
        store.ensure_ledger("empty")
    finally:
        store.close()
    out = tmp_path / "empty.jsonl"
    assert export(tally, db, out, ledger="empty").returncode == 0
    assert json.loads(out.read_text()) == {
        "ledger": "empty",
        "head_seq": 0,
        "head_hash": "00" * 32,
    }
    audited = tally_audit(str(out))
    assert audited.returncode == 0, audited.describe()
    assert audited.stdout.startswith("ok empty: 0 events")


def test_export_reads_the_log_page_by_page(ledger_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store(ledger_db)
    limits: list[int] = []
    events = store.events

    def spy(ledger: str, *, after_seq: int, limit: int) -> list[EventRow]:
        limits.append(limit)
        return events(ledger, after_seq=after_seq, limit=limit)

    monkeypatch.setattr(store, "events", spy)
    try:
        whole = io.StringIO()
        write_export(store, LEDGER, whole)
        monkeypatch.setattr(export_module, "page_events", 2)
        limits.clear()
        paged = io.StringIO()
        write_export(store, LEDGER, paged)
    finally:
        store.close()
    assert limits == [2, 2, 2]  # 2 + 2 + 1 events
    assert paged.getvalue() == whole.getvalue()


def test_the_export_is_a_snapshot_at_its_head_while_a_writer_appends(
    ledger_db: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Events committed after the export read the head are left out: no false alarm."""
    engine = open_engine(ledger_db)
    store = open_store(ledger_db)
    events = store.events
    appended: list[int] = []

    def append_then_read(ledger: str, *, after_seq: int, limit: int) -> list[EventRow]:
        if not appended:
            committed = engine.execute(LEDGER, envelope("late", usd("bob", 1)))
            appended.append(committed.event.seq)
        return events(ledger, after_seq=after_seq, limit=limit)

    monkeypatch.setattr(store, "events", append_then_read)
    out = tmp_path / "snapshot.jsonl"
    try:
        with out.open("w", encoding="utf-8") as stream:
            exported = write_export(store, LEDGER, stream)
    finally:
        store.close()
        engine.close()
        engine.store.close()
    assert appended == [EVENTS + 1]
    assert exported is not None
    assert exported.events == EVENTS
    (report,) = verify_export(str(out))
    assert report.ok, report.finding
    assert report.events == EVENTS


# -- a damaged export is caught ----------------------------------------------------------


@pytest.fixture
def exported(ledger_db: str, tally: TallyRunner, tmp_path: Path) -> bytes:
    out = tmp_path / "shop.jsonl"
    run = export(tally, ledger_db, out)
    assert run.returncode == 0, run.describe()
    return out.read_bytes()


def audit_bytes(data: bytes, path: Path) -> str | None:
    """The auditor's finding on an export holding `data`, None if it finds nothing."""
    path.write_bytes(data)
    try:
        (report,) = verify_export(str(path))
    except NotAnExport as error:
        return f"not an export: {error}"
    return None if report.finding is None else f"{report.finding.seq}: {report.finding.problem}"


def test_every_flipped_bit_of_an_export_is_caught(exported: bytes, tmp_path: Path) -> None:
    """Each of the file's bytes, with its lowest or its highest bit flipped, is caught."""
    path = tmp_path / "flipped.jsonl"
    assert audit_bytes(exported, path) is None
    missed = []
    for position in range(len(exported)):
        for bit in (0x01, 0x80):
            damaged = bytearray(exported)
            damaged[position] ^= bit
            if audit_bytes(bytes(damaged), path) is None:
                missed.append((position, bit))
    assert missed == []


def lines_of(data: bytes) -> list[bytes]:
    return data.split(b"\n")[:-1]


def join(lines: list[bytes]) -> bytes:
    return b"".join(line + b"\n" for line in lines)


def test_a_flipped_byte_is_caught_by_tally_audit_at_its_seq(
    exported: bytes, tally_audit: TallyRunner, tmp_path: Path
) -> None:
    lines = lines_of(exported)
    # seq 3's body pays order-1 50.01 instead of 50.00: one byte changed, hash untouched
    assert b'amount\\":5000,' in lines[3]  # escaped inside the line's "body" string
    lines[3] = lines[3].replace(b'amount\\":5000,', b'amount\\":5001,', 1)
    path = tmp_path / "flipped.jsonl"
    path.write_bytes(join(lines))
    run = tally_audit(str(path))
    assert run.returncode == 1, run.describe()
    assert run.stdout == f"FAIL {LEDGER} at seq 3: hash does not chain: the event or one " + (
        "before it was altered\n"
    )


@pytest.mark.parametrize(
    ("damage", "where", "problem"),
    [
        (lambda ls: [ls[0], *ls[1:3], *ls[4:]], "4", "expected seq 3, found 4"),
        (lambda ls: [ls[0], ls[2], ls[1], *ls[3:]], "2", "expected seq 1, found 2"),
        (lambda ls: ls[:-1], "None", "head row says seq 5, the log ends at seq 4"),
        (lambda ls: [*ls, ls[-1]], "5", "expected seq 6, found 5"),
        (lambda ls: [*ls[:3], b"", *ls[3:]], "3", "line 4 is not JSON"),
        (lambda ls: [*ls[:3], ls[3][:-1], *ls[4:]], "3", "line 4 is not JSON"),
        (lambda ls: [*ls[:3], ls[3].upper(), *ls[4:]], "3", "line 4 has no integer seq"),
        (lambda ls: [*ls[:2], b'{"seq":2}', *ls[3:]], "2", 'line 3 is not {"seq", "body"'),
    ],
    ids=[
        "line-dropped",
        "lines-swapped",
        "last-line-dropped",
        "line-repeated",
        "blank-line",
        "line-cut-short",
        "line-upper-cased",
        "fields-missing",
    ],
)
def test_damaged_lines_are_caught(
    exported: bytes, tmp_path: Path, damage: Any, where: str, problem: str
) -> None:
    finding = audit_bytes(join(damage(lines_of(exported))), tmp_path / "damaged.jsonl")
    assert finding is not None
    assert finding.startswith(f"{where}: {problem}"), finding


@pytest.mark.parametrize(
    "first_line",
    [b"", b"not json", b"[]", b'{"ledger":"shop","head_seq":5}', b'{"seq":1,"body":"","hash":""}'],
    ids=["empty", "text", "array", "no-head-hash", "an-event"],
)
def test_a_file_without_the_head_line_is_not_an_export(
    first_line: bytes, tally_audit: TallyRunner, tmp_path: Path
) -> None:
    path = tmp_path / "odd.jsonl"
    path.write_bytes(first_line + b"\n")
    run = tally_audit(str(path))
    assert run.returncode == 1, run.describe()
    assert run.stdout.startswith(f"FAIL {path}: neither a tally SQLite file nor a tally export")


def test_tally_audit_tells_the_format_by_content_not_name(
    ledger_db: str, exported: bytes, tally_audit: TallyRunner, tmp_path: Path
) -> None:
    disguised = tmp_path / "export.db"
    disguised.write_bytes(exported)
    assert tally_audit(str(disguised)).stdout.startswith(f"ok {LEDGER}: {EVENTS} events")
    if not rawdb.is_postgres(ledger_db):
        named = tmp_path / "ledger.jsonl"
        named.write_bytes(Path(ledger_db).read_bytes())
        assert sqlite3.connect(named).execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert tally_audit(str(named)).stdout.startswith(f"ok {LEDGER}: {EVENTS} events")
    missing = tally_audit(str(tmp_path / "missing.jsonl"))
    assert missing.returncode == 2, missing.describe()
    assert "cannot read" in missing.stderr


def test_auditing_another_ledger_than_the_export_holds_fails(
    exported: bytes, tally_audit: TallyRunner, tmp_path: Path
) -> None:
    path = tmp_path / "shop.jsonl"
    path.write_bytes(exported)
    run = tally_audit(str(path), "--ledger", "other")
    assert run.returncode == 1, run.describe()
    assert run.stdout == "FAIL other at head: the ledger has no head row\n"


# -- a tampered database, exported ----------------------------------------------------------


def make_body_not_utf8(raw: RawDb) -> None:
    (body,) = raw.execute(
        "SELECT body FROM events WHERE ledger = ? AND seq = 2", (LEDGER,)
    ).fetchone()
    raw.execute(
        "UPDATE events SET body = ? WHERE ledger = ? AND seq = 2",
        (bytes(body).replace(b"bob", b"b\xffb", 1), LEDGER),
    )


def test_a_body_that_is_not_utf8_is_exported_as_hex_and_caught(
    ledger_db: str, tally: TallyRunner, tally_audit: TallyRunner, tmp_path: Path
) -> None:
    rawdb.tamper(ledger_db, make_body_not_utf8)
    out = tmp_path / "shop.jsonl"
    run = export(tally, ledger_db, out)
    assert run.returncode == 0, run.describe()
    second = json.loads(lines_of(out.read_bytes())[2])
    assert set(second) == {"seq", "body_hex", "hash"}
    assert b"b\xffb" in bytes.fromhex(second["body_hex"])
    audited = tally_audit(str(out))
    assert audited.returncode == 1, audited.describe()
    assert audited.stdout.startswith(f"FAIL {LEDGER} at seq 2: hash does not chain")

"""`tally report`, each run a process of its own: the finance report as JSON and as tables, its
exit status (0; 1 when a trial balance is not zero or there is no such ledger; 2 a usage
error; 3 a ledger whose entries are broken), on both stores.

The ledger is test_reports.py's script, written in-process at timestamps the test sets, so
the command line's `--since` and `--until` are plain literals here."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

import rawdb
from conftest import TallyRunner
from tally.bootstrap import open_engine
from tally.engine import writer as writer_module
from test_cli import Cli
from test_reports import (
    EVENTS,
    LEDGER,
    START_US,
    Clock,
    Written,
    at,
    expected_report,
    write_ledger,
)


@pytest.fixture
def cli(tally: TallyRunner, db: str) -> Cli:
    return Cli(tally, db)


@pytest.fixture
def written(db: str, monkeypatch: pytest.MonkeyPatch) -> tuple[Written, ...]:
    """test_reports.py's ledger in `db`, written with the writer's clock set by the test."""
    clock = Clock(START_US)
    monkeypatch.setattr(writer_module, "time", clock)
    engine = open_engine(db)
    try:
        return write_ledger(engine, clock)
    finally:
        engine.close()
        engine.store.close()


PERIOD = ("--since", "2026-11-01T00:00:05Z", "--until", "2026-11-01T00:00:10Z")
_TITLE = re.compile(r"^\s*([A-Z]{3}): (accounts|activity)\s*$")


def tables_in(text: str) -> dict[str, list[list[str]]]:
    """The body rows of each table rich printed, by title ("USD: accounts")."""
    tables: dict[str, list[list[str]]] = {}
    title = None
    for line in text.splitlines():
        found = _TITLE.match(line)
        if found:
            title = f"{found[1]}: {found[2]}"
            tables[title] = []
        elif line.startswith("│") and title is not None:
            tables[title].append([cell.strip() for cell in line.strip()[1:-1].split("│")])
    return tables


def expected_tables(report: dict[str, Any]) -> dict[str, list[list[str]]]:
    """What the tables of `report` (a JSON report) show, row by row."""
    tables: dict[str, list[list[str]]] = {}
    for part in report["currencies"]:
        currency = part["currency"]
        tables[f"{currency}: accounts"] = [
            [
                line["kind"],
                line["owner"] or "(all)",
                str(line["accounts"]),
                *(line[column] for column in ("opening", "debits", "credits", "closing")),
            ]
            for line in part["accounts"]
        ]
        tables[f"{currency}: activity"] = [
            [
                kind["event_type"] if index == 0 else "",
                str(kind["events"]) if index == 0 else "",
                movement["kind"],
                movement["debits"],
                movement["credits"],
            ]
            for kind in part["activity"]
            for index, movement in enumerate(kind["movements"])
        ]
    return tables


# -- the report -----------------------------------------------------------------------------


def test_the_json_report_of_the_whole_log(cli: Cli, written: tuple[Written, ...]) -> None:
    report = cli.ok("report")
    assert report == expected_report(written, first_seq=1, last_seq=EVENTS)
    (usd,) = [part for part in report["currencies"] if part["currency"] == "USD"]
    assert (usd["trial_balance"], usd["balanced"]) == ("0.00", True)
    assert usd["accounts"][0] == {
        "kind": "wallet",
        "owner": None,
        "accounts": 2,
        "opening": "0.00",
        "debits": "104.00",
        "credits": "205.50",
        "closing": "101.50",
    }


def test_the_json_report_of_a_period(cli: Cli, written: tuple[Written, ...]) -> None:
    report = cli.ok("report", *PERIOD)
    assert (report["from"], report["to"], report["first_seq"], report["last_seq"]) == (
        "2026-11-01T00:00:05.000000Z",
        "2026-11-01T00:00:10.000000Z",
        5,
        9,
    )
    assert report == expected_report(
        written, first_seq=5, last_seq=9, since_us=at(5), until_us=at(10)
    )
    wallets = report["currencies"][0]["accounts"][0]
    assert [wallets[c] for c in ("opening", "debits", "credits", "closing")] == [
        "115.00",
        "52.00",
        "42.50",
        "105.50",
    ]
    # bounds in another zone, between events: the same seqs, the bounds shown in UTC
    shifted = cli.ok(
        "report", "--since", "2026-11-01T01:00:04.5+01:00", "--until", "2026-10-31T19:00:09.5-05:00"
    )
    assert (shifted["from"], shifted["to"], shifted["first_seq"], shifted["last_seq"]) == (
        "2026-11-01T00:00:04.500000Z",
        "2026-11-01T00:00:09.500000Z",
        5,
        9,
    )
    assert shifted["currencies"] == report["currencies"]


def test_an_empty_period(cli: Cli, written: tuple[Written, ...]) -> None:
    report = cli.ok("report", "--since", "2026-11-02T00:00:00Z")
    assert (report["first_seq"], report["last_seq"]) == (EVENTS + 1, EVENTS)
    assert report == expected_report(
        written, first_seq=EVENTS + 1, last_seq=EVENTS, since_us=at(86_400)
    )
    for part in report["currencies"]:
        assert part["activity"] == []
        assert all(line["opening"] == line["closing"] for line in part["accounts"])


def test_the_tables(cli: Cli, written: tuple[Written, ...]) -> None:
    shown = cli.run("report", as_json=False)
    assert shown.returncode == 0, shown.describe()
    lines = shown.stdout.splitlines()
    assert lines[0] == f"ledger {LEDGER}, the start to now: seq 1 to {EVENTS}"
    # each currency's tables, then its trial balance
    assert [line for line in lines if "trial balance" in line] == [
        "JPY trial balance 0 (balanced)",
        "USD trial balance 0.00 (balanced)",
    ]
    assert lines[-1] == "USD trial balance 0.00 (balanced)"
    tables = tables_in(shown.stdout)
    assert tables == expected_tables(expected_report(written, first_seq=1, last_seq=EVENTS))
    assert tables["USD: accounts"][0] == [
        "wallet",
        "(all)",
        "2",
        "0.00",
        "104.00",
        "205.50",
        "101.50",
    ]
    assert tables["USD: activity"][-2:] == [
        ["transfer", "2", "revenue", "0.00", "3.00"],
        ["", "", "wallet", "11.00", "8.00"],
    ]

    period = cli.run("report", *PERIOD, as_json=False)
    assert period.returncode == 0, period.describe()
    assert period.stdout.splitlines()[0] == (
        f"ledger {LEDGER}, 2026-11-01T00:00:05.000000Z to 2026-11-01T00:00:10.000000Z: seq 5 to 9"
    )
    assert tables_in(period.stdout) == expected_tables(
        expected_report(written, first_seq=5, last_seq=9)
    )
    assert period.stdout.splitlines()[-1] == "USD trial balance 0.00 (balanced)"


# -- exit 1 ---------------------------------------------------------------------------------


def test_a_report_that_does_not_balance_exits_1(
    cli: Cli, db: str, written: tuple[Written, ...]
) -> None:
    with rawdb.connect(db) as raw:
        changed = raw.execute(
            "UPDATE entries SET amount = amount + 1 "
            "WHERE ledger = ? AND account = 'wallet:alice:USD' AND seq = 1",
            (LEDGER,),
        )
        assert changed.rowcount == 1
    run = cli.run("report")
    assert run.returncode == 1, run.describe()
    report = run.json()
    assert [(p["currency"], p["trial_balance"], p["balanced"]) for p in report["currencies"]] == [
        ("JPY", "0", True),
        ("USD", "0.01", False),
    ]
    shown = cli.run("report", as_json=False)
    assert shown.returncode == 1, shown.describe()
    assert [line for line in shown.stdout.splitlines() if "trial balance" in line] == [
        "JPY trial balance 0 (balanced)",
        "USD trial balance 0.01 (NOT BALANCED: run tally verify)",
    ]


def test_an_unknown_ledger_exits_1(
    tally: TallyRunner, db: str, written: tuple[Written, ...]
) -> None:
    nothing = Cli(tally, db, "nothing")
    assert nothing.refused("report") == {
        "error": "ledger_unknown",
        "field": "ledger",
        "detail": f"no ledger 'nothing' in {db}",
    }
    shown = nothing.run("report", as_json=False)
    assert (shown.returncode, shown.stdout) == (1, "")
    assert f"refused ledger_unknown: no ledger 'nothing' in {db} (ledger)" in " ".join(
        shown.stderr.split()
    )


def test_a_database_not_there_is_not_created(tally: TallyRunner, tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    refusal = Cli(tally, str(missing)).refused("report")
    assert refusal["error"] == "ledger_unknown"
    assert not missing.exists()


def test_a_broken_entry_exits_3_on_sqlite(
    tally: TallyRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = str(tmp_path / "broken.db")
    clock = Clock(START_US)
    monkeypatch.setattr(writer_module, "time", clock)
    engine = open_engine(db)
    try:
        write_ledger(engine, clock)
    finally:
        engine.close()
        engine.store.close()
    with rawdb.connect(db) as raw:
        raw.execute(
            "UPDATE entries SET amount = amount || 'x' WHERE account = 'wallet:bob:USD' AND seq = 2"
        )
    run = Cli(tally, db).run("report")
    assert (run.returncode, run.stdout) == (3, ""), run.describe()
    assert "ledger broken shop: an entry holds a value that is not an integer" in " ".join(
        run.stderr.split()
    )


# -- exit 2 ---------------------------------------------------------------------------------

USAGE = {
    "since-not-a-timestamp": (("--since", "yesterday"), "--since/--until: an RFC 3339"),
    "until-without-a-zone": (("--until", "2026-11-01T00:00:00"), "--since/--until: an RFC 3339"),
    "since-past-year-9999": (
        ("--since", "9999-12-31T23:59:59-14:00"),
        "--since/--until: must fall in years 1 to 9999",
    ),
    "since-after-until": (
        ("--since", "2026-11-02T00:00:00Z", "--until", "2026-11-01T00:00:00Z"),
        "--since must come before --until",
    ),
    "since-equal-to-until": (
        ("--since", "2026-11-01T00:00:00Z", "--until", "2026-11-01T01:00:00+01:00"),
        "--since must come before --until",
    ),
}


@pytest.mark.parametrize(("options", "says"), USAGE.values(), ids=USAGE)
def test_usage_errors_exit_2(
    tally: TallyRunner, tmp_path: Path, options: tuple[str, ...], says: str
) -> None:
    db = tmp_path / "ledger.db"
    run = Cli(tally, str(db)).run("report", *options)
    assert (run.returncode, run.stdout) == (2, ""), run.describe()
    assert f"usage {says}" in " ".join(run.stderr.split())
    assert not db.exists()

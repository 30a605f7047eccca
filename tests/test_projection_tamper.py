"""A projection value stored as another type than its column's (SQLite: columns take any
type; PostgreSQL's are typed, so these are SQLite's alone).

`tally verify` reports every such value as a projection that differs from a replay (exit 1),
whatever the column, and `tally replay` rewrites it from the log (exit 0), after which verify
passes: the log is the source of truth, and a tampered projection never stops its repair.

The reads over such a value (statement, balance, order, transaction) say the ledger is broken
(CLI exit 3, HTTP 500), never crash nor show a figure; a transaction's lines are checked
against its event's postings, for their values too, on both stores (the last test).
"""

from __future__ import annotations

from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient
from structlog.testing import capture_logs

import rawdb
from conftest import Run, TallyRunner
from rawdb import RawDb
from tally import views
from tally.api_keys import Scope
from tally.bootstrap import open_engine
from tally.domain.rejections import InvariantViolated
from tally.http.app import create_app
from tally.http.compose import open_services
from test_tamper import EVENTS, LEDGER, Tamper, build_ledger, snapshot, tamper

PROJECTION_TABLES = ("accounts", "entries", "orders", "idempotency_keys")

# One row of each projection table, by its key; and the name verify gives the table.
ROW_OF = {
    "accounts": "account = 'wallet:alice:USD'",
    "entries": "account = 'wallet:alice:USD' AND seq = 3 AND idx = 0",  # pays order-1
    "orders": "order_id = 'order-1'",
    "idempotency_keys": "idempotency_key = 'e1'",
}
REPORTED_AS = {"idempotency_keys": "keys"}

TEXT_COLUMNS = {
    "accounts": ("account", "kind", "owner", "currency"),
    "entries": ("account", "order_id"),
    "orders": ("order_id", "expense_id", "user_id", "currency", "merchant_id"),
    "idempotency_keys": ("idempotency_key", "command_digest"),
}
INTEGER_COLUMNS = {
    "accounts": (),
    "entries": ("seq", "idx", "amount", "balance_after"),
    "orders": ("paid", "refunded"),
    "idempotency_keys": ("seq",),
}


def _type_edits() -> dict[str, tuple[str, str, str]]:
    """Test id -> (table, column, its new value as SQL): every column as a BLOB of its text,
    every integer column as text too, and each seq as a number that is no seq (beyond the
    head: were it taken for one, replay would refuse to run over it)."""
    edits = {}
    for table, columns in TEXT_COLUMNS.items():
        for column in columns + INTEGER_COLUMNS[table]:
            edits[f"{table}.{column}-blob"] = (table, column, f"CAST({column} AS BLOB)")
        for column in INTEGER_COLUMNS[table]:
            edits[f"{table}.{column}-text"] = (table, column, f"{column} || 'x'")
    for table in ("entries", "idempotency_keys"):
        edits[f"{table}.seq-real"] = (table, "seq", f"seq + {EVENTS}.5")
        edits[f"{table}.seq-blob-beyond-head"] = (table, "seq", f"CAST(seq + {EVENTS} AS BLOB)")
    return edits


TYPE_EDITS = _type_edits()


def store_as(table: str, column: str, value: str) -> Tamper:
    """The row `ROW_OF[table]`'s `column` set to the SQL expression `value`."""

    def edit(db: RawDb) -> None:
        changed = db.execute(
            f"UPDATE {table} SET {column} = {value} WHERE ledger = ? AND {ROW_OF[table]}",
            (LEDGER,),
        ).rowcount
        assert changed == 1

    return edit


Rows = dict[str, list[tuple[object, ...]]]


def projection_rows(db: str) -> Rows:
    rows = snapshot(db)
    return {table: rows[table] for table in PROJECTION_TABLES}


def typed_ledger(tmp_path: Path, table: str, column: str, value: str) -> tuple[str, Rows]:
    """A built ledger whose row `ROW_OF[table]` holds `value` in `column`; and its projection
    rows from before."""
    db = str(tmp_path / "typed.db")
    build_ledger(db)
    honest = projection_rows(db)
    tamper(db, store_as(table, column, value))
    return db, honest


TYPE_CASES = pytest.mark.parametrize(
    ("table", "column", "value"), list(TYPE_EDITS.values()), ids=list(TYPE_EDITS)
)


@TYPE_CASES
def test_a_projection_value_of_another_type_is_a_finding(
    tmp_path: Path, tally: TallyRunner, table: str, column: str, value: str
) -> None:
    db, _ = typed_ledger(tmp_path, table, column, value)
    run = tally("verify", "--db", db, "--ledger", LEDGER)
    assert run.returncode == 1, run.describe()
    assert f"projection {REPORTED_AS.get(table, table)} differs from a replay" in run.stderr
    assert "Traceback" not in run.stderr
    run = tally("verify", "--db", db, "--ledger", LEDGER, "--json")
    assert run.returncode == 1, run.describe()
    report = run.json()
    assert (report["ok"], report["problem"], report["first_bad_seq"]) == (False, None, None)
    reported = [difference["table"] for difference in report["projection_differences"]]
    assert REPORTED_AS.get(table, table) in reported


@TYPE_CASES
def test_replay_rewrites_a_projection_value_of_another_type(
    tmp_path: Path, tally: TallyRunner, table: str, column: str, value: str
) -> None:
    db, honest = typed_ledger(tmp_path, table, column, value)
    replay = tally("replay", "--db", db, "--ledger", LEDGER)
    assert replay.returncode == 0, replay.describe()
    assert f"replayed ledger {LEDGER}: {EVENTS} events" in replay.stdout
    verified = tally("verify", "--db", db, "--ledger", LEDGER)
    assert verified.returncode == 0, verified.describe()
    assert projection_rows(db) == honest


def test_an_account_kind_stored_as_a_blob_hides_the_balance_until_replay(
    tmp_path: Path, tally: TallyRunner
) -> None:
    """`kind = ?` finds no BLOB: Alice's balance reads lose her USD wallet. verify says what
    the columns hold; replay gives the wallet back."""
    db = str(tmp_path / "kind.db")
    build_ledger(db)

    def balances() -> list[tuple[str, str]]:
        run = tally("balance", "alice", "--db", db, "--ledger", LEDGER, "--json")
        assert run.returncode == 0, run.describe()
        return [(line["currency"], line["balance"]) for line in run.json()["balances"]]

    assert balances() == [("USD", "145.00")]
    tamper(db, store_as("accounts", "kind", "CAST(kind AS BLOB)"))
    assert balances() == []

    run = tally("verify", "--db", db, "--ledger", LEDGER)
    assert run.returncode == 1, run.describe()
    said = " ".join(run.stderr.split())
    assert "projection accounts differs from a replay" in said
    assert "wallet:alice:USD (columns say b'wallet':alice:USD)" in said

    replay = tally("replay", "--db", db, "--ledger", LEDGER)
    assert replay.returncode == 0, replay.describe()
    assert balances() == [("USD", "145.00")]
    assert tally("verify", "--db", db, "--ledger", LEDGER).returncode == 0


def test_verify_json_writes_a_blob_in_a_differing_row_as_python_writes_it(
    tmp_path: Path, tally: TallyRunner
) -> None:
    """JSON has no bytes: the found row carries the BLOB as text, `b'-5000'`."""
    db, _ = typed_ledger(tmp_path, "entries", "amount", "CAST(amount AS BLOB)")
    run = tally("verify", "--db", db, "--ledger", LEDGER, "--json")
    assert run.returncode == 1, run.describe()
    (difference,) = run.json()["projection_differences"]
    assert difference == {
        "table": "entries",
        "expected": [["wallet:alice:USD", 3, 0, -5000, 15000, "order-1"]],
        "found": [["wallet:alice:USD", 3, 0, "b'-5000'", 15000, "order-1"]],
    }


def test_differing_rows_of_mixed_types_are_a_finding_not_a_crash(
    tmp_path: Path, tally: TallyRunner
) -> None:
    """Two of Alice's lines differ, one by a seq stored as text: the rows verify names are
    sorted (text and integers do not compare in Python) without a TypeError."""
    db = str(tmp_path / "mixed.db")
    build_ledger(db)
    honest = projection_rows(db)

    def edit(raw: RawDb) -> None:
        store_as("entries", "seq", "'x'")(raw)
        raw.execute(
            "UPDATE entries SET balance_after = balance_after + 1 "
            "WHERE ledger = ? AND account = 'wallet:alice:USD' AND seq = 5",
            (LEDGER,),
        )

    tamper(db, edit)
    text = tally("verify", "--db", db, "--ledger", LEDGER)
    assert text.returncode == 1, text.describe()
    assert "Traceback" not in text.stderr
    assert "projection entries differs from a replay" in text.stderr
    run = tally("verify", "--db", db, "--ledger", LEDGER, "--json")
    assert run.returncode == 1, run.describe()
    differences = {d["table"]: d for d in run.json()["projection_differences"]}
    assert [row[1] for row in differences["entries"]["found"]] == [5, "x"]
    assert tally("replay", "--db", db, "--ledger", LEDGER).returncode == 0
    assert projection_rows(db) == honest


# -- reads over a value of another type: the ledger is broken, never a crash nor a figure --
# A CLI read exits 3 ("ledger broken ... run `tally verify`"), as over a line whose event is
# gone; the HTTP read answers as it does there, with a 500 problem.


def _cases(edits: dict[str, tuple[str, str, str]]) -> pytest.MarkDecorator:
    return pytest.mark.parametrize(
        ("table", "column", "value"), list(edits.values()), ids=list(edits)
    )


def _said(run: Run) -> str:
    return " ".join(run.stderr.split())  # rich wraps long lines


def assert_broken(run: Run) -> None:
    assert run.returncode == 3, run.describe()
    assert "ledger broken" in _said(run), run.describe()
    assert "run `tally verify`" in _said(run), run.describe()
    assert "Traceback" not in run.stderr
    assert run.stdout == ""


def http_reads(db: str, *paths: str) -> tuple[list[httpx.Response], list[MutableMapping[str, Any]]]:
    """The answers of a server on `db` to GETs of `paths`, and what it logged meanwhile."""
    services = open_services(db, key_cache_ttl_s=3600)
    secret = services.keys.create(LEDGER, frozenset({Scope.READ})).secret
    headers = {"Authorization": f"Bearer {secret}"}
    with (
        capture_logs() as logged,
        TestClient(create_app(services), raise_server_exceptions=False) as client,
    ):
        answers = [client.get(path, headers=headers) for path in paths]
    return answers, logged


def assert_broken_answer(answer: httpx.Response, logged: list[MutableMapping[str, Any]]) -> None:
    """What a read over a line whose event is gone answers (tests/test_postgres_loop_reads.py):
    a 500 problem that shows nothing of the ledger; the log says the ledger is broken."""
    assert answer.status_code == 500, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["code"] == "internal_error"
    assert [entry["error"].split("(")[0] for entry in logged if "error" in entry] == [
        "InvariantViolated"
    ]


# Alice's line paying order-1 (seq 3, index 0): every column her statement shows, as a BLOB,
# and as text or a real where an integer belongs (an INTEGER column keeps a real that is no
# whole number as a real; a TEXT column turns numbers into text).
# Its account as a BLOB is not among them: `account = ?` never finds it, and the statement
# goes without the line, as balances go without an account whose kind is a BLOB (above);
# verify names it and replay gives it back.
STATEMENT_EDITS = {
    case: edit for case, edit in TYPE_EDITS.items() if edit[0] == "entries" and edit[1] != "account"
} | {
    f"entries.{column}-real": ("entries", column, f"{column} + 0.5")
    for column in ("idx", "amount", "balance_after")
}


@_cases(STATEMENT_EDITS)
def test_a_statement_over_a_line_of_another_type_says_the_ledger_is_broken(
    tmp_path: Path, tally: TallyRunner, table: str, column: str, value: str
) -> None:
    db, _ = typed_ledger(tmp_path, table, column, value)
    run = tally("statement", "alice", "--currency", "USD", "--db", db, "--ledger", LEDGER)
    assert_broken(run)
    assert "holds a value of another type than its column's" in _said(run)
    bob = tally("statement", "bob", "--currency", "JPY", "--db", db, "--ledger", LEDGER)
    assert bob.returncode == 0, bob.describe()  # bob's lines are as written


def test_an_http_statement_over_a_line_of_another_type_is_a_broken_ledger(tmp_path: Path) -> None:
    """A BLOB (which SQLite's JSON refuses) and text (which the page's decoder refuses): the
    server logs a broken ledger, not a database or decoding error; bob's page is as written."""
    for column, value in (("amount", "CAST(amount AS BLOB)"), ("seq", "seq || 'x'")):
        (tmp_path / column).mkdir()
        db, _ = typed_ledger(tmp_path / column, "entries", column, value)
        (alice, bob), logged = http_reads(
            db, "/v1/users/alice/statement?currency=USD", "/v1/users/bob/statement?currency=JPY"
        )
        assert_broken_answer(alice, logged)
        assert bob.status_code == 200, bob.text


ALICE_LAST_LINE = "account = 'wallet:alice:USD' AND seq = 7 AND idx = 1"  # her balance


def edit_row(table: str, where: str, column: str, value: str) -> Tamper:
    def edit(db: RawDb) -> None:
        changed = db.execute(
            f"UPDATE {table} SET {column} = {value} WHERE ledger = ? AND {where}", (LEDGER,)
        ).rowcount
        assert changed == 1

    return edit


# Her balance is her last line's balance_after: that line's balance_after, seq and index of
# another type; and a seq of another type on an earlier line, which sorts after every integer
# (text, a BLOB) or beyond her last (a real), so that line would pass for her last.
BALANCE_EDITS = {
    **{
        f"last-line.{column}-{kind}": ("entries", ALICE_LAST_LINE, column, value)
        for column in ("seq", "idx", "balance_after")
        for kind, value in (
            ("blob", f"CAST({column} AS BLOB)"),
            ("text", f"{column} || 'x'"),
            ("real", f"{column} + 0.5"),
        )
    },
    **{
        f"earlier-line.seq-{kind}": ("entries", ROW_OF["entries"], "seq", value)
        for kind, value in (
            ("blob", "CAST(seq AS BLOB)"),
            ("text", "seq || 'x'"),
            ("real", f"seq + {EVENTS}.5"),
        )
    },
    "account-blob": ("accounts", ROW_OF["accounts"], "account", "CAST(account AS BLOB)"),
}


@pytest.mark.parametrize(
    ("table", "where", "column", "value"), list(BALANCE_EDITS.values()), ids=list(BALANCE_EDITS)
)
def test_a_balance_over_a_value_of_another_type_says_the_ledger_is_broken(
    tmp_path: Path, tally: TallyRunner, table: str, where: str, column: str, value: str
) -> None:
    """Never another line's balance_after (150.00, after seq 3) shown as hers (145.00)."""
    db = str(tmp_path / "typed.db")
    build_ledger(db)
    tamper(db, edit_row(table, where, column, value))
    run = tally("balance", "alice", "--db", db, "--ledger", LEDGER, "--json")
    assert_broken(run)
    assert "wallet:alice:USD" in _said(run)
    assert "has no integer balance" in _said(run)
    bob = tally("balance", "bob", "--db", db, "--ledger", LEDGER, "--json")
    assert bob.returncode == 0, bob.describe()
    assert bob.json()["balances"] == [{"currency": "JPY", "balance": "4000"}]


def test_http_balances_over_a_seq_of_another_type_are_a_broken_ledger(tmp_path: Path) -> None:
    """A seq stored as text: Alice's line at seq 3 would pass for her last (150.00)."""
    db, _ = typed_ledger(tmp_path, "entries", "seq", "seq || 'x'")
    (alice, bob), logged = http_reads(db, "/v1/users/alice/balances", "/v1/users/bob/balances")
    assert_broken_answer(alice, logged)
    assert bob.json() == {"user_id": "bob", "balances": [{"currency": "JPY", "balance": "4000"}]}


# Order-1's row: every column its view shows, as a BLOB, and its amounts as text or a real.
# Its order_id as a BLOB is not among them: `order_id = ?` never finds it (no such order),
# as balances go without an account whose kind is a BLOB (above).
ORDER_EDITS = {
    case: edit for case, edit in TYPE_EDITS.items() if edit[0] == "orders" and edit[1] != "order_id"
} | {
    f"orders.{column}-real": ("orders", column, f"{column} + 0.5")
    for column in ("paid", "refunded")
}


@_cases(ORDER_EDITS)
def test_an_order_over_a_value_of_another_type_says_the_ledger_is_broken(
    tmp_path: Path, tally: TallyRunner, table: str, column: str, value: str
) -> None:
    """Never a real paid shown as "5000..5", a BLOB user id as base64, nor a BLOB currency
    refused as unknown (exit 1, as if the command were wrong)."""
    db, _ = typed_ledger(tmp_path, table, column, value)
    run = tally("order", "order-1", "--db", db, "--ledger", LEDGER, "--json")
    assert_broken(run)
    assert f"order 'order-1': its {column} holds a value of another type" in _said(run)
    other = tally("order", "order-2", "--db", db, "--ledger", LEDGER, "--json")
    assert other.returncode == 0, other.describe()
    assert other.json()["paid"] == "35.00"


def test_an_http_order_over_an_amount_of_another_type_is_a_broken_ledger(tmp_path: Path) -> None:
    """A real `paid` (5000.5): formatted as a whole number of cents it read "5000..5"."""
    db, _ = typed_ledger(tmp_path, "orders", "paid", "paid + 0.5")
    (order_1, order_2), logged = http_reads(db, "/v1/orders/order-1", "/v1/orders/order-2")
    assert_broken_answer(order_1, logged)
    assert order_2.json()["paid"] == "35.00"


# -- a transaction read back: its lines must be its event's postings ------------------------
def transaction_id_at(db: str, seq: int) -> str:
    with rawdb.connect(db) as raw:
        (transaction_id,) = raw.execute(
            "SELECT transaction_id FROM events WHERE ledger = ? AND seq = ?", (LEDGER, seq)
        ).fetchone()
    return str(transaction_id)


@_cases(STATEMENT_EDITS | {"entries.account-blob": TYPE_EDITS["entries.account-blob"]})
def test_an_http_transaction_over_a_line_of_another_type_is_a_broken_ledger(
    tmp_path: Path, table: str, column: str, value: str
) -> None:
    """Alice's expense (seq 3, two wallet lines): a line whose seq or account the lookup
    misses showed the other line's -35.00 as the expense; an index that sorts last showed
    150.00 as the balance after; a real amount "-4999..5"; a BLOB order id as base64."""
    db, _ = typed_ledger(tmp_path, table, column, value)
    (expense, bob), logged = http_reads(
        db,
        f"/v1/transactions/{transaction_id_at(db, 3)}",
        f"/v1/transactions/{transaction_id_at(db, 4)}",
    )
    assert_broken_answer(expense, logged)
    assert bob.json()["amount"] == "-1200"


def _raise_an_amount(raw: RawDb) -> None:
    store_as("entries", "amount", "amount + 100")(raw)


def _delete_a_line(raw: RawDb) -> None:
    changed = raw.execute(
        f"DELETE FROM entries WHERE ledger = ? AND {ROW_OF['entries']}", (LEDGER,)
    ).rowcount
    assert changed == 1


@pytest.mark.parametrize("edit", [_raise_an_amount, _delete_a_line], ids=["amount", "deleted"])
def test_a_transaction_whose_lines_are_not_its_postings_is_a_broken_ledger(
    db: str, edit: Tamper
) -> None:
    """On both stores (values, not types): read through the store's thread, and over HTTP
    (PostgreSQL: on the server's loop)."""
    build_ledger(db)
    tamper(db, edit)
    expense, bob = transaction_id_at(db, 3), transaction_id_at(db, 4)
    engine = open_engine(db)
    try:
        with pytest.raises(InvariantViolated, match="entries of seq 3 are not its event's"):
            views.find_transaction(engine.store, LEDGER, expense)
        assert views.find_transaction(engine.store, LEDGER, bob) is not None
    finally:
        engine.close()
        engine.store.close()
    (answer, _), logged = http_reads(db, f"/v1/transactions/{expense}", f"/v1/transactions/{bob}")
    assert_broken_answer(answer, logged)

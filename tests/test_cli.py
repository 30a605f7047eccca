"""The `tally` command line, each run a process of its own (`python -m tally.cli`, forked:
tests/forkserver.py), on both stores."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import structlog

import rawdb
from conftest import Run, TallyRunner, subprocess_env
from rawdb import is_postgres

LEDGER = "shop"


class Cli:
    """`tally` bound to one database and ledger."""

    def __init__(self, tally: TallyRunner, db: str, ledger: str = LEDGER) -> None:
        self.tally = tally
        self.db = db
        self.ledger = ledger

    def run(self, *args: str, as_json: bool = True) -> Run:
        common = ("--db", self.db, "--ledger", self.ledger)
        return self.tally(*args, *common, *(("--json",) if as_json else ()))

    def ok(self, *args: str) -> Any:
        run = self.run(*args)
        assert run.returncode == 0, run.describe()
        return run.json()

    def refused(self, *args: str) -> dict[str, Any]:
        run = self.run(*args)
        assert run.returncode == 1, run.describe()
        error = run.json()
        assert isinstance(error, dict)
        return error


@pytest.fixture
def cli(tally: TallyRunner, db: str) -> Cli:
    return Cli(tally, db)


def ledgers_in(db: str) -> list[str]:
    with rawdb.connect(db) as raw:
        return [row[0] for row in raw.execute("SELECT name FROM ledgers ORDER BY name")]


# -- the demo ------------------------------------------------------------------------------


def test_demo_prints_alices_balances(tally: TallyRunner, db: str) -> None:
    run = tally("demo", "--db", db, "--json")
    assert run.returncode == 0, run.describe()
    out = run.json()
    entries = out["statement"]["entries"]
    assert [e["balance_after"] for e in entries] == ["200.00", "150.00", "115.00", "135.00"]
    assert [e["amount"] for e in entries] == ["200.00", "-50.00", "-35.00", "20.00"]
    assert [e["reference_order_ids"] for e in entries] == [
        [],
        ["order-1001"],
        ["order-1002"],
        ["order-1001"],
    ]
    transactions = out["transactions"]
    assert [t["event_type"] for t in transactions] == ["recharge", "expense", "refund"]
    assert [t["balance_after"] for t in transactions] == ["200.00", "115.00", "135.00"]
    assert transactions[1]["reference_order_ids"] == ["order-1001", "order-1002"]
    assert transactions[2]["refund_of"] == {
        "expense_id": transactions[1]["transaction_id"],
        "order_id": "order-1001",
    }
    assert out["verification"]["ok"] is True
    assert out["verification"]["events"] == 3


def test_demo_text_output(tally: TallyRunner, db: str) -> None:
    run = tally("demo", "--db", db)
    assert run.returncode == 0, run.describe()
    for balance in ("200.00", "150.00", "115.00", "135.00"):
        assert balance in run.stdout
    assert "verified ledger default: 3 events" in run.stdout


def test_demo_twice_is_idempotent(tally: TallyRunner, db: str) -> None:
    first = tally("demo", "--db", db, "--json")
    second = tally("demo", "--db", db, "--json")
    assert first.returncode == second.returncode == 0, second.describe()

    def ids(run: Run) -> list[str]:
        return [t["transaction_id"] for t in run.json()["transactions"]]

    assert ids(first) == ids(second)
    assert len(set(ids(first))) == 3
    assert second.json()["statement"] == first.json()["statement"]
    verified = tally("verify", "--db", db, "--json")
    assert verified.returncode == 0, verified.describe()
    assert verified.json()["events"] == 3
    balance = tally("balance", "alice", "--db", db, "--json").json()
    assert balance["balances"] == [{"currency": "USD", "balance": "135.00"}]


# -- every command -------------------------------------------------------------------------


def test_every_command_with_db_ledger_and_json(cli: Cli) -> None:
    recharged = cli.ok("recharge", "alice", "200.00", "USD", "--gateway", "paypal", "--key", "r1")
    assert recharged["event_type"] == "recharge"
    assert recharged["ledger"] == LEDGER
    assert recharged["seq"] == 1
    assert recharged["amount"] == "200.00"
    assert recharged["balance_after"] == "200.00"
    assert recharged["idempotency_key"] == "r1"
    assert recharged["metadata"] == {"payment_gateway": "paypal"}

    paid = cli.ok(
        "expense", "alice", "USD", "--order", "o-1:50.00", "--order", "o-2:35.00", "--key", "e1"
    )
    assert paid["event_type"] == "expense"
    assert paid["seq"] == 2
    assert paid["amount"] == "-85.00"
    assert paid["balance_after"] == "115.00"
    assert paid["reference_order_ids"] == ["o-1", "o-2"]
    assert [e["balance_after"] for e in paid["entries"]] == ["150.00", "115.00"]
    expense_id = paid["transaction_id"]

    refunded = cli.ok("refund", expense_id, "o-1", "20.00", "--key", "f1", "--reason", "returned")
    assert refunded["event_type"] == "refund"
    assert refunded["amount"] == "20.00"
    assert refunded["currency"] == "USD"  # taken from the expense
    assert refunded["balance_after"] == "135.00"
    assert refunded["refund_of"] == {"expense_id": expense_id, "order_id": "o-1"}

    assert cli.ok("balance", "alice") == {
        "user_id": "alice",
        "balances": [{"currency": "USD", "balance": "135.00"}],
    }

    statement = cli.ok("statement", "alice", "--currency", "USD")
    assert set(statement) == {"entries"}
    entries = statement["entries"]
    assert [e["balance_after"] for e in entries] == ["200.00", "150.00", "115.00", "135.00"]
    assert [e["seq"] for e in entries] == [1, 2, 2, 3]
    assert {e["user_id"] for e in entries} == {"alice"}

    order = cli.ok("order", "o-1")
    assert order["order_id"] == "o-1"
    assert order["expense_id"] == expense_id
    assert (order["paid"], order["refunded"], order["refundable"]) == ("50.00", "20.00", "30.00")
    assert [t["event_type"] for t in order["transactions"]] == ["expense", "refund"]
    assert [t["transaction_id"] for t in order["transactions"]] == [
        expense_id,
        refunded["transaction_id"],
    ]
    other = cli.ok("order", "o-2")
    assert (other["paid"], other["refunded"], other["refundable"]) == ("35.00", "0.00", "35.00")

    verified = cli.ok("verify")
    assert verified["ok"] is True
    assert verified["ledger"] == LEDGER
    assert verified["events"] == 3
    assert verified["first_bad_seq"] is None
    assert verified["projection_differences"] == []

    replayed = cli.ok("replay")
    assert replayed["ledger"] == LEDGER
    assert replayed["seq"] == 3
    assert replayed["head_hash"] == verified["head_hash"]
    assert cli.ok("statement", "alice", "--currency", "USD") == statement
    assert cli.ok("verify")["ok"] is True


def test_text_output_of_every_command(cli: Cli) -> None:
    def text(*args: str) -> str:
        run = cli.run(*args, as_json=False)
        assert run.returncode == 0, run.describe()
        return run.stdout

    out = text("recharge", "bob", "5000", "JPY", "--gateway", "stripe", "--key", "r1")
    assert "recharge" in out
    assert "balance after 5000" in out
    out = text("expense", "bob", "JPY", "--order", "j-1:1200", "--order", "j-2:300", "--key", "e1")
    assert "balance after 3500" in out
    expense_id = cli.ok("order", "j-1")["expense_id"]
    out = text("refund", expense_id, "j-2", "300", "--key", "f1")
    assert "balance after 3800" in out
    assert "JPY" in text("balance", "bob")
    assert "3800" in text("balance", "bob")
    assert "j-1" in text("statement", "bob", "--currency", "JPY")
    assert "refundable 0" in text("order", "j-2")
    assert "verified ledger shop: 3 events" in text("verify")
    assert "replayed ledger shop: 3 events" in text("replay")


def test_ledgers_are_separate(cli: Cli, tally: TallyRunner, db: str) -> None:
    cli.ok("recharge", "alice", "1.00", "USD", "--gateway", "paypal", "--key", "k")
    other = Cli(tally, db, ledger="other")
    assert other.refused("balance", "alice")["error"] == "ledger_unknown"
    assert (
        other.ok("recharge", "alice", "2.00", "USD", "--gateway", "paypal", "--key", "k")["seq"]
        == 1
    )
    assert cli.ok("balance", "alice")["balances"] == [{"currency": "USD", "balance": "1.00"}]
    assert other.ok("balance", "alice")["balances"] == [{"currency": "USD", "balance": "2.00"}]


def test_balance_across_currencies(cli: Cli) -> None:
    cli.ok("recharge", "carol", "12.34", "USD", "--gateway", "paypal", "--key", "a")
    cli.ok("recharge", "carol", "500", "JPY", "--gateway", "paypal", "--key", "b")
    assert cli.ok("balance", "carol")["balances"] == [
        {"currency": "JPY", "balance": "500"},
        {"currency": "USD", "balance": "12.34"},
    ]


# -- refusals --------------------------------------------------------------------------------


def test_refused_command_exits_1_with_the_rejection_code(cli: Cli) -> None:
    cli.ok("recharge", "alice", "10.00", "USD", "--gateway", "paypal", "--key", "r1")
    error = cli.refused("expense", "alice", "USD", "--order", "o-1:10.01", "--key", "e1")
    assert error["error"] == "insufficient_funds"
    assert error["field"] == "orders"
    # Nothing was written: the balance is unchanged and the log has one event.
    assert cli.ok("balance", "alice")["balances"] == [{"currency": "USD", "balance": "10.00"}]
    assert cli.ok("verify")["events"] == 1

    text = cli.run("expense", "alice", "USD", "--order", "o-1:10.01", "--key", "e1", as_json=False)
    assert text.returncode == 1, text.describe()
    assert "refused insufficient_funds" in text.stderr
    assert text.stdout == ""


# Refused by the ledger's rules (not while parsing) as the first command of a ledger
FIRST_COMMANDS_REFUSED = [
    (("expense", "alice", "USD", "--order", "o-1:1.00", "--key", "k"), "insufficient_funds"),
    (("expense", "al ice", "USD", "--order", "o-1:1.00", "--key", "k"), "identifier_invalid"),
    (("expense", "alice", "USD", "--order", "o 1:1.00", "--key", "k"), "identifier_invalid"),
    (
        ("recharge", "alice", "1.00", "USD", "--gateway", "p", "--key", ""),
        "idempotency_key_invalid",
    ),
    (("recharge", "alice", "1.00", "USD", "--gateway", "p p", "--key", "k"), "identifier_invalid"),
]


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (
            ("recharge", "alice", "1.001", "USD", "--gateway", "p", "--key", "k"),
            "amount_too_precise",
        ),
        (("recharge", "alice", "1.5", "JPY", "--gateway", "p", "--key", "k"), "amount_too_precise"),
        (
            ("recharge", "alice", "0.00", "USD", "--gateway", "p", "--key", "k"),
            "amount_not_positive",
        ),
        (("recharge", "alice", "ten", "USD", "--gateway", "p", "--key", "k"), "amount_invalid"),
        (("recharge", "alice", "1.00", "XXX", "--gateway", "p", "--key", "k"), "currency_unknown"),
        (
            ("recharge", "al:ice", "1.00", "USD", "--gateway", "p", "--key", "k"),
            "identifier_invalid",
        ),
        (("expense", "alice", "USD", "--order", "o-1", "--key", "k"), "amount_invalid"),
        (
            ("expense", "alice", "USD", "--order", "o-1:1.00", "--order", "o-1:2.00", "--key", "k"),
            "order_duplicated",
        ),
        (("refund", "txn_nope", "o-1", "1.00", "--key", "k"), "expense_unknown"),
        *FIRST_COMMANDS_REFUSED,
    ],
    ids=lambda value: value if isinstance(value, str) else " ".join(value[:2]),
)
def test_refusals(cli: Cli, args: tuple[str, ...], code: str) -> None:
    """On a database tally has not touched: the refused command creates nothing, neither
    the ledger nor (SQLite) the file."""
    assert cli.refused(*args)["error"] == code
    if not is_postgres(cli.db):
        assert not Path(cli.db).exists()
    assert cli.refused("balance", "alice")["error"] == "ledger_unknown"


def test_a_refused_first_command_leaves_no_ledger_behind(cli: Cli, tally: TallyRunner) -> None:
    """The writer creates its ledger before deciding: the command line decides a first
    command against the empty ledger before opening one. A first command accepted still
    creates the ledger."""
    other = Cli(tally, cli.db, ledger="other")
    other.ok("recharge", "alice", "1.00", "USD", "--gateway", "paypal", "--key", "r")
    for args, code in FIRST_COMMANDS_REFUSED:
        assert cli.refused(*args)["error"] == code, args
    assert ledgers_in(cli.db) == ["other"]
    assert cli.refused("verify")["problem"] == f"no ledger 'shop' in {cli.db}"
    first = cli.ok("recharge", "alice", "2.00", "USD", "--gateway", "paypal", "--key", "r")
    assert (first["seq"], first["balance_after"]) == (1, "2.00")
    assert ledgers_in(cli.db) == ["other", "shop"]


def test_reads_refuse_what_http_refuses(cli: Cli) -> None:
    """An id that is no identifier is `identifier_invalid` naming the field (HTTP's 400), a
    ledger nobody created is `ledger_unknown`: neither is an empty answer. A well-formed user
    with no activity is one."""
    for read in (("balance", "alice"), ("statement", "alice", "--currency", "USD"), ("order", "o")):
        error = cli.refused(*read)
        assert (error["error"], error["field"]) == ("ledger_unknown", "ledger"), read
        assert error["detail"] == f"no ledger 'shop' in {cli.db}"
    text = cli.run("balance", "alice", as_json=False)
    assert text.returncode == 1, text.describe()
    assert "refused ledger_unknown: no ledger 'shop'" in text.stderr
    assert text.stdout == ""
    if not is_postgres(cli.db):
        assert not Path(cli.db).exists()  # not created to find no ledger in it
    keys = cli.tally("key", "list", "--ledger", "shop", "--db", cli.db, "--json")
    assert keys.returncode == 1, keys.describe()
    assert (keys.json()["error"], keys.json()["field"]) == ("ledger_unknown", "ledger")

    cli.ok("recharge", "alice", "1.00", "USD", "--gateway", "paypal", "--key", "r")
    for read in (("balance", "bad user"), ("statement", "al:ice", "--currency", "USD")):
        error = cli.refused(*read)
        assert (error["error"], error["field"]) == ("identifier_invalid", "user_id"), read
    error = cli.refused("statement", "alice", "--currency", "XYZ")
    assert (error["error"], error["field"]) == ("currency_unknown", "currency")
    assert cli.refused("order", "o-404")["error"] == "order_unknown"
    assert cli.ok("balance", "bob") == {"user_id": "bob", "balances": []}
    assert cli.ok("statement", "bob", "--currency", "USD") == {"entries": []}
    text = cli.run("balance", "bad user", as_json=False)
    assert text.returncode == 1, text.describe()
    assert "refused identifier_invalid" in text.stderr
    assert "(user_id)" in text.stderr


def test_every_refusal_with_json_is_one_object_naming_code_and_field(
    cli: Cli, tally: TallyRunner, tmp_path: Path
) -> None:
    cli.ok("recharge", "alice", "1.00", "USD", "--gateway", "paypal", "--key", "r")
    db = ("--db", cli.db)
    out = str(tmp_path / "nope.jsonl")
    refusals = [
        (("statement", "alice", "--currency", "XYZ", *db), "currency_unknown", "currency"),
        (("export", "--out", out, "--ledger", "nope", *db), "ledger_unknown", "ledger"),
        (("export", "--out=-", "--ledger", "nope", *db), "ledger_unknown", "ledger"),
        (("ledger", "create", "Bad", *db), "ledger_invalid", "name"),
        (("key", "create", "--ledger", "nope", "--scope", "read", *db), "ledger_unknown", "ledger"),
        (("key", "create", "--ledger", "shop", "--scope", "root", *db), "scope_invalid", "scope"),
        (("key", "revoke", "key_nope", *db), "key_unknown", "key_id"),
        (("key", "list", "--ledger", "nope", *db), "ledger_unknown", "ledger"),
    ]
    for args, code, field in refusals:
        run = tally(*args, "--json")
        assert run.returncode == 1, run.describe()
        error = run.json()
        assert (error["error"], error["field"]) == (code, field), run.describe()
        assert set(error) == {"error", "field", "detail"}
        assert isinstance(error["detail"], str)
        assert error["detail"]
        assert "Traceback" not in run.stderr
        text = tally(*args)
        assert text.returncode == 1, text.describe()
        assert f"refused {code}: " in text.stderr
        assert f"({field})" in text.stderr
    assert not Path(out).exists()
    missing = str(tmp_path / "missing.db")  # refused without creating it
    exported = tally("export", "--out", out, "--db", missing, "--json")
    assert exported.json()["error"] == "ledger_unknown", exported.describe()
    scope = tally("key", "create", "--ledger", "shop", "--scope", "root", "--db", missing, "--json")
    assert scope.json()["error"] == "scope_invalid", scope.describe()
    assert not Path(missing).exists()

    # The demo's keys on this ledger, taken by another request: the demo is refused
    taken = ("recharge", "alice", "1.00", "USD", "--gateway", "x", "--key", "demo-alice-recharge")
    cli.ok(*taken)
    error = cli.refused("demo")
    assert (error["error"], error["field"]) == ("idempotency_key_reused", "idempotency_key")
    text = cli.run("demo", as_json=False)
    assert text.returncode == 1, text.describe()
    assert "refused idempotency_key_reused" in text.stderr


def test_refund_refusals(cli: Cli) -> None:
    cli.ok("recharge", "alice", "100.00", "USD", "--gateway", "paypal", "--key", "r1")
    expense_id = cli.ok("expense", "alice", "USD", "--order", "o-1:40.00", "--key", "e1")[
        "transaction_id"
    ]
    recharge_id = cli.ok("recharge", "alice", "1.00", "USD", "--gateway", "paypal", "--key", "r2")[
        "transaction_id"
    ]
    assert cli.refused("refund", expense_id, "o-1", "40.01", "--key", "f")["error"] == (
        "refund_exceeds_refundable"
    )
    assert cli.refused("refund", expense_id, "o-2", "1.00", "--key", "f")["error"] == (
        "order_unknown"
    )
    assert cli.refused("refund", recharge_id, "o-1", "1.00", "--key", "f")["error"] == (
        "expense_unknown"
    )
    cli.ok("refund", expense_id, "o-1", "30.00", "--key", "f1")
    assert cli.refused("refund", expense_id, "o-1", "10.01", "--key", "f2")["error"] == (
        "refund_exceeds_refundable"
    )
    cli.ok("refund", expense_id, "o-1", "10.00", "--key", "f2")
    assert cli.ok("order", "o-1")["refundable"] == "0.00"
    assert cli.ok("balance", "alice")["balances"] == [{"currency": "USD", "balance": "101.00"}]


def test_a_gateway_payment_is_credited_once(cli: Cli) -> None:
    args = ("recharge", "alice", "9.00", "USD", "--gateway", "stripe", "--reference", "pi_1")
    first = cli.ok(*args, "--key", "w1")
    assert first["metadata"]["gateway_reference"] == "pi_1"
    again = cli.refused(*args, "--key", "w1-redelivered")
    assert (again["error"], again["field"]) == ("payment_already_credited", "gateway_reference")
    assert cli.ok("balance", "alice")["balances"] == [{"currency": "USD", "balance": "9.00"}]


def test_a_refund_request_is_refunded_once(cli: Cli) -> None:
    cli.ok("recharge", "alice", "100.00", "USD", "--gateway", "paypal", "--key", "r1")
    expense_id = cli.ok("expense", "alice", "USD", "--order", "o-1:40.00", "--key", "e1")[
        "transaction_id"
    ]
    first = cli.ok("refund", expense_id, "o-1", "5.00", "--key", "f1", "--request", "rma-1")
    assert first["refund_of"]["refund_request_id"] == "rma-1"
    again = cli.refused(
        "refund", expense_id, "o-1", "5.00", "--key", "f1-retry", "--request", "rma-1"
    )
    assert (again["error"], again["field"]) == ("refund_already_issued", "refund_request_id")
    assert first["transaction_id"] in again["detail"]
    bad = cli.refused("refund", expense_id, "o-1", "5.00", "--key", "f2", "--request", "rma 2")
    assert (bad["error"], bad["field"]) == ("identifier_invalid", "refund_request_id")
    assert cli.ok("order", "o-1")["refunded"] == "5.00"


# -- idempotency -------------------------------------------------------------------------------


def test_same_key_same_request_returns_the_same_transaction(cli: Cli) -> None:
    args = ("recharge", "alice", "10.00", "USD", "--gateway", "paypal", "--key", "same")
    first = cli.ok(*args)
    second = cli.ok(*args)
    assert second["transaction_id"] == first["transaction_id"]
    assert second["seq"] == first["seq"] == 1
    assert second["balance_after"] == "10.00"
    text = cli.run(*args, as_json=False)
    assert text.returncode == 0, text.describe()
    assert "replayed" in text.stdout
    assert first["transaction_id"] in text.stdout
    assert cli.ok("balance", "alice")["balances"] == [{"currency": "USD", "balance": "10.00"}]
    assert cli.ok("verify")["events"] == 1


def test_same_key_same_expense_returns_the_same_transaction(cli: Cli) -> None:
    cli.ok("recharge", "alice", "10.00", "USD", "--gateway", "paypal", "--key", "r")
    args = ("expense", "alice", "USD", "--order", "a:1.00", "--order", "b:2.00", "--key", "e")
    first = cli.ok(*args)
    # Spending the rest makes the expense unaffordable now; the replay still answers it.
    cli.ok("expense", "alice", "USD", "--order", "c:7.00", "--key", "e2")
    second = cli.ok(*args)
    assert second["transaction_id"] == first["transaction_id"]
    assert second["entries"] == first["entries"]
    assert cli.ok("verify")["events"] == 3


@pytest.mark.parametrize(
    "different",
    [
        ("recharge", "alice", "10.01", "USD", "--gateway", "paypal", "--key", "same"),
        ("recharge", "bob", "10.00", "USD", "--gateway", "paypal", "--key", "same"),
        ("recharge", "alice", "10.00", "USD", "--gateway", "stripe", "--key", "same"),
        ("expense", "alice", "USD", "--order", "o-1:1.00", "--key", "same"),
    ],
    ids=["amount", "user", "gateway", "kind"],
)
def test_same_key_different_request_is_refused(cli: Cli, different: tuple[str, ...]) -> None:
    first = cli.ok("recharge", "alice", "10.00", "USD", "--gateway", "paypal", "--key", "same")
    error = cli.refused(*different)
    assert error["error"] == "idempotency_key_reused"
    assert error["field"] == "idempotency_key"
    verified = cli.ok("verify")
    assert verified["events"] == 1
    assert verified["ok"] is True
    assert cli.ok("balance", "alice")["balances"] == [{"currency": "USD", "balance": "10.00"}]
    assert cli.ok("balance", "bob")["balances"] == []
    # The original request still replays.
    again = cli.ok("recharge", "alice", "10.00", "USD", "--gateway", "paypal", "--key", "same")
    assert again["transaction_id"] == first["transaction_id"]


def test_refused_request_does_not_burn_its_key(cli: Cli) -> None:
    assert cli.refused("expense", "alice", "USD", "--order", "o:1.00", "--key", "k")["error"] == (
        "insufficient_funds"
    )
    cli.ok("recharge", "alice", "5.00", "USD", "--gateway", "paypal", "--key", "r")
    paid = cli.ok("expense", "alice", "USD", "--order", "o:1.00", "--key", "k")
    assert paid["balance_after"] == "4.00"


# -- usage and verification errors --------------------------------------------------------------


def test_usage_error_exits_2(cli: Cli) -> None:
    run = cli.run("recharge", "alice", "1.00", "USD", "--gateway", "paypal")  # no --key
    assert run.returncode == 2, run.describe()
    assert "--key" in run.stderr + run.stdout


@pytest.mark.parametrize("command", ["verify", "replay"])
def test_verify_or_replay_of_an_unknown_ledger_fails(cli: Cli, command: str) -> None:
    run = cli.run(command, as_json=False)
    assert run.returncode == 1, run.describe()
    assert "no ledger 'shop'" in run.stderr
    assert "Traceback" not in run.stderr


def test_db_may_come_from_the_environment(tally: TallyRunner, db: str, tmp_path: Path) -> None:
    """--db is optional: TALLY_DB names the database (conftest clears it for everyone else)."""
    env = subprocess_env() | {"TALLY_DB": db}
    done = subprocess.run(
        [sys.executable, "-m", "tally.cli", "demo", "--json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert list(tmp_path.glob("tally.db*")) == []  # not the default ./tally.db
    if not is_postgres(db):
        assert Path(db).exists()
    verified = tally("verify", "--db", db, "--json")
    assert verified.json()["events"] == 3


def test_verify_of_an_unknown_ledger_fails_in_json_too(tally: TallyRunner, db: str) -> None:
    assert tally("demo", "--db", db).returncode == 0
    run = tally("verify", "--db", db, "--ledger", "nope", "--json")
    assert run.returncode == 1, run.describe()
    report = run.json()
    assert report["ok"] is False
    assert report["ledger"] == "nope"
    assert "no ledger 'nope'" in report["problem"]
    assert (report["error"], report["field"]) == ("ledger_unknown", "ledger")  # a refusal's
    assert report["detail"] == report["problem"]


@pytest.mark.filterwarnings("ignore:Cyclopts application invoked without tokens")
def test_the_cli_logs_to_stderr_as_it_is_when_a_line_is_written(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After the entry point ran, log lines go to stderr, never stdout (the answer), and to
    the stderr of the moment: a writer thread logging after the stream the entry point saw
    was replaced or closed must not die of it (under pytest, tests that ran `main()` in
    process left writers of later tests hanging)."""
    from tally.cli import app as cli_app

    monkeypatch.setattr(sys, "argv", ["tally", "--help"])
    with pytest.raises(SystemExit):
        cli_app.main()
    later_out, later_err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", later_out)
    monkeypatch.setattr(sys, "stderr", later_err)
    structlog.get_logger("tally.test").warning("a line written later")
    assert "a line written later" in later_err.getvalue()
    assert later_out.getvalue() == ""


@pytest.mark.parametrize(
    "kind", ["a directory", "not SQLite", "a missing folder", "PostgreSQL not listening"]
)
def test_a_database_tally_cannot_open_exits_5_without_a_traceback(
    tally: TallyRunner, tmp_path: Path, kind: str
) -> None:
    """Not 1 ("refused or verification failed": a script would read a verdict into it)."""
    db = {
        "a directory": str(tmp_path),
        "not SQLite": str(tmp_path / "notes.db"),
        "a missing folder": str(tmp_path / "no" / "such" / "x.db"),
        "PostgreSQL not listening": "postgresql://postgres@127.0.0.1:1/postgres",
    }[kind]
    (tmp_path / "notes.db").write_text("not a database\n")
    for command in (("balance", "alice"), ("verify",)):
        run = tally(*command, "--db", db)
        assert run.returncode == 5, run.describe()
        assert "database unavailable" in run.stderr
        assert "Traceback" not in run.stderr


def test_user_values_print_as_typed_not_as_markup(cli: Cli) -> None:
    cli.ok("recharge", "alice", "1.00", "USD", "--gateway", "paypal", "--key", "r")
    order = cli.run("order", "[bold]o-1[/bold]", as_json=False)
    assert order.returncode == 1, order.describe()
    assert "no order [bold]o-1[/bold]" in " ".join(order.stderr.split())
    emoji = cli.run("order", ":smile:", as_json=False)
    assert "no order :smile:" in emoji.stderr, emoji.describe()
    for command in (("balance", "[/x]"), ("statement", "[/b]", "--currency", "USD")):
        run = cli.run(*command, as_json=False)  # no identifier: refused, not printed
        assert run.returncode == 1, run.describe()
        assert "refused identifier_invalid" in run.stderr
        assert "Traceback" not in run.stderr
        assert "MarkupError" not in run.stderr


def test_an_export_over_its_own_database_is_refused(tally: TallyRunner, tmp_path: Path) -> None:
    """A SQLite file (a PostgreSQL database is no file an export could replace)."""
    own = Cli(tally, str(tmp_path / "own.db"))
    own.ok("recharge", "alice", "1.00", "USD", "--gateway", "paypal", "--key", "r-1")
    for out in (own.db, own.db + "-wal"):
        run = tally("export", "--out", out, "--db", own.db, "--ledger", LEDGER)
        assert run.returncode == 2, run.describe()
        assert "is the ledger's own database" in run.stderr
    assert own.ok("verify")["ok"] is True


def test_an_export_to_a_place_that_cannot_be_written_is_a_usage_error(
    tally: TallyRunner, tmp_path: Path
) -> None:
    own = Cli(tally, str(tmp_path / "own.db"))
    own.ok("recharge", "alice", "1.00", "USD", "--gateway", "paypal", "--key", "r-1")
    out = str(tmp_path / "no" / "such" / "x.jsonl")
    run = tally("export", "--out", out, "--db", own.db, "--ledger", LEDGER)
    assert run.returncode == 2, run.describe()
    assert "Traceback" not in run.stderr


def test_serve_refuses_a_port_beyond_65535(tally: TallyRunner, tmp_path: Path) -> None:
    run = tally("serve", "--db", str(tmp_path / "s.db"), "--port", "84299")
    assert run.returncode == 2, run.describe()
    assert "--port must be 0 to 65535" in run.stderr


def test_logged_tracebacks_show_no_local_variables(capsys: pytest.CaptureFixture[str]) -> None:
    """A request's locals (a sign-in form's key, a bearer secret being checked) must never
    reach the log through a traceback."""
    from tally.cli import app as cli_app

    before = structlog.get_config()
    try:
        cli_app.configure_logging()

        def check(secret: str) -> None:
            raise ValueError("bad")

        secret = "-".join(("tally_key", "do", "not", "log", "me"))  # not in any source line
        try:
            check(secret)
        except ValueError:
            structlog.get_logger("test").exception("failed")
        logged = capsys.readouterr().err
        assert "ValueError" in logged
        assert secret not in logged
    finally:
        structlog.configure(**before)

"""`tally hold`, `capture`, `release` and `hold-show`, each run a process of its own, on both
stores."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from conftest import TallyRunner
from rawdb import is_postgres
from tally import views
from test_cli import LEDGER, Cli, ledgers_in


@pytest.fixture
def cli(tally: TallyRunner, db: str) -> Cli:
    return Cli(tally, db)


def balance_of(cli: Cli, user: str = "alice") -> list[dict[str, str]]:
    balances: list[dict[str, str]] = cli.ok("balance", user)["balances"]
    return balances


def rfc3339_in(seconds: float) -> str:
    moment = datetime.now(UTC) + timedelta(seconds=seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


USD_40 = [{"currency": "USD", "balance": "40.00"}]


# -- the journey ----------------------------------------------------------------------------


def test_hold_capture_refund_and_release(cli: Cli) -> None:
    cli.ok("recharge", "alice", "100.00", "USD", "--gateway", "paypal", "--key", "r1")

    held = cli.ok("hold", "alice", "60.00", "USD", "--hold-id", "auth-1", "--key", "h1")
    assert (held["event_type"], held["seq"], held["hold_id"]) == ("hold", 2, "auth-1")
    assert (held["amount"], held["currency"], held["balance_after"]) == ("-60.00", "USD", "40.00")
    assert held["idempotency_key"] == "h1"
    assert balance_of(cli) == USD_40  # the held money is out of the available balance
    shown = cli.ok("hold-show", "auth-1")
    assert shown == {
        "hold_id": "auth-1",
        "user_id": "alice",
        "currency": "USD",
        "amount": "60.00",
        "status": "open",
        "expires_at": None,
        "captured": "0.00",
        "released": "0.00",
        "reference_order_ids": [],
        "metadata": {},
        "transactions": [
            {
                "transaction_id": held["transaction_id"],
                "event_type": "hold",
                "seq": 2,
                "timestamp": held["timestamp"],
            }
        ],
    }

    captured = cli.ok(
        "capture", "auth-1", "--order", "o-1:25.00", "--order", "o-2:10.00", "--key", "c1"
    )
    assert (captured["event_type"], captured["seq"], captured["hold_id"]) == (
        "capture",
        3,
        "auth-1",
    )
    # The hold's 60.00 back, then the two orders paid from it: 25.00 of it stays back
    assert [e["amount"] for e in captured["entries"]] == ["60.00", "-25.00", "-10.00"]
    assert [e["balance_after"] for e in captured["entries"]] == ["100.00", "75.00", "65.00"]
    assert (captured["amount"], captured["balance_after"]) == ("25.00", "65.00")
    assert captured["reference_order_ids"] == ["o-1", "o-2"]
    capture_id = captured["transaction_id"]
    assert balance_of(cli) == [{"currency": "USD", "balance": "65.00"}]
    shown = cli.ok("hold-show", "auth-1")
    assert (shown["status"], shown["amount"]) == ("captured", "60.00")
    assert (shown["captured"], shown["released"]) == ("35.00", "25.00")
    assert shown["reference_order_ids"] == ["o-1", "o-2"]
    assert [(t["event_type"], t["transaction_id"]) for t in shown["transactions"]] == [
        ("hold", held["transaction_id"]),
        ("capture", capture_id),
    ]
    order = cli.ok("order", "o-1")
    assert (order["expense_id"], order["paid"], order["refundable"]) == (
        capture_id,
        "25.00",
        "25.00",
    )

    # A captured order is refunded against its capture
    refunded = cli.ok("refund", capture_id, "o-1", "5.00", "--key", "f1", "--reason", "returned")
    assert refunded["event_type"] == "refund"
    assert refunded["refund_of"] == {"expense_id": capture_id, "order_id": "o-1"}
    assert (refunded["currency"], refunded["balance_after"]) == ("USD", "70.00")
    order = cli.ok("order", "o-1")
    assert (order["refunded"], order["refundable"]) == ("5.00", "20.00")
    shown_text = cli.run("order", "o-1", as_json=False)
    assert shown_text.returncode == 0, shown_text.describe()
    assert f"; capture {capture_id}" in shown_text.stdout  # what paid it, named as it is

    # A second hold, released: all of it back
    second = cli.ok("hold", "alice", "30.00", "USD", "--hold-id", "auth-2", "--key", "h2")
    assert second["balance_after"] == "40.00"
    released = cli.ok("release", "auth-2", "--key", "x2", "--reason", "order cancelled")
    assert (released["event_type"], released["hold_id"]) == ("release", "auth-2")
    assert (released["amount"], released["balance_after"]) == ("30.00", "70.00")
    shown = cli.ok("hold-show", "auth-2")
    assert (shown["status"], shown["captured"], shown["released"]) == ("released", "0.00", "30.00")
    assert [t["event_type"] for t in shown["transactions"]] == ["hold", "release"]
    assert balance_of(cli) == [{"currency": "USD", "balance": "70.00"}]

    entries = cli.ok("statement", "alice", "--currency", "USD")["entries"]
    assert [(e["seq"], e["event_type"], e["amount"], e["balance_after"]) for e in entries] == [
        (1, "recharge", "100.00", "100.00"),
        (2, "hold", "-60.00", "40.00"),
        (3, "capture", "60.00", "100.00"),
        (3, "capture", "-25.00", "75.00"),
        (3, "capture", "-10.00", "65.00"),
        (4, "refund", "5.00", "70.00"),
        (5, "hold", "-30.00", "40.00"),
        (6, "release", "30.00", "70.00"),
    ]
    assert [e.get("hold_id") for e in entries] == [
        None,
        "auth-1",
        "auth-1",
        "auth-1",
        "auth-1",
        None,
        "auth-2",
        "auth-2",
    ]


def test_an_expired_hold_is_released_not_captured(cli: Cli) -> None:
    cli.ok("recharge", "alice", "50.00", "USD", "--gateway", "paypal", "--key", "r1")
    expires_at = rfc3339_in(6)  # a subprocess or two on a loaded machine stay well within
    held = cli.ok(
        "hold", "alice", "10.00", "USD", "--hold-id", "auth-3", "--key", "h3",
        "--expires-at", expires_at,
    )  # fmt: skip
    assert held["balance_after"] == "40.00"
    shown = cli.ok("hold-show", "auth-3")
    assert shown["status"] == "open"
    assert views.instant_us(shown["expires_at"]) == views.instant_us(expires_at)
    time.sleep(max(0.0, (views.instant_us(expires_at) / 1e6) - time.time()) + 0.05)

    assert cli.ok("hold-show", "auth-3")["status"] == "expired"
    error = cli.refused("capture", "auth-3", "--order", "o-1:1.00", "--key", "c3")
    assert (error["error"], error["field"]) == ("hold_expired", "hold_id")
    assert balance_of(cli) == USD_40
    assert cli.refused("order", "o-1")["error"] == "order_unknown"

    released = cli.ok("release", "auth-3", "--key", "x3", "--reason", "expired")
    assert released["balance_after"] == "50.00"
    shown = cli.ok("hold-show", "auth-3")
    assert (shown["status"], shown["released"]) == ("released", "10.00")
    error = cli.refused("capture", "auth-3", "--order", "o-1:1.00", "--key", "c3")
    assert (error["error"], error["field"]) == ("hold_settled", "hold_id")


def test_capture_amounts_are_in_the_holds_currency(cli: Cli) -> None:
    cli.ok("recharge", "bob", "5000", "JPY", "--gateway", "stripe", "--key", "r1")
    cli.ok("hold", "bob", "3000", "JPY", "--hold-id", "auth-j", "--key", "h1")
    error = cli.refused("capture", "auth-j", "--order", "j-1:12.50", "--key", "c1")
    assert (error["error"], error["field"]) == ("amount_too_precise", "orders[0].amount")
    captured = cli.ok("capture", "auth-j", "--order", "j-1:1200", "--key", "c1")
    assert (captured["currency"], captured["balance_after"]) == ("JPY", "3800")
    refunded = cli.ok("refund", captured["transaction_id"], "j-1", "200", "--key", "f1")
    assert (refunded["currency"], refunded["balance_after"]) == ("JPY", "4000")


def test_a_refund_names_an_expense_or_a_capture_not_a_hold_or_a_release(cli: Cli) -> None:
    cli.ok("recharge", "alice", "50.00", "USD", "--gateway", "paypal", "--key", "r1")
    held = cli.ok("hold", "alice", "10.00", "USD", "--hold-id", "auth-1", "--key", "h1")
    released = cli.ok("release", "auth-1", "--key", "x1")
    for transaction in (held, released):
        error = cli.refused("refund", transaction["transaction_id"], "o-1", "1.00", "--key", "f")
        assert (error["error"], error["field"]) == ("expense_unknown", "expense_id")
    assert balance_of(cli) == [{"currency": "USD", "balance": "50.00"}]


# -- refusals --------------------------------------------------------------------------------


def hold_refusals() -> list[tuple[tuple[str, ...], str, str]]:
    """On a ledger where alice has 40.00 left, auth-1 holds 55.00 (open), auth-2 was released
    and an expense paid order o-paid."""
    hold = ("hold", "alice", "5.00", "USD")
    return [
        ((*hold, "--hold-id", "auth-1", "--key", "k"), "hold_already_placed", "hold_id"),
        ((*hold, "--hold-id", "auth-2", "--key", "k"), "hold_already_placed", "hold_id"),
        (("hold", "alice", "40.01", "USD", "--hold-id", "h-9", "--key", "k"), "insufficient_funds",
         "amount"),
        ((*hold, "--hold-id", "h 9", "--key", "k"), "identifier_invalid", "hold_id"),
        ((*hold, "--hold-id", "h:9", "--key", "k"), "identifier_invalid", "hold_id"),
        (("hold", "alice", "5.001", "USD", "--hold-id", "h-9", "--key", "k"), "amount_too_precise",
         "amount"),
        (("hold", "alice", "0", "USD", "--hold-id", "h-9", "--key", "k"), "amount_not_positive",
         "amount"),
        (("hold", "alice", "5.00", "XYZ", "--hold-id", "h-9", "--key", "k"), "currency_unknown",
         "currency"),
        ((*hold, "--hold-id", "h-9", "--key", "k", "--expires-at", "tomorrow"), "expiry_invalid",
         "expires_at"),
        ((*hold, "--hold-id", "h-9", "--key", "k", "--expires-at", "2999-01-01T00:00:00"),
         "expiry_invalid", "expires_at"),  # no zone
        ((*hold, "--hold-id", "h-9", "--key", "k", "--expires-at", "2020-01-01T00:00:00Z"),
         "expiry_invalid", "expires_at"),  # past
        ((*hold, "--hold-id", "h-9", "--key", "r1"), "idempotency_key_reused", "idempotency_key"),
        (("capture", "auth-404", "--order", "o-1:1.00", "--key", "k"), "hold_unknown", "hold_id"),
        (("capture", "auth 1", "--order", "o-1:1.00", "--key", "k"), "identifier_invalid",
         "hold_id"),
        (("capture", "auth-2", "--order", "o-1:1.00", "--key", "k"), "hold_settled", "hold_id"),
        (("capture", "auth-1", "--order", "o-1:55.01", "--key", "k"), "capture_exceeds_hold",
         "orders"),
        (("capture", "auth-1", "--order", "o-1:25.00", "--order", "o-2:30.01", "--key", "k"),
         "capture_exceeds_hold", "orders"),
        (("capture", "auth-1", "--order", "o-1", "--key", "k"), "amount_invalid", "orders[0]"),
        (("capture", "auth-1", "--order", "o-1:1.001", "--key", "k"), "amount_too_precise",
         "orders[0].amount"),
        (("capture", "auth-1", "--order", "o 1:1.00", "--key", "k"), "identifier_invalid",
         "orders[0].order_id"),
        (("capture", "auth-1", "--order", "o-1:1.00", "--order", "o-1:2.00", "--key", "k"),
         "order_duplicated", "orders[1].order_id"),
        (("capture", "auth-1", "--order", "o-paid:1.00", "--key", "k"), "order_already_paid",
         "orders[0].order_id"),
        (("release", "auth-404", "--key", "k"), "hold_unknown", "hold_id"),
        (("release", "auth-2", "--key", "k"), "hold_settled", "hold_id"),
        (("release", "auth 1", "--key", "k"), "identifier_invalid", "hold_id"),
        (("hold-show", "auth-404"), "hold_unknown", "hold_id"),
        (("hold-show", "auth 1"), "identifier_invalid", "hold_id"),
        (("hold-show", "[bold]x"), "identifier_invalid", "hold_id"),
    ]  # fmt: skip


def test_every_hold_refusal_exits_1_naming_code_and_field_and_changes_nothing(cli: Cli) -> None:
    cli.ok("recharge", "alice", "100.00", "USD", "--gateway", "paypal", "--key", "r1")
    cli.ok("expense", "alice", "USD", "--order", "o-paid:5.00", "--key", "e1")
    cli.ok("hold", "alice", "5.00", "USD", "--hold-id", "auth-2", "--key", "h2")
    cli.ok("release", "auth-2", "--key", "x2")
    cli.ok("hold", "alice", "55.00", "USD", "--hold-id", "auth-1", "--key", "h1")
    before = cli.ok("statement", "alice", "--currency", "USD")
    shown = cli.ok("hold-show", "auth-1")
    assert (shown["status"], shown["amount"]) == ("open", "55.00")
    assert balance_of(cli) == USD_40
    shown_as_text: set[str] = set()
    for args, code, field in hold_refusals():
        run = cli.run(*args)
        assert run.returncode == 1, run.describe()
        error = run.json()
        assert (error["error"], error["field"]) == (code, field), run.describe()
        assert set(error) == {"error", "field", "detail"}
        assert error["detail"]
        if args[0] in shown_as_text:  # the text form once per command: one printer
            continue
        shown_as_text.add(args[0])
        text = cli.run(*args, as_json=False)
        assert text.returncode == 1, text.describe()
        assert f"refused {code}: " in text.stderr
        assert f"({field})" in " ".join(text.stderr.split())
        assert text.stdout == ""
        assert "Traceback" not in text.stderr
    assert shown_as_text == {"hold", "capture", "release", "hold-show"}
    assert cli.ok("statement", "alice", "--currency", "USD") == before
    assert cli.ok("hold-show", "auth-1") == shown
    assert cli.refused("hold-show", "h-9")["error"] == "hold_unknown"
    for order in ("o-1", "o-2"):
        assert cli.refused("order", order)["error"] == "order_unknown"


# Refused as the first command of a ledger: nothing created, neither the ledger nor the file
FIRST_HOLD = ("hold", "alice", "1.00", "USD", "--hold-id", "h-1", "--key", "k")
FIRST_COMMANDS_REFUSED = [
    (FIRST_HOLD, "insufficient_funds"),
    # the expiry before the wallet, in the writer's order (not insufficient_funds)
    ((*FIRST_HOLD, "--expires-at", "2020-01-01T00:00:00Z"), "expiry_invalid"),
    (("capture", "h-1", "--order", "o-1:1.00", "--key", "k"), "hold_unknown"),
    (("release", "h-1", "--key", "k"), "hold_unknown"),
    (("hold-show", "h-1"), "ledger_unknown"),
]


@pytest.mark.parametrize(
    ("args", "code"),
    FIRST_COMMANDS_REFUSED,
    ids=lambda value: value if isinstance(value, str) else value[0],
)
def test_a_refused_hold_command_on_an_untouched_database_creates_nothing(
    cli: Cli, args: tuple[str, ...], code: str
) -> None:
    error = cli.refused(*args)
    assert error["error"] == code, error
    if not is_postgres(cli.db):
        assert not Path(cli.db).exists()
    assert cli.refused("balance", "alice")["error"] == "ledger_unknown"


def test_a_refused_hold_command_leaves_no_ledger_behind(cli: Cli, tally: TallyRunner) -> None:
    """Another ledger's hold is no hold of this one."""
    other = Cli(tally, cli.db, ledger="other")
    other.ok("recharge", "alice", "10.00", "USD", "--gateway", "paypal", "--key", "r")
    other.ok("hold", "alice", "5.00", "USD", "--hold-id", "h-1", "--key", "h")
    for args, code in FIRST_COMMANDS_REFUSED:
        assert cli.refused(*args)["error"] == code, args
    shown = cli.refused("hold-show", "h-1")
    assert (shown["error"], shown["field"]) == ("ledger_unknown", "ledger")
    assert shown["detail"] == f"no ledger {LEDGER!r} in {cli.db}"
    assert ledgers_in(cli.db) == ["other"]
    assert other.ok("hold-show", "h-1")["status"] == "open"


def test_capture_without_an_order_is_a_usage_error(cli: Cli) -> None:
    cli.ok("recharge", "alice", "10.00", "USD", "--gateway", "paypal", "--key", "r")
    cli.ok("hold", "alice", "5.00", "USD", "--hold-id", "h-1", "--key", "h")
    for args in (("capture", "h-1", "--key", "c"), ("hold", "alice", "1.00", "USD", "--key", "k")):
        run = cli.run(*args)
        assert run.returncode == 2, run.describe()
    assert cli.ok("hold-show", "h-1")["status"] == "open"


# -- idempotency and text ------------------------------------------------------------------------


def test_a_retried_hold_capture_or_release_is_the_same_transaction(cli: Cli) -> None:
    cli.ok("recharge", "alice", "100.00", "USD", "--gateway", "paypal", "--key", "r1")
    expires_at = rfc3339_in(3600)
    hold = ("hold", "alice", "20.00", "USD", "--hold-id", "h-1", "--key", "h1",
            "--expires-at", expires_at)  # fmt: skip
    capture = ("capture", "h-1", "--order", "o-1:15.00", "--key", "c1")
    first_hold, first_capture = cli.ok(*hold), cli.ok(*capture)
    again = cli.run(*hold, as_json=False)
    assert again.returncode == 0, again.describe()
    assert "replayed" in again.stdout
    assert first_hold["transaction_id"] in again.stdout
    assert cli.ok(*hold)["transaction_id"] == first_hold["transaction_id"]
    assert cli.ok(*capture) == first_capture  # though the hold is captured now
    cli.ok("hold", "alice", "10.00", "USD", "--hold-id", "h-2", "--key", "h2")
    release = ("release", "h-2", "--key", "x2", "--reason", "cancelled")
    assert cli.ok(*release) == cli.ok(*release)
    reused = cli.refused("release", "h-2", "--key", "x2")  # another reason: another request
    assert (reused["error"], reused["field"]) == ("idempotency_key_reused", "idempotency_key")
    assert balance_of(cli) == [{"currency": "USD", "balance": "85.00"}]


def test_text_output_of_the_hold_commands(cli: Cli) -> None:
    def text(*args: str) -> str:
        run = cli.run(*args, as_json=False)
        assert run.returncode == 0, run.describe()
        return " ".join(run.stdout.split())

    cli.ok("recharge", "alice", "100.00", "USD", "--gateway", "paypal", "--key", "r1")
    out = text("hold", "alice", "60.00", "USD", "--hold-id", "auth-1", "--key", "h1",
               "--expires-at", "2999-01-01T00:00:00Z")  # fmt: skip
    hold_txn = cli.ok("hold-show", "auth-1")["transactions"][0]["transaction_id"]
    assert out == f"hold {hold_txn} seq 2: -60.00 USD, balance after 40.00"
    assert text("hold-show", "auth-1") == (
        "hold auth-1 of alice (USD): open; amount 60.00, captured 0.00, released 0.00; "
        f"expires 2999-01-01T00:00:00.000000Z hold {hold_txn} seq 2"
    )
    out = text("capture", "auth-1", "--order", "o-1:25.00", "--order", "o-2:10.00", "--key", "c1")
    capture_id = cli.ok("order", "o-1")["expense_id"]
    assert out == f"capture {capture_id} seq 3: 25.00 USD, balance after 65.00"
    assert text("hold-show", "auth-1") == (
        "hold auth-1 of alice (USD): captured; amount 60.00, captured 35.00, released 25.00; "
        f"expires 2999-01-01T00:00:00.000000Z orders o-1, o-2 hold {hold_txn} seq 2 "
        f"capture {capture_id} seq 3"
    )
    cli.ok("hold", "alice", "5.00", "USD", "--hold-id", "auth-2", "--key", "h2")
    out = text("release", "auth-2", "--key", "x2")
    assert out.startswith("release txn_")
    assert out.endswith(" seq 5: 5.00 USD, balance after 65.00")
    assert "released; amount 5.00, captured 0.00, released 5.00; expires never" in text(
        "hold-show", "auth-2"
    )
    statement = text("statement", "alice", "--currency", "USD")
    for event in ("hold", "capture", "release"):
        assert f" {event} " in statement


def test_hold_show_json_is_the_hold_view(cli: Cli) -> None:
    cli.ok("recharge", "alice", "10.00", "USD", "--gateway", "paypal", "--key", "r1")
    cli.ok("hold", "alice", "1.00", "USD", "--hold-id", "h-1", "--key", "h1")
    shown: dict[str, Any] = cli.ok("hold-show", "h-1")
    assert set(shown) == {
        "hold_id", "user_id", "currency", "amount", "status", "expires_at", "captured",
        "released", "reference_order_ids", "metadata", "transactions",
    }  # fmt: skip
    assert shown["transactions"][0]["timestamp"].endswith("Z")


def test_a_ledger_with_holds_verifies(cli: Cli) -> None:
    """Needs the offline auditor to know hold, capture and release events."""
    cli.ok("recharge", "alice", "100.00", "USD", "--gateway", "paypal", "--key", "r1")
    cli.ok("hold", "alice", "60.00", "USD", "--hold-id", "h-1", "--key", "h1")
    capture_id = cli.ok("capture", "h-1", "--order", "o-1:25.00", "--key", "c1")["transaction_id"]
    cli.ok("refund", capture_id, "o-1", "5.00", "--key", "f1")
    cli.ok("hold", "alice", "10.00", "USD", "--hold-id", "h-2", "--key", "h2")
    cli.ok("release", "h-2", "--key", "x2")
    verified = cli.ok("verify")
    assert (verified["ok"], verified["events"], verified["problem"]) == (True, 6, None)
    assert cli.ok("replay")["seq"] == 6
    assert cli.ok("hold-show", "h-1")["status"] == "captured"


def test_tally_holds_lists_a_users_holds_as_the_http_route_does(cli: Cli) -> None:
    cli.ok("recharge", "alice", "100.00", "USD", "--gateway", "paypal", "--key", "r1")
    cli.ok("recharge", "bob", "10.00", "USD", "--gateway", "paypal", "--key", "r2")
    for hold_id, amount in (("h-1", "10.00"), ("h-2", "20.00"), ("h-3", "30.00")):
        cli.ok("hold", "alice", amount, "USD", "--hold-id", hold_id, "--key", f"k-{hold_id}")
    cli.ok("hold", "bob", "1.00", "USD", "--hold-id", "h-bob", "--key", "k-bob")
    cli.ok("capture", "h-1", "--order", "o-1:4.00", "--key", "c-1")
    cli.ok("release", "h-2", "--key", "x-2")

    every = cli.ok("holds", "alice")
    assert every["user_id"] == "alice"
    assert [(h["hold_id"], h["status"]) for h in every["holds"]] == [
        ("h-1", "captured"),
        ("h-2", "released"),
        ("h-3", "open"),
    ]
    assert every["holds"][2] == cli.ok("hold-show", "h-3")
    assert [h["hold_id"] for h in cli.ok("holds", "alice", "--open")["holds"]] == ["h-3"]
    assert [h["hold_id"] for h in cli.ok("holds", "alice", "--settled")["holds"]] == ["h-1", "h-2"]
    assert cli.ok("holds", "carol") == {"user_id": "carol", "holds": []}

    text = cli.run("holds", "alice", as_json=False)
    assert text.returncode == 0, text.describe()
    lines = " ".join(text.stdout.split())
    assert "hold h-3 (USD): open; amount 30.00, captured 0.00, released 0.00" in lines
    assert "3 hold(s) of alice" in lines

    both = cli.run("holds", "alice", "--open", "--settled")
    assert both.returncode == 2, both.describe()
    assert cli.refused("holds", "a:b")["field"] == "user_id"

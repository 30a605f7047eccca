"""`tally transfer`, each run a process of its own, on both stores."""

from __future__ import annotations

import pytest

from conftest import TallyRunner
from test_cli import Cli


@pytest.fixture
def cli(tally: TallyRunner, db: str) -> Cli:
    return Cli(tally, db)


SPLIT = (
    "--posting",
    "wallet:alice=-5.50",
    "--posting",
    "wallet:bob=5.00",
    "--posting",
    "revenue:platform=0.50",
)


def test_a_split_moves_every_leg_and_verifies(cli: Cli) -> None:
    cli.ok("recharge", "alice", "20.00", "USD", "--gateway", "paypal", "--key", "r1")

    moved = cli.ok("transfer", "alice", "USD", *SPLIT, "--key", "t1", "--reason", "dinner")
    assert (moved["event_type"], moved["user_id"], moved["amount"]) == (
        "transfer",
        "alice",
        "-5.50",
    )
    assert moved["balance_after"] == "14.50"
    assert moved["postings"] == [
        {"account": "wallet:alice:USD", "amount": "-5.50", "balance_after": "14.50"},
        {"account": "wallet:bob:USD", "amount": "5.00", "balance_after": "5.00"},
        {"account": "revenue:platform:USD", "amount": "0.50", "balance_after": "0.50"},
    ]
    assert cli.ok("balance", "bob")["balances"] == [{"currency": "USD", "balance": "5.00"}]
    (line,) = cli.ok("statement", "bob", "--currency", "USD")["entries"]
    assert (line["user_id"], line["amount"], line["balance_after"]) == ("bob", "5.00", "5.00")

    again = cli.ok("transfer", "alice", "USD", *SPLIT, "--key", "t1", "--reason", "dinner")
    assert again["transaction_id"] == moved["transaction_id"]  # the same key: replayed
    assert cli.ok("verify")["ok"] is True


def test_the_text_answer_lists_each_posting(cli: Cli) -> None:
    cli.ok("recharge", "alice", "20.00", "USD", "--gateway", "paypal", "--key", "r1")
    run = cli.run("transfer", "alice", "USD", *SPLIT, "--key", "t1", as_json=False)
    assert run.returncode == 0, run.describe()
    assert "wallet:bob:USD 5.00, balance after 5.00" in " ".join(run.stdout.split())


REFUSALS = [
    (("wallet:alice=-1.00",), "postings_invalid", "postings"),
    (("wallet:alice=-1.00", "wallet:bob"), "postings_invalid", "postings[1]"),
    (("wallet:alice=-1.00", "hold:h1=1.00"), "postings_invalid", "postings[1].account"),
    (("wallet:alice=-1.00", "wallet:bob=0.99"), "postings_unbalanced", "postings"),
    (("wallet:alice=-1.00", "wallet:bob=1.001"), "amount_too_precise", "postings[1].amount"),
    (("wallet:alice=-30.00", "wallet:bob=30.00"), "insufficient_funds", "postings[0].amount"),
]


def test_a_refused_transfer_names_its_field_and_writes_nothing(cli: Cli) -> None:
    cli.ok("recharge", "alice", "20.00", "USD", "--gateway", "paypal", "--key", "r1")
    for index, (postings, code, field) in enumerate(REFUSALS):  # one process each
        options = [part for posting in postings for part in ("--posting", posting)]
        refused = cli.refused("transfer", "alice", "USD", *options, "--key", f"t{index}")
        assert (refused["error"], refused["field"]) == (code, field), postings
    assert cli.ok("balance", "alice")["balances"] == [{"currency": "USD", "balance": "20.00"}]
    assert cli.ok("balance", "bob")["balances"] == []
    assert cli.ok("verify")["ok"] is True  # the log holds the recharge alone

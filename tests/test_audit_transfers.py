"""The offline auditor on transfers: the engine's log passes, each rule of a transfer in
docs/log-format.md is named by its own finding.

The log is written by the real engine on SQLite (seq 1 recharges alice 100.00, 2 pays bob
5.00 and the platform a 0.50 fee, 3 credits alice 10.00 from `equity:promotions` with an
empty reason, 4 pays bob's 5.00 out to the gateway, 5 pays 0.01 to each of 99 wallets:
100 postings, the most a transfer has). Each forgery below edits one event and re-chains
the log, breaking the rule it names and no other (but a transfer of one posting, which
cannot sum to zero either); the auditor must refuse it for that rule. Near misses, the same
edits but for the rule, pass.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tally.audit.chain import link
from tally.bootstrap import open_engine
from tally.domain import accounts, limits
from tally.domain.commands import Command, Envelope, Recharge, Transfer, TransferPosting
from tally_audit import verify, verify_events, verify_sqlite
from tally_audit.__main__ import main as audit_main

LEDGER = "x"
ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "src" / "tally" / "store" / "migrations" / "sqlite" / "0001_ledger.sql"
Event = dict[str, Any]
PAYEES = 99  # seq 5's wallets: with alice's, the limit of postings


def _transfer(user_id: str, *legs: tuple[str, int], reason: str = "") -> Transfer:
    postings = tuple(TransferPosting(account, amount) for account, amount in legs)
    return Transfer(user_id=user_id, currency="USD", postings=postings, reason=reason)


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("audit-transfers") / "ledger.db"
    engine = open_engine(path)
    try:

        def run(key: str, command: Command) -> None:
            engine.execute(LEDGER, Envelope(idempotency_key=key, command=command))

        run("r1", Recharge(user_id="alice", amount=100_00, currency="USD", gateway="pp"))
        dinner = (("wallet:alice", -5_50), ("wallet:bob", 5_00), ("revenue:platform", 50))
        run("t1", _transfer("alice", *dinner, reason="dinner split"))
        run("t2", _transfer("alice", ("equity:promotions", -10_00), ("wallet:alice", 10_00)))
        run("t3", _transfer("bob", ("wallet:bob", -5_00), ("clearing:pp", 5_00), reason="payout"))
        payees = tuple((f"wallet:u{index}", 1) for index in range(PAYEES))
        run("t4", _transfer("alice", ("wallet:alice", -PAYEES), *payees, reason="raffle"))
    finally:
        engine.close()
        engine.store.close()
    return path


@pytest.fixture
def log(ledger: Path) -> list[Event]:
    db = sqlite3.connect(ledger)
    try:
        rows = db.execute("SELECT body FROM events WHERE ledger = ? ORDER BY seq", (LEDGER,))
        return [json.loads(body) for (body,) in rows]
    finally:
        db.close()


def finding(events: list[Event]) -> str | None:
    """The auditor's problem with the log of `events`, re-chained; None when it passes."""
    rows, head = [], bytes(32)
    for event in events:
        body = verify.canonical(event)
        head = link(head, body)
        rows.append((event["seq"], body, head))
    report = verify_events(LEDGER, rows, (len(rows), head))
    return None if report.finding is None else f"seq {report.finding.seq}: {report.finding.problem}"


def test_the_auditor_accepts_the_engines_transfers(
    ledger: Path, log: list[Event], capsys: pytest.CaptureFixture[str]
) -> None:
    assert [event["type"] for event in log] == ["recharge", *["transfer"] * 4]
    assert (log[2]["reason"], len(log[4]["postings"])) == ("", limits.postings_per_transfer_max)
    assert audit_main([str(ledger)]) == 0
    assert capsys.readouterr().out.startswith(f"ok {LEDGER}: 5 events, head ")
    [report] = verify_sqlite(str(ledger))
    assert report.finding is None
    balances = report.balances
    assert balances["wallet:alice:USD"] == 100_00 - 5_50 + 10_00 - PAYEES
    assert (balances["wallet:bob:USD"], balances["revenue:platform:USD"]) == (0, 50)
    assert balances["equity:promotions:USD"] == -10_00  # not floored: the platform's money
    assert balances["clearing:pp:USD"] == -100_00 + 5_00
    assert balances["wallet:u98:USD"] == 1
    assert sum(balances.values()) == 0


def test_the_auditor_knows_the_domains_transfer_limits() -> None:
    """The auditor imports nothing of tally's: its copy of the rules is pinned here."""
    assert accounts.TRANSFERABLE_KINDS == verify.TRANSFERABLE_KINDS
    assert limits.postings_per_transfer_max == verify.POSTINGS_PER_TRANSFER_MAX


# -- forgeries: each breaks one rule of a transfer -----------------------------------------


def _edit(seq: int, edit: Callable[[Event], object]) -> Callable[[list[Event]], list[Event]]:
    def apply(events: list[Event]) -> list[Event]:
        edit(events[seq - 1])
        return events

    return apply


def _posting(account: str, amount: int, currency: str = "USD") -> dict[str, object]:
    return {"account": account, "amount": amount, "currency": currency, "order_id": None}


def _account(index: int, account: str) -> Callable[[Event], None]:
    """Posting `index` moves `account` instead."""
    return lambda event: event["postings"][index].update(account=account)


def _and(*postings: dict[str, object]) -> Callable[[Event], None]:
    return lambda event: event["postings"].extend(postings)


def _only_alice(event: Event) -> None:
    """Seq 2 down to its first posting (alice's -5.50)."""
    del event["postings"][1:]


def _one_more_payee(event: Event) -> None:
    """Seq 5 paying a hundredth wallet: 101 postings, balanced."""
    event["postings"][0]["amount"] -= 1
    event["postings"].append(_posting(f"wallet:u{PAYEES}:USD", 1))


def _bob_twice(event: Event) -> None:
    """Seq 2's 5.00 to bob as two postings of 2.50 on his wallet."""
    half = _posting("wallet:bob:USD", 2_50)
    event["postings"][1:2] = [half, dict(half)]


def _by_carol(event: Event) -> None:
    """Seq 2 is carol's transaction, though it moves alice's money, not carol's."""
    event["user_id"] = "carol"


def _by_a_spaced_user(event: Event) -> None:
    event["user_id"] = "al ice"
    event["postings"][0]["account"] = "wallet:al ice:USD"


def _overdraw_bob(event: Event) -> None:
    """Seq 4 pays 5.01 out of bob's 5.00."""
    event["postings"][0]["amount"], event["postings"][1]["amount"] = -5_01, 5_01


def _by_carol_from_her_wallet(event: Event) -> None:
    """Seq 2 as carol's transaction, with a posting on her wallet: 0.01 to it."""
    _by_carol(event)
    event["postings"] += [_posting("wallet:carol:USD", 1), _posting("clearing:pp:USD", -1)]


# What the forgeries below do but for the rule each breaks: these pass, so a forgery fails
# for its rule alone (a posting of money, the user's wallet named, the transfer's currency).
NEAR_MISSES: dict[str, Callable[[list[Event]], list[Event]]] = {
    "a third account, of money": _edit(
        2, _and(_posting("wallet:carol:USD", 1), _posting("clearing:pp:USD", -1))
    ),
    "carol's transaction, naming her wallet": _edit(2, _by_carol_from_her_wallet),
    "a revenue and an equity account more": _edit(
        2, _and(_posting("equity:fees:USD", -1), _posting("revenue:m-42:USD", 1))
    ),
}


FINDINGS: dict[str, tuple[Callable[[list[Event]], list[Event]], str]] = {
    "an unknown key": (
        _edit(2, lambda e: e.update(evil=1)),
        "seq 2: a transfer with other keys than the format's",
    ),
    "no reason key": (
        _edit(2, lambda e: e.pop("reason")),
        "seq 2: a transfer with other keys than the format's",
    ),
    "an order's key": (
        _edit(2, lambda e: e.update(orders=[])),
        "seq 2: a transfer with other keys than the format's",
    ),
    "a hold's key": (
        _edit(2, lambda e: e.update(hold_id="auth-1")),
        "seq 2: a transfer with other keys than the format's",
    ),
    "a business key": (
        _edit(2, lambda e: e.update(gateway_reference="pay-1")),
        "seq 2: a transfer with other keys than the format's",
    ),
    "a reason of null": (
        _edit(3, lambda e: e.update(reason=None)),
        "seq 3: malformed transfer (a reason, which may be empty)",
    ),
    "a reason that is a number": (
        _edit(2, lambda e: e.update(reason=7)),
        "seq 2: malformed transfer (a reason, which may be empty)",
    ),
    "a user id that is no identifier": (
        _edit(2, _by_a_spaced_user),
        "seq 2: malformed user_id (not an identifier)",
    ),
    "one posting": (
        _edit(2, _only_alice),
        "seq 2: a transfer of 1 postings (2 to 100)",
    ),
    "101 postings": (
        _edit(5, _one_more_payee),
        "seq 5: a transfer of 101 postings (2 to 100)",
    ),
    "a hold's account": (
        _edit(2, _account(2, "hold:auth-1:USD")),
        "seq 2: a transfer moves hold:auth-1:USD: not a wallet, revenue, clearing or equity",
    ),
    "an account of no known kind": (
        _edit(2, _account(2, "escrow:platform:USD")),
        "seq 2: a transfer moves escrow:platform:USD: not a wallet, revenue, clearing or equity",
    ),
    "an account without an owner": (
        _edit(2, _account(2, "revenue:USD")),
        "seq 2: a transfer moves revenue:USD, whose owner is not an identifier",
    ),
    "an owner that is no identifier": (
        _edit(2, _account(1, "wallet:b ob:USD")),
        "seq 2: a transfer moves wallet:b ob:USD, whose owner is not an identifier",
    ),
    "an owner holding a colon": (
        _edit(2, _account(1, "wallet:bob:EUR:USD")),
        "seq 2: a transfer moves wallet:bob:EUR:USD, whose owner is not an identifier",
    ),
    "two postings, balanced, in another currency": (
        _edit(
            2, _and(_posting("clearing:pp:EUR", -1, "EUR"), _posting("wallet:bob:EUR", 1, "EUR"))
        ),
        "seq 2: a transfer moves clearing:pp:EUR, not in the transfer's currency USD",
    ),
    "a posting for an order": (
        _edit(2, lambda e: e["postings"][1].update(order_id="order-1")),
        "seq 2: a transfer's posting on wallet:bob:USD names order order-1",
    ),
    "a posting of no money": (
        _edit(2, _and(_posting("wallet:carol:USD", 0))),
        "seq 2: a transfer's posting on wallet:carol:USD moves no money",
    ),
    "an account named twice": (
        _edit(2, _bob_twice),
        "seq 2: a transfer names wallet:bob:USD twice",
    ),
    "no posting on the user's wallet": (
        _edit(2, _by_carol),
        "seq 2: a transfer without a posting on its user's wallet wallet:carol:USD",
    ),
    "postings that do not sum to zero": (
        _edit(2, lambda e: e["postings"][1].update(amount=6_00)),
        "seq 2: postings do not sum to zero: {'USD': 100}",
    ),
    "a wallet below zero": (
        _edit(4, _overdraw_bob),
        "seq 4: wallet:bob:USD goes below zero (-1)",
    ),
}


@pytest.mark.parametrize("forge", list(NEAR_MISSES.values()), ids=list(NEAR_MISSES))
def test_what_breaks_no_rule_passes(
    log: list[Event], forge: Callable[[list[Event]], list[Event]]
) -> None:
    assert finding(forge(log)) is None


@pytest.mark.parametrize(("forge", "problem"), list(FINDINGS.values()), ids=list(FINDINGS))
def test_each_broken_transfer_rule_is_named(
    log: list[Event], forge: Callable[[list[Event]], list[Event]], problem: str
) -> None:
    assert finding(forge(log)) == problem


def test_tally_audit_names_a_forged_transfer_in_a_sqlite_file(
    tmp_path: Path, log: list[Event], capsys: pytest.CaptureFixture[str]
) -> None:
    events = _edit(2, _bob_twice)(log)
    path = tmp_path / "forged.db"
    db = sqlite3.connect(path)
    db.executescript(SCHEMA.read_text(encoding="utf-8"))
    head = bytes(32)
    with db:
        for event in events:
            body = verify.canonical(event)
            head = link(head, body)
            db.execute(
                "INSERT INTO events (ledger, seq, transaction_id, event_type, body, hash)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (LEDGER, event["seq"], event["transaction_id"], event["type"], body, head),
            )
        db.execute(
            "INSERT INTO ledgers (name, seq, hash, created_at_us) VALUES (?, ?, ?, 0)",
            (LEDGER, len(events), head),
        )
    db.close()
    assert audit_main([str(path)]) == 1
    assert capsys.readouterr().out == (
        f"FAIL {LEDGER} at seq 2: a transfer names wallet:bob:USD twice\n"
    )

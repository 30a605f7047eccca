"""A Hypothesis state machine drives the engine against a model small enough to trust.

Random recharges, multi-order expenses (sometimes paying an order twice, or more than the
wallet holds), refunds (sometimes more than is refundable, of the wrong order or currency),
adjustments, holds captured (paying orders, sometimes more than held) or released (sometimes
twice, or unknown), transfers (one user paying another, with a fee, split two ways, paid out,
collected from another user's wallet, or credited from equity; sometimes overdrawn,
unbalanced, naming a hold's account or one account twice), and idempotency keys used again
with the same or a different command, over a few users and two currencies (USD, JPY), one
command at a time or in batches. Every outcome must be the one the model predicts (including
the exact rejection code); after every step money is conserved, no wallet is below zero and
every balance equals the model's; at the end the log verifies and a replay equals the live
projections.

It runs on both stores (the `db` fixture): each example gets a ledger of its own in the
test's database, so examples stay independent without a database per example.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from conftest import audit_offline
from rawdb import is_postgres
from tally import views
from tally.bootstrap import open_engine
from tally.domain import accounts, limits
from tally.domain.commands import (
    Adjustment,
    Capture,
    Command,
    Envelope,
    Expense,
    Hold,
    OrderLine,
    Recharge,
    Refund,
    Release,
    Transfer,
    TransferPosting,
)
from tally.domain.rejections import Rejected, Rejection
from tally.engine.results import Committed, Outcome
from tally.money import format_amount
from tally.verification import verify

USERS = ("ann", "ben", "cy")
CURRENCIES = ("JPY", "USD")  # sorted: the order balances are listed in
FAR_AHEAD_US = limits.timestamp_us_max  # the latest expiry a hold may have (year 9999)


@dataclass(slots=True)
class ModelOrder:
    expense_id: str
    user_id: str
    currency: str
    paid: int
    refunded: int = 0


@dataclass(slots=True)
class ModelHold:
    user_id: str
    currency: str
    amount: int
    open: bool = True


@dataclass(frozen=True, slots=True)
class Replay:
    transaction_id: str


Expected = Rejection | Replay | None  # None: a new transaction


def rarely(data: st.DataObject, one_in: int, label: str) -> bool:
    """True about once in `one_in` draws (and never in the simplest, shrunk example)."""
    return data.draw(st.integers(1, one_in), label=label) == one_in


class LedgerMachine(RuleBasedStateMachine):
    examples = itertools.count(1)

    def __init__(self, db: str, directory: Path) -> None:
        super().__init__()
        self.db = db
        self.directory = directory
        self.ledger = f"prop-{next(self.examples)}"
        # Small batches, so one execute_many spans several submissions the writer may merge.
        self.engine = open_engine(db, batch_commands_max=4)
        self.wallets: dict[tuple[str, str], int] = {}  # (user, currency) -> minor units
        self.orders: dict[str, ModelOrder] = {}
        self.expenses: dict[str, str] = {}  # expense (or capture) transaction id -> currency
        self.holds: dict[str, ModelHold] = {}
        self.keys: dict[str, tuple[Command, str]] = {}  # key -> (command, transaction id)
        self.sent: list[str] = []  # every key ever submitted, committed or not
        self.events = 0
        self.fresh = 0

    # -- drawing commands ---------------------------------------------------------------
    def _fresh(self, prefix: str) -> str:
        self.fresh += 1
        return f"{prefix}{self.fresh}"

    def _key(self, data: st.DataObject) -> str:
        if self.sent and rarely(data, 6, "reuse key?"):
            return data.draw(st.sampled_from(self.sent), label="reused key")
        return self._fresh("k")

    def _recharge(self, data: st.DataObject) -> Recharge:
        return Recharge(
            user_id=data.draw(st.sampled_from(USERS), label="user"),
            amount=data.draw(st.integers(1, 10_000), label="amount"),
            currency=data.draw(st.sampled_from(CURRENCIES), label="currency"),
            gateway=data.draw(st.sampled_from(("paypal", "stripe")), label="gateway"),
        )

    def _order_lines(self, data: st.DataObject) -> tuple[OrderLine, ...]:
        lines: list[OrderLine] = []
        for _ in range(data.draw(st.integers(1, 3), label="orders")):
            if self.orders and rarely(data, 10, "paid order?"):  # pay an order already paid
                order_id = data.draw(st.sampled_from(sorted(self.orders)), label="paid order")
            elif lines and rarely(data, 10, "duplicate?"):  # the same order twice in one expense
                order_id = data.draw(st.sampled_from(lines), label="duplicate").order_id
            else:
                order_id = self._fresh("o")
            amount = data.draw(st.integers(1, 4_000), label="order amount")
            merchant = data.draw(st.sampled_from(("platform", "shop-1")), label="merchant")
            lines.append(OrderLine(order_id=order_id, amount=amount, merchant_id=merchant))
        return tuple(lines)

    def _expense(self, data: st.DataObject) -> Expense:
        return Expense(
            user_id=data.draw(st.sampled_from(USERS), label="user"),
            currency=data.draw(st.sampled_from(CURRENCIES), label="currency"),
            orders=self._order_lines(data),
        )

    def _hold_id(self, data: st.DataObject, *, placed: bool) -> str:
        """One of the holds placed so far (when `placed` and there is one), else a new id."""
        if placed and self.holds and not rarely(data, 10, "unknown hold?"):
            return data.draw(st.sampled_from(list(self.holds)), label="hold")  # placing order
        return self._fresh("h")

    def _hold(self, data: st.DataObject) -> Hold:
        expires_at_us = None
        if rarely(data, 6, "expiring?"):  # in the past (refused) or far ahead
            expires_at_us = data.draw(st.sampled_from((1, FAR_AHEAD_US)), label="expiry")
        return Hold(
            user_id=data.draw(st.sampled_from(USERS), label="user"),
            amount=data.draw(st.integers(1, 5_000), label="amount"),
            currency=data.draw(st.sampled_from(CURRENCIES), label="currency"),
            hold_id=self._hold_id(data, placed=rarely(data, 8, "hold id again?")),
            expires_at_us=expires_at_us,
        )

    def _capture(self, data: st.DataObject) -> Capture:
        hold_id = self._hold_id(data, placed=True)
        hold = self.holds.get(hold_id)
        currency = data.draw(st.sampled_from(CURRENCIES), label="currency")
        if hold is not None and not rarely(data, 8, "other currency?"):
            currency = hold.currency  # as an edge fills it in
        return Capture(hold_id=hold_id, currency=currency, orders=self._order_lines(data))

    def _release(self, data: st.DataObject) -> Release:
        return Release(hold_id=self._hold_id(data, placed=True))

    def _refund(self, data: st.DataObject) -> Refund:
        if not self.orders or rarely(data, 10, "unknown expense?"):
            return Refund(
                expense_id="txn_unknown",
                order_id=self._fresh("o"),
                amount=1,
                currency=data.draw(st.sampled_from(CURRENCIES), label="currency"),
            )
        order_id = data.draw(st.sampled_from(sorted(self.orders)), label="order")
        order = self.orders[order_id]
        expense_id = order.expense_id
        if rarely(data, 8, "other expense?"):
            # In commit order: transaction ids are random within a millisecond, so sorting them
            # would make the same draws pick another expense on a rerun (Hypothesis then
            # reports FlakyStrategyDefinition).
            expense_id = data.draw(st.sampled_from(list(self.expenses)), label="other expense")
        refundable = order.paid - order.refunded
        if refundable > 0 and not rarely(data, 4, "too much?"):
            amount = data.draw(st.integers(1, refundable), label="amount")
        else:
            amount = data.draw(st.integers(refundable + 1, refundable + 100), label="too much")
        currency = order.currency
        if rarely(data, 8, "wrong currency?"):
            currency = "USD" if currency == "JPY" else "JPY"
        reason = data.draw(st.sampled_from(("", "returned")), label="reason")
        return Refund(
            expense_id=expense_id,
            order_id=order_id,
            amount=amount,
            currency=currency,
            reason=reason,
        )

    def _adjustment(self, data: st.DataObject) -> Adjustment:
        amount = 0
        if not rarely(data, 10, "zero?"):
            sign = data.draw(st.sampled_from((1, -1)), label="sign")
            amount = sign * data.draw(st.integers(1, 3_000), label="amount")
        blank = rarely(data, 10, "blank reason?")
        return Adjustment(
            user_id=data.draw(st.sampled_from(USERS), label="user"),
            amount=amount,
            currency=data.draw(st.sampled_from(CURRENCIES), label="currency"),
            reason=" " if blank else "correction",
        )

    def _transfer(self, data: st.DataObject) -> Transfer:
        user = data.draw(st.sampled_from(USERS), label="user")
        currency = data.draw(st.sampled_from(CURRENCIES), label="currency")
        others = [other for other in USERS if other != user]
        shapes = ("pay", "pay with a fee", "split", "pay out", "collect", "promotion")
        shape = data.draw(st.sampled_from(shapes), label="shape")
        source = "equity:promotions"  # unbounded below: any amount
        if shape == "collect":  # from another user's wallet into the user's
            source = f"wallet:{data.draw(st.sampled_from(others), label='from')}"
        elif shape != "promotion":
            source = f"wallet:{user}"
        available = 5_000
        if source.startswith("wallet:"):
            available = self.wallets.get((source.split(":")[1], currency), 0)
        if available >= 2 and not rarely(data, 6, "overdraw?"):
            amount = data.draw(st.integers(2, available), label="amount")
        else:
            amount = data.draw(st.integers(max(2, available + 1), available + 500), label="over")
        part = data.draw(st.integers(1, amount - 1), label="part")
        legs = [(source, -amount)]
        if shape in ("pay", "pay out", "collect", "promotion"):
            targets = {
                "pay": f"wallet:{others[0]}",
                "pay out": "clearing:paypal",
                "collect": f"wallet:{user}",
                "promotion": f"wallet:{user}",
            }
            legs.append((targets[shape], amount))
        elif shape == "pay with a fee":
            legs += [(f"wallet:{others[1]}", part), ("revenue:platform", amount - part)]
        else:  # split
            legs += [(f"wallet:{others[0]}", part), (f"wallet:{others[1]}", amount - part)]
        if rarely(data, 10, "unbalanced?"):
            account, last = legs[-1]
            off = data.draw(st.sampled_from((1, -1)), label="off by")
            legs[-1] = (account, last + off if last + off else last + 1)  # never zero
        if rarely(data, 20, "hold account?"):
            legs[-1] = (f"hold:{self._fresh('h')}", legs[-1][1])
        elif rarely(data, 20, "account twice?"):
            legs.append(legs[0])
        return Transfer(
            user_id=user,
            currency=currency,
            postings=tuple(TransferPosting(account, amount) for account, amount in legs),
            reason=data.draw(st.sampled_from(("", "split the bill")), label="reason"),
        )

    def _any(self, data: st.DataObject) -> Command:
        kinds = (
            "recharge",
            "expense",
            "refund",
            "adjust",
            "hold",
            "capture",
            "release",
            "transfer",
        )
        kind = data.draw(st.sampled_from(kinds))
        if kind == "transfer":
            return self._transfer(data)
        if kind == "recharge":
            return self._recharge(data)
        if kind == "expense":
            return self._expense(data)
        if kind == "refund":
            return self._refund(data)
        if kind == "hold":
            return self._hold(data)
        if kind == "capture":
            return self._capture(data)
        if kind == "release":
            return self._release(data)
        return self._adjustment(data)

    # -- the model ------------------------------------------------------------------------
    def _expect(self, key: str, command: Command) -> Expected:
        prior = self.keys.get(key)
        if prior is not None:
            previous_command, transaction_id = prior
            if previous_command == command:
                return Replay(transaction_id)
            return Rejection.IDEMPOTENCY_KEY_REUSED
        if isinstance(command, Recharge):
            return None
        if isinstance(command, Expense | Capture):
            ids = [line.order_id for line in command.orders]
            if len(set(ids)) != len(ids):
                return Rejection.ORDER_DUPLICATED
            if any(order_id in self.orders for order_id in ids):
                return Rejection.ORDER_ALREADY_PAID
            total = sum(line.amount for line in command.orders)
            if isinstance(command, Capture):
                hold = self.holds.get(command.hold_id)
                if hold is not None and hold.currency != command.currency:
                    return Rejection.CURRENCY_MISMATCH
                return self._expect_settling(command.hold_id) or (
                    Rejection.CAPTURE_EXCEEDS_HOLD
                    if total > self.holds[command.hold_id].amount
                    else None
                )
            if total > self.wallets.get((command.user_id, command.currency), 0):
                return Rejection.INSUFFICIENT_FUNDS
            return None
        if isinstance(command, Hold):
            if command.expires_at_us == 1:
                return Rejection.EXPIRY_INVALID
            if command.hold_id in self.holds:
                return Rejection.HOLD_ALREADY_PLACED
            if command.amount > self.wallets.get((command.user_id, command.currency), 0):
                return Rejection.INSUFFICIENT_FUNDS
            return None
        if isinstance(command, Release):
            return self._expect_settling(command.hold_id)
        if isinstance(command, Refund):
            if command.expense_id not in self.expenses:
                return Rejection.EXPENSE_UNKNOWN
            order = self.orders.get(command.order_id)
            if order is None or order.expense_id != command.expense_id:
                return Rejection.ORDER_UNKNOWN
            if order.currency != command.currency:
                return Rejection.CURRENCY_MISMATCH
            if command.amount > order.paid - order.refunded:
                return Rejection.REFUND_EXCEEDS_REFUNDABLE
            return None
        if isinstance(command, Transfer):
            return self._expect_transfer(command)
        if command.amount == 0:
            return Rejection.AMOUNT_NOT_POSITIVE
        if not command.reason.strip():
            return Rejection.REASON_INVALID
        wallet = self.wallets.get((command.user_id, command.currency), 0)
        if wallet + command.amount < 0:
            return Rejection.INSUFFICIENT_FUNDS
        return None

    def _expect_transfer(self, command: Transfer) -> Rejection | None:
        """The draws never name a bad kind or owner, a zero or a non-integer: the rungs left
        are a hold's account or one named twice, the sum, and the wallets' floors."""
        names = [account for account, _ in command.postings]
        if len(set(names)) != len(names) or any(name.startswith("hold:") for name in names):
            return Rejection.POSTINGS_INVALID
        if sum(amount for _, amount in command.postings):
            return Rejection.POSTINGS_UNBALANCED
        for account, amount in command.postings:
            kind, owner = account.split(":")
            wallet = self.wallets.get((owner, command.currency), 0)
            if kind == accounts.WALLET and wallet + amount < 0:
                return Rejection.INSUFFICIENT_FUNDS
        return None

    def _expect_settling(self, hold_id: str) -> Rejection | None:
        hold = self.holds.get(hold_id)
        if hold is None:
            return Rejection.HOLD_UNKNOWN
        return None if hold.open else Rejection.HOLD_SETTLED

    def _apply(self, command: Command, transaction_id: str) -> tuple[str, str]:
        """Fold a committed command into the model; returns the wallet it touched last."""
        if isinstance(command, Recharge | Adjustment):
            wallet = (command.user_id, command.currency)
            self.wallets[wallet] = self.wallets.get(wallet, 0) + command.amount
            return wallet
        if isinstance(command, Hold):
            wallet = (command.user_id, command.currency)
            self.wallets[wallet] -= command.amount
            self.holds[command.hold_id] = ModelHold(*wallet, command.amount)
            return wallet
        if isinstance(command, Release):
            hold = self.holds[command.hold_id]
            hold.open = False
            self.wallets[(hold.user_id, hold.currency)] += hold.amount
            return (hold.user_id, hold.currency)
        if isinstance(command, Expense | Capture):
            if isinstance(command, Capture):  # the hold back to the wallet, then the orders
                hold = self.holds[command.hold_id]
                hold.open = False
                wallet = (hold.user_id, hold.currency)
                self.wallets[wallet] += hold.amount
            else:
                wallet = (command.user_id, command.currency)
            self.expenses[transaction_id] = wallet[1]
            for line in command.orders:
                self.wallets[wallet] -= line.amount
                self.orders[line.order_id] = ModelOrder(transaction_id, *wallet, line.amount)
            return wallet
        if isinstance(command, Transfer):
            for account, amount in command.postings:
                kind, owner = account.split(":")
                if kind == accounts.WALLET:
                    wallet = (owner, command.currency)
                    self.wallets[wallet] = self.wallets.get(wallet, 0) + amount
            return (command.user_id, command.currency)
        order = self.orders[command.order_id]
        order.refunded += command.amount
        wallet = (order.user_id, order.currency)
        self.wallets[wallet] += command.amount
        return wallet

    def _check(self, envelope: Envelope, expected: Expected, outcome: Outcome) -> None:
        key, command = envelope.idempotency_key, envelope.command
        if isinstance(expected, Rejection):
            assert isinstance(outcome, Rejected), (command, outcome)
            assert outcome.reason == expected, (command, outcome)
            return
        assert isinstance(outcome, Committed), (command, expected, outcome)
        if isinstance(expected, Replay):
            assert outcome.replayed
            assert outcome.event.transaction_id == expected.transaction_id
            return
        assert not outcome.replayed
        self.events += 1
        assert outcome.event.seq == self.events
        assert outcome.event.idempotency_key == key
        self.keys[key] = (command, outcome.event.transaction_id)
        user, currency = self._apply(command, outcome.event.transaction_id)
        wallet = accounts.wallet(user, currency)
        lines = [entry for entry in outcome.entries if entry.account == wallet]
        assert lines, outcome.entries
        assert lines[-1].balance_after == self.wallets[(user, currency)]
        if isinstance(command, Transfer):  # one line per posting, each account named once
            assert [(e.account, e.amount) for e in outcome.entries] == [
                (f"{account}:{currency}", amount) for account, amount in command.postings
            ]
            for entry in outcome.entries:
                kind, owner, _ = accounts.split(entry.account)
                if kind == accounts.WALLET:
                    assert entry.balance_after == self.wallets[(owner, currency)], entry

    def _submit(self, envelopes: list[Envelope]) -> None:
        """Submit in one `execute_many`; the model decides the same commands in order."""
        outcomes = self.engine.execute_many(self.ledger, envelopes)
        assert len(outcomes) == len(envelopes)
        for envelope, outcome in zip(envelopes, outcomes, strict=True):
            self._check(envelope, self._expect(envelope.idempotency_key, envelope.command), outcome)
            self.sent.append(envelope.idempotency_key)

    def _one(self, data: st.DataObject, command: Command) -> None:
        envelope = Envelope(idempotency_key=self._key(data), command=command)
        expected = self._expect(envelope.idempotency_key, command)
        try:
            outcome: Outcome = self.engine.execute(self.ledger, envelope)
        except Rejected as rejection:
            outcome = rejection
        self._check(envelope, expected, outcome)
        self.sent.append(envelope.idempotency_key)

    # -- rules ------------------------------------------------------------------------------
    @rule(data=st.data())
    def recharge(self, data: st.DataObject) -> None:
        self._one(data, self._recharge(data))

    @rule(data=st.data())
    def expense(self, data: st.DataObject) -> None:
        self._one(data, self._expense(data))

    @rule(data=st.data())
    def refund(self, data: st.DataObject) -> None:
        self._one(data, self._refund(data))

    @rule(data=st.data())
    def adjust(self, data: st.DataObject) -> None:
        self._one(data, self._adjustment(data))

    @rule(data=st.data())
    def hold(self, data: st.DataObject) -> None:
        self._one(data, self._hold(data))

    @rule(data=st.data())
    def capture(self, data: st.DataObject) -> None:
        self._one(data, self._capture(data))

    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        self._one(data, self._release(data))

    @rule(data=st.data())
    def transfer(self, data: st.DataObject) -> None:
        self._one(data, self._transfer(data))

    @rule(data=st.data())
    def resend(self, data: st.DataObject) -> None:
        """An earlier key again, with its own command (a client retry) or another one."""
        if not self.keys:
            return
        key = data.draw(st.sampled_from(sorted(self.keys)), label="committed key")
        command = self.keys[key][0]
        if data.draw(st.booleans(), label="different command?"):
            command = self._any(data)
        self._one_with_key(key, command)

    def _one_with_key(self, key: str, command: Command) -> None:
        envelope = Envelope(idempotency_key=key, command=command)
        expected = self._expect(key, command)
        try:
            outcome: Outcome = self.engine.execute(self.ledger, envelope)
        except Rejected as rejection:
            outcome = rejection
        self._check(envelope, expected, outcome)

    @rule(data=st.data())
    def batch(self, data: st.DataObject) -> None:
        """Several commands in one `execute_many`, keys possibly repeated within it."""
        envelopes: list[Envelope] = []
        for _ in range(data.draw(st.integers(2, 6), label="batch size")):
            if envelopes and rarely(data, 5, "repeat in batch?"):
                earlier = data.draw(st.sampled_from(envelopes), label="repeated")
                same = data.draw(st.booleans(), label="same command?")
                command = earlier.command if same else self._any(data)
                envelopes.append(Envelope(idempotency_key=earlier.idempotency_key, command=command))
            else:
                envelopes.append(Envelope(idempotency_key=self._key(data), command=self._any(data)))
        self._submit(envelopes)

    # -- invariants -------------------------------------------------------------------------
    @invariant()
    def money_is_conserved_and_wallets_match_the_model(self) -> None:
        projections = self.engine.store.projections(self.ledger)
        totals: dict[str, int] = defaultdict(int)
        wallets: dict[tuple[str, str], int] = {}
        for row in projections.accounts:
            kind, owner, currency = accounts.split(row.account)
            totals[currency] += row.balance
            if kind == accounts.WALLET:
                assert row.balance >= 0, row
                wallets[(owner, currency)] = row.balance
            if kind == accounts.HOLD:  # what an open hold holds; a settled one, nothing
                hold = self.holds[owner]
                assert row.balance == (hold.amount if hold.open else 0), (row, hold)
        assert all(total == 0 for total in totals.values()), dict(totals)
        assert wallets == self.wallets
        for user in USERS:
            shown = views.balances(self.engine.store, self.ledger, user)["balances"]
            assert shown == [
                {"currency": c, "balance": format_amount(self.wallets[(user, c)], c)}
                for c in CURRENCIES
                if (user, c) in self.wallets
            ]
        refunded = {row.order_id: row.refunded for row in projections.orders}
        assert refunded == {order_id: o.refunded for order_id, o in self.orders.items()}

    def teardown(self) -> None:
        try:
            if self.events:
                result = verify(self.engine, self.ledger)
                assert result.ok, (result.problem, result.projection_differences)
                assert result.events == self.events
                live = self.engine.store.projections(self.ledger)
                rebuilt, head = self.engine.rebuild(self.ledger)
                assert rebuilt == live
                assert head == self.engine.store.head(self.ledger)
                self.engine.close()
                assert self.engine.replay(self.ledger) == head
                assert self.engine.store.projections(self.ledger) == live
                audit = audit_offline(self.db, self.ledger, self.directory)
                assert audit.ok, audit.finding
                assert audit.events == self.events
        finally:
            self.engine.close()
            self.engine.store.close()


EXAMPLES = {"sqlite": 60, "postgresql": 40}


@pytest.mark.slow
def test_ledger_machine(db: str, tmp_path: Path) -> None:
    class OnThisDatabase(LedgerMachine):
        def __init__(self) -> None:
            super().__init__(db, tmp_path)

    run_state_machine_as_test(
        OnThisDatabase,
        settings=settings(
            max_examples=EXAMPLES["postgresql" if is_postgres(db) else "sqlite"],
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[
                HealthCheck.too_slow,
                HealthCheck.filter_too_much,
            ],
        ),
    )

"""A ledger's state as a fold over its events, with an undo journal for batches.

`evolve(state, event)` is the one way state changes, on the live path and on replay alike;
it re-checks the invariants as it goes and returns the ledger lines (`Entry`) the event
produced, each with the account's balance after it.

State is mutable for speed (a writer folds tens of thousands of events a second), but every
change inside a batch is journaled: `begin()` opens a batch, `rollback_newest()` puts back
exactly what the batch changed, `release_oldest()` forgets the journal of a committed batch.
A batch whose database commit fails therefore leaves the state as it was.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

from tally.domain import accounts, limits
from tally.domain.commands import OrderLine
from tally.domain.events import (
    BalanceAdjusted,
    Event,
    ExpensePaid,
    HoldCaptured,
    HoldPlaced,
    HoldReleased,
    RefundIssued,
    Transferred,
    WalletRecharged,
)
from tally.domain.limits import INT64_MAX, INT64_MIN
from tally.domain.rejections import InvariantViolated


class Entry(NamedTuple):
    """One ledger line: a posting and the account's balance right after it."""

    account: str
    seq: int
    posting_index: int  # the posting's place within its event
    amount: int
    balance_after: int
    order_id: str | None


class OrderState(NamedTuple):
    """What an order was paid and what has been refunded of it."""

    order_id: str
    expense_id: str
    user_id: str
    currency: str
    merchant_id: str
    paid: int
    refunded: int = 0

    @property
    def refundable(self) -> int:
        return self.paid - self.refunded


class HoldState(NamedTuple):
    """A hold, and the transaction that settled it (captured or released) once it has."""

    hold_id: str
    transaction_id: str  # the hold's own
    seq: int  # the hold's own
    user_id: str
    currency: str
    amount: int
    expires_at_us: int | None
    settled_by: str | None = None  # the capture's or release's transaction id

    def expired(self, at_us: int) -> bool:
        return self.expires_at_us is not None and at_us >= self.expires_at_us


# What the state keeps per event and per order lives as long as the server: plain tuples, not
# NamedTuples. The garbage collector stops tracking a plain tuple of strings and numbers the
# first time it passes over it; a NamedTuple (a tuple subclass) it tracks, and traverses on
# every later pass of its generation, for ever: after 300,000 expenses (614,000 tracked
# objects) a full pass took 262 ms, stopping every thread of a server, against 2 ms
# (docs/benchmarks.md). `LedgerState.order` gives the named view.
IdempotencyRecord = tuple[str, int]  # (command_digest, seq)
OrderTuple = tuple[str, str, str, str, str, int, int]  # OrderState's fields, `refunded` last
HoldTuple = tuple[str, str, int, str, str, int, int | None, str | None]  # HoldState's fields


_MISSING: Any = object()
# `tuple.__new__(Entry, (...))` builds a NamedTuple without the Python-level `__new__` that
# `Entry(...)` runs: less than half the cost, for the objects built per posting.
_new_tuple = tuple.__new__


class LedgerState:
    """Balances, orders, expenses, refund requests, gateway payments, holds and idempotency
    keys of one ledger, after `seq` events."""

    __slots__ = (
        "_levels",
        "_undo",
        "balances",
        "created_accounts",
        "created_holds",
        "created_orders",
        "dirty_holds",
        "dirty_orders",
        "expenses",
        "gateway_payments",
        "holds",
        "keys",
        "last_timestamp_us",
        "ledger",
        "orders",
        "refund_requests",
        "seq",
    )

    def __init__(self, ledger: str) -> None:
        self.ledger = ledger
        self.seq = 0
        self.last_timestamp_us = 0
        self.balances: dict[str, int] = {}
        self.orders: dict[str, OrderTuple] = {}  # see `order`
        self.expenses: dict[str, str] = {}  # expense (or capture) transaction id -> currency
        self.keys: dict[str, IdempotencyRecord] = {}
        self.refund_requests: dict[str, str] = {}  # refund request id -> transaction id
        self.gateway_payments: dict[str, str] = {}  # `gateway_payment(...)` -> transaction id
        self.holds: dict[str, HoldTuple] = {}  # see `hold`
        self._undo: list[tuple[dict[Any, Any], Any, Any]] | None = None
        self._levels: list[tuple[list[tuple[dict[Any, Any], Any, Any]], int, int]] = []
        self.dirty_orders: set[str] = set()
        self.created_accounts: set[str] = set()  # the accounts the batch opened
        self.created_orders: set[str] = set()  # the dirty orders the batch created
        self.dirty_holds: set[str] = set()  # the holds the batch placed or settled
        self.created_holds: set[str] = set()  # the dirty holds the batch placed

    # -- the batch journal -------------------------------------------------------------
    # Batches nest: while batch N is being committed the writer already decides batch N+1
    # on top of it. Each open batch is a level with its own undo list; the oldest level is
    # released when its commit lands, the newest is rolled back when a commit fails.
    def begin(self) -> None:
        """Open a new batch level; changes from now on can be rolled back."""
        self._undo = []
        self._levels.append((self._undo, self.seq, self.last_timestamp_us))
        self.dirty_orders = set()
        self.created_accounts = set()
        self.created_orders = set()
        self.dirty_holds = set()
        self.created_holds = set()

    @property
    def open_batches(self) -> int:
        return len(self._levels)

    def release_oldest(self) -> None:
        """The oldest open batch committed: forget how to undo it."""
        if not self._levels:
            raise InvariantViolated("no open batch to release")
        del self._levels[0]
        if not self._levels:
            self._undo = None

    def rollback_newest(self) -> None:
        """Put back exactly what the newest open batch changed."""
        if not self._levels:
            raise InvariantViolated("no open batch to roll back")
        undo, self.seq, self.last_timestamp_us = self._levels.pop()
        for table, key, old in reversed(undo):
            if old is _MISSING:
                del table[key]
            else:
                table[key] = old
        self._undo = self._levels[-1][0] if self._levels else None

    def _set(self, table: dict[Any, Any], key: Any, value: Any) -> None:
        if self._undo is not None:
            self._undo.append((table, key, table.get(key, _MISSING)))
        table[key] = value

    # -- reads -------------------------------------------------------------------------
    def balance(self, account: str) -> int:
        return self.balances.get(account, 0)

    def order(self, order_id: str) -> OrderState | None:
        found = self.orders.get(order_id)
        return None if found is None else _new_tuple(OrderState, found)

    def hold(self, hold_id: str) -> HoldState | None:
        found = self.holds.get(hold_id)
        return None if found is None else _new_tuple(HoldState, found)

    def expired_holds(self, at_us: int) -> list[HoldState]:
        """The holds still open that expired by `at_us`, by hold id: money that only a
        release gives back."""
        # copied in one step first: a server's sweep reads this beside the writer's thread
        holds = (_new_tuple(HoldState, found) for found in list(self.holds.values()))
        return sorted(h for h in holds if h.settled_by is None and h.expired(at_us))


def evolve(state: LedgerState, event: Event) -> list[Entry]:
    """Apply one committed (or about to be committed) event; return its ledger lines."""
    if event.seq != state.seq + 1:
        raise InvariantViolated(f"event seq {event.seq} does not follow {state.seq}")
    entries = _post(state, event)
    if isinstance(event, ExpensePaid):
        _record_expense(state, event)
    elif isinstance(event, RefundIssued):
        _record_refund(state, event)
    elif isinstance(event, WalletRecharged) and event.gateway_reference is not None:
        payment = gateway_payment(event.gateway, event.gateway_reference)
        if payment in state.gateway_payments:
            raise InvariantViolated(f"seq {event.seq}: gateway payment {payment} credited twice")
        state._set(state.gateway_payments, payment, event.transaction_id)
    elif isinstance(event, BalanceAdjusted) and not event.reason:
        raise InvariantViolated(f"seq {event.seq}: adjustment without a reason")
    elif type(event) is Transferred and type(event.reason) is not str:
        raise InvariantViolated(f"seq {event.seq}: a transfer's reason is not text")
    elif isinstance(event, HoldPlaced | HoldCaptured | HoldReleased):
        _record_hold(state, event)
    if event.idempotency_key in state.keys:
        raise InvariantViolated(f"seq {event.seq}: idempotency key used twice")
    record: IdempotencyRecord = (event.command_digest, event.seq)
    state._set(state.keys, event.idempotency_key, record)
    state.seq = event.seq
    state.last_timestamp_us = max(state.last_timestamp_us, event.timestamp_us)
    return entries


def check_logged(state: LedgerState, event: Event) -> None:
    """An event read from a log (replay, catch-up) must be one the writer could have made:
    its postings exactly those docs/log-format.md prescribes for its type and fields (which
    also ties a refund's or an adjustment's `amount` to the money it moves, and every amount
    to the event's currency), and its amounts of the right sign. `evolve` checks the rest.
    The writer's own events are made that way by `decide`, so the live path skips this."""
    if _HEX64.fullmatch(event.command_digest) is None:
        raise InvariantViolated(f"seq {event.seq}: command_digest is not 64 lowercase hex digits")
    if not limits.printable_within(event.actor, limits.actor_length_max):
        raise InvariantViolated(f"seq {event.seq}: actor is not 1 to 255 printable characters")
    # An id whose account the state holds was checked when that account first appeared
    # (its text equals an account id of three parts, so it holds no `:`): skipped, as
    # `decide` does. Replay folds millions of events; most name known wallets and merchants.
    known = state.balances
    currency = event.currency
    if len(currency) != 3 or not (currency.isascii() and currency.isalpha() and currency.isupper()):
        raise InvariantViolated(f"seq {event.seq}: currency {currency!r} is no ISO 4217 code")
    if accounts.wallet(event.user_id, currency) not in known:
        _check_id(event, "user_id", event.user_id)
    if type(event) is ExpensePaid:
        if not event.orders:
            raise InvariantViolated(f"seq {event.seq}: an expense without orders")
        for order_id, _, merchant_id in event.orders:
            _check_id(event, "order_id", order_id)
            if accounts.revenue(merchant_id, currency) not in known:
                _check_id(event, "merchant_id", merchant_id)
    elif type(event) is WalletRecharged:
        if accounts.clearing(event.gateway, currency) not in known:
            _check_id(event, "gateway", event.gateway)
        if event.gateway_reference is not None:
            _check_id(event, "gateway_reference", event.gateway_reference)
    elif type(event) is RefundIssued:
        _check_id(event, "expense_id", event.expense_id)
        _check_id(event, "order_id", event.order_id)
        if event.refund_request_id is not None:
            _check_id(event, "refund_request_id", event.refund_request_id)
    elif isinstance(event, HoldPlaced | HoldCaptured | HoldReleased):
        _check_id(event, "hold_id", event.hold_id)
        if isinstance(event, HoldCaptured):
            if not event.orders:
                raise InvariantViolated(f"seq {event.seq}: a capture without orders")
            for order_id, _, merchant_id in event.orders:
                _check_id(event, "order_id", order_id)
                if accounts.revenue(merchant_id, currency) not in known:
                    _check_id(event, "merchant_id", merchant_id)
    prescribed = _prescribed_postings(state, event)
    # Plain tuples: a Posting (a NamedTuple) equals the tuple of its fields.
    if prescribed is not None and tuple(event.postings) != prescribed:
        raise InvariantViolated(
            f"seq {event.seq}: postings are not those of its {event.event_type}"
        )


def gateway_payment(gateway: str, reference: str) -> str:
    """The business key of a recharge naming its gateway payment: unique per gateway (two
    gateways may use the same id). Identifiers hold no `:`, so the pair reads back."""
    return f"{gateway}:{reference}"


_Leg = tuple[str, str, int, str | None]
_FLOORED = (accounts.WALLET_PREFIX, accounts.HOLD_PREFIX)  # accounts that never go below zero
_HEX64 = re.compile(r"[0-9a-f]{64}")


def _check_id(event: Event, name: str, value: str) -> None:
    if not accounts.is_identifier(value):
        raise InvariantViolated(f"seq {event.seq}: {name} is not an identifier")


def _prescribed_postings(state: LedgerState, event: Event) -> tuple[_Leg, ...] | None:
    currency = event.currency
    wallet = accounts.wallet(event.user_id, currency)
    if type(event) is ExpensePaid:  # the common case first
        return tuple(_order_legs(event, wallet, event.orders))
    if isinstance(event, WalletRecharged):
        amount = event.postings[-1].amount if event.postings else 0
        if amount <= 0:
            raise InvariantViolated(f"seq {event.seq}: a recharge of no money")
        clearing = accounts.clearing(event.gateway, currency)
        return ((clearing, currency, -amount, None), (wallet, currency, amount, None))
    if isinstance(event, RefundIssued):
        order = state.order(event.order_id)
        if order is None:
            return None  # `evolve` refuses a refund of an order nobody paid
        if event.amount <= 0 or order.currency != currency or order.user_id != event.user_id:
            raise InvariantViolated(f"seq {event.seq}: a refund unlike its order")
        revenue = accounts.revenue(order.merchant_id, currency)
        return (
            (revenue, currency, -event.amount, event.order_id),
            (wallet, currency, event.amount, event.order_id),
        )
    if isinstance(event, BalanceAdjusted):
        if event.amount == 0:
            raise InvariantViolated(f"seq {event.seq}: an adjustment of no money")
        equity = accounts.adjustments(currency)
        return ((equity, currency, -event.amount, None), (wallet, currency, event.amount, None))
    if isinstance(event, HoldPlaced):
        if event.amount <= 0:
            raise InvariantViolated(f"seq {event.seq}: a hold of no money")
        expires_at_us = event.expires_at_us
        if expires_at_us is not None and expires_at_us <= event.timestamp_us:
            raise InvariantViolated(f"seq {event.seq}: a hold expiring before it was placed")
        if expires_at_us is not None and expires_at_us > limits.timestamp_us_max:
            raise InvariantViolated(f"seq {event.seq}: a hold expiring after year 9999")
        held = accounts.hold(event.hold_id, currency)
        return ((wallet, currency, -event.amount, None), (held, currency, event.amount, None))
    if isinstance(event, HoldCaptured | HoldReleased):
        hold = state.hold(event.hold_id)
        # Named here, before `evolve` posts: its floor would refuse them first, for a reason
        # ("hold:… would fall below zero") that is not the one.
        if hold is None:
            raise InvariantViolated(f"seq {event.seq}: {event.event_type} of a hold never placed")
        if hold.settled_by is not None:
            raise InvariantViolated(f"seq {event.seq}: hold {event.hold_id} settled twice")
        if hold.currency != currency or hold.user_id != event.user_id:
            raise InvariantViolated(f"seq {event.seq}: a {event.event_type} unlike its hold")
        if isinstance(event, HoldReleased) and event.amount != hold.amount:
            raise InvariantViolated(f"seq {event.seq}: a release of another amount than held")
        held = accounts.hold(event.hold_id, currency)
        back = ((held, currency, -hold.amount, None), (wallet, currency, hold.amount, None))
        if isinstance(event, HoldReleased):
            return back
        return (*back, *_order_legs(event, wallet, event.orders))
    if isinstance(event, Transferred):
        _check_transfer(state, event, wallet)
        return None  # its postings are its own: checked above, summed and floored by `_post`
    raise InvariantViolated(f"seq {event.seq}: unknown event type {type(event).__name__}")


def _check_transfer(state: LedgerState, event: Transferred, wallet: str) -> None:
    """A logged transfer's postings as `decide` makes them: 2 to the limit, each on a
    transferable account of the event's currency named once, none for an order, of no money
    or of more than 64 bits either way, one on the user's wallet."""
    postings = event.postings
    if not 2 <= len(postings) <= limits.postings_per_transfer_max:
        raise InvariantViolated(f"seq {event.seq}: a transfer of {len(postings)} postings")
    named = {posting.account for posting in postings}
    if len(named) != len(postings) or wallet not in named:
        raise InvariantViolated(
            f"seq {event.seq}: a transfer naming an account twice, or not its user's wallet"
        )
    for account, currency, amount, order_id in postings:
        parts = account.split(":")
        if (
            len(parts) != 3
            or parts[0] not in accounts.TRANSFERABLE_KINDS
            or parts[2] != event.currency
            or currency != event.currency
            or order_id is not None
            or type(amount) is not int
            or amount == 0
            or abs(amount) > limits.amount_max
        ):
            raise InvariantViolated(f"seq {event.seq}: a transfer posting unlike the format's")
        if account not in state.balances:
            _check_id(event, "an account's owner", parts[1])


def _order_legs(event: Event, wallet: str, orders: tuple[OrderLine, ...]) -> list[_Leg]:
    """An expense's (or a capture's) legs: each order paid from the wallet to its merchant."""
    currency = event.currency
    legs: list[_Leg] = []
    for order_id, amount, merchant_id in orders:
        if amount <= 0:
            raise InvariantViolated(f"seq {event.seq}: order {order_id} pays no money")
        legs.append((wallet, currency, -amount, order_id))
        legs.append((accounts.revenue(merchant_id, currency), currency, amount, order_id))
    return legs


def _post(state: LedgerState, event: Event) -> list[Entry]:
    # The hottest loop in tally: journaling is inlined rather than going through `_set`.
    balances = state.balances
    undo = state._undo
    seq = event.seq
    entries: list[Entry] = []
    total = 0
    other_currencies = False
    for index, posting in enumerate(event.postings):
        account = posting.account
        before = balances.get(account, _MISSING)
        after = (0 if before is _MISSING else before) + posting.amount
        if after > INT64_MAX or after < INT64_MIN:
            raise InvariantViolated(f"seq {seq}: {account} leaves the 64-bit range")
        if after < 0 and account.startswith(_FLOORED):
            raise InvariantViolated(f"seq {seq}: {account} would fall below zero")
        if before is _MISSING:
            state.created_accounts.add(account)
        if undo is not None:
            undo.append((balances, account, before))
        balances[account] = after
        total += posting.amount
        other_currencies = other_currencies or posting.currency != event.currency
        entries.append(
            _new_tuple(Entry, (account, seq, index, posting.amount, after, posting.order_id))
        )
    if total or other_currencies:
        _check_zero_sum_per_currency(event)
    return entries


def _check_zero_sum_per_currency(event: Event) -> None:
    totals: dict[str, int] = {}
    for posting in event.postings:
        totals[posting.currency] = totals.get(posting.currency, 0) + posting.amount
    if any(totals.values()):
        raise InvariantViolated(f"seq {event.seq}: postings do not sum to zero: {totals}")


def _record_expense(state: LedgerState, event: ExpensePaid | HoldCaptured) -> None:
    state._set(state.expenses, event.transaction_id, event.currency)
    for line in event.orders:
        if line.order_id in state.orders:
            raise InvariantViolated(f"seq {event.seq}: order {line.order_id} paid twice")
        order: OrderTuple = (
            line.order_id,
            event.transaction_id,
            event.user_id,
            event.currency,
            line.merchant_id,
            line.amount,
            0,  # refunded
        )
        state._set(state.orders, line.order_id, order)
        state.dirty_orders.add(line.order_id)
        state.created_orders.add(line.order_id)


def _record_refund(state: LedgerState, event: RefundIssued) -> None:
    order = state.order(event.order_id)
    if order is None or order.expense_id != event.expense_id:
        raise InvariantViolated(f"seq {event.seq}: refund of an order the expense did not pay")
    refunded = order.refunded + event.amount
    if refunded > order.paid:
        raise InvariantViolated(f"seq {event.seq}: order {order.order_id} refunded beyond paid")
    state._set(state.orders, event.order_id, (*order[:-1], refunded))  # `refunded` is last
    state.dirty_orders.add(event.order_id)
    request_id = event.refund_request_id
    if request_id is not None:
        if request_id in state.refund_requests:
            raise InvariantViolated(f"seq {event.seq}: refund request {request_id} refunded twice")
        state._set(state.refund_requests, request_id, event.transaction_id)


def _record_hold(state: LedgerState, event: HoldPlaced | HoldCaptured | HoldReleased) -> None:
    seq = event.seq
    if isinstance(event, HoldPlaced):
        if event.hold_id in state.holds:
            raise InvariantViolated(f"seq {seq}: hold {event.hold_id} placed twice")
        placed: HoldTuple = (
            event.hold_id,
            event.transaction_id,
            seq,
            event.user_id,
            event.currency,
            event.amount,
            event.expires_at_us,
            None,  # settled_by
        )
        state._set(state.holds, event.hold_id, placed)
        state.dirty_holds.add(event.hold_id)
        state.created_holds.add(event.hold_id)
        return
    hold = state.hold(event.hold_id)
    if hold is None:
        raise InvariantViolated(f"seq {seq}: {event.event_type} of a hold never placed")
    if hold.settled_by is not None:
        raise InvariantViolated(f"seq {seq}: hold {event.hold_id} settled twice")
    if isinstance(event, HoldCaptured):
        if hold.expired(event.timestamp_us):
            raise InvariantViolated(f"seq {seq}: hold {event.hold_id} captured after it expired")
        if sum(line.amount for line in event.orders) > hold.amount:
            raise InvariantViolated(f"seq {seq}: hold {event.hold_id} captured beyond its amount")
        _record_expense(state, event)
    state._set(state.holds, event.hold_id, (*hold[:-1], event.transaction_id))
    state.dirty_holds.add(event.hold_id)

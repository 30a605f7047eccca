"""Projection rows from folded state: the per-batch delta and the whole-ledger rebuild."""

from __future__ import annotations

from collections.abc import Iterable

from tally.domain.events import Event
from tally.domain.state import Entry, HoldTuple, LedgerState, OrderTuple
from tally.engine.ports import AccountRow, EntryRow, HoldRow, KeyRow, OrderRow, Projections

_new_tuple = tuple.__new__


def order_rows(orders: Iterable[OrderTuple]) -> list[OrderRow]:
    """The state's orders (plain tuples of OrderRow's fields) as rows."""
    return [_new_tuple(OrderRow, order) for order in orders]


def hold_rows(holds: Iterable[HoldTuple]) -> list[HoldRow]:
    """The state's holds (plain tuples of HoldRow's fields) as rows."""
    return [_new_tuple(HoldRow, hold) for hold in holds]


def key_row(event: Event) -> KeyRow:
    return KeyRow(event.idempotency_key, event.command_digest, event.seq)


class Rebuild:
    """Folds a whole log into projection rows, as replay and verify need them."""

    def __init__(self) -> None:
        self.entries: list[EntryRow] = []
        self.keys: list[KeyRow] = []
        self.last_seq: dict[str, int] = {}

    def add(self, event: Event, entries: list[Entry]) -> None:
        self.entries.extend(entries)
        for entry in entries:
            self.last_seq[entry.account] = entry.seq
        self.keys.append(key_row(event))

    def take(self) -> Projections:
        """The entries and keys added since the last take, for a store to write while the
        fold goes on (replay); accounts, orders and holds come once the log is folded
        (`rest`)."""
        part = Projections(accounts=[], entries=self.entries, orders=[], keys=self.keys, holds=[])
        self.entries, self.keys = [], []
        return part

    def rest(self, state: LedgerState) -> Projections:
        """After the last `take`: every account, order and hold, final, and what was added
        since."""
        return Projections(
            accounts=self._accounts(state),
            entries=self.entries,
            orders=order_rows(sorted(state.orders.values())),
            keys=self.keys,
            holds=hold_rows(sorted(state.holds.values())),
        )

    def _accounts(self, state: LedgerState) -> list[AccountRow]:
        return sorted(
            AccountRow(account, balance, self.last_seq[account])
            for account, balance in state.balances.items()
        )

    def finish(self, state: LedgerState) -> Projections:
        return Projections(
            accounts=self._accounts(state),
            entries=sorted(self.entries),
            orders=order_rows(sorted(state.orders.values())),
            keys=sorted(self.keys),
            holds=hold_rows(sorted(state.holds.values())),
        )

"""Projection rows from folded state: the per-batch delta and the whole-ledger rebuild."""

from __future__ import annotations

from tally.domain.events import Event
from tally.domain.state import Entry, LedgerState
from tally.engine.ports import AccountRow, EntryRow, KeyRow, Projections


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

    def finish(self, state: LedgerState) -> Projections:
        return Projections(
            accounts=sorted(
                AccountRow(account, balance, self.last_seq[account])
                for account, balance in state.balances.items()
            ),
            entries=sorted(self.entries),
            orders=sorted(state.orders.values()),  # an OrderState is its own row
            keys=sorted(self.keys),
        )

"""Storage adapters implementing `tally.engine.ports.Store`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tally.engine.ports import AccountRow

_new_tuple = tuple.__new__


def with_account_columns(account_rows: str) -> str:
    """`account_rows` (a `SELECT a.account, …` of the accounts table) with the account's
    kind, owner and currency after its name, as `accounts_as_named` reads them."""
    projected = account_rows.replace(
        "SELECT a.account,", "SELECT a.account, a.kind, a.owner, a.currency,", 1
    )
    if projected == account_rows:
        raise ValueError("not a SELECT a.account, … query")
    return projected


def accounts_as_named(rows: Iterable[Iterable[Any]]) -> list[AccountRow]:
    """Stored accounts (rows of `with_account_columns`) for comparing with a replay, on every
    store: an account whose kind, owner or currency columns (what balance reads select by)
    are not the text its name spells shows as another account, one that says what they hold.

    With their types: SQLite's columns take any type, and a kind stored as a BLOB reads as
    its text once concatenated, yet `kind = ?` never finds it (balance reads lose the
    account). PostgreSQL's columns are text: there, only their values can disagree."""
    return [
        _new_tuple(AccountRow, (_as_named(account, kind, owner, currency), balance, last_seq))
        for account, kind, owner, currency, balance, last_seq in rows
    ]


def _as_named(account: object, kind: object, owner: object, currency: object) -> str:
    if (
        type(account) is str
        and type(kind) is str
        and type(owner) is str
        and type(currency) is str
        and account == f"{kind}:{owner}:{currency}"
    ):
        return account
    columns = ":".join(_shown(column) for column in (kind, owner, currency))
    return f"{_shown(account)} (columns say {columns})"


def _shown(value: object) -> str:
    """Text as it is; another type (a tampered SQLite column) as Python writes it: b'wallet'."""
    return value if type(value) is str else repr(value)

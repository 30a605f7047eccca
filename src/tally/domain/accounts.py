"""Account identities: `kind:owner:currency`.

Every account holds one currency. Identifiers are validated (`is_identifier`: by `decide.py`
for a command, by `state.check_logged` for a logged event) to a charset without `:`, so an
account id splits back into its three parts unambiguously.

- `wallet:<user>:<CUR>`      a user's wallet; may never go below zero.
- `clearing:<gateway>:<CUR>` money received from a payment gateway, not yet settled; it goes
                             negative as users recharge (the gateway owes the platform).
- `revenue:<merchant>:<CUR>` what orders paid a merchant, less refunds.
- `equity:<name>:<CUR>`      the platform's own money: `adjustments` is the other side of
                             manual adjustments; transfers may name others (promotions).
- `hold:<hold_id>:<CUR>`     the money of one hold, taken from the wallet while it is open;
                             its capture or release empties it. May never go below zero.
"""

from __future__ import annotations

import re
from typing import Final

from tally.domain import limits

# Every user, gateway, merchant, order and transaction id: no `:`, so an account id splits
# back into its parts (docs/log-format.md, "Identifiers").
_IDENTIFIER = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_.@-]{{0,{limits.identifier_length_max - 1}}}")
WALLET: Final = "wallet"
CLEARING: Final = "clearing"
REVENUE: Final = "revenue"
EQUITY: Final = "equity"
HOLD: Final = "hold"
WALLET_PREFIX: Final = "wallet:"
HOLD_PREFIX: Final = "hold:"
# What a transfer may name: every kind but a hold's, whose money only its capture or
# release moves.
TRANSFERABLE_KINDS: Final = (WALLET, REVENUE, CLEARING, EQUITY)


def wallet(user_id: str, currency: str) -> str:
    return f"{WALLET}:{user_id}:{currency}"


def clearing(gateway: str, currency: str) -> str:
    return f"{CLEARING}:{gateway}:{currency}"


def revenue(merchant_id: str, currency: str) -> str:
    return f"{REVENUE}:{merchant_id}:{currency}"


def adjustments(currency: str) -> str:
    return f"{EQUITY}:adjustments:{currency}"


def hold(hold_id: str, currency: str) -> str:
    return f"{HOLD}:{hold_id}:{currency}"


def split(account: str) -> tuple[str, str, str]:
    """Return `(kind, owner, currency)` of an account id."""
    kind, owner, currency = account.split(":")
    return kind, owner, currency


def floor_of(account: str) -> int | None:
    """The lowest balance the account may reach, or None when it is unbounded."""
    return 0 if account.startswith((WALLET_PREFIX, HOLD_PREFIX)) else None


def is_identifier(value: object) -> bool:
    return isinstance(value, str) and _IDENTIFIER.fullmatch(value) is not None

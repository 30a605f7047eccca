"""What clients ask for. Amounts are already integer minor units here.

Commands are plain frozen facts; whether one is acceptable is decided in `decide.py`.
`Envelope` carries what every write has besides its body: the client's idempotency key and
who sent it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

Metadata = tuple[tuple[str, str], ...]
"""Flat string-to-string metadata, sorted by key so equal metadata is equal data."""


def metadata_from(mapping: dict[str, str] | None) -> Metadata:
    """Freeze a metadata mapping; types are checked by the decider."""
    if not mapping:
        return ()
    return tuple(sorted(mapping.items()))


@dataclass(frozen=True, slots=True, kw_only=True)
class Recharge:
    """Money arrives from a payment gateway into a user's wallet.

    `gateway_reference`, when given, is the gateway's own id of the payment (a PayPal
    capture id, a Stripe payment intent): a business key, so a ledger credits a gateway's
    payment at most once, whatever idempotency key a retried webhook carries."""

    user_id: str
    amount: int
    currency: str
    gateway: str
    metadata: Metadata = ()
    gateway_reference: str | None = None


class OrderLine(NamedTuple):
    """One order paid by an expense (a NamedTuple: immutable and cheap to build)."""

    order_id: str
    amount: int
    merchant_id: str = "platform"


@dataclass(frozen=True, slots=True, kw_only=True)
class Expense:
    """One wallet pays one or many orders, all or none."""

    user_id: str
    currency: str
    orders: tuple[OrderLine, ...]
    metadata: Metadata = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Refund:
    """Money goes back to the wallet, against one order of one expense.

    `currency` is what the caller believes the expense was paid in; the edge fills it in
    from the expense when the caller gives none. `refund_request_id`, when given, is the
    platform's own id of the refund request (a return, a cancellation): a business key, so
    a ledger issues at most one refund per request, whatever idempotency key a retry carries.
    """

    expense_id: str
    order_id: str
    amount: int
    currency: str
    reason: str = ""
    metadata: Metadata = ()
    refund_request_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Adjustment:
    """A manual correction with a reason: history is never edited, it is corrected."""

    user_id: str
    amount: int  # signed: positive credits the wallet, negative debits it
    currency: str
    reason: str
    metadata: Metadata = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Hold:
    """Money set aside from a wallet for a payment not yet settled (a card-style
    authorization): it leaves the wallet's available balance at once, and is later captured
    (it pays orders, the rest goes back) or released (all of it goes back).

    `hold_id` is the platform's own id of the hold, unique within the ledger: a business
    key, and how the capture or release names it. A hold with `expires_at_us` can no longer
    be captured from that moment (microseconds since the Unix epoch); it can still be
    released, which is how its money goes back."""

    user_id: str
    amount: int
    currency: str
    hold_id: str
    metadata: Metadata = ()
    expires_at_us: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Capture:
    """An open hold pays one or many orders, all or none; what the orders do not take goes
    back to the wallet in the same transaction. A hold is captured once. The capture's
    transaction id is what a refund of one of its orders names as `expense_id`.

    `currency` is the one the orders' amounts were read in, which the caller believes is
    the hold's (an edge fills it in from the hold): a capture whose hold turns out to be in
    another currency is refused (`currency_mismatch`), never paid in that one."""

    hold_id: str
    currency: str
    orders: tuple[OrderLine, ...]
    metadata: Metadata = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Release:
    """An open hold's money goes back to the wallet, all of it (an expired hold too)."""

    hold_id: str
    reason: str = ""
    metadata: Metadata = ()


class TransferPosting(NamedTuple):
    """One leg of a transfer as a client names it: `account` is `kind:owner` (the
    transfer's currency completes it), `amount` signed minor units (negative: taken)."""

    account: str
    amount: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Transfer:
    """Money moved between a user's wallet and other accounts, as postings that sum to
    zero: the generic multi-posting transaction beside the wallet words (a payment from one
    user to another, a fee, a promotional credit, a split).

    `user_id` is whose transaction it is: one posting is on that user's wallet. Every
    account is a wallet, a merchant's revenue, a gateway's clearing or an equity account
    (`accounts.TRANSFERABLE_KINDS`), named once; a wallet never goes below zero."""

    user_id: str
    currency: str
    postings: tuple[TransferPosting, ...]
    reason: str = ""
    metadata: Metadata = ()


Command = Recharge | Expense | Refund | Adjustment | Hold | Capture | Release | Transfer


@dataclass(frozen=True, slots=True, kw_only=True)
class Envelope:
    """A command as it reaches the writer."""

    idempotency_key: str
    command: Command
    actor: str = "cli"  # who sent it: an API key id, or "cli"

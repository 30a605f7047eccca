"""`tally transfer`: money moved between a user's wallet and other accounts, as postings
that sum to zero (a payment from one user to another, a fee, a promotional credit).

Registered into the `tally` app by the last lines of cli/app.py.
"""

from __future__ import annotations

from typing import Annotated

from cyclopts import Parameter

from tally.cli.ledger_access import print_rejection, write
from tally.cli.options import Common
from tally.domain.commands import Envelope, Transfer, TransferPosting
from tally.domain.rejections import Rejected, Rejection
from tally.money import exponent, parse_amount


def transfer(
    user: str,
    currency: str,
    /,
    *,
    posting: Annotated[list[str], Parameter(consume_multiple=False)],
    key: str,
    reason: str = "",
    common: Common | None = None,
) -> int:
    """Move money between USER's wallet and other accounts in CURRENCY, all or none:
    --posting ACCOUNT=AMOUNT for each leg, ACCOUNT as kind:owner (wallet, revenue, clearing
    or equity), AMOUNT signed ("-5.50" takes from the account).

    The postings sum to zero, one is on USER's wallet, each account is named once, and no
    wallet goes below zero. E.g. alice pays bob 5.00 and the platform a 0.50 fee:
    `tally transfer alice USD --posting wallet:alice=-5.50 --posting wallet:bob=5.00
    --posting revenue:platform=0.50 --key split-1`."""
    common = common or Common()
    try:
        exponent(currency)  # an unknown currency is the first thing to report
        postings = tuple(_posting(text, currency, index) for index, text in enumerate(posting))
    except Rejected as rejection:
        return print_rejection(rejection, common)
    command = Transfer(user_id=user, currency=currency, postings=postings, reason=reason)
    return write(common, Envelope(idempotency_key=key, command=command))


def _posting(text: str, currency: str, index: int) -> TransferPosting:
    account, separator, amount = text.rpartition("=")
    if not separator:
        raise Rejected(
            Rejection.POSTINGS_INVALID,
            field=f"postings[{index}]",
            detail=f"expected ACCOUNT=AMOUNT, got {text!r}",
        )
    field = f"postings[{index}].amount"
    return TransferPosting(account, parse_amount(amount, currency, field=field, signed=True))

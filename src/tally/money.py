"""Amounts at the edges: decimal strings in, decimal strings out, integers inside.

`parse_amount("150.00", "USD") == 15000`; `format_amount(15000, "USD") == "150.00"`.
Floats are refused outright: a binary float cannot carry a decimal amount exactly.
"""

from __future__ import annotations

import re
from functools import cache

from iso4217 import Currency

from tally.domain.limits import INT64_MAX
from tally.domain.rejections import Rejected, Rejection

_DECIMAL = re.compile(r"(-?)([0-9]{1,20})(?:\.([0-9]{1,20}))?")
_CODE = re.compile(r"[A-Z]{3}")


@cache
def exponent(currency: str) -> int:
    """Minor-unit exponent of an ISO 4217 currency (USD 2, JPY 0, BHD 3)."""
    if not isinstance(currency, str) or _CODE.fullmatch(currency) is None:
        raise _unknown(currency)
    try:
        value = Currency(currency).exponent
    except ValueError:
        raise _unknown(currency) from None
    if value is None:  # gold, SDRs, test codes: no minor unit, not money tally holds
        raise _unknown(currency)
    return int(value)


def currencies() -> frozenset[str]:
    """Every ISO 4217 code with a defined minor unit."""
    return frozenset(c.code for c in Currency if c.exponent is not None)


def parse_amount(
    text: object, currency: str, *, field: str = "amount", signed: bool = False
) -> int:
    """Exact minor units of a decimal string such as "150.00"."""
    places = exponent(currency)
    if isinstance(text, bool) or not isinstance(text, str | int):
        raise Rejected(
            Rejection.AMOUNT_INVALID,
            field=field,
            detail='must be a decimal string such as "150.00" (floats are refused)',
        )
    match = _DECIMAL.fullmatch(str(text))
    if match is None:
        raise Rejected(
            Rejection.AMOUNT_INVALID,
            field=field,
            detail='must be a decimal string such as "150.00": digits, one optional point',
        )
    sign, whole, fraction = match[1], match[2], match[3] or ""
    # Sign before precision: AMOUNT_NOT_POSITIVE outranks AMOUNT_TOO_PRECISE ("-1.005").
    is_zero = not (whole + fraction).strip("0")
    if is_zero or (sign and not signed):
        detail = "must not be zero" if signed else "must be positive"
        raise Rejected(Rejection.AMOUNT_NOT_POSITIVE, field=field, detail=detail)
    if len(fraction) > places:
        raise Rejected(
            Rejection.AMOUNT_TOO_PRECISE,
            field=field,
            detail=f"{currency} allows {places} decimal places",
        )
    minor = int(whole + fraction.ljust(places, "0"))
    if sign:
        minor = -minor
    if abs(minor) > INT64_MAX:
        raise Rejected(Rejection.AMOUNT_TOO_LARGE, field=field, detail="exceeds 64-bit minor units")
    return minor


def format_amount(minor: int, currency: str) -> str:
    """The decimal string of `minor` units: format_amount(-5000, "USD") == "-50.00"."""
    places = exponent(currency)
    digits = str(minor)
    if places == 0:
        return digits
    if len(digits) - (minor < 0) > places:  # a whole part: the point goes in as it is
        return f"{digits[:-places]}.{digits[-places:]}"
    sign = "-" if minor < 0 else ""
    digits = str(abs(minor)).rjust(places + 1, "0")
    return f"{sign}{digits[:-places]}.{digits[-places:]}"


def _unknown(currency: object) -> Rejected:
    return Rejected(
        Rejection.CURRENCY_UNKNOWN,
        field="currency",
        detail=f"{currency!r} is not an ISO 4217 currency code with minor units (e.g. USD)",
    )

"""Amounts at the edge: decimal strings in and out, exact integers inside, floats refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tally.domain.limits import INT64_MAX
from tally.domain.rejections import Rejected, Rejection
from tally.money import currencies, exponent, format_amount, parse_amount


@pytest.mark.parametrize(
    ("text", "currency", "minor"),
    [
        ("150.00", "USD", 15000),
        ("150", "USD", 15000),
        ("0.01", "USD", 1),
        ("1.5", "USD", 150),
        ("1", "JPY", 1),
        ("15000", "JPY", 15000),
        ("1.234", "BHD", 1234),
        ("0.001", "BHD", 1),
        ("2.5", "BHD", 2500),
        ("92233720368547758.07", "USD", INT64_MAX),
        ("9223372036854775807", "JPY", INT64_MAX),
        (12, "USD", 1200),  # a JSON integer converts exactly
    ],
)
def test_parse_accepts(text: object, currency: str, minor: int) -> None:
    assert parse_amount(text, currency) == minor


@pytest.mark.parametrize(
    ("minor", "currency", "text"),
    [
        (15000, "USD", "150.00"),
        (1, "USD", "0.01"),
        (-5000, "USD", "-50.00"),
        (-1, "USD", "-0.01"),
        (0, "USD", "0.00"),
        (15000, "JPY", "15000"),
        (-7, "JPY", "-7"),
        (1234, "BHD", "1.234"),
        (1, "BHD", "0.001"),
        (INT64_MAX, "USD", "92233720368547758.07"),
    ],
)
def test_format(minor: int, currency: str, text: str) -> None:
    assert format_amount(minor, currency) == text


def test_exponents() -> None:
    assert (exponent("USD"), exponent("JPY"), exponent("BHD")) == (2, 0, 3)
    assert {"USD", "JPY", "BHD", "EUR"} <= currencies()
    assert "XAU" not in currencies()


@pytest.mark.parametrize(
    ("text", "currency", "reason"),
    [
        (1.5, "USD", Rejection.AMOUNT_INVALID),  # floats never enter the core
        (150.0, "USD", Rejection.AMOUNT_INVALID),
        (True, "USD", Rejection.AMOUNT_INVALID),  # bool is an int in Python, not an amount
        (None, "USD", Rejection.AMOUNT_INVALID),
        ("", "USD", Rejection.AMOUNT_INVALID),
        ("1e5", "USD", Rejection.AMOUNT_INVALID),
        ("NaN", "USD", Rejection.AMOUNT_INVALID),
        ("Infinity", "USD", Rejection.AMOUNT_INVALID),
        (" 1.00", "USD", Rejection.AMOUNT_INVALID),
        ("1.00 ", "USD", Rejection.AMOUNT_INVALID),
        ("1.00\n", "USD", Rejection.AMOUNT_INVALID),
        ("+1", "USD", Rejection.AMOUNT_INVALID),
        ("1.", "USD", Rejection.AMOUNT_INVALID),
        (".5", "USD", Rejection.AMOUNT_INVALID),
        ("1,00", "USD", Rejection.AMOUNT_INVALID),
        ("1_000", "USD", Rejection.AMOUNT_INVALID),
        ("١٢", "USD", Rejection.AMOUNT_INVALID),  # non-ASCII digits
        ("--1", "USD", Rejection.AMOUNT_INVALID),
        ("-1.00", "USD", Rejection.AMOUNT_NOT_POSITIVE),
        ("-1", "JPY", Rejection.AMOUNT_NOT_POSITIVE),
        (-3, "USD", Rejection.AMOUNT_NOT_POSITIVE),
        ("0", "USD", Rejection.AMOUNT_NOT_POSITIVE),
        ("0.00", "USD", Rejection.AMOUNT_NOT_POSITIVE),
        ("-0", "USD", Rejection.AMOUNT_NOT_POSITIVE),
        ("1.001", "USD", Rejection.AMOUNT_TOO_PRECISE),
        ("1.5", "JPY", Rejection.AMOUNT_TOO_PRECISE),
        ("0.0001", "BHD", Rejection.AMOUNT_TOO_PRECISE),
        ("0.001", "USD", Rejection.AMOUNT_TOO_PRECISE),  # positive, just finer than a cent
        ("92233720368547758.08", "USD", Rejection.AMOUNT_TOO_LARGE),
        ("9223372036854775808", "JPY", Rejection.AMOUNT_TOO_LARGE),
        ("1.00", "usd", Rejection.CURRENCY_UNKNOWN),
        ("1.00", "XAU", Rejection.CURRENCY_UNKNOWN),  # gold: no minor unit
        ("1.00", "ZZZ", Rejection.CURRENCY_UNKNOWN),
        ("1.00", "US", Rejection.CURRENCY_UNKNOWN),
        ("1.00", "", Rejection.CURRENCY_UNKNOWN),
    ],
)
def test_parse_refuses(text: object, currency: str, reason: Rejection) -> None:
    with pytest.raises(Rejected) as caught:
        parse_amount(text, currency, field="orders[0].amount")
    assert caught.value.reason == reason
    expected_field = "currency" if reason is Rejection.CURRENCY_UNKNOWN else "orders[0].amount"
    assert caught.value.field == expected_field


@pytest.mark.parametrize(
    ("text", "currency", "reason"),
    [
        # Several problems at once: the lowest Rejection wins, as in the decider.
        (1.5, "XAU", Rejection.CURRENCY_UNKNOWN),  # currency (6) before invalid (7)
        ("-1.005", "USD", Rejection.AMOUNT_NOT_POSITIVE),  # not positive (8) before precise (9)
        ("0.000", "USD", Rejection.AMOUNT_NOT_POSITIVE),
        ("-92233720368547758.08", "USD", Rejection.AMOUNT_NOT_POSITIVE),  # 8 before large (10)
        ("92233720368547758.081", "USD", Rejection.AMOUNT_TOO_PRECISE),  # 9 before large (10)
    ],
)
def test_parse_precedence(text: object, currency: str, reason: Rejection) -> None:
    with pytest.raises(Rejected) as caught:
        parse_amount(text, currency)
    assert caught.value.reason == reason


def test_signed_amounts() -> None:
    assert parse_amount("-50.00", "USD", signed=True) == -5000
    assert parse_amount("50.00", "USD", signed=True) == 5000
    with pytest.raises(Rejected) as caught:
        parse_amount("-0.00", "USD", signed=True)
    assert caught.value.reason == Rejection.AMOUNT_NOT_POSITIVE
    with pytest.raises(Rejected) as caught:
        parse_amount("-0.001", "USD", signed=True)
    assert caught.value.reason == Rejection.AMOUNT_TOO_PRECISE
    with pytest.raises(Rejected) as caught:
        parse_amount("-92233720368547758.08", "USD", signed=True)
    assert caught.value.reason == Rejection.AMOUNT_TOO_LARGE


@given(
    minor=st.integers(min_value=1, max_value=INT64_MAX),
    currency=st.sampled_from(["USD", "JPY", "BHD", "EUR", "KWD", "CLF", "VND"]),
)
def test_format_then_parse_is_identity(minor: int, currency: str) -> None:
    text = format_amount(minor, currency)
    assert parse_amount(text, currency) == minor
    assert parse_amount("-" + text, currency, signed=True) == -minor
    assert format_amount(-minor, currency) == "-" + text

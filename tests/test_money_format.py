"""format_amount against a plain Decimal reference, for every sign and size of amount."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from tally.domain.limits import INT64_MAX
from tally.money import exponent, format_amount


def _reference(minor: int, currency: str) -> str:
    places = exponent(currency)
    return f"{Decimal(minor).scaleb(-places):.{places}f}"


@given(
    minor=st.integers(min_value=-INT64_MAX, max_value=INT64_MAX)
    | st.integers(min_value=-10_001, max_value=10_001),  # around the point, where padding starts
    currency=st.sampled_from(["USD", "JPY", "BHD", "CLF", "VND"]),
)
def test_format_amount_matches_decimal(minor: int, currency: str) -> None:
    assert format_amount(minor, currency) == _reference(minor, currency)

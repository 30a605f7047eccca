"""The seed's shapes at the edges: RFC 3339 timestamps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from tally.views import timestamp


@given(st.integers(min_value=0, max_value=253_402_300_799_999_999))  # up to 9999-12-31
def test_timestamp_is_rfc3339_utc_with_microseconds(timestamp_us: int) -> None:
    expected = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=timestamp_us)
    assert timestamp(timestamp_us) == expected.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_timestamp_example() -> None:
    assert timestamp(1_764_120_076_123_456) == "2025-11-26T01:21:16.123456Z"

"""Statement pages: cursor pagination that is stable under concurrent writes, and time bounds."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tally.http.reads import decode_cursor, encode_cursor

pytest_plugins = ["http_fixtures"]

Poster = Callable[..., httpx.Response]
WAIT_S = 60  # a bound on waiting for a write that takes milliseconds


def _recharge(http: httpx.Client, poster: Poster, user: str, amount: str) -> dict[str, Any]:
    response = poster(
        http,
        "/v1/recharges",
        {"user_id": user, "amount": amount, "currency": "USD", "gateway": "paypal"},
    )
    assert response.status_code == 201
    return dict(response.json())


def test_cursors_round_trip_and_are_opaque() -> None:
    cursor = encode_cursor((123, 4))
    assert "123" not in cursor
    assert decode_cursor(cursor) == (123, 4)


def test_pages_are_stable_while_others_write(
    live: Any, unique: Callable[[str], str], poster: Poster
) -> None:
    user = unique("u")
    with live.client() as http:
        for cents in range(1, 11):
            _recharge(http, poster, user, f"0.{cents:02d}")
    stop = threading.Event()
    written = [0]  # recharges landed by the writer beside

    def keep_writing() -> None:
        with live.client() as http:
            while not stop.is_set():
                _recharge(http, poster, user, "1.00")
                written[0] += 1

    def wait_for_a_write() -> None:
        """Until another recharge landed: pages are read between writes, however the threads
        are scheduled."""
        before = written[0]
        deadline = time.monotonic() + WAIT_S
        while written[0] == before and writer.is_alive() and time.monotonic() < deadline:
            time.sleep(0.005)
        assert written[0] > before, "the writer beside landed nothing"

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        seen: list[dict[str, Any]] = []
        cursor = None
        with live.client("read") as http:
            for _ in range(3):  # three pages of three while recharges keep landing
                wait_for_a_write()
                params: dict[str, Any] = {"currency": "USD", "limit": 3}
                if cursor is not None:
                    params["cursor"] = cursor
                page = http.get(f"/v1/users/{user}/statement", params=params).json()
                seen.extend(page["entries"])
                cursor = page["next_cursor"]
    finally:
        stop.set()
        writer.join()
    assert [line["amount"] for line in seen] == [f"0.{cents:02d}" for cents in range(1, 10)]
    assert [line["seq"] for line in seen] == sorted(line["seq"] for line in seen)
    with live.client() as http:
        everything = http.get(
            f"/v1/users/{user}/statement", params={"currency": "USD", "limit": 1000}
        ).json()["entries"]
    assert everything[:9] == seen


def test_from_and_to_bound_the_timestamps(
    live: Any, unique: Callable[[str], str], poster: Poster
) -> None:
    user = unique("u")
    with live.client() as http:
        early = _recharge(http, poster, user, "1.00")
        time.sleep(0.01)
        middle = _recharge(http, poster, user, "2.00")
        time.sleep(0.01)
        _recharge(http, poster, user, "3.00")

        def amounts(**params: str) -> list[str]:
            page = http.get(
                f"/v1/users/{user}/statement", params={"currency": "USD", **params}
            ).json()
            return [line["amount"] for line in page["entries"]]

        assert amounts(**{"from": middle["timestamp"]}) == ["2.00", "3.00"]
        assert amounts(to=middle["timestamp"]) == ["1.00"]
        assert amounts(**{"from": early["timestamp"], "to": middle["timestamp"]}) == ["1.00"]
        future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
        assert amounts(**{"from": future}) == []
        assert amounts(to="1970-01-01T00:00:00Z") == []
        # a year below 1000 ("0500-…", never "500-…", which would sort after "2026-…")
        assert amounts(to="0500-01-01T00:00:00Z") == []
        assert amounts(to="0001-01-01T00:00:00Z") == []
        assert amounts(**{"from": "0500-01-01T00:00:00Z"}) == ["1.00", "2.00", "3.00"]
        assert amounts(to="9999-12-31T23:59:59Z") == ["1.00", "2.00", "3.00"]

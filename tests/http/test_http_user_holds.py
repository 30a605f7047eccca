"""`GET /v1/users/{user_id}/holds`: a user's holds in the order they were placed, filtered by
`settled` and walked page by page; every bad parameter a 400 naming it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tally.client import AsyncClient, Client, InvalidRequest

pytest_plugins = ["http_fixtures"]

Poster = Callable[..., httpx.Response]
Unique = Callable[[str], str]


def _ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code in (200, 201), response.text
    body: dict[str, Any] = response.json()
    return body


def _history(http: httpx.Client, poster: Poster, unique: Unique) -> tuple[str, list[str]]:
    """A user with four holds, in this order: captured, released, open, and open but
    expired (never released); another user's hold beside them."""
    user, other = unique("u"), unique("u")
    holds = [unique("h") for _ in range(4)]
    for who in (user, other):
        body = {"user_id": who, "amount": "100.00", "currency": "USD", "gateway": "pp"}
        _ok(poster(http, "/v1/recharges", body))
    soon = (datetime.now(UTC) + timedelta(seconds=1.5)).isoformat()
    extras: list[dict[str, Any]] = [{}, {}, {"metadata": {"cart": "c-1"}}, {"expires_at": soon}]
    for hold_id, amount, extra in zip(
        holds, ("10.00", "20.00", "30.00", "5.00"), extras, strict=True
    ):
        body = {"user_id": user, "amount": amount, "currency": "USD", "hold_id": hold_id, **extra}
        _ok(poster(http, "/v1/holds", body))
    body = {"user_id": other, "amount": "1.00", "currency": "USD", "hold_id": unique("h")}
    _ok(poster(http, "/v1/holds", body))
    capture = {"orders": [{"order_id": unique("o"), "amount": "4.00"}]}
    _ok(poster(http, f"/v1/holds/{holds[0]}/capture", capture))
    _ok(poster(http, f"/v1/holds/{holds[1]}/release", {"reason": "cancelled"}))
    return user, holds


def test_a_users_holds_in_the_order_placed_filtered_by_settled(
    live: Any, unique: Unique, poster: Poster
) -> None:
    with live.client("read_write") as http:
        user, holds = _history(http, poster, unique)
        deadline = datetime.now(UTC) + timedelta(seconds=10)
        while True:  # the last hold expires 1.5 s after it was placed
            every = _ok(http.get(f"/v1/users/{user}/holds"))
            if every["holds"][3]["status"] == "expired" or datetime.now(UTC) > deadline:
                break
        assert every["user_id"] == user
        assert every["next_cursor"] is None
        listed = [(h["hold_id"], h["status"], h["amount"]) for h in every["holds"]]
        assert listed == [
            (holds[0], "captured", "10.00"),
            (holds[1], "released", "20.00"),
            (holds[2], "open", "30.00"),
            (holds[3], "expired", "5.00"),
        ]
        captured = every["holds"][0]
        assert (captured["captured"], captured["released"]) == ("4.00", "6.00")
        assert every["holds"][2]["metadata"] == {"cart": "c-1"}
        # each is what GET /v1/holds/{hold_id} answers
        for hold in every["holds"]:
            assert _ok(http.get(f"/v1/holds/{hold['hold_id']}")) == hold

        still_held = _ok(http.get(f"/v1/users/{user}/holds", params={"settled": "false"}))
        assert [h["hold_id"] for h in still_held["holds"]] == holds[2:]
        settled = _ok(http.get(f"/v1/users/{user}/holds", params={"settled": "true"}))
        assert [h["hold_id"] for h in settled["holds"]] == holds[:2]

        nobody = _ok(http.get(f"/v1/users/{unique('u')}/holds"))
        assert (nobody["holds"], nobody["next_cursor"]) == ([], None)


@pytest.mark.parametrize("settled", [None, "false", "true"])
def test_pages_walk_every_hold_once(
    live: Any, unique: Unique, poster: Poster, settled: str | None
) -> None:
    with live.client("read_write") as http:
        user, holds = _history(http, poster, unique)
        expected = {None: holds, "false": holds[2:], "true": holds[:2]}[settled]
        seen: list[str] = []
        params: dict[str, Any] = {"limit": 1}
        if settled is not None:
            params["settled"] = settled
        for _ in range(10):
            page = _ok(http.get(f"/v1/users/{user}/holds", params=params))
            assert len(page["holds"]) <= 1
            seen.extend(h["hold_id"] for h in page["holds"])
            if page["next_cursor"] is None:
                break
            params["cursor"] = page["next_cursor"]
        assert seen == expected


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/v1/users/{user}/holds", {"settled": "maybe"}, "settled"),
        ("/v1/users/{user}/holds", {"limit": "0"}, "limit"),
        ("/v1/users/{user}/holds", {"limit": "101"}, "limit"),
        ("/v1/users/{user}/holds", {"limit": "x"}, "limit"),
        ("/v1/users/{user}/holds", {"cursor": "not-a-cursor"}, "cursor"),
        ("/v1/users/{user}/holds", {"cursor": "x" * 65}, "cursor"),
        ("/v1/users/a:b/holds", {}, "user_id"),
        ("/v1/users/-bob/holds", {}, "user_id"),
    ],
)
def test_a_bad_parameter_is_a_400_naming_it(
    live: Any, unique: Unique, path: str, params: dict[str, str], field: str
) -> None:
    with live.client("read") as http:
        refused = http.get(path.format(user=unique("u")), params=params)
    assert refused.status_code == 400, refused.text
    assert refused.json()["field"] == field, refused.text


def test_reading_holds_needs_a_key_of_the_ledger(live: Any, unique: Unique) -> None:
    with live.client(None) as anonymous:
        assert anonymous.get(f"/v1/users/{unique('u')}/holds").status_code == 401


def test_the_sdks_list_and_walk_a_users_holds(live: Any, unique: Unique, poster: Poster) -> None:
    with live.client("read_write") as http:
        user, holds = _history(http, poster, unique)
    with Client(live.url, live.keys["read"]) as tally:
        page = tally.holds(user, limit=2)
        assert [h.hold_id for h in page.holds] == holds[:2]
        assert page.next_cursor is not None
        assert [h.hold_id for h in tally.iter_holds(user, page_size=1)] == holds
        assert [h.hold_id for h in tally.iter_holds(user, settled=False)] == holds[2:]
        assert [h.hold_id for h in tally.holds(user, settled=True).holds] == holds[:2]
        assert tally.holds(user).holds[0].captured == "4.00"
        with pytest.raises(InvalidRequest) as bad:
            tally.holds(user, limit=0)
        assert bad.value.field == "limit"

    async def walk() -> list[str]:
        async with AsyncClient(live.url, live.keys["read"]) as tally:
            return [h.hold_id async for h in tally.iter_holds(user, settled=True, page_size=1)]

    assert asyncio.run(walk()) == holds[:2]

"""Fixtures for the console's tests, loaded by each as `pytest_plugins = ["console_fixtures"]`.

`console` is a tally server per test session (per xdist worker) and store: uvicorn on a free
port in a thread, as `tally serve` runs it, with two ledgers (`shop`, `other`), keys of each
kind, and one user's story written through the API: a recharge, an expense of two orders, a
refund, a hold captured for an order and one released, metadata and a reason holding
markup, and 60 more recharges (a statement longer than one console page).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from pg import fresh_database
from served_app import served
from tally.api_keys import Scope
from tally.bootstrap import open_store
from tally.http.app import create_app
from tally.http.compose import open_services
from tally.http.services import Services

MARKUP = "<script>alert('x')</script>"
PAGED_RECHARGES = 60


@dataclass(frozen=True, slots=True, kw_only=True)
class Story:
    """What the fixture wrote to `shop`, to look for on the pages."""

    user_id: str  # recharged 100.00, paid 30.00 + 20.00, refunded 5.00, held 10 and 4 EUR
    recharge_id: str
    expense_id: str
    refund_id: str
    order_id: str  # paid 30.00 by the expense, 5.00 of it refunded
    second_order_id: str  # paid 20.00 by the expense
    captured_hold_id: str  # 10.00, captured for `held_order_id` 6.00
    held_order_id: str
    released_hold_id: str  # 4.00, released
    capture_id: str
    paged_user_id: str  # PAGED_RECHARGES recharges of 1.00 USD
    transfer_id: str  # cy (recharged 10.00 USD) pays ben 1.50 and the platform 0.50


@dataclass(frozen=True, slots=True, kw_only=True)
class Console:
    url: str
    db: str
    services: Services
    keys: dict[str, str]  # name -> secret: admin, write, read, read_write, other_read
    story: Story

    def api(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.keys['admin']}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    @contextmanager
    def browser(self, key: str | None = "read") -> Iterator[httpx.Client]:
        """A client signed in to the console with `key` (None: not signed in)."""
        with httpx.Client(base_url=self.url, timeout=30) as client:
            if key is not None:
                signed = client.post("/console/login", data={"key": self.keys[key]})
                if signed.status_code != 303:
                    raise AssertionError(f"signing in with {key} failed: {signed.status_code}")
            yield client


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def console(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Console]:
    if request.param == "sqlite":
        yield from _console(str(tmp_path_factory.mktemp("console") / "tally.db"))
    else:
        with fresh_database() as url:
            yield from _console(url)


def _console(db: str) -> Iterator[Console]:
    store = open_store(db)
    for ledger in ("shop", "other"):
        store.ensure_ledger(ledger)
    store.close()
    services = open_services(db, key_cache_ttl_s=0)
    grants = {
        "admin": ("shop", (Scope.ADMIN,)),
        "write": ("shop", (Scope.WRITE,)),
        "read": ("shop", (Scope.READ,)),
        "read_write": ("shop", (Scope.READ, Scope.WRITE)),
        "other_read": ("other", (Scope.READ,)),
    }
    keys = {
        name: services.keys.create(ledger, frozenset(scopes)).secret
        for name, (ledger, scopes) in grants.items()
    }
    try:
        # no sweep of expired holds: tests of expiry look at them expired and still open
        with served(create_app(services, release_expired_every_s=0)) as url:
            with httpx.Client(base_url=url, timeout=30) as http:
                http.headers["Authorization"] = f"Bearer {keys['admin']}"
                story = _write_story(http)
            yield Console(url=url, db=db, services=services, keys=keys, story=story)
    finally:
        services.engine.close()
        services.keys.close()
        services.engine.store.close()


def _post(http: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    answer = http.post(path, json=body, headers={"Idempotency-Key": f"k-{uuid.uuid4()}"})
    if answer.status_code != 201:
        raise AssertionError(f"{path}: {answer.status_code} {answer.text}")
    written: dict[str, Any] = answer.json()
    return written


def _write_story(http: httpx.Client) -> Story:
    user, paged = "ada", "pager"
    order, second, held_order = "order-1", "order-2", "order-3"
    recharge = _post(
        http,
        "/v1/recharges",
        {
            "user_id": user,
            "amount": "100.00",
            "currency": "EUR",
            "gateway": "paypal",
            "metadata": {"note": MARKUP},
        },
    )
    expense = _post(
        http,
        "/v1/expenses",
        {
            "user_id": user,
            "currency": "EUR",
            "orders": [
                {"order_id": order, "amount": "30.00"},
                {"order_id": second, "amount": "20.00", "merchant_id": "acme"},
            ],
        },
    )
    refund = _post(
        http,
        "/v1/refunds",
        {
            "expense_id": expense["transaction_id"],
            "order_id": order,
            "amount": "5.00",
            "reason": MARKUP,
        },
    )
    base = {"user_id": user, "currency": "EUR"}
    _post(http, "/v1/holds", {**base, "amount": "10.00", "hold_id": "hold-captured"})
    capture = _post(
        http,
        "/v1/holds/hold-captured/capture",
        {"orders": [{"order_id": held_order, "amount": "6.00"}]},
    )
    _post(http, "/v1/holds", {**base, "amount": "4.00", "hold_id": "hold-released"})
    _post(http, "/v1/holds/hold-released/release", {})
    commands = [
        {
            "type": "recharge",
            "idempotency_key": f"paged-{index}",
            "user_id": paged,
            "amount": "1.00",
            "currency": "USD",
            "gateway": "paypal",
        }
        for index in range(PAGED_RECHARGES)
    ]
    batch = http.post("/v1/batch", json={"commands": commands}, headers={"Idempotency-Key": "p"})
    if batch.status_code not in (200, 201):
        raise AssertionError(f"batch: {batch.status_code} {batch.text}")
    _post(
        http,
        "/v1/recharges",
        {"user_id": "cy", "amount": "10.00", "currency": "USD", "gateway": "paypal"},
    )
    transfer = _post(
        http,
        "/v1/transfers",
        {
            "user_id": "cy",
            "currency": "USD",
            "postings": [
                {"account": "wallet:cy", "amount": "-2.00"},
                {"account": "wallet:ben", "amount": "1.50"},
                {"account": "revenue:platform", "amount": "0.50"},
            ],
            "reason": MARKUP,
        },
    )
    return Story(
        user_id=user,
        recharge_id=recharge["transaction_id"],
        expense_id=expense["transaction_id"],
        refund_id=refund["transaction_id"],
        order_id=order,
        second_order_id=second,
        captured_hold_id="hold-captured",
        held_order_id=held_order,
        released_hold_id="hold-released",
        capture_id=capture["transaction_id"],
        paged_user_id=paged,
        transfer_id=transfer["transaction_id"],
    )

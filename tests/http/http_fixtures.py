"""Fixtures for the HTTP tests, loaded by each as `pytest_plugins = ["http_fixtures"]`.

(A plugin module rather than tests/http/conftest.py: mypy checks tests/ without packages,
and two modules named `conftest` would collide.) `live` is a tally HTTP server per test
session (per xdist worker): uvicorn on a free port in a thread, over a fresh SQLite file,
with two ledgers and keys of every kind."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
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


@dataclass(frozen=True, slots=True, kw_only=True)
class Live:
    """A running server: its URL, its services (for white-box checks) and its keys."""

    url: str
    db: str  # a SQLite path or a PostgreSQL URL
    services: Services
    keys: dict[str, str]  # name -> secret: admin, write, read, read_write, other_admin

    def client(self, key: str | None = "admin") -> httpx.Client:
        headers = {} if key is None else {"Authorization": f"Bearer {self.keys[key]}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def issue(self, ledger: str, *scopes: Scope) -> tuple[str, str]:
        """A fresh key: (key_id, secret)."""
        issued = self.services.keys.create(ledger, frozenset(scopes))
        return issued.key.key_id, issued.secret


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    """The same server over each store: the HTTP tests are part of the contract suite."""
    if request.param == "sqlite":
        yield from _live(str(tmp_path_factory.mktemp("http") / "tally.db"))
    else:
        with fresh_database() as url:
            yield from _live(url)


def _live(db: str) -> Iterator[Live]:
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
        "other_admin": ("other", (Scope.ADMIN,)),
    }
    keys = {
        name: services.keys.create(ledger, frozenset(scopes)).secret
        for name, (ledger, scopes) in grants.items()
    }
    try:
        # no sweep of expired holds: tests of expiry look at them expired and still open
        with served(create_app(services, release_expired_every_s=0)) as url:
            yield Live(url=url, db=db, services=services, keys=keys)
    finally:
        services.engine.close()
        services.keys.close()
        services.engine.store.close()


@pytest.fixture
def unique() -> Callable[[str], str]:
    """Fresh identifiers, so tests sharing the session's server never collide."""

    def make(prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex[:12]}"

    return make


def post(client: httpx.Client, path: str, body: Any, key: str | None = None) -> httpx.Response:
    headers = {"Idempotency-Key": key or f"k-{uuid.uuid4()}"}
    return client.post(path, json=body, headers=headers)


@pytest.fixture
def poster() -> Callable[..., httpx.Response]:
    """`poster(client, path, body, key=None)`: a JSON POST with an Idempotency-Key."""
    return post

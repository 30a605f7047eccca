"""Health, metrics, the schema and the offline docs page; the key cache; the CLI for
ledgers and keys."""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tally.api_keys import ApiKey, IssuedKey, KeyRefused, Scope, parse_scopes
from tally.http.metrics import GcPauses
from tally.http.services import Services

pytest_plugins = ["http_fixtures"]

Poster = Callable[..., httpx.Response]


def test_health_metrics_schema_and_docs(live: Any, poster: Poster) -> None:
    with live.client(None) as anonymous:
        health = anonymous.get("/healthz")
        probe = anonymous.head("/healthz")
        schema = anonymous.get("/openapi.json")
        docs = anonymous.get("/docs")
        style = anonymous.get("/docs/style.css")
    with live.client() as http:
        poster(
            http,
            "/v1/recharges",
            {"user_id": "m", "amount": "1", "currency": "JPY", "gateway": "p"},
        )
    gc.collect()  # the server runs in this process: its collector's passes are timed
    with live.client(None) as anonymous:
        metrics = anonymous.get("/metrics")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert (probe.status_code, probe.content) == (200, b"")  # load balancers probe with HEAD
    assert probe.headers["content-length"] == health.headers["content-length"]
    assert probe.headers["content-type"] == health.headers["content-type"]
    assert schema.json()["openapi"].startswith("3.")
    assert "/v1/recharges" in schema.json()["paths"]
    assert docs.status_code == 200
    assert docs.headers["content-type"].startswith("text/html")
    assert "/v1/users/{user_id}/statement" in docs.text
    assert "<script" not in docs.text
    assert "http://" not in docs.text.replace(live.url, "")
    assert "https://" not in docs.text
    assert style.headers["content-type"].startswith("text/css")
    assert metrics.headers["content-type"].startswith("text/plain")
    assert 'tally_http_requests_total{method="POST",route="/v1/recharges",status="201"}' in (
        metrics.text
    )
    assert 'tally_commands_total{outcome="committed",type="recharge"}' in metrics.text
    full_passes = next(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.text.splitlines()
        if line.startswith('tally_gc_pause_seconds_count{generation="2"}')
    )
    assert full_passes >= 1


def test_gc_pauses_count_whole_passes_in_their_bucket() -> None:
    pauses = GcPauses()
    pauses.on_gc("stop", {"generation": 0})  # hooked mid-pass: no start, nothing counted
    pauses.on_gc("start", {"generation": 1})
    pauses.on_gc("stop", {"generation": 1})
    (family,) = pauses.collect()
    counts = {
        sample.labels["generation"]: sample.value
        for sample in family.samples
        if sample.name.endswith("_count")
    }
    assert counts == {"0": 0.0, "1": 1.0, "2": 0.0}
    fastest = next(
        sample.value
        for sample in family.samples
        if sample.labels == {"generation": "1", "le": "0.001"}
    )
    assert fastest == 1.0  # an empty pass takes microseconds


class CountingKeys:
    """A key store that counts lookups."""

    def __init__(self, key: ApiKey) -> None:
        self.key = key
        self.lookups = 0

    def authenticate(self, secret: str) -> ApiKey | None:
        self.lookups += 1
        return self.key if secret == "good" else None

    def ledger_exists(self, ledger: str) -> bool:
        return True

    def create(self, ledger: str, scopes: frozenset[Scope]) -> IssuedKey:
        raise NotImplementedError

    def revoke(self, key_id: str) -> ApiKey:
        raise NotImplementedError

    def keys(self, ledger: str) -> list[ApiKey]:
        return [self.key]

    def close(self) -> None:
        pass


def test_the_key_cache_spares_the_store_and_expires(live: Any) -> None:
    key = ApiKey(key_id="key_1", ledger="shop", scopes=frozenset({Scope.READ}), created_at_us=0)
    keys = CountingKeys(key)
    services = Services(engine=live.services.engine, keys=keys, key_cache_ttl_s=60)

    async def lookups() -> list[ApiKey | None]:
        return [await services.authenticate(s) for s in ("good", "good", "bad", "bad")]

    assert asyncio.run(lookups()) == [key, key, None, None]
    assert keys.lookups == 2
    services.forget_keys()
    asyncio.run(lookups())
    assert keys.lookups == 4


def test_scopes() -> None:
    admin = ApiKey(key_id="k", ledger="l", scopes=frozenset({Scope.ADMIN}), created_at_us=0)
    reader = ApiKey(key_id="k", ledger="l", scopes=frozenset({Scope.READ}), created_at_us=0)
    assert all(admin.allows(scope) for scope in Scope)
    assert reader.allows(Scope.READ)
    assert not reader.allows(Scope.WRITE)
    assert parse_scopes(["read", "write"]) == {Scope.READ, Scope.WRITE}
    with pytest.raises(KeyRefused):
        parse_scopes(["root"])
    with pytest.raises(KeyRefused):
        parse_scopes([])


def test_ledgers_and_keys_from_the_cli(tally: Any, tmp_path: Path) -> None:
    db = str(tmp_path / "cli.db")
    assert tally("ledger", "create", "books", "--db", db).returncode == 0
    assert tally("ledger", "create", "Bad Name", "--db", db).returncode == 1
    refused = tally("key", "create", "--ledger", "nope", "--scope", "read", "--db", db)
    assert refused.returncode == 1
    made = tally(
        "key",
        "create",
        "--ledger",
        "books",
        "--scope",
        "read",
        "--scope",
        "write",
        "--db",
        db,
        "--json",
    )
    assert made.returncode == 0, made.describe()
    issued = made.json()
    assert issued["key"].startswith(f"tally_{issued['key_id']}_")
    assert issued["scopes"] == ["read", "write"]
    listed = tally("key", "list", "--ledger", "books", "--db", db, "--json").json()
    assert [k["key_id"] for k in listed["keys"]] == [issued["key_id"]]
    assert issued["key"] not in json.dumps(listed)
    assert issued["key"] not in Path(db).read_bytes().decode("latin-1")  # stored hashed
    revoked = tally("key", "revoke", issued["key_id"], "--db", db, "--json")
    assert revoked.json()["revoked"] is True
    assert tally("key", "revoke", "key_nope", "--db", db).returncode == 1

    from tally.http.compose import open_services

    services = open_services(db, key_cache_ttl_s=0)
    try:
        assert asyncio.run(services.authenticate(issued["key"])) is None
    finally:
        services.engine.close()
        services.engine.store.close()
        services.keys.close()

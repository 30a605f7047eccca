"""Composition for the HTTP server: a SQLite file or a PostgreSQL URL to an app."""

from __future__ import annotations

from pathlib import Path

from litestar import Litestar

from tally.bootstrap import open_engine, open_key_store, serve_switch_interval_s
from tally.http.app import create_app
from tally.http.services import Services


def open_services(db: str | Path, *, key_cache_ttl_s: float = 2.0) -> Services:
    # Opens the store first (it runs the migrations); tuned for serving (bootstrap.py).
    engine = open_engine(db, switch_interval=serve_switch_interval_s)
    keys = open_key_store(engine.store)
    return Services(engine=engine, keys=keys, key_cache_ttl_s=key_cache_ttl_s)


def open_app(
    db: str | Path, *, key_cache_ttl_s: float = 2.0, release_expired_every_s: float = 60.0
) -> Litestar:
    return create_app(
        open_services(db, key_cache_ttl_s=key_cache_ttl_s),
        release_expired_every_s=release_expired_every_s,
    )

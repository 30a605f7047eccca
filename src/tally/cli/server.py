"""`tally serve`, `tally ledger create` and `tally key create|revoke|list`.

Registered into the `tally` app by the last lines of cli/app.py.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from cyclopts import App, Parameter

from tally.api_keys import ApiKey, KeyRefused, KeyStore, check_ledger_name, parse_scopes
from tally.bootstrap import open_key_store, open_store
from tally.cli.options import (
    Database,
    Refusal,
    console,
    print_json,
    print_refusal,
    print_usage,
)

ledger_app = App(name="ledger", help="Create ledgers (a tenant's book each).")
key_app = App(name="key", help="Create, revoke and list API keys (each bound to one ledger).")


def _key_view(key: ApiKey) -> dict[str, Any]:
    return {
        "key_id": key.key_id,
        "ledger": key.ledger,
        "scopes": sorted(scope.value for scope in key.scopes),
        "created_at_us": key.created_at_us,
        "revoked": key.revoked,
    }


@contextmanager
def _keys(db: str) -> Iterator[KeyStore]:
    store = open_store(db)  # creates the file or schema: runs the migrations
    keys = open_key_store(store)
    try:
        yield keys
    finally:
        keys.close()
        store.close()


def serve(
    *,
    db: Annotated[str, Parameter(env_var="TALLY_DB")] = "tally.db",
    host: str = "127.0.0.1",
    port: int = 8000,
    key_cache_ttl_s: float = 2.0,
    release_expired_every: float = 60.0,
) -> int:
    """Serve the HTTP API (docs at /docs, schema at /openapi.json, metrics at /metrics) and
    the web console (/console/).

    Every --release-expired-every seconds (0: never) it releases every expired hold still
    open, as `tally release-expired` does (several servers at once release each hold once)."""
    import uvicorn
    from uvicorn.config import STARTUP_FAILURE

    from tally.http.compose import open_app
    from tally.http.wire import SERVE_OPTIONS

    if not 0 <= port <= 65_535:  # uvicorn would take it modulo 65,536 and say otherwise
        return print_usage(f"--port must be 0 to 65535, not {port}")
    if not 0 <= release_expired_every < float("inf"):  # nan fails this too
        return print_usage(
            f"--release-expired-every must be 0 (never) or seconds, not {release_expired_every}"
        )
    app = open_app(
        db, key_cache_ttl_s=key_cache_ttl_s, release_expired_every_s=release_expired_every
    )
    try:
        uvicorn.run(app, host=host, port=port, **SERVE_OPTIONS)
    except SystemExit as stopped:
        if stopped.code != STARTUP_FAILURE:
            raise
        failed = app.state["tally"].startup_error
        if failed is not None:  # the app's start-up (a broken ledger: 3; the database: 5)
            raise failed from None
        return 5  # could not listen (the address in use, say); uvicorn logged why
    return 0


@ledger_app.command(name="create")
def ledger_create(name: str, /, *, database: Database | None = None) -> int:
    """Create the ledger NAME (lowercase letters, digits, _ and -)."""
    database = database or Database()
    try:
        check_ledger_name(name)
    except KeyRefused as refusal:
        return print_refusal(Refusal.LEDGER_INVALID, "name", str(refusal), as_json=database.json)
    store = open_store(database.db)
    try:
        existed = store.head(name) is not None
        store.ensure_ledger(name)
    finally:
        store.close()
    if database.json:
        print_json({"ledger": name, "created": not existed})
    else:
        console.print(f"ledger {name} {'already exists' if existed else 'created'}")
    return 0


@key_app.command(name="create")
def key_create(
    *,
    ledger: str,
    scope: Annotated[list[str], Parameter(consume_multiple=False)],
    database: Database | None = None,
) -> int:
    """Make an API key for LEDGER with one or more --scope read|write|admin.

    The secret is printed once and never stored; keep it.
    """
    database = database or Database()
    try:
        scopes = parse_scopes(scope)
    except KeyRefused as refusal:
        return print_refusal(Refusal.SCOPE_INVALID, "scope", str(refusal), as_json=database.json)
    try:
        with _keys(database.db) as keys:
            issued = keys.create(ledger, scopes)
    except KeyRefused as refusal:  # the ledger does not exist (`KeyStore.create`)
        return print_refusal(Refusal.LEDGER_UNKNOWN, "ledger", str(refusal), as_json=database.json)
    if database.json:
        print_json({"key": issued.secret, **_key_view(issued.key)})
    else:
        console.print(f"key {issued.key.key_id} for ledger {ledger}, scopes {sorted(scope)}")
        console.print("secret (shown once, keep it):", style="bold")
        sys.stdout.write(issued.secret + "\n")
    return 0


@key_app.command(name="revoke")
def key_revoke(key_id: str, /, *, database: Database | None = None) -> int:
    """Revoke KEY_ID: requests with it are refused from now on (401)."""
    database = database or Database()
    try:
        with _keys(database.db) as keys:
            key = keys.revoke(key_id)
    except KeyRefused as refusal:  # there is no such key (`KeyStore.revoke`)
        return print_refusal(Refusal.KEY_UNKNOWN, "key_id", str(refusal), as_json=database.json)
    if database.json:
        print_json(_key_view(key))
    else:
        console.print(f"key {key.key_id} revoked")
    return 0


@key_app.command(name="list")
def key_list(*, ledger: str, database: Database | None = None) -> int:
    """The keys of LEDGER (ids and scopes, never secrets)."""
    database = database or Database()
    with _keys(database.db) as keys:
        if not keys.ledger_exists(ledger):  # refused, not a ledger without keys
            detail = f"no ledger {ledger!r}: create it with `tally ledger create`"
            return print_refusal(Refusal.LEDGER_UNKNOWN, "ledger", detail, as_json=database.json)
        found = keys.keys(ledger)
    if database.json:
        print_json({"keys": [_key_view(key) for key in found]})
    else:
        for key in found:
            state = "revoked" if key.revoked else "live"
            console.print(f"{key.key_id} {state} {' '.join(sorted(key.scopes))}")
    return 0

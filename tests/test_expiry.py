"""Expired holds give their money back when swept (`tally release-expired`), once each, on
both stores; holds still open and unexpired, or settled, are left alone."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from conftest import TallyRunner, audit_offline
from served_app import served
from tally import expiry, views
from tally.api_keys import Scope
from tally.bootstrap import open_engine
from tally.domain.commands import Capture, Command, Envelope, Hold, OrderLine, Recharge, Release
from tally.engine.engine import Engine
from tally.http.app import create_app
from tally.http.compose import open_services
from tally.verification import verify
from test_cli import LEDGER, Cli

WALLET_OF = "wallet:{}:USD"


def _now_us() -> int:
    return time.time_ns() // 1000


def _run(engine: Engine, key: str, command: Command) -> None:
    engine.execute(LEDGER, Envelope(idempotency_key=key, command=command))


def _wallet(engine: Engine, user: str) -> int:
    (row,) = engine.store.account_balances(LEDGER, kind="wallet", owner=user)
    return row.balance


def _holds(engine: Engine, expires_at_us: int) -> None:
    """ann: 10.00 expiring (h-exp), 20.00 never expiring (h-open), 5.00 expiring but
    released already (h-done); ben: 7.00 expiring (h-ben), 3.00 expiring later (h-later)."""
    for user in ("ann", "ben"):
        _run(
            engine, f"r-{user}", Recharge(user_id=user, amount=50_00, currency="USD", gateway="pp")
        )
    for key, user, amount, hold_id, expires in [
        ("h1", "ann", 10_00, "h-exp", expires_at_us),
        ("h2", "ann", 20_00, "h-open", None),
        ("h3", "ann", 5_00, "h-done", expires_at_us),
        ("h4", "ben", 7_00, "h-ben", expires_at_us),
        ("h5", "ben", 3_00, "h-later", expires_at_us + 3_600_000_000),
    ]:
        hold = Hold(
            user_id=user, amount=amount, currency="USD", hold_id=hold_id, expires_at_us=expires
        )
        _run(engine, key, hold)
    _run(engine, "x3", Release(hold_id="h-done"))


def _wait_until(moment_us: int) -> None:
    while _now_us() < moment_us:
        time.sleep(0.02)


def test_a_sweep_releases_each_expired_open_hold_once(
    engine: Engine, db: str, tmp_path: Path
) -> None:
    expires = _now_us() + 400_000
    _holds(engine, expires)
    assert expiry.release_expired(engine, LEDGER, now_us=_now_us()).released == []
    _wait_until(expires)
    engine.close()  # the sweep's writer starts from the log, as the CLI's does
    sweeper = open_engine(db)
    try:
        sweep = expiry.release_expired(sweeper, LEDGER, now_us=_now_us())
        released = {c.event.hold_id: c for c in sweep.released}  # type: ignore[attr-defined]
        assert sorted(released) == ["h-ben", "h-exp"]
        assert (sweep.settled_meanwhile, sweep.refused) == ([], [])
        assert released["h-exp"].event.idempotency_key == "tally:expired:h-exp"
        assert released["h-exp"].event.reason == "expired"  # type: ignore[attr-defined]
        assert _wallet(sweeper, "ann") == 50_00 - 20_00  # h-open still held
        assert _wallet(sweeper, "ben") == 50_00 - 3_00  # h-later still held
        for hold_id, status in [
            ("h-exp", "released"),
            ("h-ben", "released"),
            ("h-open", "open"),
            ("h-later", "open"),
            ("h-done", "released"),
        ]:
            view = views.hold_view(sweeper.store, LEDGER, hold_id, now_us=_now_us())
            assert view is not None
            assert view["status"] == status, hold_id
        # A second sweep finds nothing to do; the same releases again are replays.
        again = expiry.release_expired(sweeper, LEDGER, now_us=_now_us())
        assert again == expiry.Sweep([], [], [])
        replayed = sweeper.execute(
            LEDGER,
            Envelope(
                idempotency_key="tally:expired:h-exp",
                command=Release(hold_id="h-exp", reason="expired"),
            ),
        )
        assert replayed.replayed
        assert verify(sweeper, LEDGER).ok
    finally:
        sweeper.close()
        sweeper.store.close()
    assert audit_offline(db, LEDGER, tmp_path).ok


def test_two_sweeps_at_once_release_each_hold_once(engine: Engine, db: str) -> None:
    """Two processes' writers both list the hold as expired: the second release is the
    first's, replayed under the same key, or refused as settled; the money moves once."""
    expires = _now_us() + 300_000
    _holds(engine, expires)
    _wait_until(expires)
    engine.close()
    first, second = open_engine(db), open_engine(db)
    try:
        # both writers caught up before either sweeps: each believes the holds open
        first.writer(LEDGER)
        second.writer(LEDGER)
        one = expiry.release_expired(first, LEDGER, now_us=_now_us())
        two = expiry.release_expired(second, LEDGER, now_us=_now_us())
        assert len(one.released) == 2
        assert all(c.replayed for c in two.released)
        assert len(two.released) + len(two.settled_meanwhile) == 2
        assert two.refused == []
        assert _wallet(second, "ann") == 30_00
        assert _wallet(second, "ben") == 47_00
        assert verify(second, LEDGER).ok
    finally:
        for engine_ in (first, second):
            engine_.close()
            engine_.store.close()


def test_a_hold_captured_before_it_expired_is_left_alone(engine: Engine) -> None:
    expires = _now_us() + 300_000
    _run(engine, "r", Recharge(user_id="ann", amount=10_00, currency="USD", gateway="pp"))
    _run(
        engine,
        "h",
        Hold(user_id="ann", amount=8_00, currency="USD", hold_id="h", expires_at_us=expires),
    )
    _run(engine, "c", Capture(hold_id="h", currency="USD", orders=(OrderLine("o-1", 6_00),)))
    _wait_until(expires)
    assert expiry.release_expired(engine, LEDGER, now_us=_now_us()) == expiry.Sweep([], [], [])
    assert _wallet(engine, "ann") == 4_00


def _rfc3339(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f"{seconds % 1:.6f}"[1:] + "Z"


def test_the_cli_sweep(tally: TallyRunner, db: str) -> None:
    """`tally release-expired` releases the expired hold and nothing else: not the hold
    without an expiry, not the one expiring in an hour. (No sweep before the expiry is
    asserted empty: on a loaded machine the process starts could outlast any margin.)"""
    cli = Cli(tally, db)
    refused = cli.run("release-expired")
    assert refused.returncode == 1
    assert refused.json()["error"] == "ledger_unknown"
    cli.ok("recharge", "ann", "50.00", "USD", "--gateway", "pp", "--key", "r")
    expires = time.time() + 3  # a hold must expire after it is placed: one process start
    soon, later = _rfc3339(expires), _rfc3339(time.time() + 3600)
    cli.ok("hold", "ann", "10.00", "USD", "--hold-id", "h-1", "--key", "h1", "--expires-at", soon)
    cli.ok("hold", "ann", "5.00", "USD", "--hold-id", "h-2", "--key", "h2")
    cli.ok("hold", "ann", "1.00", "USD", "--hold-id", "h-3", "--key", "h3", "--expires-at", later)
    time.sleep(max(0.0, expires - time.time()) + 0.1)
    swept = cli.ok("release-expired")
    assert swept["settled_meanwhile"] == []
    assert swept["refused"] == []
    (released,) = swept["released"]
    assert (released["hold_id"], released["amount"], released["balance_after"]) == (
        "h-1",
        "10.00",
        "44.00",
    )
    assert cli.ok("hold-show", "h-1")["status"] == "released"
    assert cli.ok("hold-show", "h-2")["status"] == "open"
    assert cli.ok("hold-show", "h-3")["status"] == "open"
    text = cli.run("release-expired", as_json=False)
    assert text.returncode == 0, text.describe()
    assert "0 expired hold(s) released" in text.stdout
    assert cli.ok("balance", "ann")["balances"] == [{"currency": "USD", "balance": "44.00"}]


def test_a_server_releases_expired_holds_by_itself(db: str) -> None:
    """`tally serve` sweeps every --release-expired-every seconds: an expired hold's money is
    back in the wallet without anyone asking, once, and the log verifies."""
    services = open_services(db, key_cache_ttl_s=0)
    services.engine.store.ensure_ledger(LEDGER)
    secret = services.keys.create(LEDGER, frozenset({Scope.ADMIN})).secret
    try:
        with served(create_app(services, release_expired_every_s=0.2)) as url:
            auth = {"Authorization": f"Bearer {secret}"}
            with httpx.Client(base_url=url, headers=auth, timeout=30) as http:
                # once the server is up (its start takes seconds on a loaded machine)
                expires = _now_us() + 1_500_000
                for path, body in [
                    (
                        "/v1/recharges",
                        {"user_id": "ann", "amount": "9.00", "currency": "USD", "gateway": "pp"},
                    ),
                    (
                        "/v1/holds",
                        {
                            "user_id": "ann",
                            "amount": "4.00",
                            "currency": "USD",
                            "hold_id": "h-1",
                            "expires_at": views.timestamp(expires),
                        },
                    ),
                    (
                        "/v1/holds",
                        {"user_id": "ann", "amount": "2.00", "currency": "USD", "hold_id": "h-2"},
                    ),
                ]:
                    done = http.post(
                        path, json=body, headers={"Idempotency-Key": path + body["amount"]}
                    )
                    assert done.status_code == 201, done.text
                assert http.get("/v1/holds/h-1").json()["status"] == "open"
                deadline = time.monotonic() + 20
                while http.get("/v1/holds/h-1").json()["status"] != "released":
                    assert time.monotonic() < deadline, "the server never released h-1"
                    time.sleep(0.1)
                time.sleep(0.5)  # more sweeps: nothing more to release
                balances = http.get("/v1/users/ann/balances").json()["balances"]
                assert balances == [{"currency": "USD", "balance": "7.00"}]  # h-2 still held
                assert http.get("/v1/holds/h-2").json()["status"] == "open"
                page = http.get("/v1/events", params={"after_seq": 0}).json()
                types = [event["event_type"] for event in page["events"]]
                assert types == ["recharge", "hold", "hold", "release"]
        engine = open_engine(db)
        try:
            assert verify(engine, LEDGER).ok
        finally:
            engine.close()
            engine.store.close()
    finally:
        services.engine.close()
        services.keys.close()
        services.engine.store.close()

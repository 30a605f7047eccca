"""GET /v1/reports/finance over HTTP, on both stores: the finance report of the key's ledger
(every figure of a ledger written here, worked out by hand), bounded by `from` and `to`; 400
for bad bounds, 401 without a key, 403 without the read scope; a key sees its own ledger
alone; a ledger never written reports no currency; the OpenAPI document lists the route.

Each test writes to a ledger of its own (the session's server is shared), so the figures are
exactly those of the writes here."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from tally import reports
from tally.api_keys import Scope

pytest_plugins = ["http_fixtures"]

Poster = Callable[..., httpx.Response]
Unique = Callable[[str], str]
ROUTE = "/v1/reports/finance"


@contextmanager
def ledger_keys(live: Any, unique: Unique) -> Iterator[tuple[str, httpx.Client, httpx.Client]]:
    """A new ledger and a client of each of two keys of it: (name, admin, read)."""
    ledger = unique("report").replace("-", "")
    live.services.engine.store.ensure_ledger(ledger)
    _, admin = live.issue(ledger, Scope.ADMIN)
    _, read = live.issue(ledger, Scope.READ)
    with (
        httpx.Client(base_url=live.url, headers=_bearer(admin), timeout=30) as admin_http,
        httpx.Client(base_url=live.url, headers=_bearer(read), timeout=30) as read_http,
    ):
        yield ledger, admin_http, read_http


def _bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def _written(http: httpx.Client, poster: Poster, path: str, body: Any) -> dict[str, Any]:
    response = poster(http, path, body)
    assert response.status_code == 201, response.text
    time.sleep(0.002)  # the next event a later timestamp: a bound between two falls on one
    transaction: dict[str, Any] = response.json()
    return transaction


def write_ledger(http: httpx.Client, poster: Poster) -> list[dict[str, Any]]:
    """Eleven transactions of every type, in USD and JPY; their answers, in seq order."""

    def recharge(user: str, amount: str, currency: str, gateway: str) -> dict[str, Any]:
        body = {"user_id": user, "amount": amount, "currency": currency, "gateway": gateway}
        return _written(http, poster, "/v1/recharges", body)

    written = [
        recharge("ann", "100.00", "USD", "paypal"),
        recharge("ben", "40.00", "USD", "stripe"),
    ]
    orders = [
        {"order_id": "o-1", "amount": "30.00"},
        {"order_id": "o-2", "amount": "10.00", "merchant_id": "m-1"},
    ]
    expense = _written(
        http, poster, "/v1/expenses", {"user_id": "ann", "currency": "USD", "orders": orders}
    )
    refund = {"expense_id": expense["transaction_id"], "order_id": "o-1", "amount": "5.00"}
    written += [expense, _written(http, poster, "/v1/refunds", refund)]
    for user, hold_id, amount in (("ann", "h-1", "20.00"), ("ben", "h-2", "10.00")):
        body = {"user_id": user, "amount": amount, "currency": "USD", "hold_id": hold_id}
        written.append(_written(http, poster, "/v1/holds", body))
    capture = {"orders": [{"order_id": "o-3", "amount": "15.00", "merchant_id": "m-1"}]}
    written.append(_written(http, poster, "/v1/holds/h-1/capture", capture))
    written.append(_written(http, poster, "/v1/holds/h-2/release", {}))
    adjustment = {"user_id": "ben", "amount": "-1.50", "currency": "USD", "reason": "a fee"}
    written.append(_written(http, poster, "/v1/adjustments", adjustment))
    transfer = {
        "user_id": "ann",
        "currency": "USD",
        "postings": [
            {"account": "wallet:ann", "amount": "-5.00"},
            {"account": "wallet:ben", "amount": "5.00"},
        ],
    }
    written.append(_written(http, poster, "/v1/transfers", transfer))
    written.append(recharge("cat", "1000", "JPY", "paypal"))
    assert [transaction["seq"] for transaction in written] == list(range(1, 12))
    assert [transaction["event_type"] for transaction in written] == [
        "recharge",
        "recharge",
        "expense",
        "refund",
        "hold",
        "hold",
        "capture",
        "release",
        "adjustment",
        "transfer",
        "recharge",
    ]
    return written


def _line(kind: str, owner: str | None, accounts: int, *figures: str) -> dict[str, Any]:
    opening, debits, credits, closing = figures
    return {
        "kind": kind,
        "owner": owner,
        "accounts": accounts,
        "opening": opening,
        "debits": debits,
        "credits": credits,
        "closing": closing,
    }


def _moved(event_type: str, events: int, *movements: tuple[str, str, str]) -> dict[str, Any]:
    return {
        "event_type": event_type,
        "events": events,
        "movements": [
            {"kind": kind, "debits": debits, "credits": credits}
            for kind, debits, credits in movements
        ],
    }


# The whole log, worked out by hand: ann ends with 45.00 and ben with 43.50 (88.50 owed to
# users), the gateways sent 100.00 and 40.00, the merchants earned 25.00 each, the fee 1.50.
WHOLE_LOG: list[dict[str, Any]] = [
    {
        "currency": "JPY",
        "balanced": True,
        "trial_balance": "0",
        "accounts": [
            _line("wallet", None, 1, "0", "0", "1000", "1000"),
            _line("clearing", "paypal", 1, "0", "1000", "0", "-1000"),
        ],
        "activity": [_moved("recharge", 1, ("clearing", "1000", "0"), ("wallet", "0", "1000"))],
    },
    {
        "currency": "USD",
        "balanced": True,
        "trial_balance": "0.00",
        "accounts": [
            _line("wallet", None, 2, "0.00", "91.50", "180.00", "88.50"),
            _line("hold", None, 2, "0.00", "30.00", "30.00", "0.00"),
            _line("clearing", "paypal", 1, "0.00", "100.00", "0.00", "-100.00"),
            _line("clearing", "stripe", 1, "0.00", "40.00", "0.00", "-40.00"),
            _line("equity", "adjustments", 1, "0.00", "0.00", "1.50", "1.50"),
            _line("revenue", "m-1", 1, "0.00", "0.00", "25.00", "25.00"),
            _line("revenue", "platform", 1, "0.00", "5.00", "30.00", "25.00"),
        ],
        "activity": [
            _moved("adjustment", 1, ("equity", "0.00", "1.50"), ("wallet", "1.50", "0.00")),
            _moved(
                "capture",
                1,
                ("hold", "20.00", "0.00"),
                ("revenue", "0.00", "15.00"),
                ("wallet", "15.00", "20.00"),
            ),
            _moved("expense", 1, ("revenue", "0.00", "40.00"), ("wallet", "40.00", "0.00")),
            _moved("hold", 2, ("hold", "0.00", "30.00"), ("wallet", "30.00", "0.00")),
            _moved("recharge", 2, ("clearing", "140.00", "0.00"), ("wallet", "0.00", "140.00")),
            _moved("refund", 1, ("revenue", "5.00", "0.00"), ("wallet", "0.00", "5.00")),
            _moved("release", 1, ("hold", "10.00", "0.00"), ("wallet", "0.00", "10.00")),
            _moved("transfer", 1, ("wallet", "5.00", "5.00")),
        ],
    },
]


def test_the_report_of_the_whole_log(live: Any, unique: Unique, poster: Poster) -> None:
    with ledger_keys(live, unique) as (ledger, admin, read):
        write_ledger(admin, poster)
        response = read.get(ROUTE)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/json")
        assert response.json() == {
            "ledger": ledger,
            "from": None,
            "to": None,
            "first_seq": 1,
            "last_seq": 11,
            "currencies": WHOLE_LOG,
        }
        assert admin.get(ROUTE).json() == response.json()  # admin includes read


def test_from_and_to_bound_the_period(live: Any, unique: Unique, poster: Poster) -> None:
    with ledger_keys(live, unique) as (ledger, admin, read):
        written = write_ledger(admin, poster)
        since, until = written[4]["timestamp"], written[8]["timestamp"]  # seqs 5 to 8
        period = read.get(ROUTE, params={"from": since, "to": until})
        assert period.status_code == 200, period.text
        report = period.json()
        assert (report["ledger"], report["from"], report["to"]) == (ledger, since, until)
        assert (report["first_seq"], report["last_seq"]) == (5, 8)
        (usd,) = report["currencies"]  # no JPY before seq 11
        # after seq 4 ann held 65.00 and ben 40.00; then the holds, the capture, the release
        assert usd == {
            "currency": "USD",
            "balanced": True,
            "trial_balance": "0.00",
            "accounts": [
                _line("wallet", None, 2, "105.00", "45.00", "30.00", "90.00"),
                _line("hold", None, 2, "0.00", "30.00", "30.00", "0.00"),
                _line("clearing", "paypal", 1, "-100.00", "0.00", "0.00", "-100.00"),
                _line("clearing", "stripe", 1, "-40.00", "0.00", "0.00", "-40.00"),
                _line("revenue", "m-1", 1, "10.00", "0.00", "15.00", "25.00"),
                _line("revenue", "platform", 1, "25.00", "0.00", "0.00", "25.00"),
            ],
            "activity": [
                _moved(
                    "capture",
                    1,
                    ("hold", "20.00", "0.00"),
                    ("revenue", "0.00", "15.00"),
                    ("wallet", "15.00", "20.00"),
                ),
                _moved("hold", 2, ("hold", "0.00", "30.00"), ("wallet", "30.00", "0.00")),
                _moved("release", 1, ("hold", "10.00", "0.00"), ("wallet", "0.00", "10.00")),
            ],
        }

        # `to` alone: the first two recharges
        first_two = read.get(ROUTE, params={"to": written[2]["timestamp"]}).json()
        assert (first_two["from"], first_two["first_seq"], first_two["last_seq"]) == (None, 1, 2)
        assert [line["closing"] for line in first_two["currencies"][0]["accounts"]] == [
            "140.00",
            "-100.00",
            "-40.00",
        ]

        # `from` after the last write: nothing moved, every balance as it closed
        later = read.get(ROUTE, params={"from": "2999-01-01T00:00:00+01:00"}).json()
        assert (later["from"], later["to"]) == ("2998-12-31T23:00:00.000000Z", None)
        assert (later["first_seq"], later["last_seq"]) == (12, 11)
        assert [part["currency"] for part in later["currencies"]] == ["JPY", "USD"]
        for part, closed in zip(later["currencies"], WHOLE_LOG, strict=True):
            zero = "0" if part["currency"] == "JPY" else "0.00"
            assert part["activity"] == []
            assert [
                (line["opening"], line["debits"], line["credits"], line["closing"])
                for line in part["accounts"]
            ] == [(line["closing"], zero, zero, line["closing"]) for line in closed["accounts"]]


# -- refusals --------------------------------------------------------------------------------

BAD_BOUNDS = {
    "from-not-a-timestamp": ({"from": "yesterday"}, "from"),
    "to-without-a-zone": ({"to": "2026-01-01T00:00:00"}, "to"),
    "from-past-year-9999": ({"from": "9999-12-31T23:59:59-14:00"}, "from"),
    "to-equal-to-from": (
        {"from": "2026-01-01T00:00:00Z", "to": "2026-01-01T01:00:00+01:00"},
        "to",
    ),
    "to-before-from": ({"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "to"),
}


BAD_BOUNDS_NAMED_WRONG = [
    pytest.param({bound: "2026-01-01T00:00:00Z" + "0" * 45}, bound, id=f"{bound}-too-long")
    for bound in ("from", "to")
]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        *(pytest.param(*case, id=name) for name, case in BAD_BOUNDS.items()),
        *(pytest.param(*case.values, id=case.id) for case in BAD_BOUNDS_NAMED_WRONG),
    ],
)
def test_bad_bounds_are_400(live: Any, params: dict[str, str], field: str) -> None:
    with live.client("read") as http:
        response = http.get(ROUTE, params=params)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert (problem["code"], problem["field"]) == ("parameter_invalid", field)
    if "from" in params and "to" in params:
        assert problem["detail"] == "must come after `from`"


def test_no_key_is_401_and_no_read_scope_403(live: Any) -> None:
    with live.client(None) as anonymous:
        response = anonymous.get(ROUTE)
    assert (response.status_code, response.json()["code"]) == (401, "unauthorized")
    with live.client("write") as writer:
        response = writer.get(ROUTE)
    assert (response.status_code, response.json()["code"]) == (403, "forbidden")


def test_a_key_sees_its_own_ledger_alone(live: Any, unique: Unique, poster: Poster) -> None:
    with (
        ledger_keys(live, unique) as (first, first_admin, first_read),
        ledger_keys(live, unique) as (second, second_admin, second_read),
    ):
        body = {"user_id": "ann", "amount": "12.34", "currency": "USD", "gateway": "paypal"}
        _written(first_admin, poster, "/v1/recharges", body)
        body = {"user_id": "ann", "amount": "500", "currency": "JPY", "gateway": "stripe"}
        _written(second_admin, poster, "/v1/recharges", body)
        _written(second_admin, poster, "/v1/recharges", body)
        one, two = first_read.get(ROUTE).json(), second_read.get(ROUTE).json()
    assert (one["ledger"], one["last_seq"]) == (first, 1)
    assert [
        (part["currency"], [(line["owner"], line["closing"]) for line in part["accounts"]])
        for part in one["currencies"]
    ] == [("USD", [(None, "12.34"), ("paypal", "-12.34")])]
    assert (two["ledger"], two["last_seq"]) == (second, 2)
    assert [
        (part["currency"], [(line["owner"], line["closing"]) for line in part["accounts"]])
        for part in two["currencies"]
    ] == [("JPY", [(None, "1000"), ("stripe", "-1000")])]


def test_a_ledger_never_written_reports_no_currency(live: Any, unique: Unique) -> None:
    with ledger_keys(live, unique) as (ledger, _, read):
        whole = read.get(ROUTE)
        bounded = read.get(
            ROUTE, params={"from": "2026-01-01T00:00:00Z", "to": "2026-02-01T00:00:00+00:00"}
        )
    assert whole.status_code == 200, whole.text
    assert whole.json() == {
        "ledger": ledger,
        "from": None,
        "to": None,
        "first_seq": 1,
        "last_seq": 0,
        "currencies": [],
    }
    assert bounded.json() == {
        "ledger": ledger,
        "from": "2026-01-01T00:00:00.000000Z",
        "to": "2026-02-01T00:00:00.000000Z",
        "first_seq": 1,
        "last_seq": 0,
        "currencies": [],
    }


def test_reports_in_flight_hold_up_no_other_read(
    live: Any, unique: Unique, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A report sums for seconds: two in flight must not take the reader threads every
    other GET of every ledger needs (they run on a thread of their own, one after another)."""
    release, started = threading.Event(), threading.Semaphore(0)
    summed = reports.finance_report

    def slow(*args: Any, **kwargs: Any) -> Any:
        started.release()
        release.wait(30)
        return summed(*args, **kwargs)

    monkeypatch.setattr(reports, "finance_report", slow)
    answers: list[int] = []
    with ledger_keys(live, unique) as (_, _, read):
        askers = [
            threading.Thread(target=lambda: answers.append(read.get(ROUTE).status_code))
            for _ in range(2)
        ]
        try:
            for asker in askers:
                asker.start()
            assert started.acquire(timeout=10)  # a report is summing
            balances = read.get("/v1/users/ann/balances", timeout=5)
            transaction = read.get("/v1/transactions/txn_0", timeout=5)
        finally:
            release.set()
            for asker in askers:
                asker.join(30)
    assert (balances.status_code, transaction.status_code) == (200, 404)
    assert answers == [200, 200]


def test_the_schema_documents_the_route(live: Any) -> None:
    with live.client(None) as http:
        schema = http.get("/openapi.json").json()
    operation = schema["paths"][ROUTE]["get"]
    assert {(p["name"], p["in"], p["required"]) for p in operation["parameters"]} >= {
        ("from", "query", False),
        ("to", "query", False),
    }
    answer = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer["$ref"].endswith("/FinanceReport")
    assert {"400", "401", "403"} <= set(operation["responses"])
    components = schema["components"]["schemas"]
    assert set(components["FinanceReport"]["properties"]) == {
        "ledger",
        "from",
        "to",
        "first_seq",
        "last_seq",
        "currencies",
    }

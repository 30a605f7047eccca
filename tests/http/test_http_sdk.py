"""The SDK: typed errors, retries that reuse the idempotency key, and independence from
the server's code."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import msgspec
import pytest

from tally.api_keys import Scope
from tally.client import (
    AsyncClient,
    BatchCommand,
    Client,
    Forbidden,
    InvalidRequest,
    NotFound,
    OrderLine,
    RechargeCommand,
    RefundCommand,
    Refused,
    ServerError,
    TransportError,
    Unauthorized,
    UnreadableAnswer,
)
from tally.client import models as client_models
from tally.http import models as server_models

pytest_plugins = ["http_fixtures"]


def _transaction_json(key: str) -> dict[str, Any]:
    return {
        "transaction_id": "txn_1",
        "ledger": "shop",
        "seq": 1,
        "timestamp": "2026-01-01T00:00:00.000000Z",
        "user_id": "alice",
        "event_type": "recharge",
        "amount": "1.00",
        "currency": "USD",
        "balance_after": "1.00",
        "reference_order_ids": [],
        "metadata": {},
        "refund_of": None,
        "idempotency_key": key,
        "actor": "key_1",
        "entries": [],
    }


def test_a_retry_after_a_network_error_reuses_the_idempotency_key() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Idempotency-Key"])
        if len(seen) < 3:
            raise httpx.ConnectError("connection reset", request=request)
        return httpx.Response(201, json=_transaction_json(seen[-1]))

    with Client("http://tally.test", "secret", transport=httpx.MockTransport(handler)) as tally:
        made = tally.recharge("alice", "1.00", "USD", gateway="paypal")
        tally.recharge("alice", "1.00", "USD", gateway="paypal")
    assert len(seen) == 4
    assert seen[0] == seen[1] == seen[2] == made.idempotency_key
    assert seen[3] != seen[0]  # a new call is a new write


def test_a_key_in_flight_is_retried_and_the_async_client_does_the_same() -> None:
    seen: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Idempotency-Key"])
        if len(seen) == 1:
            return httpx.Response(
                409,
                json={
                    "type": "t",
                    "title": "Conflict",
                    "status": 409,
                    "detail": "busy",
                    "code": "idempotency_key_in_flight",
                },
            )
        return httpx.Response(
            201, json=_transaction_json(seen[-1]), headers={"Idempotent-Replayed": "true"}
        )

    async def run() -> client_models.Transaction:
        async with AsyncClient(
            "http://tally.test", "secret", transport=httpx.MockTransport(handler)
        ) as tally:
            return await tally.recharge(
                "alice", "1.00", "USD", gateway="paypal", idempotency_key="mine"
            )

    made = asyncio.run(run())
    assert seen == ["mine", "mine"]
    assert made.replayed


def test_the_network_failing_every_time_is_a_transport_error() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        raise httpx.ReadTimeout("slow", request=request)

    with (
        Client(
            "http://tally.test", "s", transport=httpx.MockTransport(handler), retries_max=2
        ) as tally,
        pytest.raises(TransportError),
    ):
        tally.balances("alice")
    assert calls == 3


@pytest.mark.parametrize(
    ("answer", "raised", "status"),
    [
        (httpx.Response(502, text="<html>bad gateway</html>"), ServerError, 502),
        (httpx.Response(500, text="<html>oops</html>"), ServerError, 500),
        (httpx.Response(404, text="<html>no such page</html>"), NotFound, 404),
        (httpx.Response(400, text="Invalid HTTP request received."), InvalidRequest, 400),
        (httpx.Response(503, content=b""), ServerError, 503),
        (httpx.Response(201, text="<html>ok</html>"), UnreadableAnswer, 201),
        (httpx.Response(201, json={"ledger": "shop"}), UnreadableAnswer, 201),
    ],
    ids=["html-502", "html-500", "html-404", "text-400", "empty-503", "html-201", "partial-201"],
)
def test_answers_that_are_not_tallys_are_typed_errors(
    answer: httpx.Response, raised: type[Exception], status: int
) -> None:
    """A proxy's page, an empty body or a body missing fields: a TallyError with the
    status, never msgspec's own error (a 2xx one says the write landed)."""
    with (
        Client(
            "http://tally.test",
            "s",
            transport=httpx.MockTransport(lambda _: answer),
            retries_max=1,
        ) as tally,
        pytest.raises(raised) as caught,
    ):
        tally.recharge("alice", "1.00", "USD", gateway="paypal")
    assert getattr(caught.value, "status", None) == status


def test_floats_never_leave_the_client() -> None:
    with Client("http://tally.test", "s") as tally, pytest.raises(TypeError):
        tally.recharge("alice", 1.5, "USD", gateway="paypal")  # type: ignore[arg-type]
    assert client_models.amount_text(Decimal("1.50")) == "1.50"


def test_errors_are_typed(live: Any, unique: Callable[[str], str]) -> None:
    user = unique("u")
    with Client(live.url, live.keys["read_write"]) as tally:
        with pytest.raises(Refused) as refused:
            tally.expense(user, "USD", [OrderLine(order_id=unique("o"), amount="1.00")])
        assert (refused.value.code, refused.value.field) == ("insufficient_funds", "orders")
        with pytest.raises(InvalidRequest) as invalid:
            tally.recharge(user, "1.001", "USD", gateway="paypal")
        assert invalid.value.code == "amount_too_precise"
        with pytest.raises(Forbidden):
            tally.adjust(user, "1.00", "USD", reason="x")
        with pytest.raises(NotFound):
            tally.order("no-such-order")
        with pytest.raises(InvalidRequest) as balances_refused:
            tally.balances("no spaces allowed")
        with pytest.raises(InvalidRequest) as statement_refused:
            tally.statement("no spaces allowed", "USD")
        for refused_id in (balances_refused.value, statement_refused.value):
            assert (refused_id.code, refused_id.field) == ("identifier_invalid", "user_id")
        first = tally.recharge(user, "1.00", "USD", gateway="paypal", idempotency_key=user)
        with pytest.raises(Refused) as reused:
            tally.recharge(user, "2.00", "USD", gateway="paypal", idempotency_key=user)
        assert reused.value.code == "idempotency_key_reused"
        assert first.actor.startswith("key_")
    with Client(live.url, "nope") as stranger, pytest.raises(Unauthorized):
        stranger.balances(user)


def test_batches_through_the_sdk(live: Any, unique: Callable[[str], str]) -> None:
    user, order = unique("u"), unique("o")
    with Client(live.url, live.keys["admin"]) as tally:
        tally.recharge(user, "9.00", "USD", gateway="paypal")
        paid = tally.expense(user, "USD", [OrderLine(order_id=order, amount="5.00")])
        commands: list[BatchCommand] = [
            RechargeCommand(user_id=user, amount="1.00", currency="USD", gateway="paypal"),
            RefundCommand(expense_id=paid.transaction_id, order_id=order, amount="9.00"),
            RefundCommand(expense_id=paid.transaction_id, order_id=order, amount="5.00"),
        ]
        results = tally.batch(commands)
        again = tally.batch(commands)
        balance = tally.balances(user).of("USD")
    assert [r.status for r in results] == [201, 422, 201]
    assert results[1].problem is not None
    assert results[1].problem.code == "refund_exceeds_refundable"
    assert [r.replayed for r in again] == [True, False, True]
    assert balance == Decimal("10.00")


def test_the_client_models_match_the_servers() -> None:
    pairs = [
        (client_models.Transaction, server_models.Transaction),
        (client_models.Entry, server_models.Entry),
        (client_models.Balances, server_models.Balances),
        (client_models.StatementPage, server_models.StatementPage),
        (client_models.Order, server_models.Order),
        (client_models.Hold, server_models.Hold),
        (client_models.HoldTransaction, server_models.HoldTransaction),
        (client_models.EventsPage, server_models.EventsPage),
        (client_models.LoggedEvent, server_models.LoggedEvent),
        (client_models.Problem, server_models.Problem),
        (client_models.BatchResult, server_models.BatchResult),
        (client_models.FinanceReport, server_models.FinanceReport),
        (client_models.CurrencyReport, server_models.CurrencyReport),
        (client_models.ReportAccounts, server_models.ReportAccounts),
        (client_models.ReportActivity, server_models.ReportActivity),
        (client_models.ReportMovement, server_models.ReportMovement),
    ]
    for client_type, server_type in pairs:
        client_fields = set(client_type.__struct_fields__) - {"replayed"}
        server_fields = set(server_type.__struct_fields__) - {"replayed"}
        assert client_fields == server_fields, client_type
    schema = msgspec.json.schema(server_models.Transaction)
    assert "Transaction" in json.dumps(schema)


def test_the_client_imports_nothing_of_the_server() -> None:
    probe = (
        "import sys, tally.client\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('tally.engine', 'tally.store', "
        "'tally.http', 'tally.domain', 'tally.audit', 'litestar', 'uvicorn')))\n"
        "print(bad)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"


def test_the_finance_report_through_both_clients(live: Any, unique: Callable[[str], str]) -> None:
    ledger = unique("report").replace("-", "")
    live.services.engine.store.ensure_ledger(ledger)
    _, secret = live.issue(ledger, Scope.ADMIN)
    with Client(live.url, secret) as tally:
        tally.recharge("ann", "30.00", "USD", gateway="paypal")
        tally.expense("ann", "USD", [OrderLine(order_id=unique("o"), amount="12.50")])
        report = tally.finance_report()
        later = tally.finance_report(since="9999-01-01T00:00:00Z")
    assert (report.ledger, report.first_seq, report.last_seq) == (ledger, 1, 2)
    usd = report.of("USD")
    assert usd is not None
    assert (usd.balanced, usd.trial_balance) == (True, "0.00")
    lines = {(line.kind, line.owner): line for line in usd.accounts}
    wallets = lines[("wallet", None)]
    assert (wallets.opening, wallets.debits, wallets.credits, wallets.closing) == (
        "0.00",
        "12.50",
        "30.00",
        "17.50",
    )
    assert lines[("clearing", "paypal")].closing == "-30.00"
    assert lines[("revenue", "platform")].closing == "12.50"
    assert [(kind.event_type, kind.events) for kind in usd.activity] == [
        ("expense", 1),
        ("recharge", 1),
    ]
    assert report.of("EUR") is None
    assert (later.since, later.first_seq, later.last_seq) == ("9999-01-01T00:00:00.000000Z", 3, 2)
    assert later.currencies[0].activity == []  # nothing moved in an empty period

    async def read() -> client_models.FinanceReport:
        async with AsyncClient(live.url, secret) as tally:
            return await tally.finance_report(until="9999-01-01T00:00:00Z")

    assert asyncio.run(read()).currencies == report.currencies

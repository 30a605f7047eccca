"""A refund sent to a server whose writer has not seen the expense (another process wrote it)."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import httpx

from serve_process import provision, serve, verify_cli

LEDGER = "shop"


def test_a_refund_through_another_server_finds_the_expense_in_the_log(tmp_path: Path) -> None:
    db = str(tmp_path / "shared.db")
    secret = provision(db, LEDGER)
    headers = {"Authorization": f"Bearer {secret}"}
    with ExitStack() as stack:
        # Both servers start (and catch their writers up) before the expense exists.
        first, second = (
            stack.enter_context(serve(db, tmp_path / f"serve-{n}.log")) for n in range(2)
        )
        with httpx.Client(base_url=first.url, headers=headers, timeout=30) as client:
            funded = client.post(
                "/v1/recharges",
                json={"user_id": "ann", "amount": "50.00", "currency": "USD", "gateway": "pp"},
                headers={"Idempotency-Key": "fund"},
            )
            assert funded.status_code == 201, funded.text
            paid = client.post(
                "/v1/expenses",
                json={
                    "user_id": "ann",
                    "currency": "USD",
                    "orders": [{"order_id": "o-1", "amount": "30.00"}],
                },
                headers={"Idempotency-Key": "pay"},
            )
            assert paid.status_code == 201, paid.text
        with httpx.Client(base_url=second.url, headers=headers, timeout=30) as client:
            refunded = client.post(
                "/v1/refunds",
                json={
                    "expense_id": paid.json()["transaction_id"],
                    "order_id": "o-1",
                    "amount": "10.00",
                },
                headers={"Idempotency-Key": "back"},
            )
            assert refunded.status_code == 201, refunded.text
            assert refunded.json()["balance_after"] == "30.00"
            unknown = client.post(
                "/v1/refunds",
                json={"expense_id": "txn_missing", "order_id": "o-1", "amount": "1.00"},
                headers={"Idempotency-Key": "nothing"},
            )
            assert unknown.status_code == 404
            assert unknown.json()["code"] == "expense_unknown"
    status, report = verify_cli(db, LEDGER)
    assert status == 0, report

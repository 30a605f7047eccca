"""The SQLite store's write-path statements keep their query plans.

SQLite plans without statistics. A statement that joins a table to `json_each` can come out
as "scan the ledger's whole table for each row of the batch", which passes every functional
test on a small ledger and is quadratic on a real one. These tests pin the plans on a ledger
with enough rows for a bad plan to be plausible.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tally.bootstrap import open_engine
from tally.domain.commands import Envelope, Expense, OrderLine, Recharge
from tally.store import sqlite as store

Plan = Callable[..., list[str]]


@pytest.fixture(scope="module")
def plan_of(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plan]:
    path = Path(tmp_path_factory.mktemp("plans")) / "plans.db"
    engine = open_engine(path)
    try:
        users = [f"u{i}" for i in range(300)]
        engine.execute_many(
            "plans",
            [
                Envelope(
                    idempotency_key=f"r-{user}",
                    command=Recharge(user_id=user, amount=500, currency="USD", gateway="pp"),
                )
                for user in users
            ]
            + [
                Envelope(
                    idempotency_key=f"e-{user}",
                    command=Expense(
                        user_id=user, currency="USD", orders=(OrderLine(f"o-{user}", 100),)
                    ),
                )
                for user in users
            ],
        )
        connection = engine.store._connection()  # type: ignore[attr-defined]

        def plan(sql: str, *params: object) -> list[str]:
            rows = connection.execute(f"EXPLAIN QUERY PLAN {sql}", params).fetchall()
            return [str(row[3]) for row in rows]

        yield plan
    finally:
        engine.close()
        engine.store.close()


def test_refunded_orders_are_looked_up_by_primary_key(plan_of: Plan) -> None:
    steps = plan_of(store._UPDATE_ORDERS, "plans", "[]")
    assert steps[:3] == ["MATERIALIZE u", "SCAN json_each VIRTUAL TABLE INDEX 1:", "SCAN u"]
    assert steps[3] == "SEARCH orders USING PRIMARY KEY (ledger=? AND order_id=?)", steps


def test_a_balance_is_its_last_entry_found_by_primary_key(plan_of: Plan) -> None:
    steps = plan_of(store._ACCOUNT_ROWS + " AND a.kind = ?2 AND a.owner = ?3", "plans", "w", "u1")
    assert steps[0].startswith("SEARCH a USING"), steps
    seeks = [step for step in steps if step.startswith(("SEARCH n", "SCAN n"))]
    assert seeks == ["SEARCH n USING PRIMARY KEY (ledger=? AND account=?)"] * 2, steps


def test_an_order_finds_its_refunds_through_their_index(plan_of: Plan) -> None:
    steps = plan_of(store._ORDER_EVENT_SEQS, "plans", "o-u1")
    assert "SEARCH entries USING INDEX refund_lines_by_order (ledger=? AND order_id=?)" in steps
    assert not any(step.startswith("SCAN") for step in steps), steps


@pytest.mark.parametrize("insert", ["entries", "accounts", "orders", "keys", "events"])
def test_inserts_scan_only_their_json(plan_of: Plan, insert: str) -> None:
    sql = {
        "entries": store._INSERT_ENTRY.sql,
        "accounts": store._INSERT_ACCOUNT.sql,
        "orders": store._INSERT_ORDER.sql,
        "keys": store._INSERT_KEY.sql,
        "events": store._INSERT_EVENTS,
    }[insert]
    params: tuple[object, ...] = (
        ("plans", "[]") if insert != "events" else ("plans", "[]", b"", b"")
    )
    steps = plan_of(sql, *params)
    assert steps == ["SCAN json_each VIRTUAL TABLE INDEX 1:"]

"""The write path's edge, as cheap as it is made: the key and content checks still run before
the body and the parameters are read, every routed answer is still counted, answers carry
exactly the headers they did, and a cancelled request leaves the writer's future alone."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import uuid
from typing import Any

import pytest

from tally.domain.rejections import Rejected, Rejection
from tally.engine.results import CommitFailed, Outcome
from tally.http.services import Answers

pytest_plugins = ["http_fixtures"]

EXPENSE = {
    "user_id": "nobody",
    "currency": "USD",
    "orders": [{"order_id": "o", "amount": "1.00", "merchant_id": "m"}],
}

GOOD = json.dumps(EXPENSE).encode()
JSON = {"Content-Type": "application/json"}
TEXT = {"Content-Type": "text/plain"}

# (why, key, headers, body, status, code): the first check that fails decides the answer.
ORDER_OF_CHECKS: list[tuple[str, str | None, dict[str, str], bytes, int, str]] = [
    ("no key beats a bad body", None, JSON, b"{", 401, "unauthorized"),
    ("no key beats no Idempotency-Key", None, {}, b"", 401, "unauthorized"),
    ("the scope beats the content type", "read", TEXT, b"{", 403, "forbidden"),
    ("the content type beats the rest", "write", TEXT, b"{", 415, "content_type_unsupported"),
    ("an empty body beats no Idempotency-Key", "write", JSON, b"", 400, "json_malformed"),
    ("then the Idempotency-Key", "write", JSON, GOOD, 400, "idempotency_key_missing"),
]


@pytest.mark.parametrize(
    ("key", "headers", "body", "status", "code"),
    [case[1:] for case in ORDER_OF_CHECKS],
    ids=[case[0] for case in ORDER_OF_CHECKS],
)
def test_the_checks_run_in_their_order(
    live: Any, key: str | None, headers: dict[str, str], body: bytes, status: int, code: str
) -> None:
    with live.client(key) as http:
        response = http.post("/v1/expenses", content=body, headers=headers)
    assert (response.status_code, response.json()["code"]) == (status, code), response.text
    assert response.headers["content-type"] == "application/problem+json"


def test_an_adjustment_needs_the_admin_scope_before_anything_else(live: Any) -> None:
    with live.client("write") as http:
        response = http.post("/v1/adjustments", content=b"{", headers={})
    assert (response.status_code, response.json()["code"]) == (403, "forbidden")


def test_reads_check_the_key_before_their_parameters(live: Any) -> None:
    """Reads share the writes' before-request check: no key is 401 even when a query
    parameter is also wrong; with a key, the parameter's error is what comes back."""
    bad_limit = "/v1/users/u/statement?currency=USD&limit=0"
    with live.client(None) as anonymous:
        response = anonymous.get(bad_limit)
    assert (response.status_code, response.json()["code"]) == (401, "unauthorized")
    with live.client() as http:
        response = http.get(bad_limit)
    assert response.status_code == 400, response.text


def test_answers_carry_exactly_their_headers(live: Any) -> None:
    key = f"k-{uuid.uuid4()}"
    body = {"user_id": f"u-{uuid.uuid4().hex[:8]}", "amount": "1.00", "currency": "USD"}
    with live.client("write") as http:
        first = http.post(
            "/v1/recharges", json={**body, "gateway": "p"}, headers={"Idempotency-Key": key}
        )
        again = http.post(
            "/v1/recharges", json={**body, "gateway": "p"}, headers={"Idempotency-Key": key}
        )
        batch = http.post(
            "/v1/batch", json={"commands": []}, headers={"Idempotency-Key": key + "b"}
        )
    assert first.status_code == 201
    assert _headers(first) == {
        "content-type": "application/json",
        "content-length": str(len(first.content)),
    }
    assert again.status_code == 201
    assert again.json() == first.json()
    assert _headers(again) == {
        "idempotent-replayed": "true",
        "content-type": "application/json",
        "content-length": str(len(again.content)),
    }
    assert list(again.headers.keys())[-3:] == [
        "idempotent-replayed",
        "content-type",
        "content-length",
    ]
    assert (batch.status_code, batch.json()) == (200, {"results": []})
    assert batch.headers["content-type"] == "application/json"


def test_every_routed_answer_is_counted_and_timed(live: Any) -> None:
    before = _metrics(live)
    with live.client("write") as http:
        ok = http.post(
            "/v1/recharges",
            json={"user_id": "counted", "amount": "1.00", "currency": "USD", "gateway": "p"},
            headers={"Idempotency-Key": f"k-{uuid.uuid4()}"},
        )
        refused = http.post(
            "/v1/expenses", json=EXPENSE, headers={"Idempotency-Key": f"k-{uuid.uuid4()}"}
        )
        unsupported = http.post(
            "/v1/expenses", content=b"{}", headers={"Content-Type": "text/plain"}
        )
        http.post("/v1/nowhere", json={})  # unrouted: not counted, as before
    with live.client(None) as anonymous:
        anonymous.post("/v1/expenses", json=EXPENSE)
    assert (ok.status_code, refused.status_code, unsupported.status_code) == (201, 422, 415)
    after = _metrics(live)
    expenses = 'method="POST",route="/v1/expenses"'
    delta = {name: after.get(name, 0) - before.get(name, 0) for name in after}
    assert delta['tally_http_requests_total{method="POST",route="/v1/recharges",status="201"}'] == 1
    assert delta[f'tally_http_requests_total{{{expenses},status="422"}}'] == 1
    assert delta[f'tally_http_requests_total{{{expenses},status="415"}}'] == 1
    assert delta[f'tally_http_requests_total{{{expenses},status="401"}}'] == 1
    assert delta[f"tally_http_request_duration_seconds_count{{{expenses}}}"] == 3
    assert delta['tally_commands_total{outcome="insufficient_funds",type="expense"}'] == 1
    assert delta['tally_commands_total{outcome="committed",type="recharge"}'] == 1
    assert not any("/v1/nowhere" in name for name in after)


def test_a_batch_counts_each_of_its_commands_by_outcome(live: Any) -> None:
    user = f"counted-{uuid.uuid4().hex[:10]}"
    recharge = {"type": "recharge", "user_id": user, "amount": "1.00", "currency": "USD"}
    first, second = f"k-{uuid.uuid4()}", f"k-{uuid.uuid4()}"
    commands = [
        {**recharge, "idempotency_key": first, "gateway": "p"},
        {**recharge, "idempotency_key": second, "gateway": "p"},
        {**EXPENSE, "type": "expense", "idempotency_key": f"k-{uuid.uuid4()}"},
        {**recharge, "idempotency_key": first, "gateway": "p"},  # the first, again
    ]
    before = _metrics(live)
    with live.client("write") as http:
        batch = http.post(
            "/v1/batch",
            json={"commands": commands},
            headers={"Idempotency-Key": f"b-{uuid.uuid4()}"},
        )
    assert [r["status"] for r in batch.json()["results"]] == [201, 201, 422, 201]
    after = _metrics(live)
    delta = {name: after.get(name, 0) - before.get(name, 0) for name in after}
    assert delta['tally_commands_total{outcome="committed",type="recharge"}'] == 2
    assert delta['tally_commands_total{outcome="replayed",type="recharge"}'] == 1
    assert delta['tally_commands_total{outcome="insufficient_funds",type="expense"}'] == 1


def test_a_cancelled_request_leaves_the_writer_free_to_answer() -> None:
    """The writer answers from its own thread whatever became of the request: a cancelled
    one's answer is dropped on the loop, and the others still arrive."""
    refused = Rejected(Rejection.INSUFFICIENT_FUNDS, field="orders", detail="d")

    async def scenario() -> tuple[bool, list[Outcome]]:
        answers = Answers(asyncio.get_running_loop())
        gone, answer_gone = answers.waiting()
        waiting = asyncio.ensure_future(_await(gone))
        await asyncio.sleep(0)
        waiting.cancel()
        await asyncio.sleep(0)
        kept, answer_kept = answers.waiting()
        writer = threading.Thread(
            target=lambda: (answer_gone([], None), answer_kept([refused], None))
        )
        writer.start()
        writer.join()
        return waiting.cancelled(), await kept

    assert asyncio.run(scenario()) == (True, [refused])


def test_a_burst_of_answers_wakes_the_loop_once() -> None:
    async def scenario() -> tuple[list[list[Outcome]], int]:
        loop = asyncio.get_running_loop()
        answers = Answers(loop)
        waiting = [answers.waiting() for _ in range(50)]
        wakeups = 0
        schedule = loop.call_soon_threadsafe

        def counted(callback: Any, *args: Any) -> Any:
            nonlocal wakeups
            wakeups += 1
            return schedule(callback, *args)

        loop.call_soon_threadsafe = counted  # type: ignore[method-assign,assignment]
        writer = threading.Thread(target=lambda: [answer([], None) for _, answer in waiting])
        writer.start()
        writer.join()
        results = [await future for future, _ in waiting]
        return results, wakeups

    results, wakeups = asyncio.run(scenario())
    assert results == [[]] * 50
    assert wakeups == 1


def test_the_writers_failure_reaches_the_request() -> None:
    async def scenario() -> None:
        future, answer = Answers(asyncio.get_running_loop()).waiting()
        answer(None, CommitFailed("commit failed"))
        await future

    with pytest.raises(CommitFailed, match="commit failed"):
        asyncio.run(scenario())


async def _await(future: asyncio.Future[list[Outcome]]) -> list[Outcome]:
    return await future


def _headers(response: Any) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k not in ("date", "server")}


def _metrics(live: Any) -> dict[str, float]:
    with live.client(None) as anonymous:
        text = anonymous.get("/metrics").text
    found = {}
    for line in text.splitlines():
        match = re.fullmatch(r"(tally_[a-z_]+(?:\{[^}]*\})?) (\S+)", line)
        if match is not None:
            found[match[1]] = float(match[2])
    return found


def test_a_request_whose_deciding_fails_is_a_500_and_writes_nothing(
    live: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug while deciding one command (here: any command whose user is `poisoned-…`) fails
    that request alone, as a 500 that says nothing of it was written; the writer goes on."""
    from tally.domain.decide import decide as real_decide
    from tally.engine import writer as writer_module

    def decide_with_a_bug(state: Any, envelope: Any, *args: Any, **kw: Any) -> Any:
        if getattr(envelope.command, "user_id", "").startswith("poisoned-"):
            raise RuntimeError("a bug in deciding")
        return real_decide(state, envelope, *args, **kw)

    monkeypatch.setattr(writer_module, "decide", decide_with_a_bug)
    user, poisoned = f"u-{uuid.uuid4().hex[:10]}", f"poisoned-{uuid.uuid4().hex[:10]}"
    recharge = {"amount": "5.00", "currency": "USD", "gateway": "paypal"}
    good_key = f"k-{uuid.uuid4()}"
    with live.client() as http:
        alone = http.post(
            "/v1/recharges",
            json={"user_id": poisoned, **recharge},
            headers={"Idempotency-Key": f"k-{uuid.uuid4()}"},
        )
        batch = http.post(
            "/v1/batch",
            json={
                "commands": [
                    {"type": "recharge", "idempotency_key": good_key, "user_id": user, **recharge},
                    {"type": "recharge", "idempotency_key": "bad", "user_id": poisoned, **recharge},
                ]
            },
            headers={"Idempotency-Key": f"b-{uuid.uuid4()}"},
        )
        for answer in (alone, batch):
            assert answer.status_code == 500, answer.text
            assert answer.json()["code"] == "internal_error"
            assert "nothing of it was written" in answer.json()["detail"]
        # The good command of the failed batch was not written: the same key writes it now.
        again = http.post(
            "/v1/recharges",
            json={"user_id": user, **recharge},
            headers={"Idempotency-Key": good_key},
        )
        assert again.status_code == 201, again.text
        assert again.headers.get("Idempotent-Replayed") is None
        statement = http.get(f"/v1/users/{user}/statement", params={"currency": "USD"})
    assert [line["amount"] for line in statement.json()["entries"]] == ["5.00"]


def test_an_answer_that_fails_after_the_commit_says_the_write_was_recorded(
    live: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug while building the answer of a committed write: the 500 says it was recorded
    (not 'nothing was acknowledged'), and a retry with the same key gets the answer."""
    from tally.http import writes

    def broken(_: object) -> object:
        raise RuntimeError("a bug in the view")

    user = f"u-{uuid.uuid4().hex[:10]}"
    body = {"user_id": user, "amount": "5.00", "currency": "USD", "gateway": "paypal"}
    key = f"k-{uuid.uuid4()}"
    command_key = f"c-{uuid.uuid4()}"
    with live.client() as http:
        monkeypatch.setattr(writes, "_transaction", broken)
        single = http.post("/v1/recharges", json=body, headers={"Idempotency-Key": key})
        batch = http.post(
            "/v1/batch",
            json={"commands": [{"type": "recharge", "idempotency_key": command_key, **body}]},
            headers={"Idempotency-Key": f"b-{uuid.uuid4()}"},
        )
        monkeypatch.undo()
        assert (single.status_code, batch.status_code) == (500, 500)
        assert "the write was recorded" in single.json()["detail"]
        assert "accepted commands were recorded" in batch.json()["detail"]
        again = http.post("/v1/recharges", json=body, headers={"Idempotency-Key": key})
        assert again.status_code == 201
        assert again.headers["Idempotent-Replayed"] == "true"
        statement = http.get(f"/v1/users/{user}/statement", params={"currency": "USD"})
    assert [line["amount"] for line in statement.json()["entries"]] == ["5.00", "5.00"]


def test_a_batch_adjustment_without_the_admin_scope_names_the_key(live: Any) -> None:
    adjustment = {
        "type": "adjustment",
        "idempotency_key": f"k-{uuid.uuid4()}",
        "user_id": "someone",
        "amount": "1.00",
        "currency": "USD",
        "reason": "goodwill",
    }
    with live.client("write") as http:
        batch = http.post(
            "/v1/batch",
            json={"commands": [adjustment]},
            headers={"Idempotency-Key": f"b-{uuid.uuid4()}"},
        )
    (result,) = batch.json()["results"]
    assert result["status"] == 403
    assert result["problem"]["field"] == "Authorization"

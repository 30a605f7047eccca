"""The asyncio client: the same calls as `Client`, awaited."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import TypeVar

import httpx

from tally.client import _plans, models
from tally.client.errors import TransportError

T = TypeVar("T")


class AsyncClient:
    """Talks to a tally server with one API key (and so one ledger).

        async with AsyncClient("http://127.0.0.1:8000", api_key) as tally:
            await tally.recharge("alice", "200.00", "USD", gateway="paypal")

    Every write gets an idempotency key (yours, or a fresh one) that is reused when the call
    is retried after a network error, so a retry never writes twice.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout_s: float = 10.0,
        retries_max: int = _plans.retries_max,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        _plans.check_base_url(base_url)
        self.retries_max = retries_max
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers=_plans.auth_headers(api_key),
            timeout=timeout_s,
            transport=transport,
        )

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def _call(self, plan: _plans.Plan[T]) -> T:
        # `{}` is a body too (a release without reason or metadata); only reads send none
        has_body = plan.body is not None
        headers = {"Content-Type": "application/json", **plan.headers()} if has_body else {}
        content = plan.content()
        for attempt in range(self.retries_max + 1):
            last = attempt == self.retries_max
            try:
                response = await self._http.request(
                    plan.method, plan.path, params=plan.params, content=content, headers=headers
                )
            except httpx.TransportError as error:
                if last or not _plans.retriable(error):
                    raise TransportError(f"{plan.method} {plan.path}: {error!r}") from error
            else:
                if last or not _plans.should_retry(response):
                    return plan.read(response)
            await asyncio.sleep(_plans.backoff_s(attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    # -- writes ------------------------------------------------------------------------
    async def recharge(
        self,
        user_id: str,
        amount: models.Amount,
        currency: str,
        *,
        gateway: str,
        metadata: Mapping[str, str] | None = None,
        gateway_reference: str | None = None,
        idempotency_key: str | None = None,
    ) -> models.Transaction:
        """Credit USER's wallet with money that arrived through `gateway`.
        `gateway_reference`, the gateway's id of the payment, makes it a business key: a
        second recharge naming it raises `Conflict` (`payment_already_credited`)."""
        body = _plans.recharge_body(
            user_id,
            amount,
            currency,
            gateway,
            metadata=metadata,
            gateway_reference=gateway_reference,
        )
        return await self._call(_plans.write("/v1/recharges", body, idempotency_key))

    async def expense(
        self,
        user_id: str,
        currency: str,
        orders: Sequence[models.OrderLine],
        *,
        metadata: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> models.Transaction:
        body = _plans.expense_body(user_id, currency, orders, metadata)
        return await self._call(_plans.write("/v1/expenses", body, idempotency_key))

    async def refund(
        self,
        expense_id: str,
        order_id: str,
        amount: models.Amount,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
        refund_request_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> models.Transaction:
        """Refund `amount` of one order of an expense. `refund_request_id`, your id of the
        refund request this carries out, makes it a business key: a second refund naming it
        raises `Conflict` (`refund_already_issued`), whatever its idempotency key."""
        body = _plans.refund_body(
            expense_id,
            order_id,
            amount,
            reason=reason,
            metadata=metadata,
            refund_request_id=refund_request_id,
        )
        return await self._call(_plans.write("/v1/refunds", body, idempotency_key))

    async def adjust(
        self,
        user_id: str,
        amount: models.Amount,
        currency: str,
        *,
        reason: str,
        metadata: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> models.Transaction:
        body = _plans.adjustment_body(user_id, amount, currency, reason, metadata)
        return await self._call(_plans.write("/v1/adjustments", body, idempotency_key))

    async def transfer(
        self,
        user_id: str,
        currency: str,
        postings: Sequence[models.TransferPosting],
        *,
        reason: str = "",
        metadata: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> models.Transaction:
        """Move money between USER's wallet and other accounts (admin scope): 2 to 100
        `postings`, signed, that sum to zero, each account named once, one of them
        `wallet:USER`; no wallet may go below zero (`Refused`, `insufficient_funds`). The
        transaction's `postings` show every leg with its account's balance after it."""
        body = models.transfer_json(user_id, currency, postings, reason=reason, metadata=metadata)
        return await self._call(_plans.write("/v1/transfers", body, idempotency_key))

    async def hold(
        self,
        user_id: str,
        amount: models.Amount,
        currency: str,
        hold_id: str,
        *,
        expires_at: datetime | str | None = None,
        metadata: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> models.Transaction:
        """Set `amount` of USER's wallet aside under `hold_id` (your id of it, unique in the
        ledger: a second hold naming it raises `Conflict`, `hold_already_placed`) until it
        is captured or released. From `expires_at` (a datetime with a zone, or RFC 3339
        text) on, it can only be released."""
        body = models.hold_json(
            user_id, amount, currency, hold_id, expires_at=expires_at, metadata=metadata
        )
        return await self._call(_plans.write("/v1/holds", body, idempotency_key))

    async def capture(
        self,
        hold_id: str,
        orders: Sequence[models.OrderLine],
        *,
        metadata: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> models.Transaction:
        """Pay `orders` (in the hold's currency) from an open hold, all or none; what they
        do not take goes back to the wallet. A refund of one of them names this
        transaction's id as its expense."""
        body = _plans.capture_body(orders, metadata)
        return await self._call(_plans.write(_plans.capture_path(hold_id), body, idempotency_key))

    async def release(
        self,
        hold_id: str,
        *,
        reason: str = "",
        metadata: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> models.Transaction:
        """Give an open hold's whole amount back to the wallet (an expired hold's too)."""
        body = _plans.release_body(reason, metadata)
        return await self._call(_plans.write(_plans.release_path(hold_id), body, idempotency_key))

    async def batch(
        self, commands: Sequence[models.BatchCommand], *, idempotency_key: str | None = None
    ) -> list[models.BatchResult]:
        return await self._call(_plans.batch(commands, idempotency_key))

    # -- reads -------------------------------------------------------------------------
    async def balances(self, user_id: str) -> models.Balances:
        return await self._call(_plans.balances(user_id))

    async def statement(
        self,
        user_id: str,
        currency: str,
        *,
        limit: int | None = None,
        cursor: str | None = None,
        since: str | None = None,
        until: str | None = None,
    ) -> models.StatementPage:
        return await self._call(
            _plans.statement(
                user_id, currency, limit=limit, cursor=cursor, since=since, until=until
            )
        )

    async def iter_statement(
        self, user_id: str, currency: str, *, page_size: int = 100
    ) -> AsyncIterator[models.Entry]:
        """Every statement line, oldest first, fetching page after page."""
        cursor: str | None = None
        while True:
            page = await self.statement(user_id, currency, limit=page_size, cursor=cursor)
            for entry in page.entries:
                yield entry
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def transaction(self, transaction_id: str) -> models.Transaction:
        return await self._call(_plans.transaction(transaction_id))

    async def order(self, order_id: str) -> models.Order:
        return await self._call(_plans.order(order_id))

    async def get_hold(self, hold_id: str) -> models.Hold:
        return await self._call(_plans.hold(hold_id))

    async def holds(
        self,
        user_id: str,
        *,
        settled: bool | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> models.UserHolds:
        """A page of USER's holds in the order they were placed: `settled=False` only those
        still holding money (open, or expired and not released), `True` only the captured or
        released ones, None all."""
        return await self._call(
            _plans.user_holds(user_id, settled=settled, limit=limit, cursor=cursor)
        )

    async def iter_holds(
        self, user_id: str, *, settled: bool | None = None, page_size: int = 100
    ) -> AsyncIterator[models.Hold]:
        """Every hold of USER (as `holds` filters them), fetching page after page."""
        cursor: str | None = None
        while True:
            page = await self.holds(user_id, settled=settled, limit=page_size, cursor=cursor)
            for hold in page.holds:
                yield hold
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def finance_report(
        self, *, since: str | None = None, until: str | None = None
    ) -> models.FinanceReport:
        """Balances and movements by account and event type over [since, until) (RFC 3339
        with a zone; None: unbounded), by currency, with the trial balance."""
        return await self._call(_plans.finance_report(since, until))

    async def events(self, *, after_seq: int = 0, limit: int = 100) -> models.EventsPage:
        return await self._call(_plans.events(after_seq, limit))

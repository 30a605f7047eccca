"""The blocking client."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import TypeVar

import httpx

from tally.client import _plans, models
from tally.client.errors import TransportError

T = TypeVar("T")


class Client:
    """Talks to a tally server with one API key (and so one ledger).

        with Client("http://127.0.0.1:8000", api_key) as tally:
            tally.recharge("alice", "200.00", "USD", gateway="paypal")

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
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        _plans.check_base_url(base_url)
        self.retries_max = retries_max
        self._http = httpx.Client(
            base_url=base_url,
            headers=_plans.auth_headers(api_key),
            timeout=timeout_s,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _call(self, plan: _plans.Plan[T]) -> T:
        # `{}` is a body too (a release without reason or metadata); only reads send none
        has_body = plan.body is not None
        headers = {"Content-Type": "application/json", **plan.headers()} if has_body else {}
        content = plan.content()
        for attempt in range(self.retries_max + 1):
            last = attempt == self.retries_max
            try:
                response = self._http.request(
                    plan.method, plan.path, params=plan.params, content=content, headers=headers
                )
            except httpx.TransportError as error:
                if last or not _plans.retriable(error):
                    raise TransportError(f"{plan.method} {plan.path}: {error!r}") from error
            else:
                if last or not _plans.should_retry(response):
                    return plan.read(response)
            time.sleep(_plans.backoff_s(attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    # -- writes ------------------------------------------------------------------------
    def recharge(
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
        return self._call(_plans.write("/v1/recharges", body, idempotency_key))

    def expense(
        self,
        user_id: str,
        currency: str,
        orders: Sequence[models.OrderLine],
        *,
        metadata: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> models.Transaction:
        body = _plans.expense_body(user_id, currency, orders, metadata)
        return self._call(_plans.write("/v1/expenses", body, idempotency_key))

    def refund(
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
        return self._call(_plans.write("/v1/refunds", body, idempotency_key))

    def adjust(
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
        return self._call(_plans.write("/v1/adjustments", body, idempotency_key))

    def transfer(
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
        return self._call(_plans.write("/v1/transfers", body, idempotency_key))

    def hold(
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
        return self._call(_plans.write("/v1/holds", body, idempotency_key))

    def capture(
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
        return self._call(_plans.write(_plans.capture_path(hold_id), body, idempotency_key))

    def release(
        self,
        hold_id: str,
        *,
        reason: str = "",
        metadata: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> models.Transaction:
        """Give an open hold's whole amount back to the wallet (an expired hold's too)."""
        body = _plans.release_body(reason, metadata)
        return self._call(_plans.write(_plans.release_path(hold_id), body, idempotency_key))

    def batch(
        self, commands: Sequence[models.BatchCommand], *, idempotency_key: str | None = None
    ) -> list[models.BatchResult]:
        return self._call(_plans.batch(commands, idempotency_key))

    # -- reads -------------------------------------------------------------------------
    def balances(self, user_id: str) -> models.Balances:
        return self._call(_plans.balances(user_id))

    def statement(
        self,
        user_id: str,
        currency: str,
        *,
        limit: int | None = None,
        cursor: str | None = None,
        since: str | None = None,
        until: str | None = None,
    ) -> models.StatementPage:
        return self._call(
            _plans.statement(
                user_id, currency, limit=limit, cursor=cursor, since=since, until=until
            )
        )

    def iter_statement(
        self, user_id: str, currency: str, *, page_size: int = 100
    ) -> Iterator[models.Entry]:
        """Every statement line, oldest first, fetching page after page."""
        cursor: str | None = None
        while True:
            page = self.statement(user_id, currency, limit=page_size, cursor=cursor)
            yield from page.entries
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def transaction(self, transaction_id: str) -> models.Transaction:
        return self._call(_plans.transaction(transaction_id))

    def order(self, order_id: str) -> models.Order:
        return self._call(_plans.order(order_id))

    def get_hold(self, hold_id: str) -> models.Hold:
        return self._call(_plans.hold(hold_id))

    def holds(
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
        return self._call(_plans.user_holds(user_id, settled=settled, limit=limit, cursor=cursor))

    def iter_holds(
        self, user_id: str, *, settled: bool | None = None, page_size: int = 100
    ) -> Iterator[models.Hold]:
        """Every hold of USER (as `holds` filters them), fetching page after page."""
        cursor: str | None = None
        while True:
            page = self.holds(user_id, settled=settled, limit=page_size, cursor=cursor)
            yield from page.holds
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def finance_report(
        self, *, since: str | None = None, until: str | None = None
    ) -> models.FinanceReport:
        """Balances and movements by account and event type over [since, until) (RFC 3339
        with a zone; None: unbounded), by currency, with the trial balance."""
        return self._call(_plans.finance_report(since, until))

    def events(self, *, after_seq: int = 0, limit: int = 100) -> models.EventsPage:
        return self._call(_plans.events(after_seq, limit))

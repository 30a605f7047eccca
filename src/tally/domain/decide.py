"""The rules: turn a command into an event, or refuse it.

Each decider is a straight ladder of checks in the precedence order of `Rejection`; the
first failing check is the answer. Deciders read the state and never change it: the writer
applies the returned event with `evolve`, so a refused command leaves nothing behind.
"""

from __future__ import annotations

import re
from collections.abc import Container
from typing import NamedTuple, TypedDict

from tally.domain import accounts, limits
from tally.domain.accounts import is_identifier
from tally.domain.commands import (
    Adjustment,
    Capture,
    Command,
    Envelope,
    Expense,
    Hold,
    Metadata,
    OrderLine,
    Recharge,
    Refund,
    Release,
    Transfer,
    TransferPosting,
)
from tally.domain.events import (
    BalanceAdjusted,
    Event,
    ExpensePaid,
    HoldCaptured,
    HoldPlaced,
    HoldReleased,
    Posting,
    RefundIssued,
    Transferred,
    WalletRecharged,
)
from tally.domain.rejections import Rejected, Rejection
from tally.domain.state import HoldState, LedgerState, gateway_payment

_METADATA_KEY = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_SHOWN_REFERENCE = "gateway_reference"  # the metadata key a recharge's business key shows as
_new_tuple = tuple.__new__


class Stamp(NamedTuple):
    """What the writer assigns to an accepted command."""

    seq: int
    transaction_id: str
    timestamp_us: int
    command_digest: str


def recall(state: LedgerState, envelope: Envelope, command_digest: str) -> int | None:
    """The seq of the event this exact request already produced, if any.

    Raises `Rejected` when the key is malformed or was used for a different command.
    """
    key = envelope.idempotency_key
    check_idempotency_key(key, "idempotency_key")
    prior = state.keys.get(key)
    if prior is None:
        return None
    digest, seq = prior
    if digest != command_digest:
        raise Rejected(
            Rejection.IDEMPOTENCY_KEY_REUSED,
            field="idempotency_key",
            detail=f"key already used for a different request (seq {seq})",
        )
    return seq


def decide(
    state: LedgerState, envelope: Envelope, stamp: Stamp, *, currencies: Container[str]
) -> Event:
    """Decide `envelope` against `state`; return the event to append or raise `Rejected`.

    The envelope's sender (`actor`, an API key id or "cli") is checked before its command:
    it goes into the event as is, and a log holding what no reader can decode would stop
    the ledger for good."""
    _check_actor(envelope.actor)
    command = envelope.command
    common = _new_tuple(_Common, (state, envelope, stamp, currencies))
    if isinstance(command, Expense):
        return _expense(common, command)
    if isinstance(command, Recharge):
        return _recharge(common, command)
    if isinstance(command, Refund):
        return _refund(common, command)
    if isinstance(command, Adjustment):
        return _adjustment(common, command)
    if isinstance(command, Hold):
        return _hold(common, command)
    if isinstance(command, Capture):
        return _capture(common, command)
    if isinstance(command, Transfer):
        return _transfer(common, command)
    return _release(common, command)


class _EventHeader(TypedDict):
    seq: int
    transaction_id: str
    timestamp_us: int
    idempotency_key: str
    command_digest: str
    actor: str
    user_id: str
    currency: str
    metadata: Metadata


class _Common(NamedTuple):
    state: LedgerState
    envelope: Envelope
    stamp: Stamp
    currencies: Container[str]

    def event_fields(self, user_id: str, currency: str, metadata: Metadata) -> _EventHeader:
        return {
            "seq": self.stamp.seq,
            "transaction_id": self.stamp.transaction_id,
            "timestamp_us": self.stamp.timestamp_us,
            "idempotency_key": self.envelope.idempotency_key,
            "command_digest": self.stamp.command_digest,
            "actor": self.envelope.actor,
            "user_id": user_id,
            "currency": currency,
            "metadata": metadata,
        }


def _recharge(common: _Common, command: Recharge) -> Event:
    check_identifier(command.user_id, "user_id")
    check_identifier(command.gateway, "gateway")
    reference = command.gateway_reference
    if reference is not None:
        check_identifier(reference, "gateway_reference")
    _check_currency(common, command.currency)
    _check_amount(command.amount, "amount")
    _check_metadata(command.metadata)
    if any(key == _SHOWN_REFERENCE for key, _ in command.metadata):
        # shown beside the metadata as the business key: a client's own would pose as one
        raise Rejected(
            Rejection.METADATA_INVALID,
            field=f"metadata.{_SHOWN_REFERENCE}",
            detail="reserved: name the gateway's payment id in gateway_reference",
        )
    if reference is not None:
        credited = common.state.gateway_payments.get(gateway_payment(command.gateway, reference))
        if credited is not None:
            raise Rejected(
                Rejection.PAYMENT_ALREADY_CREDITED,
                field="gateway_reference",
                detail=f"{command.gateway} payment {reference} was already credited by "
                f"transaction {credited}",
            )
    wallet = accounts.wallet(command.user_id, command.currency)
    clearing = accounts.clearing(command.gateway, command.currency)
    _check_credit(common.state, wallet, command.amount)
    _check_debit_unbounded(common.state, clearing, command.amount)
    return WalletRecharged(
        **common.event_fields(command.user_id, command.currency, command.metadata),
        postings=(
            Posting(account=clearing, currency=command.currency, amount=-command.amount),
            Posting(account=wallet, currency=command.currency, amount=command.amount),
        ),
        gateway=command.gateway,
        gateway_reference=reference,
    )


def _expense(common: _Common, command: Expense) -> Event:
    orders = command.orders
    _check_orders_count(orders)
    # An account exists only for identifiers checked before (they hold no `:`, so no other
    # text names the same account): known wallets and merchants skip the pattern match.
    wallet = accounts.wallet(command.user_id, command.currency)
    if type(command.user_id) is not str or wallet not in common.state.balances:
        check_identifier(command.user_id, "user_id")
    _check_order_ids(common.state, orders, command.currency)
    _check_currency(common, command.currency)
    total = _check_order_amounts(orders)
    _check_metadata(command.metadata)
    _check_orders_new(common.state, orders)
    available = common.state.balance(wallet)
    if available < total:
        raise Rejected(
            Rejection.INSUFFICIENT_FUNDS,
            field="orders",
            detail=f"wallet holds {available} minor units, the orders need {total}",
        )
    postings: list[Posting] = []
    _pay_orders(common.state, postings, wallet, command.currency, orders)
    return ExpensePaid(
        **common.event_fields(command.user_id, command.currency, command.metadata),
        postings=tuple(postings),
        orders=orders,
    )


def _check_orders_count(orders: tuple[OrderLine, ...]) -> None:
    if not orders:
        raise Rejected(Rejection.ORDERS_EMPTY, field="orders", detail="pays 1 or more orders")
    if len(orders) > limits.orders_per_expense_max:
        raise Rejected(
            Rejection.ORDERS_TOO_MANY,
            field="orders",
            detail=f"at most {limits.orders_per_expense_max} orders per expense",
        )


def _check_order_ids(state: LedgerState, orders: tuple[OrderLine, ...], currency: object) -> None:
    balances = state.balances
    for index, line in enumerate(orders):
        known = (
            type(line.merchant_id) is str
            and type(currency) is str
            and accounts.revenue(line.merchant_id, currency) in balances
        )
        if not (is_identifier(line.order_id) and (known or is_identifier(line.merchant_id))):
            check_identifier(line.order_id, f"orders[{index}].order_id")
            check_identifier(line.merchant_id, f"orders[{index}].merchant_id")


def _check_order_amounts(orders: tuple[OrderLine, ...]) -> int:
    """The orders' total, once every amount is a positive 64-bit integer and so is the sum."""
    amounts = [line.amount for line in orders]
    if not all(type(a) is int and 0 < a <= limits.amount_max for a in amounts):
        _check_amounts(tuple((f"orders[{i}].amount", a) for i, a in enumerate(amounts)))
    total = sum(amounts)
    if total > limits.amount_max:
        raise Rejected(Rejection.AMOUNT_TOO_LARGE, field="orders", detail="total exceeds 64 bits")
    return total


def _pay_orders(
    state: LedgerState,
    postings: list[Posting],
    wallet: str,
    currency: str,
    orders: tuple[OrderLine, ...],
) -> None:
    """Append each order's two legs (the wallet pays the order's merchant) to `postings`."""
    credits: dict[str, int] = {}
    for line in orders:
        revenue = accounts.revenue(line.merchant_id, currency)
        credits[revenue] = credits.get(revenue, 0) + line.amount
        # The hottest constructor in tally: see `state._new_tuple`.
        postings.append(_new_tuple(Posting, (wallet, currency, -line.amount, line.order_id)))
        postings.append(_new_tuple(Posting, (revenue, currency, line.amount, line.order_id)))
    for revenue, amount in credits.items():
        _check_credit(state, revenue, amount)


def _refund(common: _Common, command: Refund) -> Event:
    check_identifier(command.expense_id, "expense_id")
    check_identifier(command.order_id, "order_id")
    request_id = command.refund_request_id
    if request_id is not None:
        check_identifier(request_id, "refund_request_id")
    _check_currency(common, command.currency)
    _check_amount(command.amount, "amount")
    _check_metadata(command.metadata)
    _check_reason(command.reason, required=False)
    state = common.state
    if request_id is not None and request_id in state.refund_requests:
        raise Rejected(
            Rejection.REFUND_ALREADY_ISSUED,
            field="refund_request_id",
            detail=f"refund request {request_id} was already refunded by transaction "
            f"{state.refund_requests[request_id]}",
        )
    if command.expense_id not in state.expenses:
        raise Rejected(
            Rejection.EXPENSE_UNKNOWN,
            field="expense_id",
            detail=f"no expense {command.expense_id}",
        )
    order = state.order(command.order_id)
    if order is None or order.expense_id != command.expense_id:
        raise Rejected(
            Rejection.ORDER_UNKNOWN,
            field="order_id",
            detail=f"expense {command.expense_id} did not pay order {command.order_id}",
        )
    if order.currency != command.currency:
        raise Rejected(
            Rejection.CURRENCY_MISMATCH,
            field="currency",
            detail=f"the order was paid in {order.currency}",
        )
    if command.amount > order.refundable:
        raise Rejected(
            Rejection.REFUND_EXCEEDS_REFUNDABLE,
            field="amount",
            detail=f"order {order.order_id} has {order.refundable} minor units refundable",
        )
    wallet = accounts.wallet(order.user_id, order.currency)
    revenue = accounts.revenue(order.merchant_id, order.currency)
    _check_credit(state, wallet, command.amount)
    return RefundIssued(
        **common.event_fields(order.user_id, order.currency, command.metadata),
        postings=(
            Posting(
                account=revenue,
                currency=order.currency,
                amount=-command.amount,
                order_id=order.order_id,
            ),
            Posting(
                account=wallet,
                currency=order.currency,
                amount=command.amount,
                order_id=order.order_id,
            ),
        ),
        expense_id=command.expense_id,
        order_id=command.order_id,
        amount=command.amount,
        reason=command.reason,
        refund_request_id=request_id,
    )


def _adjustment(common: _Common, command: Adjustment) -> Event:
    check_identifier(command.user_id, "user_id")
    _check_currency(common, command.currency)
    _check_amounts((("amount", command.amount),), signed=True)
    _check_metadata(command.metadata)
    _check_reason(command.reason, required=True)
    state = common.state
    wallet = accounts.wallet(command.user_id, command.currency)
    equity = accounts.adjustments(command.currency)
    if command.amount < 0 and state.balance(wallet) + command.amount < 0:
        raise Rejected(
            Rejection.INSUFFICIENT_FUNDS,
            field="amount",
            detail=f"wallet holds {state.balance(wallet)} minor units",
        )
    if command.amount > 0:
        _check_credit(state, wallet, command.amount)
        _check_debit_unbounded(state, equity, command.amount)
    else:
        _check_credit(state, equity, -command.amount)
    return BalanceAdjusted(
        **common.event_fields(command.user_id, command.currency, command.metadata),
        postings=(
            Posting(account=equity, currency=command.currency, amount=-command.amount),
            Posting(account=wallet, currency=command.currency, amount=command.amount),
        ),
        amount=command.amount,
        reason=command.reason,
    )


def _hold(common: _Common, command: Hold) -> Event:
    check_identifier(command.user_id, "user_id")
    check_identifier(command.hold_id, "hold_id")
    _check_currency(common, command.currency)
    _check_amount(command.amount, "amount")
    _check_metadata(command.metadata)
    expires_at_us = command.expires_at_us
    if expires_at_us is not None:
        if type(expires_at_us) is not int:
            raise Rejected(
                Rejection.EXPIRY_INVALID,
                field="expires_at",
                detail="must be microseconds since the Unix epoch",
            )
        if expires_at_us <= common.stamp.timestamp_us:
            raise Rejected(
                Rejection.EXPIRY_INVALID, field="expires_at", detail="must be in the future"
            )
        if expires_at_us > limits.timestamp_us_max:
            raise Rejected(
                Rejection.EXPIRY_INVALID, field="expires_at", detail="must fall before year 10000"
            )
    state = common.state
    placed = state.hold(command.hold_id)
    if placed is not None:
        raise Rejected(
            Rejection.HOLD_ALREADY_PLACED,
            field="hold_id",
            detail=f"hold {command.hold_id} was already placed by transaction "
            f"{placed.transaction_id}",
        )
    wallet = accounts.wallet(command.user_id, command.currency)
    available = state.balance(wallet)
    if available < command.amount:
        raise Rejected(
            Rejection.INSUFFICIENT_FUNDS,
            field="amount",
            detail=f"wallet holds {available} minor units",
        )
    held = accounts.hold(command.hold_id, command.currency)
    return HoldPlaced(
        **common.event_fields(command.user_id, command.currency, command.metadata),
        postings=(
            Posting(account=wallet, currency=command.currency, amount=-command.amount),
            Posting(account=held, currency=command.currency, amount=command.amount),
        ),
        hold_id=command.hold_id,
        amount=command.amount,
        expires_at_us=expires_at_us,
    )


def _capture(common: _Common, command: Capture) -> Event:
    orders = command.orders
    _check_orders_count(orders)
    check_identifier(command.hold_id, "hold_id")
    state = common.state
    _check_order_ids(state, orders, command.currency)
    _check_currency(common, command.currency)
    total = _check_order_amounts(orders)
    _check_metadata(command.metadata)
    _check_orders_new(state, orders)
    hold = _open_hold(common, command.hold_id, capturing=True, currency=command.currency)
    if total > hold.amount:
        raise Rejected(
            Rejection.CAPTURE_EXCEEDS_HOLD,
            field="orders",
            detail=f"hold {hold.hold_id} holds {hold.amount} minor units, the orders need {total}",
        )
    wallet = accounts.wallet(hold.user_id, hold.currency)
    postings = _hold_back(state, hold, wallet)
    _pay_orders(state, postings, wallet, hold.currency, orders)
    return HoldCaptured(
        **common.event_fields(hold.user_id, hold.currency, command.metadata),
        postings=tuple(postings),
        hold_id=hold.hold_id,
        orders=orders,
    )


def _release(common: _Common, command: Release) -> Event:
    check_identifier(command.hold_id, "hold_id")
    _check_metadata(command.metadata)
    _check_reason(command.reason, required=False)
    hold = _open_hold(common, command.hold_id, capturing=False, currency=None)
    wallet = accounts.wallet(hold.user_id, hold.currency)
    return HoldReleased(
        **common.event_fields(hold.user_id, hold.currency, command.metadata),
        postings=tuple(_hold_back(common.state, hold, wallet)),
        hold_id=hold.hold_id,
        amount=hold.amount,
        reason=command.reason,
    )


def _open_hold(
    common: _Common, hold_id: str, *, capturing: bool, currency: str | None
) -> HoldState:
    """The hold `hold_id` names, refused when there is none, it is in another `currency`
    than the command's amounts (when it names one), it was settled, or (for a capture) it
    expired before this command's timestamp."""
    hold = common.state.hold(hold_id)
    if hold is None:
        raise Rejected(Rejection.HOLD_UNKNOWN, field="hold_id", detail=f"no hold {hold_id}")
    if currency is not None and hold.currency != currency:
        raise Rejected(
            Rejection.CURRENCY_MISMATCH,
            field="currency",
            detail=f"hold {hold_id} is in {hold.currency}",
        )
    if hold.settled_by is not None:
        raise Rejected(
            Rejection.HOLD_SETTLED,
            field="hold_id",
            detail=f"hold {hold_id} was already settled by transaction {hold.settled_by}",
        )
    if capturing and hold.expired(common.stamp.timestamp_us):
        raise Rejected(
            Rejection.HOLD_EXPIRED,
            field="hold_id",
            detail=f"hold {hold_id} expired; release it to give its money back",
        )
    return hold


def _hold_back(state: LedgerState, hold: HoldState, wallet: str) -> list[Posting]:
    """The hold's whole amount back to the wallet: how a release ends, and a capture begins."""
    _check_credit(state, wallet, hold.amount, field="hold_id")
    held = accounts.hold(hold.hold_id, hold.currency)
    return [
        Posting(account=held, currency=hold.currency, amount=-hold.amount),
        Posting(account=wallet, currency=hold.currency, amount=hold.amount),
    ]


def _transfer(common: _Common, command: Transfer) -> Event:
    postings = command.postings
    names = _check_transfer_postings(postings, command.user_id)
    check_identifier(command.user_id, "user_id")
    for index, (_, owner) in enumerate(names):
        if not is_identifier(owner):
            check_identifier(owner, f"postings[{index}].account")
    currency = command.currency
    _check_currency(common, currency)
    amounts = [posting[1] for posting in postings]
    _check_amounts(tuple((f"postings[{i}].amount", a) for i, a in enumerate(amounts)), signed=True)
    _check_metadata(command.metadata)
    _check_reason(command.reason, required=False)
    if sum(amounts):
        raise Rejected(
            Rejection.POSTINGS_UNBALANCED,
            field="postings",
            detail=f"the amounts sum to {sum(amounts)} minor units, not zero",
        )
    state = common.state
    legs = [f"{kind}:{owner}:{currency}" for kind, owner in names]
    for index, (account, amount) in enumerate(zip(legs, amounts, strict=True)):
        balance = state.balance(account)
        if amount < 0 and account.startswith(accounts.WALLET_PREFIX) and balance + amount < 0:
            raise Rejected(
                Rejection.INSUFFICIENT_FUNDS,
                field=f"postings[{index}].amount",
                detail=f"{account} holds {balance} minor units",
            )
    for index, (account, amount) in enumerate(zip(legs, amounts, strict=True)):
        field = f"postings[{index}].amount"
        if amount > 0:
            _check_credit(state, account, amount, field=field)
        elif state.balance(account) + amount < limits.INT64_MIN:
            raise Rejected(
                Rejection.BALANCE_LIMIT_EXCEEDED,
                field=field,
                detail=f"{account} would exceed the 64-bit balance limit",
            )
    return Transferred(
        **common.event_fields(command.user_id, currency, command.metadata),
        postings=tuple(
            Posting(account=account, currency=currency, amount=amount)
            for account, amount in zip(legs, amounts, strict=True)
        ),
        reason=command.reason,
    )


def _check_transfer_postings(
    postings: tuple[TransferPosting, ...], user_id: object
) -> list[tuple[str, str]]:
    """Each posting's `(kind, owner)`, once there are 2 to the limit of them, each a pair
    naming a transferable account once, and one of them the user's wallet."""
    if not isinstance(postings, tuple | list) or not 2 <= len(postings) <= (
        limits.postings_per_transfer_max
    ):
        raise Rejected(
            Rejection.POSTINGS_INVALID,
            field="postings",
            detail=f"a transfer has 2 to {limits.postings_per_transfer_max} postings",
        )
    names: list[tuple[str, str]] = []
    for index, posting in enumerate(postings):
        field = f"postings[{index}].account"
        if not isinstance(posting, tuple | list) or len(posting) != 2:
            raise Rejected(
                Rejection.POSTINGS_INVALID, field=f"postings[{index}]", detail="(account, amount)"
            )
        account = posting[0]
        parts = account.split(":") if type(account) is str else []
        if len(parts) != 2 or parts[0] not in accounts.TRANSFERABLE_KINDS:
            raise Rejected(
                Rejection.POSTINGS_INVALID,
                field=field,
                detail="must be kind:owner, the kind one of "
                f"{', '.join(accounts.TRANSFERABLE_KINDS)} (e.g. wallet:alice)",
            )
        names.append((parts[0], parts[1]))
    seen: set[tuple[str, str]] = set()
    for index, name in enumerate(names):
        if name in seen:
            raise Rejected(
                Rejection.POSTINGS_INVALID,
                field=f"postings[{index}].account",
                detail=f"{name[0]}:{name[1]} is named twice",
            )
        seen.add(name)
    if type(user_id) is str and (accounts.WALLET, user_id) not in seen:  # else not an id
        raise Rejected(
            Rejection.POSTINGS_INVALID,
            field="postings",
            detail=f"one posting must be on the user's wallet (wallet:{user_id})",
        )
    return names


# -- the rungs -------------------------------------------------------------------------


def check_idempotency_key(key: str, field: str) -> None:
    """Refuse a key that is not 1 to 255 printable characters (`field` names where it came
    from: a command's `idempotency_key`, or the HTTP header)."""
    if not limits.printable_within(key, limits.idempotency_key_length_max):
        raise Rejected(
            Rejection.IDEMPOTENCY_KEY_INVALID,
            field=field,
            detail=f"must be 1 to {limits.idempotency_key_length_max} printable characters",
        )


def _check_actor(actor: object) -> None:
    if not limits.printable_within(actor, limits.actor_length_max):
        raise Rejected(
            Rejection.IDENTIFIER_INVALID,
            field="actor",
            detail=f"must be 1 to {limits.actor_length_max} printable characters",
        )


def check_identifier(value: object, field: str) -> None:
    """Refuse a value that is no identifier, naming `field`."""
    if not is_identifier(value):
        raise Rejected(
            Rejection.IDENTIFIER_INVALID,
            field=field,
            detail=f"must be 1 to {limits.identifier_length_max} of A-Z a-z 0-9 _ . @ -, "
            "starting with a letter or digit",
        )


def _check_currency(common: _Common, currency: str) -> None:
    if type(currency) is not str or currency not in common.currencies:  # a list: unhashable
        raise Rejected(
            Rejection.CURRENCY_UNKNOWN,
            field="currency",
            detail=f"{currency!r} is not an ISO 4217 currency with minor units",
        )


def _check_amount(amount: object, field: str) -> None:
    _check_amounts(((field, amount),))


def _check_amounts(amounts: tuple[tuple[str, object], ...], *, signed: bool = False) -> None:
    """One rung at a time across all amounts, so the lowest Rejection wins across orders.
    `signed` (an adjustment's, a transfer's postings): either sign but zero, and within 64
    bits either way."""
    checked: list[tuple[str, int]] = []
    for field, amount in amounts:
        if type(amount) is not int:
            raise Rejected(
                Rejection.AMOUNT_INVALID, field=field, detail="must be integer minor units"
            )
        checked.append((field, amount))
    for field, amount in checked:
        if amount == 0 or (amount < 0 and not signed):
            detail = "must not be zero" if signed else "must be positive"
            raise Rejected(Rejection.AMOUNT_NOT_POSITIVE, field=field, detail=detail)
    for field, amount in checked:
        if abs(amount) > limits.amount_max:
            raise Rejected(Rejection.AMOUNT_TOO_LARGE, field=field, detail="exceeds 64 bits")


def _check_metadata(metadata: Metadata) -> None:
    if not isinstance(metadata, tuple | list):  # a mapping would unpack its keys
        raise Rejected(
            Rejection.METADATA_INVALID, field="metadata", detail="must be (key, value) pairs"
        )
    if not metadata:
        return
    size = 0  # every entry is checked first: METADATA_INVALID outranks METADATA_TOO_LARGE
    for entry in metadata:
        if not isinstance(entry, tuple | list) or len(entry) != 2:
            raise Rejected(
                Rejection.METADATA_INVALID, field="metadata", detail="must be (key, value) pairs"
            )
        key, value = entry
        if not isinstance(key, str) or _METADATA_KEY.fullmatch(key) is None:
            raise Rejected(
                Rejection.METADATA_INVALID,
                field=f"metadata.{key}",
                detail="keys are 1 to 64 of A-Z a-z 0-9 _ . -",
            )
        if not isinstance(value, str):
            raise Rejected(
                Rejection.METADATA_INVALID, field=f"metadata.{key}", detail="values are strings"
            )
        size += len(key) + _utf8_length(value, f"metadata.{key}", Rejection.METADATA_INVALID)
    if len({key for key, _ in metadata}) != len(metadata):  # the log keeps one of each
        raise Rejected(Rejection.METADATA_INVALID, field="metadata", detail="a key repeats")
    if len(metadata) > limits.metadata_entries_max:
        raise Rejected(
            Rejection.METADATA_TOO_LARGE,
            field="metadata",
            detail=f"at most {limits.metadata_entries_max} entries",
        )
    if size > limits.metadata_bytes_max:
        raise Rejected(
            Rejection.METADATA_TOO_LARGE,
            field="metadata",
            detail=f"at most {limits.metadata_bytes_max} bytes of keys and values",
        )


def _check_reason(reason: str, *, required: bool) -> None:
    if type(reason) is not str:  # the Python API types nothing; it would go into the log
        raise Rejected(Rejection.REASON_INVALID, field="reason", detail="must be text")
    if required and not any(char.isprintable() and not char.isspace() for char in reason):
        # blank, or only control characters ("\0"): no reason a reader could see
        raise Rejected(Rejection.REASON_INVALID, field="reason", detail="a reason is required")
    if _utf8_length(reason, "reason", Rejection.REASON_INVALID) > limits.reason_bytes_max:
        raise Rejected(
            Rejection.REASON_INVALID,
            field="reason",
            detail=f"at most {limits.reason_bytes_max} bytes",
        )


def _utf8_length(text: str, field: str, reason: Rejection) -> int:
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise Rejected(reason, field=field, detail="must be valid Unicode text") from None


def _check_orders_new(state: LedgerState, orders: tuple[OrderLine, ...]) -> None:
    if len(orders) == 1 and orders[0].order_id not in state.orders:
        return
    seen: set[str] = set()
    for index, line in enumerate(orders):
        if line.order_id in seen:
            raise Rejected(
                Rejection.ORDER_DUPLICATED,
                field=f"orders[{index}].order_id",
                detail=f"order {line.order_id} appears twice in one expense",
            )
        seen.add(line.order_id)
    for index, line in enumerate(orders):
        if line.order_id in state.orders:
            raise Rejected(
                Rejection.ORDER_ALREADY_PAID,
                field=f"orders[{index}].order_id",
                detail=f"order {line.order_id} was already paid",
            )


def _check_credit(state: LedgerState, account: str, amount: int, field: str = "amount") -> None:
    if state.balance(account) + amount > limits.INT64_MAX:
        raise Rejected(
            Rejection.BALANCE_LIMIT_EXCEEDED,
            field=field,
            detail=f"{account} would exceed the 64-bit balance limit",
        )


def _check_debit_unbounded(state: LedgerState, account: str, amount: int) -> None:
    if state.balance(account) - amount < limits.INT64_MIN:
        raise Rejected(
            Rejection.BALANCE_LIMIT_EXCEEDED,
            field="amount",
            detail=f"{account} would exceed the 64-bit balance limit",
        )


def command_kind(command: Command) -> str:
    """The event type a command produces."""
    if isinstance(command, Expense):
        return ExpensePaid.event_type
    if isinstance(command, Recharge):
        return WalletRecharged.event_type
    if isinstance(command, Refund):
        return RefundIssued.event_type
    if isinstance(command, Adjustment):
        return BalanceAdjusted.event_type
    if isinstance(command, Hold):
        return HoldPlaced.event_type
    if isinstance(command, Capture):
        return HoldCaptured.event_type
    if isinstance(command, Transfer):
        return Transferred.event_type
    return HoldReleased.event_type

"""Check a log: gapless seq, canonical bytes, the hash chain, the head, and the invariants."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

GENESIS = bytes(32)
INT64_MAX = 2**63 - 1
TIMESTAMP_US_MAX = 253_402_300_799_999_999  # 9999-12-31T23:59:59.999999Z
INT64_MIN = -(2**63)
# Sent to `verify_received` instead of the end of the log when the sender stopped reading it.
UNFINISHED = "unfinished"
_BYTES = (bytes, bytearray, memoryview)  # what a row source may hand over for a BLOB
EVENT_TYPES = frozenset(
    {"recharge", "expense", "refund", "adjustment", "hold", "capture", "release", "transfer"}
)
# "No other keys appear" (docs/log-format.md): the keys of each event type, exactly.
_COMMON_KEYS = frozenset(
    {
        "v",
        "ledger",
        "seq",
        "type",
        "transaction_id",
        "timestamp_us",
        "idempotency_key",
        "command_digest",
        "actor",
        "user_id",
        "currency",
        "postings",
        "metadata",
    }
)
EVENT_KEYS = {
    "recharge": _COMMON_KEYS | {"gateway"},
    "expense": _COMMON_KEYS | {"orders"},
    "refund": _COMMON_KEYS | {"expense_id", "order_id", "amount", "reason"},
    "adjustment": _COMMON_KEYS | {"amount", "reason"},
    "hold": _COMMON_KEYS | {"hold_id", "amount"},
    "capture": _COMMON_KEYS | {"hold_id", "orders"},
    "release": _COMMON_KEYS | {"hold_id", "amount", "reason"},
    "transfer": _COMMON_KEYS | {"reason"},
}
# The keys a body of the type may have besides: absent, never null, when not given.
OPTIONAL_KEYS = {
    "recharge": frozenset({"gateway_reference"}),
    "refund": frozenset({"refund_request_id"}),
    "hold": frozenset({"expires_at_us"}),  # an integer, checked by `_Invariants._hold`
}
_OPTIONAL_IDS = {  # by type, the optional keys that are identifiers when present
    "recharge": ("gateway_reference",),
    "refund": ("refund_request_id",),
}
_NOT_TEXT = "the ledger's name is not text"
# Ids that name an account's owner or an order (docs/log-format.md, "Identifiers")
IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_CURRENCY = re.compile(r"[A-Z]{3}")
# Every field's JSON type, by key (bool is no integer here: `true` is not 1)
_STRINGS = ("transaction_id", "idempotency_key", "command_digest", "actor", "currency")
_IDS = {  # by type, the ids outside `orders` that must be identifiers
    "recharge": ("user_id", "gateway"),
    "expense": ("user_id",),
    "refund": ("user_id", "expense_id", "order_id"),
    "adjustment": ("user_id",),
    "hold": ("user_id", "hold_id"),
    "capture": ("user_id", "hold_id"),
    "release": ("user_id", "hold_id"),
    "transfer": ("user_id",),  # and each posting's owner, checked by `_Invariants._transfer`
}
POSTING_KEYS = frozenset({"account", "currency", "amount", "order_id"})
ORDER_KEYS = frozenset({"order_id", "amount", "merchant_id"})
_FLOORED = ("wallet:", "hold:")  # the accounts whose balance never goes below zero
# What a transfer's postings may name: every kind but `hold:`, whose money only the hold's
# capture or release moves.
TRANSFERABLE_KINDS = ("wallet", "revenue", "clearing", "equity")
POSTINGS_PER_TRANSFER_MAX = 100


@dataclass(frozen=True, slots=True)
class Finding:
    """The first thing wrong with a ledger's log; `seq` is None for the head row."""

    ledger: str
    seq: int | None
    problem: str


@dataclass(slots=True)
class Report:
    ledger: str
    events: int = 0
    head_seq: int = 0
    head_hash: bytes = GENESIS
    finding: Finding | None = None
    balances: dict[str, int] = field(default_factory=dict)
    chain_at: dict[int, bytes] = field(default_factory=dict)  # the hash after each marked seq

    @property
    def ok(self) -> bool:
        return self.finding is None


class _Bad(Exception):
    pass


class MalformedRow(_Bad):
    """Raised by a row source for a row it cannot read; `seq` is None when it is unknown."""

    def __init__(self, problem: str, seq: int | None = None) -> None:
        super().__init__(problem)
        self.seq = seq


# Built once: `json.dumps`/`json.loads` would build an encoder per call and sniff the bytes'
# encoding, a tenth of the auditor's time on a large log.
_canonical_encoder = json.JSONEncoder(
    ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False
)
_decode_json = json.JSONDecoder().decode


def canonical(value: object) -> bytes:
    """The canonical bytes of a parsed JSON value (docs/log-format.md, "Canonical JSON")."""
    return _canonical_encoder.encode(value).encode("utf-8")


def verify_events(
    ledger: str,
    rows: Iterable[tuple[int, bytes, bytes]],
    head: tuple[int, bytes] | None,
    marks: Collection[int] = (),
) -> Report:
    """Verify `rows` of `(seq, body, hash)` in stored order, and the ledger's head row.

    `rows` is consumed lazily; a source may raise `MalformedRow` for a row it cannot read,
    which becomes the finding. The chain hash after each seq of `marks` is kept in the
    report's `chain_at` (what a signed checkpoint is checked against).
    """
    report = verify_log(ledger, rows, marks)
    if report.finding is None:
        check_head(report, head)
    return report


def verify_log(
    ledger: str, rows: Iterable[tuple[int, bytes, bytes]], marks: Collection[int] = ()
) -> Report:
    """`verify_events` without the head row's check (`check_head`, once the head is known)."""
    report = Report(ledger)
    marked = frozenset(marks)
    checker = _Invariants(report.balances)
    previous = GENESIS
    expected_seq = 1
    source = iter(rows)
    while True:
        try:
            row = next(source, None)
        except MalformedRow as malformed:
            where = expected_seq if malformed.seq is None else malformed.seq
            report.finding = Finding(ledger, where, str(malformed))
            return report
        if row is None:
            break
        seq, body, stored_hash = row
        try:
            if seq != expected_seq:
                raise _Bad(f"expected seq {expected_seq}, found {seq} (a gap or a reordering)")
            if not isinstance(body, _BYTES) or not isinstance(stored_hash, _BYTES):
                raise _Bad("body or hash stored as another type than bytes (a BLOB)")
            chained = hashlib.sha256(previous + hashlib.sha256(body).digest()).digest()
            if chained != bytes(stored_hash):
                raise _Bad("hash does not chain: the event or one before it was altered")
            event = _parse(body, ledger, seq)
            checker.apply(event)
        except _Bad as bad:
            report.finding = Finding(ledger, seq, str(bad))
            return report
        previous = chained
        if marked and seq in marked:
            report.chain_at[seq] = chained
        expected_seq += 1
        report.events += 1
    report.head_seq, report.head_hash = expected_seq - 1, previous
    return report


def check_head(report: Report, head: tuple[int, bytes] | None) -> None:
    """The head row must name the log's last event: its seq and its chain hash."""
    if head is None:
        report.finding = Finding(report.ledger, None, "the ledger has no head row")
    elif not isinstance(head[1], _BYTES):
        report.finding = Finding(report.ledger, None, "head row's hash is not bytes (a BLOB)")
    elif head[0] != report.head_seq or bytes(head[1]) != report.head_hash:
        report.finding = Finding(
            report.ledger,
            None,
            f"head row says seq {head[0]}, the log ends at seq {report.head_seq} "
            "(events were removed or the head was edited)",
        )


def verify_received(connection: Connection) -> None:
    """Verify a log sent over a multiprocessing connection, and send the `Report` back.

    The sender sends the ledger's name, then pages (lists of `(seq, body, hash)` rows) in seq
    order, then either None and the head row (`(seq, hash)` or None: read once the log's end
    was read, so a ledger being written to verifies as it stood then), or `UNFINISHED` alone
    when it stopped before the log's end (writes kept coming): the report is then on the rows
    received, with no head row to check; a finding in them is a finding all the same. After
    a finding the rest is still received, so the sender never blocks on a full pipe. This is
    how `tally verify` runs the auditor on a core of its own.
    """
    ledger = connection.recv()
    ends: list[object] = []  # what followed the last page: None or UNFINISHED

    def rows() -> Iterator[tuple[int, bytes, bytes]]:
        while (page := connection.recv()) is not None and page != UNFINISHED:
            yield from page
        ends.append(page)

    received = rows()
    report = verify_log(ledger, received)
    for _ in received:  # after a finding: the rest of the pages, unchecked
        pass
    if ends[0] is None:  # the log's end was read: its head row follows
        head = connection.recv()
        if report.finding is None:
            check_head(report, head)
    connection.send(report)


def _parse(body: bytes, ledger: str, seq: int) -> dict[str, object]:
    try:
        event = _decode_json(str(body, "utf-8"))  # canonical bytes are UTF-8
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError is a ValueError
        raise _Bad(f"body is not JSON: {error}") from None
    if not isinstance(event, dict):
        raise _Bad("body is not a JSON object")
    try:
        same = canonical(event) == bytes(body)
    except (ValueError, RecursionError):  # NaN, Infinity, 1e999, a lone surrogate escaped
        same = False
    if not same:
        raise _Bad("body is not in canonical form")
    if type(event.get("v")) is not int or event["v"] != 1:  # `true` equals 1 in Python
        raise _Bad(f"unknown format version {event.get('v')!r}")
    if event.get("ledger") != ledger or type(event.get("seq")) is not int or event["seq"] != seq:
        raise _Bad("body names another ledger or seq than its row")
    kind = event.get("type")
    if not isinstance(kind, str) or kind not in EVENT_TYPES:
        raise _Bad(f"unknown event type {kind!r}")
    keys = event.keys()
    if not EVENT_KEYS[kind] <= keys or not keys - EVENT_KEYS[kind] <= OPTIONAL_KEYS.get(
        kind, frozenset()
    ):
        raise _Bad(f"a {kind} with other keys than the format's")
    _check_types(event, kind)
    return event


def _check_types(event: dict[str, object], kind: str) -> None:
    """Each field of the JSON type the format gives it (a float that re-encodes the same,
    `1.0` say, is no integer; a metadata value must be a string)."""
    for text in _STRINGS:
        if not isinstance(event[text], str):
            raise _Bad(f"malformed {text}")
    if not _CURRENCY.fullmatch(str(event["currency"])):
        raise _Bad("malformed currency (three capital letters)")
    if type(event["timestamp_us"]) is not int:
        raise _Bad("malformed timestamp_us")
    if not _HEX64.fullmatch(str(event["command_digest"])):
        raise _Bad("malformed command_digest")
    actor = str(event["actor"])
    if not actor or len(actor) > 255 or not actor.isprintable():
        raise _Bad("malformed actor")
    for name in _IDS[kind]:
        if not isinstance(event[name], str) or not IDENTIFIER.fullmatch(str(event[name])):
            raise _Bad(f"malformed {name} (not an identifier)")
    for optional in _OPTIONAL_IDS.get(kind, ()):  # identifiers when present, never null
        if optional in event:
            value = event[optional]
            if not isinstance(value, str) or not IDENTIFIER.fullmatch(value):
                raise _Bad(f"malformed {optional} (not an identifier)")
    metadata = event["metadata"]
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _Bad("malformed metadata (a flat string-to-string object)")


class _Invariants:
    """Folds balances, orders and holds; raises `_Bad` at the first broken invariant."""

    def __init__(self, balances: dict[str, int]) -> None:
        self.balances = balances
        # order_id -> [expense_id, paid, refunded, user_id, currency, merchant_id]
        self.orders: dict[str, list[object]] = {}
        self.keys: set[str] = set()
        self.refund_requests: set[str] = set()  # one refund per refund request
        self.gateway_payments: set[tuple[str, str]] = set()  # one recharge per payment
        # hold_id -> (user_id, currency, amount, expires_at_us or None)
        self.holds: dict[str, tuple[str, str, int, int | None]] = {}
        self.settled_holds: set[str] = set()  # captured or released

    def apply(self, event: dict[str, object]) -> None:
        key = event.get("idempotency_key")
        if not isinstance(key, str) or key in self.keys:
            raise _Bad("idempotency key missing or used twice")
        self.keys.add(key)
        postings = _postings(event.get("postings"))
        kind = event["type"]
        if kind == "recharge":
            expected = self._recharge(event, postings)
        elif kind == "expense":
            expected = self._pay_orders(event, [])
        elif kind == "refund":
            expected = self._refund(event)
        elif kind == "adjustment":
            expected = self._adjustment(event)
        elif kind == "hold":
            expected = self._hold(event)
        elif kind == "capture":
            expected = self._capture(event)
        elif kind == "release":
            expected = self._release(event)
        else:
            expected = self._transfer(event, postings)
        if postings != expected:
            raise _Bad(f"postings are not those the format prescribes for this {kind}")
        self._post(postings)

    def _post(self, postings: list[tuple[str, str, int, object]]) -> None:
        totals: dict[str, int] = {}
        for account, currency, amount, _ in postings:
            after = self.balances.get(account, 0) + amount
            if not INT64_MIN <= after <= INT64_MAX:
                raise _Bad(f"{account} leaves the signed 64-bit range")
            if after < 0 and account.startswith(_FLOORED):
                raise _Bad(f"{account} goes below zero ({after})")
            self.balances[account] = after
            totals[currency] = totals.get(currency, 0) + amount
        unbalanced = {c: t for c, t in totals.items() if t}
        if unbalanced:
            raise _Bad(f"postings do not sum to zero: {unbalanced}")

    def _recharge(
        self, event: dict[str, object], postings: list[tuple[str, str, int, object]]
    ) -> list[tuple[str, str, int, object]]:
        gateway, currency = event.get("gateway"), str(event["currency"])
        amount = postings[-1][2]
        if not isinstance(gateway, str) or amount <= 0:
            raise _Bad("malformed recharge")
        reference = event.get("gateway_reference")
        if reference is not None:
            if (gateway, reference) in self.gateway_payments:
                raise _Bad(f"{gateway} payment {reference} credited twice")
            self.gateway_payments.add((gateway, str(reference)))
        return [
            (f"clearing:{gateway}:{currency}", currency, -amount, None),
            (_wallet(event), currency, amount, None),
        ]

    def _pay_orders(
        self, event: dict[str, object], expected: list[tuple[str, str, int, object]]
    ) -> list[tuple[str, str, int, object]]:
        """An expense's (or a capture's) orders: each recorded as paid by the event's
        transaction, and its two legs appended to `expected`, which is returned."""
        orders = event.get("orders")
        if not isinstance(orders, list) or not orders:
            raise _Bad(f"{event['type']} without orders")
        currency, wallet = str(event["currency"]), _wallet(event)
        for order in orders:
            if not isinstance(order, dict) or order.keys() != ORDER_KEYS:
                raise _Bad("malformed order")
            order_id, amount, merchant = order["order_id"], order["amount"], order["merchant_id"]
            if (
                not isinstance(order_id, str)
                or not isinstance(merchant, str)
                or not IDENTIFIER.fullmatch(order_id)
                or not IDENTIFIER.fullmatch(merchant)
                or type(amount) is not int
                or amount <= 0
            ):
                raise _Bad("malformed order")
            if order_id in self.orders:
                raise _Bad(f"order {order_id} paid twice")
            self.orders[order_id] = [
                event.get("transaction_id"),
                amount,
                0,
                event["user_id"],
                currency,
                merchant,
            ]
            expected.append((wallet, currency, -amount, order_id))
            expected.append((f"revenue:{merchant}:{currency}", currency, amount, order_id))
        return expected

    def _refund(self, event: dict[str, object]) -> list[tuple[str, str, int, object]]:
        order_id = event.get("order_id")
        order = self.orders.get(str(order_id))
        amount = event.get("amount")
        if order is None or order[0] != event.get("expense_id"):
            raise _Bad("refund of an order its expense did not pay")
        if type(amount) is not int or amount <= 0 or not isinstance(event.get("reason"), str):
            raise _Bad("malformed refund")
        _, paid, refunded, user_id, currency, merchant = order
        if event["user_id"] != user_id or event["currency"] != currency:
            raise _Bad(f"refund of order {order_id} to another wallet than paid for it")
        total = int(str(refunded)) + amount
        if total > int(str(paid)):
            raise _Bad(f"order {order_id} refunded beyond what it was paid")
        request_id = event.get("refund_request_id")
        if request_id is not None:
            if request_id in self.refund_requests:
                raise _Bad(f"refund request {request_id} refunded twice")
            self.refund_requests.add(str(request_id))
        order[2] = total
        return [
            (f"revenue:{merchant}:{currency}", str(currency), -amount, order_id),
            (_wallet(event), str(currency), amount, order_id),
        ]

    @staticmethod
    def _adjustment(event: dict[str, object]) -> list[tuple[str, str, int, object]]:
        amount, reason = event.get("amount"), event.get("reason")
        if type(amount) is not int or amount == 0 or not isinstance(reason, str) or not reason:
            raise _Bad("malformed adjustment (a non-zero amount and a reason)")
        currency = str(event["currency"])
        return [
            (f"equity:adjustments:{currency}", currency, -amount, None),
            (_wallet(event), currency, amount, None),
        ]

    def _hold(self, event: dict[str, object]) -> list[tuple[str, str, int, object]]:
        hold_id, amount = str(event["hold_id"]), event.get("amount")
        if type(amount) is not int or amount <= 0:
            raise _Bad("malformed hold (a positive amount)")
        expires_at_us: int | None = None  # the key is absent when the hold never expires
        if "expires_at_us" in event:
            given = event["expires_at_us"]
            if (
                type(given) is not int
                or given <= int(str(event["timestamp_us"]))
                or given > TIMESTAMP_US_MAX
            ):
                raise _Bad(
                    "malformed hold (expires_at_us an integer after its timestamp_us, "
                    "before year 10000)"
                )
            expires_at_us = given
        if hold_id in self.holds:
            raise _Bad(f"hold {hold_id} placed twice")
        currency = str(event["currency"])
        self.holds[hold_id] = (str(event["user_id"]), currency, amount, expires_at_us)
        return [
            (_wallet(event), currency, -amount, None),
            (f"hold:{hold_id}:{currency}", currency, amount, None),
        ]

    def _capture(self, event: dict[str, object]) -> list[tuple[str, str, int, object]]:
        hold_id = str(event["hold_id"])
        _, currency, amount, expires_at_us = self._settle(event)
        if expires_at_us is not None and int(str(event["timestamp_us"])) >= expires_at_us:
            raise _Bad(f"hold {hold_id} captured after it expired")
        expected = self._pay_orders(event, _hold_back(event, currency, amount))
        # What the orders pay their merchants: the positive legs after the hold's two
        if sum(leg[2] for leg in expected[2:] if leg[2] > 0) > amount:
            raise _Bad(f"hold {hold_id} captured beyond its amount")
        return expected

    def _release(self, event: dict[str, object]) -> list[tuple[str, str, int, object]]:
        _, currency, amount, _ = self._settle(event)
        released = event.get("amount")
        if type(released) is not int or released != amount:
            raise _Bad(f"release of another amount than hold {event['hold_id']} holds")
        if not isinstance(event.get("reason"), str):
            raise _Bad("malformed release (a reason, which may be empty)")
        return _hold_back(event, currency, amount)

    @staticmethod
    def _transfer(
        event: dict[str, object], postings: list[tuple[str, str, int, object]]
    ) -> list[tuple[str, str, int, object]]:
        """A transfer prescribes no postings: it names them, each checked here (`_post` then
        sums them to zero and keeps its wallets from going below it). Returned as given."""
        if not isinstance(event["reason"], str):
            raise _Bad("malformed transfer (a reason, which may be empty)")
        if not 2 <= len(postings) <= POSTINGS_PER_TRANSFER_MAX:
            raise _Bad(f"a transfer of {len(postings)} postings (2 to {POSTINGS_PER_TRANSFER_MAX})")
        currency = event["currency"]
        named: set[str] = set()
        for account, posting_currency, amount, order_id in postings:
            # `_posting` checked that the account ends with `:` + the posting's currency
            kind, _, owner = account.removesuffix(f":{posting_currency}").partition(":")
            if kind not in TRANSFERABLE_KINDS:
                raise _Bad(f"a transfer moves {account}: not a wallet, revenue, clearing or equity")
            if not IDENTIFIER.fullmatch(owner):
                raise _Bad(f"a transfer moves {account}, whose owner is not an identifier")
            if posting_currency != currency:
                raise _Bad(f"a transfer moves {account}, not in the transfer's currency {currency}")
            if order_id is not None:
                raise _Bad(f"a transfer's posting on {account} names order {order_id}")
            if amount == 0:
                raise _Bad(f"a transfer's posting on {account} moves no money")
            if not -INT64_MAX <= amount <= INT64_MAX:  # as a command's amount: 64 bits, signed
                raise _Bad(f"a transfer's posting on {account} moves more than 64 bits")
            if account in named:
                raise _Bad(f"a transfer names {account} twice")
            named.add(account)
        if _wallet(event) not in named:
            raise _Bad(f"a transfer without a posting on its user's wallet {_wallet(event)}")
        return postings

    def _settle(self, event: dict[str, object]) -> tuple[str, str, int, int | None]:
        """The open hold a capture or release names, from now on settled."""
        hold_id = str(event["hold_id"])
        hold = self.holds.get(hold_id)
        if hold is None:
            raise _Bad(f"{event['type']} of hold {hold_id}, which was never placed")
        if hold_id in self.settled_holds:
            raise _Bad(f"hold {hold_id} settled twice")
        if (event["user_id"], event["currency"]) != hold[:2]:
            raise _Bad(f"{event['type']} of hold {hold_id} to another wallet than held it")
        self.settled_holds.add(hold_id)
        return hold


def _hold_back(
    event: dict[str, object], currency: str, amount: int
) -> list[tuple[str, str, int, object]]:
    """A hold's whole amount back to its wallet: how a release ends and a capture begins."""
    return [
        (f"hold:{event['hold_id']}:{currency}", currency, -amount, None),
        (_wallet(event), currency, amount, None),
    ]


def _wallet(event: dict[str, object]) -> str:
    return f"wallet:{event['user_id']}:{event['currency']}"


def _postings(postings: object) -> list[tuple[str, str, int, object]]:
    if not isinstance(postings, list) or not postings:
        raise _Bad("postings missing")
    return [_posting(posting) for posting in postings]


def _posting(posting: object) -> tuple[str, str, int, object]:
    if not isinstance(posting, dict) or posting.keys() != POSTING_KEYS:
        raise _Bad("malformed posting")
    account, currency, amount, order_id = (
        posting["account"],
        posting["currency"],
        posting["amount"],
        posting["order_id"],
    )
    if (
        not isinstance(account, str)
        or not isinstance(currency, str)
        or type(amount) is not int
        or not (order_id is None or isinstance(order_id, str))
    ):
        raise _Bad("malformed posting")
    if not account.endswith(":" + currency):
        raise _Bad(f"posting currency {currency} does not match account {account}")
    return account, currency, amount, order_id


def verify_sqlite(
    path: str, ledger: str | None = None, marks: Mapping[str, Collection[int]] | None = None
) -> list[Report]:
    """Verify every ledger (or one) of a tally SQLite file, opened read-only: each ledger
    that has a head row or events (a log whose head row was deleted is a finding). `marks`:
    by ledger, the seqs whose chain hash to keep (`verify_events`)."""
    # A URI with the path percent-encoded: "#", "?" or "%" in a file's name would otherwise
    # end the path early (auditing another file) or drop `mode=ro`.
    db = sqlite3.connect(Path(path).absolute().as_uri() + "?mode=ro", uri=True)
    try:
        # One read transaction: heads and logs from one snapshot, so a ledger that a server
        # writes to meanwhile verifies as it stood (WAL readers see one consistent state).
        db.execute("BEGIN")
        heads = {
            name: (seq, hash_)  # checked as bytes by `check_head`
            for name, seq, hash_ in db.execute("SELECT name, seq, hash FROM ledgers")
        }
        logged = {name for (name,) in db.execute("SELECT DISTINCT ledger FROM events")}
        names = [ledger] if ledger is not None else sorted(heads.keys() | logged, key=repr)
        reports = []
        for name in names:
            if not isinstance(name, str):
                reports.append(Report(repr(name), finding=Finding(repr(name), None, _NOT_TEXT)))
                continue
            rows = db.execute(
                "SELECT seq, body, hash FROM events WHERE ledger = ? ORDER BY seq", (name,)
            )
            wanted = (marks or {}).get(name, ())
            reports.append(verify_events(name, rows, heads.get(name), wanted))
        return reports
    finally:
        db.close()

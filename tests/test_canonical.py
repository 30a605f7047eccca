"""Canonical encoding v1 against the test vectors published in docs/log-format.md.

The vectors live in the document, not here: this test parses them out of its fenced blocks
(```json vector=NAME, ```text chain=NAME, ```json command=NAME) and checks the server's
encoder, the chain, the decoder and the independent auditor against them byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from functools import cache
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import tally_audit
from tally.audit import canonical
from tally.audit.canonical import (
    CanonicalFormError,
    command_digest,
    decode_event,
    dumps,
    encode_event,
)
from tally.audit.chain import GENESIS_HASH, link
from tally.domain.commands import (
    Adjustment,
    Capture,
    Command,
    Envelope,
    Expense,
    Hold,
    OrderLine,
    Recharge,
    Refund,
    Release,
    Transfer,
    TransferPosting,
)
from tally.domain.decide import Stamp, decide
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
from tally.domain.state import LedgerState, evolve
from tally.money import currencies
from tally_audit.__main__ import main as audit_main
from tally_audit.verify import canonical as audit_canonical

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "log-format.md"
SCHEMA = ROOT / "src" / "tally" / "store" / "migrations" / "sqlite" / "0001_ledger.sql"

LEDGER = "demo"
T0_US = 1_735_689_600_000_000  # 2025-01-01T00:00:00Z
EXPENSE_ID = "txn_01942098c5e07b3c9a4d2e6f8b1c3d5e"
HOLD_PLACED_US = T0_US + 300_000_000
HOLD_EXPIRES_US = HOLD_PLACED_US + 7 * 86_400_000_000  # a week after it was placed

# -- the commands and events behind the vectors --------------------------------------------

RECHARGE = Recharge(
    user_id="alice",
    amount=200_00,
    currency="USD",
    gateway="paypal",
    metadata=(("note", "café"), ("payment_gateway", "PayPal")),
)
EXPENSE = Expense(
    user_id="alice",
    currency="USD",
    orders=(
        OrderLine(order_id="order-1001", amount=50_00),
        OrderLine(order_id="order-1002", amount=35_00, merchant_id="m-42"),
    ),
    metadata=(("memo", 'say "hi" \\ tab\there \x1f'),),
)
REFUND = Refund(
    expense_id=EXPENSE_ID,
    order_id="order-1001",
    amount=20_00,
    currency="USD",
    reason="item returned — wrong size",
)
ADJUSTMENT = Adjustment(user_id="alice", amount=-5_00, currency="USD", reason="goodwill reversal")
REFERENCED_RECHARGE = Recharge(
    user_id="alice",
    amount=30_00,
    currency="USD",
    gateway="stripe",
    gateway_reference="pi_3QxYz0001",
)
REQUESTED_REFUND = Refund(
    expense_id=EXPENSE_ID,
    order_id="order-1002",
    amount=10_00,
    currency="USD",
    refund_request_id="rma-7731",
)
HOLD = Hold(
    user_id="alice",
    amount=25_00,
    currency="USD",
    hold_id="auth-5501",
    expires_at_us=HOLD_EXPIRES_US,
)
CAPTURE = Capture(
    hold_id="auth-5501",
    currency="USD",
    orders=(OrderLine(order_id="order-1003", amount=20_00, merchant_id="m-42"),),
)
OPEN_HOLD = Hold(user_id="alice", amount=10_00, currency="USD", hold_id="auth-5502")
RELEASE = Release(hold_id="auth-5502", reason="order cancelled")
TRANSFER = Transfer(  # alice pays bob 5.00 for dinner, and the platform a fee of 0.50
    user_id="alice",
    currency="USD",
    postings=(
        TransferPosting(account="wallet:alice", amount=-5_50),
        TransferPosting(account="wallet:bob", amount=5_00),
        TransferPosting(account="revenue:platform", amount=50),
    ),
    reason="dinner split",
)

COMMANDS: dict[str, tuple[str, str, Command]] = {
    # name: (idempotency key, actor, command)
    "1-recharge": ("alice-recharge-1", "cli", RECHARGE),
    "2-expense": ("alice-expense-1", "api:key_7", EXPENSE),
    "3-refund": ("alice-refund-1", "cli", REFUND),
    "4-adjustment": ("ops-adjust-1", "ops@example.com", ADJUSTMENT),
    "5-refund-request": ("rma-7731-try-1", "api:key_7", REQUESTED_REFUND),
    "6-recharge-reference": ("stripe-webhook-evt-1", "api:key_7", REFERENCED_RECHARGE),
    "7-hold": ("auth-5501-hold", "api:key_7", HOLD),
    "8-capture": ("auth-5501-capture", "api:key_7", CAPTURE),
    "9-hold-open": ("auth-5502-hold", "api:key_7", OPEN_HOLD),
    "10-release": ("auth-5502-release", "api:key_7", RELEASE),
    "11-transfer": ("alice-transfer-1", "api:key_7", TRANSFER),
}

VECTOR_EVENTS: list[tuple[str, Event]] = [
    (
        "1-recharge",
        WalletRecharged(
            seq=1,
            transaction_id="txn_01942098c5e07a1f8b2c3d4e5f607182",
            timestamp_us=T0_US,
            idempotency_key="alice-recharge-1",
            command_digest=command_digest(RECHARGE),
            actor="cli",
            user_id="alice",
            currency="USD",
            postings=(
                Posting(account="clearing:paypal:USD", currency="USD", amount=-200_00),
                Posting(account="wallet:alice:USD", currency="USD", amount=200_00),
            ),
            metadata=RECHARGE.metadata,
            gateway="paypal",
        ),
    ),
    (
        "2-expense",
        ExpensePaid(
            seq=2,
            transaction_id=EXPENSE_ID,
            timestamp_us=T0_US + 1_500_000,
            idempotency_key="alice-expense-1",
            command_digest=command_digest(EXPENSE),
            actor="api:key_7",
            user_id="alice",
            currency="USD",
            postings=(
                Posting(
                    account="wallet:alice:USD", currency="USD", amount=-50_00, order_id="order-1001"
                ),
                Posting(
                    account="revenue:platform:USD",
                    currency="USD",
                    amount=50_00,
                    order_id="order-1001",
                ),
                Posting(
                    account="wallet:alice:USD", currency="USD", amount=-35_00, order_id="order-1002"
                ),
                Posting(
                    account="revenue:m-42:USD", currency="USD", amount=35_00, order_id="order-1002"
                ),
            ),
            metadata=EXPENSE.metadata,
            orders=EXPENSE.orders,
        ),
    ),
    (
        "3-refund",
        RefundIssued(
            seq=3,
            transaction_id="txn_0194209a3b107d2e8f9a0b1c2d3e4f50",
            timestamp_us=T0_US + 60_000_000,
            idempotency_key="alice-refund-1",
            command_digest=command_digest(REFUND),
            actor="cli",
            user_id="alice",
            currency="USD",
            postings=(
                Posting(
                    account="revenue:platform:USD",
                    currency="USD",
                    amount=-20_00,
                    order_id="order-1001",
                ),
                Posting(
                    account="wallet:alice:USD", currency="USD", amount=20_00, order_id="order-1001"
                ),
            ),
            expense_id=EXPENSE_ID,
            order_id="order-1001",
            amount=20_00,
            reason="item returned — wrong size",
        ),
    ),
    (
        "4-adjustment",
        BalanceAdjusted(
            seq=4,
            transaction_id="txn_0194209b21a07f3a9b8c7d6e5f4a3b2c",
            timestamp_us=T0_US + 120_000_000,
            idempotency_key="ops-adjust-1",
            command_digest=command_digest(ADJUSTMENT),
            actor="ops@example.com",
            user_id="alice",
            currency="USD",
            postings=(
                Posting(account="equity:adjustments:USD", currency="USD", amount=5_00),
                Posting(account="wallet:alice:USD", currency="USD", amount=-5_00),
            ),
            amount=-5_00,
            reason="goodwill reversal",
        ),
    ),
    (
        "5-refund-request",
        RefundIssued(
            seq=5,
            transaction_id="txn_0194209c07f04b5a6978877695a4b3c2",
            timestamp_us=T0_US + 180_000_000,
            idempotency_key="rma-7731-try-1",
            command_digest=command_digest(REQUESTED_REFUND),
            actor="api:key_7",
            user_id="alice",
            currency="USD",
            postings=(
                Posting(
                    account="revenue:m-42:USD", currency="USD", amount=-10_00, order_id="order-1002"
                ),
                Posting(
                    account="wallet:alice:USD", currency="USD", amount=10_00, order_id="order-1002"
                ),
            ),
            expense_id=EXPENSE_ID,
            order_id="order-1002",
            amount=10_00,
            refund_request_id="rma-7731",
        ),
    ),
    (
        "6-recharge-reference",
        WalletRecharged(
            seq=6,
            transaction_id="txn_0194209cf2504c6b5a4938271605f4e3",
            timestamp_us=T0_US + 240_000_000,
            idempotency_key="stripe-webhook-evt-1",
            command_digest=command_digest(REFERENCED_RECHARGE),
            actor="api:key_7",
            user_id="alice",
            currency="USD",
            postings=(
                Posting(account="clearing:stripe:USD", currency="USD", amount=-30_00),
                Posting(account="wallet:alice:USD", currency="USD", amount=30_00),
            ),
            gateway="stripe",
            gateway_reference="pi_3QxYz0001",
        ),
    ),
    (
        "7-hold",
        HoldPlaced(
            seq=7,
            transaction_id="txn_0194209ddcb05d7c6b5a49382716f5e4",
            timestamp_us=HOLD_PLACED_US,
            idempotency_key="auth-5501-hold",
            command_digest=command_digest(HOLD),
            actor="api:key_7",
            user_id="alice",
            currency="USD",
            postings=(
                Posting(account="wallet:alice:USD", currency="USD", amount=-25_00),
                Posting(account="hold:auth-5501:USD", currency="USD", amount=25_00),
            ),
            hold_id="auth-5501",
            amount=25_00,
            expires_at_us=HOLD_EXPIRES_US,
        ),
    ),
    (
        "8-capture",
        HoldCaptured(
            seq=8,
            transaction_id="txn_0194209ec7106e8d7c6b5a4938270615",
            timestamp_us=T0_US + 360_000_000,
            idempotency_key="auth-5501-capture",
            command_digest=command_digest(CAPTURE),
            actor="api:key_7",
            user_id="alice",
            currency="USD",
            postings=(
                Posting(account="hold:auth-5501:USD", currency="USD", amount=-25_00),
                Posting(account="wallet:alice:USD", currency="USD", amount=25_00),
                Posting(
                    account="wallet:alice:USD", currency="USD", amount=-20_00, order_id="order-1003"
                ),
                Posting(
                    account="revenue:m-42:USD", currency="USD", amount=20_00, order_id="order-1003"
                ),
            ),
            hold_id="auth-5501",
            orders=CAPTURE.orders,
        ),
    ),
    (
        "9-hold-open",
        HoldPlaced(
            seq=9,
            transaction_id="txn_0194209fb1707f9e8d7c6b5a49381726",
            timestamp_us=T0_US + 420_000_000,
            idempotency_key="auth-5502-hold",
            command_digest=command_digest(OPEN_HOLD),
            actor="api:key_7",
            user_id="alice",
            currency="USD",
            postings=(
                Posting(account="wallet:alice:USD", currency="USD", amount=-10_00),
                Posting(account="hold:auth-5502:USD", currency="USD", amount=10_00),
            ),
            hold_id="auth-5502",
            amount=10_00,
        ),
    ),
    (
        "10-release",
        HoldReleased(
            seq=10,
            transaction_id="txn_019420a09bd0806f9e8d7c6b5a492837",
            timestamp_us=T0_US + 480_000_000,
            idempotency_key="auth-5502-release",
            command_digest=command_digest(RELEASE),
            actor="api:key_7",
            user_id="alice",
            currency="USD",
            postings=(
                Posting(account="hold:auth-5502:USD", currency="USD", amount=-10_00),
                Posting(account="wallet:alice:USD", currency="USD", amount=10_00),
            ),
            hold_id="auth-5502",
            amount=10_00,
            reason="order cancelled",
        ),
    ),
    (
        "11-transfer",
        Transferred(
            seq=11,
            transaction_id="txn_019420a1863091807fa09e8d7c6b5a39",
            timestamp_us=T0_US + 540_000_000,
            idempotency_key="alice-transfer-1",
            command_digest=command_digest(TRANSFER),
            actor="api:key_7",
            user_id="alice",
            currency="USD",
            postings=(
                Posting(account="wallet:alice:USD", currency="USD", amount=-5_50),
                Posting(account="wallet:bob:USD", currency="USD", amount=5_00),
                Posting(account="revenue:platform:USD", currency="USD", amount=50),
            ),
            reason="dinner split",
        ),
    ),
]

# -- reading the document -----------------------------------------------------------------

_BLOCK = re.compile(r"^```(?:json|text) (vector|chain|command)=(\S+)\n(.*?)\n```$", re.M | re.S)


def doc_blocks(kind: str) -> dict[str, str]:
    text = DOC.read_text(encoding="utf-8")
    found: dict[str, str] = {}
    for match in _BLOCK.finditer(text):
        if match[1] == kind:
            assert match[2] not in found, f"two {kind} blocks named {match[2]}"
            found[match[2]] = match[3]
    return found


def doc_vectors() -> dict[str, bytes]:
    vectors = {name: body.encode("utf-8") for name, body in doc_blocks("vector").items()}
    for name, body in vectors.items():
        assert b"\n" not in body, f"vector {name} must be one line"
    return vectors


def doc_chain() -> dict[str, tuple[str, str]]:
    """name -> (hex SHA-256 of the bytes, hex chain hash)."""
    chain = {}
    for name, body in doc_blocks("chain").items():
        fields = dict(line.split("=", 1) for line in body.splitlines())
        values = {key.strip(): value.strip() for key, value in fields.items()}
        chain[name] = (values["sha256(bytes)"], values["hash"])
    return chain


def test_document_has_a_vector_and_a_chain_hash_for_every_event() -> None:
    names = [name for name, _ in VECTOR_EVENTS]
    assert list(doc_vectors()) == names
    assert list(doc_chain()) == names
    assert set(COMMANDS) <= set(doc_blocks("command"))


@pytest.mark.parametrize(("name", "event"), VECTOR_EVENTS, ids=[n for n, _ in VECTOR_EVENTS])
def test_encode_event_matches_vector(name: str, event: Event) -> None:
    assert encode_event(LEDGER, event) == doc_vectors()[name]


def test_chain_matches_vectors() -> None:
    vectors, chain = doc_vectors(), doc_chain()
    previous = GENESIS_HASH
    assert previous == bytes(32)
    for name, _ in VECTOR_EVENTS:
        body = vectors[name]
        digest, expected = chain[name]
        assert hashlib.sha256(body).hexdigest() == digest
        previous = link(previous, body)
        assert previous.hex() == expected
        assert (
            previous
            == hashlib.sha256(bytes.fromhex(chain_before(name)) + bytes.fromhex(digest)).digest()
        )


def chain_before(name: str) -> str:
    names = [n for n, _ in VECTOR_EVENTS]
    index = names.index(name)
    return bytes(32).hex() if index == 0 else doc_chain()[names[index - 1]][1]


@pytest.mark.parametrize(("name", "event"), VECTOR_EVENTS, ids=[n for n, _ in VECTOR_EVENTS])
def test_decode_is_the_inverse_of_encode(name: str, event: Event) -> None:
    body = doc_vectors()[name]
    assert decode_event(body) == (LEDGER, event)
    assert decode_event(encode_event(LEDGER, event)) == (LEDGER, event)


@pytest.mark.parametrize("name", [n for n, _ in VECTOR_EVENTS])
def test_auditor_derives_the_same_canonical_bytes(name: str) -> None:
    body = doc_vectors()[name]
    assert audit_canonical(json.loads(body)) == body
    assert dumps(json.loads(body)) == body


@pytest.mark.parametrize("name", list(COMMANDS))
def test_command_digest_matches_vector(name: str) -> None:
    _, _, command = COMMANDS[name]
    body = doc_blocks("command")[name].encode("utf-8")
    assert hashlib.sha256(body).hexdigest() == command_digest(command)
    assert audit_canonical(json.loads(body)) == body
    event = json.loads(doc_vectors()[name])
    assert event["command_digest"] == command_digest(command)


def test_the_decider_produces_exactly_the_vector_events() -> None:
    """The vectors are real: deciding their commands in order yields the same events."""
    state = LedgerState(LEDGER)
    for name, expected in VECTOR_EVENTS:
        key, actor, command = COMMANDS[name]
        stamp = Stamp(
            seq=expected.seq,
            transaction_id=expected.transaction_id,
            timestamp_us=expected.timestamp_us,
            command_digest=command_digest(command),
        )
        envelope = Envelope(idempotency_key=key, command=command, actor=actor)
        event = decide(state, envelope, stamp, currencies=currencies())
        assert event == expected
        evolve(state, event)
    alice = 200_00 - 50_00 - 35_00 + 20_00 - 5_00 + 10_00 + 30_00 - 25_00 + 25_00 - 20_00
    assert state.balance("wallet:alice:USD") == alice - 10_00 + 10_00 - 5_50
    assert state.balance("wallet:bob:USD") == 5_00
    assert state.balance("revenue:platform:USD") == 50_00 - 20_00 + 50
    assert state.balance("hold:auth-5501:USD") == state.balance("hold:auth-5502:USD") == 0
    captured = state.hold("auth-5501")
    assert captured is not None
    assert captured.settled_by == VECTOR_EVENTS[7][1].transaction_id  # the capture


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("café", '"café"'.encode()),
        ('"\\/', b'"\\"\\\\/"'),  # quote and backslash escaped; solidus not
        ("\b\f\n\r\t", b'"\\b\\f\\n\\r\\t"'),  # the five short escapes
        ("\x00\x1f", b'"\\u0000\\u001f"'),  # other controls: \u00XX, lowercase hex
        ("\x7f\u2028\u2029", '"\x7f\u2028\u2029"'.encode()),  # written raw, as RFC 8785 does
        ("😀", '"😀"'.encode()),  # astral characters raw, never as surrogate pairs
    ],
)
def test_string_escaping_follows_rfc_8785(value: str, expected: bytes) -> None:
    assert dumps(value) == expected
    assert audit_canonical(value) == expected


def test_numbers_keys_and_null() -> None:
    value = {"b": 1, "a": {"d": None, "c": [True, -(2**63), 2**63 - 1, 0]}}
    expected = b'{"a":{"c":[true,-9223372036854775808,9223372036854775807,0],"d":null},"b":1}'
    assert dumps(value) == expected
    assert audit_canonical(value) == expected


@pytest.mark.parametrize(
    "body",
    [
        b'{"v":2}',
        b"[]",
        b"not json",
        b'{"v":1,"type":"teleport"}',
    ],
)
def test_decode_refuses_what_is_not_a_v1_event(body: bytes) -> None:
    with pytest.raises(CanonicalFormError):
        decode_event(body)


# -- the auditor on the vector log --------------------------------------------------------


@cache
def vector_rows() -> tuple[tuple[int, bytes, bytes], ...]:
    rows = []
    previous = GENESIS_HASH
    for seq, (name, _) in enumerate(VECTOR_EVENTS, start=1):
        body = doc_vectors()[name]
        previous = link(previous, body)
        rows.append((seq, body, previous))
    return tuple(rows)


def vector_head() -> tuple[int, bytes]:
    last = vector_rows()[-1]
    return last[0], last[2]


def test_auditor_accepts_the_vector_log() -> None:
    head = vector_head()
    report = tally_audit.verify_events(LEDGER, vector_rows(), head)
    assert report.finding is None
    events = len(VECTOR_EVENTS)
    assert (report.events, report.head_seq, report.head_hash) == (events, events, head[1])
    assert report.balances["wallet:alice:USD"] == 144_50  # as the document says
    assert report.balances["wallet:bob:USD"] == 5_00
    assert report.balances["revenue:platform:USD"] == 50_00 - 20_00 + 50
    assert report.balances["hold:auth-5501:USD"] == report.balances["hold:auth-5502:USD"] == 0
    assert report.balances["revenue:m-42:USD"] == 35_00 - 10_00 + 20_00
    assert sum(report.balances.values()) == 0


@given(
    index=st.integers(min_value=0, max_value=len(VECTOR_EVENTS) - 1),
    position=st.integers(min_value=0),
    mask=st.integers(min_value=1, max_value=255),
)
def test_any_flipped_byte_is_found(index: int, position: int, mask: int) -> None:
    rows = list(vector_rows())
    seq, body, stored_hash = rows[index]
    at = position % len(body)
    flipped = body[:at] + bytes([body[at] ^ mask]) + body[at + 1 :]
    rows[index] = (seq, flipped, stored_hash)
    report = tally_audit.verify_events(LEDGER, rows, vector_head())
    assert report.finding is not None
    assert report.finding.seq == seq


def test_tally_audit_command_checks_a_sqlite_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    head = vector_head()
    path = tmp_path / "ledger.db"
    db = sqlite3.connect(path)
    db.executescript(SCHEMA.read_text(encoding="utf-8"))
    with db:
        db.execute(
            "INSERT INTO ledgers (name, seq, hash, created_at_us) VALUES (?, ?, ?, ?)",
            (LEDGER, head[0], head[1], T0_US),
        )
        for (seq, body, hash_), (_, event) in zip(vector_rows(), VECTOR_EVENTS, strict=True):
            db.execute(
                "INSERT INTO events (ledger, seq, transaction_id, event_type, body, hash)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (LEDGER, seq, event.transaction_id, event.event_type, body, hash_),
            )
    db.close()
    assert audit_main([str(path)]) == 0
    assert capsys.readouterr().out == f"ok {LEDGER}: {head[0]} events, head {head[1].hex()}\n"

    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE ledgers SET seq = 3 WHERE name = ?", (LEDGER,))
    db.close()
    assert audit_main([str(path)]) == 1
    assert capsys.readouterr().out.startswith(f"FAIL {LEDGER} at head: ")


def test_the_formats_postings_and_orders_have_the_domains_field_order() -> None:
    """decode_event turns them into Posting and OrderLine with tuple.__new__, by position."""
    assert canonical._Posting.__struct_fields__ == Posting._fields
    assert canonical._Order.__struct_fields__ == OrderLine._fields

"""A ledger that does not exist yet, and a database file that does not either.

A ledger is created by the writer of its first command (`LedgerWriter` ensures its head row
before deciding anything), so a command refused there would leave an empty ledger behind,
and a SQLite `--db` that was not there a new file. The command line decides a command for a
ledger that does not exist against the empty ledger first, and refuses one it would refuse
without starting a writer (nor, on a SQLite file not there yet, opening the store); a read
of a ledger that does not exist is refused without creating it either.
"""

from __future__ import annotations

import time
from pathlib import Path

from tally.audit.canonical import command_digest
from tally.domain.commands import Envelope
from tally.domain.decide import Stamp, decide, recall
from tally.domain.rejections import Rejected, Rejection
from tally.domain.state import LedgerState
from tally.money import currencies


def is_new_database(db: str) -> bool:
    """Whether `db` is a SQLite file not created yet, in a folder that exists: it holds no
    ledger. (A missing folder is left to `open_store`, which finds the database unavailable.)"""
    if db.startswith(("postgres://", "postgresql://")):
        return False
    path = Path(db)
    return not path.exists() and path.parent.is_dir()


def refusal_on_a_new_ledger(ledger: str, envelope: Envelope) -> Rejected | None:
    """The writer's refusal of `envelope` as the first command of `ledger`, or None if it
    would accept it.

    The writer's steps (`LedgerWriter._decide`) on an empty state, which recalls no key and
    holds no order or expense: the key's form, then the decider's ladder, stamped with the
    writer's clock (a hold's expiry must come after it); a command whose text cannot be
    encoded skips the key, as there (`LedgerWriter._unencodable`)."""
    state = LedgerState(ledger)
    try:
        digest: str | None = command_digest(envelope.command)
    except UnicodeEncodeError:
        digest = None
    now_us = time.time_ns() // 1000
    stamp = Stamp(seq=1, transaction_id="", timestamp_us=now_us, command_digest=digest or "")
    try:
        if digest is not None:
            recall(state, envelope, digest)
        decide(state, envelope, stamp, currencies=currencies())
    except Rejected as rejection:
        return rejection
    if digest is None:
        return Rejected(
            Rejection.METADATA_INVALID, field="command", detail="text must be valid Unicode"
        )
    return None

"""What a writer answers for each command."""

from __future__ import annotations

from typing import NamedTuple

from tally.domain.events import Event
from tally.domain.rejections import Rejected
from tally.domain.state import Entry


class Committed(NamedTuple):
    """A durable transaction. `replayed` means an earlier request with the same key made it."""

    ledger: str
    event: Event
    hash: bytes
    entries: tuple[Entry, ...]
    replayed: bool = False


Outcome = Committed | Rejected


class WriterStopped(Exception):
    """The ledger's writer is closed, or a bug stopped it. A command refused at `submit` was
    not taken; one that was waiting may or may not have been recorded (a bug can stop the
    writer after a commit): retry it with the same idempotency key on a new writer."""


class CommitFailed(Exception):
    """The batch's commit failed, or its outcome is unknown (the connection was lost while
    it committed): it was not acknowledged, but it may have landed. Retry with the same key:
    a command that landed comes back as the transaction it produced, once."""


class DecidingFailed(Exception):
    """Deciding this request's commands failed unexpectedly (a bug in tally, logged with its
    traceback). None of them was written; the rest of their batch was decided without them.
    Retrying the same request will most likely fail the same way."""

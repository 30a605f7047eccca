"""The outbox: a ledger's log published to NATS JetStream, in seq order, each event once.

Every event goes out as one message on `PREFIX.LEDGER`, its data the event's canonical bytes
(docs/log-format.md) and its headers the seq, the chain hash after it, the event type and the
transaction id, so a consumer can check the chain from the messages alone. Where to start is
read back from the stream itself (the last message on the subject), not kept anywhere else:
a publisher that stopped, crashed between a publish and its acknowledgement, or runs again
from cron carries on at the next seq. JetStream drops a repeated `Nats-Msg-Id` (`LEDGER:SEQ`)
within its duplicate window, so a message sent twice around a crash is stored once. Before a
message is sent its row must chain onto the one published before it: a log rewritten after
it was published is refused, not published over.

Two publishers of one ledger at once (two cron runs overlapping, a stalled one) do not
interleave: each publish names the stream sequence of the subject's last message it knows
(`Nats-Expected-Last-Subject-Sequence`), so JetStream refuses one sent after another
publisher's, whatever the duplicate window; the publisher that lost reads the position again
and carries on from there. A "duplicate" answer is told apart the same way: another
publisher sent that seq (the subject's last message is at or past it), or the stream lost
messages (it is not), which stops the feed.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import NamedTuple

from nats.js import JetStreamContext
from nats.js.errors import BadRequestError, NotFoundError

from tally.audit.canonical import decode_event
from tally.audit.chain import GENESIS_HASH, link
from tally.domain.rejections import InvariantViolated
from tally.engine.ports import Store

page_events = 1_000
_SUBJECT_PREFIX = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
_STREAM_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
HEADER_SEQ = "Tally-Seq"
HEADER_HASH = "Tally-Hash"
EXPECTED_LAST = "Nats-Expected-Last-Subject-Sequence"
_WRONG_LAST_SEQUENCE = 10071  # JetStream's error code: the subject moved on meanwhile


@dataclass(frozen=True, slots=True)
class Feed:
    """Where a ledger's events go: stream `stream`, subject `prefix.ledger`."""

    stream: str
    prefix: str

    def __post_init__(self) -> None:
        if _STREAM_NAME.fullmatch(self.stream) is None:
            raise ValueError(f"stream {self.stream!r}: 1 to 64 of A-Z a-z 0-9 _ -")
        if _SUBJECT_PREFIX.fullmatch(self.prefix) is None:
            raise ValueError(f"subject prefix {self.prefix!r}: tokens of A-Z a-z 0-9 _ - and dots")

    def subject(self, ledger: str) -> str:
        return f"{self.prefix}.{ledger}"


@dataclass(frozen=True, slots=True)
class Published:
    ledger: str
    after_seq: int  # what the stream held before
    last_seq: int  # what it holds now

    @property
    def count(self) -> int:
        return self.last_seq - self.after_seq


class FeedRefused(Exception):
    """The stream cannot be the ledger's outbox as it is, or lost what was published."""


async def ensure_stream(js: JetStreamContext, feed: Feed) -> None:
    """Create the stream for the feed's subjects, keeping every message and refusing purges
    and deletes, unless it exists; an existing one must keep every message too: the
    position is read back from it, so a message it dropped would be skipped or sent again."""
    try:
        info = await js.stream_info(feed.stream)
    except NotFoundError:
        await js.add_stream(
            name=feed.stream, subjects=[f"{feed.prefix}.>"], deny_purge=True, deny_delete=True
        )
        return
    config = info.config
    limits = {
        "max_age": config.max_age or 0,
        "max_msgs": config.max_msgs if config.max_msgs is not None else -1,
        "max_bytes": config.max_bytes if config.max_bytes is not None else -1,
        "max_msgs_per_subject": config.max_msgs_per_subject
        if config.max_msgs_per_subject is not None
        else -1,
    }
    dropping = {name: value for name, value in limits.items() if value not in (0, -1)}
    if dropping and str(getattr(config.discard, "value", config.discard)) == "old":
        raise FeedRefused(
            f"stream {feed.stream} drops old messages ({dropping}): the outbox needs a stream "
            "that keeps every message (it reads its position back from it)"
        )


class Position(NamedTuple):
    """The last event of a ledger a stream holds: its seq and chain hash, and the message's
    own sequence in the stream (what the next publish expects to follow)."""

    seq: int
    hash: bytes
    stream_seq: int


async def published_position(js: JetStreamContext, feed: Feed, ledger: str) -> Position:
    """The last event of `ledger` the stream holds; `(0, genesis, 0)` when none."""
    try:
        last = await js.get_last_msg(feed.stream, feed.subject(ledger))
    except NotFoundError:
        return Position(0, GENESIS_HASH, 0)
    headers = last.headers or {}
    try:
        return Position(
            int(headers[HEADER_SEQ]), bytes.fromhex(headers[HEADER_HASH]), last.seq or 0
        )
    except (KeyError, ValueError):
        raise InvariantViolated(
            f"the last message on {feed.subject(ledger)} is not a tally event (no seq and hash)"
        ) from None


async def publish_new(
    js: JetStreamContext,
    store: Store,
    feed: Feed,
    ledger: str,
    stop: asyncio.Event | None = None,
) -> Published:
    """Publish every event of `ledger` the stream does not hold yet, in seq order, each
    acknowledged before the next is sent (until `stop` is set); returns what the stream held
    before and after (after: with what another publisher sent meanwhile, if one did)."""
    start = (await published_position(js, feed, ledger)).seq
    while True:
        try:
            return await _publish_from(js, store, feed, ledger, start, stop=stop)
        except _Overtaken:  # another publisher sent the next event first: carry on after it
            continue


class _Overtaken(Exception):
    """Another publisher moved the ledger's subject on since this one read its position."""


async def _publish_from(
    js: JetStreamContext,
    store: Store,
    feed: Feed,
    ledger: str,
    start: int,
    *,
    stop: asyncio.Event | None,
) -> Published:
    seq, previous, last_stream_seq = await published_position(js, feed, ledger)
    # Up to the head row, read first: what it covers was committed (a row beyond it was not
    # put there by a commit); what lands meanwhile goes out on the next call.
    head = await asyncio.to_thread(store.head, ledger)
    if head is None:
        raise LookupError(f"no ledger {ledger!r}")
    if head.seq < seq:
        raise InvariantViolated(
            f"ledger {ledger}: the stream holds seq {seq}, the log ends at seq {head.seq} "
            "(events were removed after they were published)"
        )
    subject = feed.subject(ledger)
    while seq < head.seq:
        limit = min(page_events, head.seq - seq)
        rows = await asyncio.to_thread(store.events, ledger, after_seq=seq, limit=limit)
        if not rows:
            raise InvariantViolated(
                f"ledger {ledger}: the log ends at seq {seq}, the head row says {head.seq}"
            )
        for row in rows:
            if stop is not None and stop.is_set():
                return Published(ledger, start, seq)
            if (
                type(row.body) is not bytes
                or row.seq != seq + 1
                or link(previous, row.body) != row.hash
            ):
                raise InvariantViolated(
                    f"ledger {ledger}: seq {row.seq} does not chain onto seq {seq} as "
                    "published (the log was rewritten, or is broken): nothing more is published"
                )
            # The headers come from the hashed body, not the row's other columns
            _, event = decode_event(row.body)
            try:
                ack = await js.publish(
                    subject,
                    row.body,
                    stream=feed.stream,  # the stream the position was read from, and no other
                    headers={
                        "Nats-Msg-Id": f"{ledger}:{row.seq}",
                        EXPECTED_LAST: str(last_stream_seq),
                        HEADER_SEQ: str(row.seq),
                        HEADER_HASH: row.hash.hex(),
                        "Tally-Event-Type": event.event_type,
                        "Tally-Transaction-Id": event.transaction_id,
                    },
                )
            except BadRequestError as error:
                if error.err_code == _WRONG_LAST_SEQUENCE:
                    raise _Overtaken from error
                raise
            if ack.duplicate:
                # It held this seq already: sent by another publisher meanwhile (its last
                # message is at or past it now), or it lost messages (purged or limited).
                if (await published_position(js, feed, ledger)).seq >= row.seq:
                    raise _Overtaken
                raise FeedRefused(
                    f"stream {feed.stream} already held seq {row.seq} of {ledger} but not as "
                    "its last message: it lost messages (purged or limited); nothing more is "
                    "published"
                )
            seq, previous, last_stream_seq = row.seq, row.hash, ack.seq
    if previous != head.hash:  # nothing new, or the last row read: the head must be it
        raise InvariantViolated(
            f"ledger {ledger}: the head at seq {head.seq} is not the event published as that "
            "seq (the log was rewritten after it was published): nothing more is published"
        )
    return Published(ledger, start, seq)

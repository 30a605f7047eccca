"""`tally publish`: the log to NATS JetStream (the server on 127.0.0.1:4222), in seq order,
each event once, resumed from the stream itself, refused over a rewritten log; both stores."""

from __future__ import annotations

import asyncio
import hashlib
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import nats
import pytest
from nats.js.errors import NotFoundError

import rawdb
from conftest import TallyRunner, subprocess_env
from rawdb import RawDb
from tally.bootstrap import open_engine, open_store
from tally.domain.commands import Envelope, Recharge
from tally.engine.ports import Store
from tally.publish import Feed as PublishFeed
from tally.publish import ensure_stream, publish_new

NATS_URL = "nats://127.0.0.1:4222"
LEDGER = "shop"
WAIT_S = 30


@dataclass(frozen=True)
class Feed:
    stream: str
    prefix: str

    @property
    def subject(self) -> str:
        return f"{self.prefix}.{LEDGER}"

    def args(self) -> tuple[str, ...]:
        return ("--nats", NATS_URL, "--stream", self.stream, "--subject-prefix", self.prefix)


async def _messages(feed: Feed) -> list[tuple[dict[str, str], bytes]]:
    connection = await nats.connect(NATS_URL)
    try:
        js = connection.jetstream()
        try:
            count = (await js.stream_info(feed.stream)).state.messages
        except NotFoundError:
            return []
        found = []
        for seq in range(1, count + 1):
            message = await js.get_msg(feed.stream, seq)
            found.append((dict(message.headers or {}), bytes(message.data or b"")))
        return found
    finally:
        await connection.close()


def messages(feed: Feed) -> list[tuple[dict[str, str], bytes]]:
    return asyncio.run(_messages(feed))


async def _delete(stream: str) -> None:
    connection = await nats.connect(NATS_URL)
    try:
        await connection.jetstream().delete_stream(stream)
    except NotFoundError:
        pass
    finally:
        await connection.close()


@pytest.fixture
def feed() -> Iterator[Feed]:
    token = uuid.uuid4().hex[:12]
    made = Feed(stream=f"TEST_{token}", prefix=f"t{token}.events")
    yield made
    asyncio.run(_delete(made.stream))


def recharge(db: str, *keys: str) -> None:
    engine = open_engine(db)
    try:
        for key in keys:
            command = Recharge(user_id="alice", amount=1_00, currency="USD", gateway="pp")
            engine.execute(LEDGER, Envelope(idempotency_key=key, command=command))
    finally:
        engine.close()
        engine.store.close()


def chain_of(published: list[tuple[dict[str, str], bytes]]) -> list[int]:
    """The seqs of the messages, after checking the chain from the messages alone."""
    previous = bytes(32)
    seqs = []
    for headers, body in published:
        previous = hashlib.sha256(previous + hashlib.sha256(body).digest()).digest()
        assert headers["Tally-Hash"] == previous.hex()
        assert headers["Nats-Msg-Id"] == f"{LEDGER}:{headers['Tally-Seq']}"
        seqs.append(int(headers["Tally-Seq"]))
    return seqs


def test_events_go_out_once_in_order_and_a_rerun_carries_on(
    db: str, tally: TallyRunner, feed: Feed
) -> None:
    recharge(db, "r1", "r2", "r3")
    first = tally("publish", *feed.args(), "--db", db, "--ledger", LEDGER, "--json")
    assert first.returncode == 0, first.describe()
    assert (first.json()["published"], first.json()["last_seq"]) == (3, 3)
    again = tally("publish", *feed.args(), "--db", db, "--ledger", LEDGER, "--json")
    assert again.json()["published"] == 0
    recharge(db, "r4")
    later = tally("publish", *feed.args(), "--db", db, "--ledger", LEDGER)
    assert later.returncode == 0, later.describe()
    assert "published 1 events" in later.stdout
    published = messages(feed)
    assert chain_of(published) == [1, 2, 3, 4]
    assert [headers["Tally-Event-Type"] for headers, _ in published] == ["recharge"] * 4
    with rawdb.connect(db) as raw:
        bodies = [bytes(body) for (body,) in raw.execute("SELECT body FROM events ORDER BY seq")]
    assert [body for _, body in published] == bodies


def _remove_last_event(db: RawDb) -> None:
    (previous,) = db.execute(
        "SELECT hash FROM events WHERE ledger = ? AND seq = 2", (LEDGER,)
    ).fetchone()
    db.execute("DELETE FROM events WHERE ledger = ? AND seq = 3", (LEDGER,))
    db.execute("UPDATE ledgers SET seq = 2, hash = ? WHERE name = ?", (previous, LEDGER))


def _rewrite_last_event(db: RawDb) -> None:
    """Seq 3 deleted and a seq 3 of another key chained in its place: a valid log again."""
    (previous,) = db.execute(
        "SELECT hash FROM events WHERE ledger = ? AND seq = 2", (LEDGER,)
    ).fetchone()
    (body,) = db.execute(
        "SELECT body FROM events WHERE ledger = ? AND seq = 3", (LEDGER,)
    ).fetchone()
    forged = bytes(body).replace(b'"r3"', b'"r9"')
    digest = hashlib.sha256(bytes(previous) + hashlib.sha256(forged).digest()).digest()
    db.execute(
        "UPDATE events SET body = ?, hash = ? WHERE ledger = ? AND seq = 3",
        (forged, digest, LEDGER),
    )
    db.execute("UPDATE ledgers SET hash = ? WHERE name = ?", (digest, LEDGER))


@pytest.mark.parametrize(
    ("edit", "said"),
    [
        (_remove_last_event, "events were removed"),
        (_rewrite_last_event, "the log was rewritten after it was published"),
    ],
    ids=["tail-removed", "tail-rewritten"],
)
def test_a_log_changed_after_it_was_published_is_not_published_over(
    db: str, tally: TallyRunner, feed: Feed, edit: Callable[[RawDb], None], said: str
) -> None:
    recharge(db, "r1", "r2", "r3")
    assert tally("publish", *feed.args(), "--db", db, "--ledger", LEDGER).returncode == 0
    rawdb.tamper(db, edit)
    refused = tally("publish", *feed.args(), "--db", db, "--ledger", LEDGER)
    assert refused.returncode == 3, refused.describe()
    assert said in refused.stderr
    assert chain_of(messages(feed)) == [1, 2, 3]  # nothing more, nothing replaced


def test_follow_publishes_what_is_written_until_stopped(db: str, feed: Feed) -> None:
    recharge(db, "r1")
    command = [sys.executable, "-m", "tally.cli", "publish", *feed.args(), "--db", db]
    follower = subprocess.Popen(
        [*command, "--ledger", LEDGER, "--follow", "--interval", "0.1"],
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(feed, 1)
        recharge(db, "r2", "r3")
        _wait_for(feed, 3)
    finally:
        follower.send_signal(signal.SIGTERM)
        out, err = follower.communicate(timeout=WAIT_S)
    assert follower.returncode == 0, err
    assert "published 3 events" in out
    assert chain_of(messages(feed)) == [1, 2, 3]


def _wait_for(feed: Feed, count: int) -> None:
    deadline = time.monotonic() + WAIT_S
    while len(messages(feed)) < count:
        assert time.monotonic() < deadline, f"{count} messages never arrived"
        time.sleep(0.1)


def test_usage_and_unavailable(db: str, tally: TallyRunner, feed: Feed) -> None:
    recharge(db, "r1")
    unknown = tally("publish", *feed.args(), "--db", db, "--ledger", "nosuch", "--json")
    assert (unknown.returncode, unknown.json()["error"]) == (1, "ledger_unknown")
    bad = tally("publish", "--stream", "no.dots", "--db", db, "--ledger", LEDGER)
    assert bad.returncode == 2
    down = tally("publish", "--nats", "nats://127.0.0.1:1", "--db", db, "--ledger", LEDGER)
    assert down.returncode == 5, down.describe()
    assert "unavailable NATS" in down.stderr
    assert "Traceback" not in down.stderr


async def _stream_elsewhere(feed: Feed) -> None:
    connection = await nats.connect(NATS_URL)
    try:
        await connection.jetstream().add_stream(name=feed.stream, subjects=["elsewhere.>"])
    finally:
        await connection.close()


def test_an_existing_stream_that_does_not_take_the_subject_is_named(
    db: str, tally: TallyRunner, feed: Feed
) -> None:
    recharge(db, "r1")
    asyncio.run(_stream_elsewhere(feed))
    refused = tally("publish", *feed.args(), "--db", db, "--ledger", LEDGER)
    assert refused.returncode == 1, refused.describe()
    assert f"no stream takes subject {feed.subject}" in refused.stderr
    assert "Traceback" not in refused.stderr


async def _limited_stream(feed: Feed) -> None:
    connection = await nats.connect(NATS_URL)
    try:
        await connection.jetstream().add_stream(
            name=feed.stream, subjects=[f"{feed.prefix}.>"], max_msgs=2
        )
    finally:
        await connection.close()


def test_a_stream_that_drops_old_messages_is_refused(
    db: str, tally: TallyRunner, feed: Feed
) -> None:
    """Its position is read back from the stream: one that drops the ledger's last message
    would make the publisher skip or repeat events."""
    recharge(db, "r1", "r2", "r3")
    asyncio.run(_limited_stream(feed))
    refused = tally("publish", *feed.args(), "--db", db, "--ledger", LEDGER)
    assert refused.returncode == 1, refused.describe()
    assert "drops old messages" in refused.stderr
    assert messages(feed) == []


async def _purge(feed: Feed) -> bool:
    connection = await nats.connect(NATS_URL)
    try:
        await connection.jetstream().purge_stream(feed.stream)
    except nats.errors.Error:
        return False
    finally:
        await connection.close()
    return True


def test_the_stream_it_creates_refuses_purges(db: str, tally: TallyRunner, feed: Feed) -> None:
    recharge(db, "r1")
    assert tally("publish", *feed.args(), "--db", db, "--ledger", LEDGER).returncode == 0
    assert not asyncio.run(_purge(feed))
    assert chain_of(messages(feed)) == [1]


async def _publish_twice_at_once(db: str, feed: Feed) -> None:
    store = open_store(db)
    connection = await nats.connect(NATS_URL)
    try:
        js = connection.jetstream()
        made = PublishFeed(feed.stream, feed.prefix)
        await ensure_stream(js, made)
        await asyncio.gather(*(publish_new(js, store, made, LEDGER) for _ in range(2)))
    finally:
        await connection.close()
        store.close()


def test_two_publishers_at_once_send_each_event_once(db: str, feed: Feed) -> None:
    """Both start from an empty stream and race: each event is stored once, in order (the
    one that was overtaken reads the position again and carries on after it)."""
    recharge(db, *(f"r{n}" for n in range(40)))
    asyncio.run(_publish_twice_at_once(db, feed))
    assert chain_of(messages(feed)) == list(range(1, 41))


class _StalledStore:
    """A store whose first page of the log comes late: a publisher that read its position,
    then stalled past the stream's duplicate window."""

    def __init__(self, store: Any, stalled: threading.Event, resume: threading.Event) -> None:
        self._store = store
        self._stalled = stalled
        self._resume = resume

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def events(self, ledger: str, *, after_seq: int, limit: int) -> Any:
        if not self._stalled.is_set():
            self._stalled.set()
            self._resume.wait(WAIT_S)
        return self._store.events(ledger, after_seq=after_seq, limit=limit)


async def _stalled_then_overtaken(db: str, feed: Feed) -> None:
    made = PublishFeed(feed.stream, feed.prefix)
    connection = await nats.connect(NATS_URL)
    store = open_store(db)
    try:
        js = connection.jetstream()
        await js.add_stream(
            name=feed.stream,
            subjects=[f"{feed.prefix}.>"],
            duplicate_window=0.2,  # seconds: the stall outlasts it
            deny_purge=True,
            deny_delete=True,
        )
        stalled, resume = threading.Event(), threading.Event()
        slow = asyncio.create_task(
            publish_new(js, cast(Store, _StalledStore(store, stalled, resume)), made, LEDGER)
        )
        await asyncio.to_thread(stalled.wait, WAIT_S)
        done = await publish_new(js, store, made, LEDGER)  # another publisher, meanwhile
        assert done.last_seq == 5
        await asyncio.sleep(0.5)  # past the duplicate window
        resume.set()
        late = await slow
        assert late.last_seq == 5
    finally:
        await connection.close()
        store.close()


def test_a_stalled_publisher_does_not_send_again_what_another_sent(db: str, feed: Feed) -> None:
    """Past the duplicate window JetStream would store the stalled publisher's seq 1 again
    after seq 5; the publish names the subject's last message it knows, and is refused."""
    recharge(db, "r1", "r2", "r3", "r4", "r5")
    asyncio.run(_stalled_then_overtaken(db, feed))
    assert chain_of(messages(feed)) == [1, 2, 3, 4, 5]

"""`tally publish --nats URL`: the ledger's log to NATS JetStream (src/tally/publish.py).

Registered into the `tally` app by the last lines of cli/app.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import TYPE_CHECKING, Annotated

from cyclopts import Parameter
from rich.text import Text

from tally.api_keys import KeyRefused, check_ledger_name
from tally.bootstrap import open_store
from tally.cli.new_ledger import is_new_database
from tally.cli.options import (
    Common,
    Refusal,
    console,
    errors,
    print_json,
    print_refusal,
    print_usage,
)
from tally.engine.ports import Store

if TYPE_CHECKING:
    from tally.publish import Feed, Published

connect_timeout_s = 2.0


def publish(
    *,
    nats_url: Annotated[
        str, Parameter(name="--nats", env_var="TALLY_NATS")
    ] = "nats://127.0.0.1:4222",
    stream: str = "TALLY_EVENTS",
    subject_prefix: str = "tally.events",
    follow: bool = False,
    interval: float = 0.5,
    common: Common | None = None,
) -> int:
    """Publish the ledger's events that STREAM does not hold yet to NATS JetStream, in seq
    order, one message each on SUBJECT_PREFIX.LEDGER (data: the event's canonical bytes;
    headers: Tally-Seq, Tally-Hash, Tally-Event-Type, Tally-Transaction-Id, and Nats-Msg-Id
    LEDGER:SEQ for JetStream's duplicate detection). Where to start is read from the stream,
    so running it again (or from cron) carries on where the last run stopped. --follow keeps
    publishing new events every INTERVAL seconds until interrupted. The stream is created
    for SUBJECT_PREFIX.> if it does not exist.

    The stream must keep every message (it is created so, refusing purges and deletes; an
    existing one that drops old messages is refused). Exit status 0 published (or stopped
    by a signal), 1 no such ledger or refused by JetStream (including a stream found to have
    lost messages), 2 usage, 3 the log does not chain onto what was published (nothing more
    is published), 5 NATS or the database unavailable.
    """
    from tally.publish import Feed  # NATS's client loads only for this command (50 ms)

    common = common or Common()
    try:
        check_ledger_name(common.ledger)
        feed = Feed(stream, subject_prefix)
        if not 0 < interval <= 3600:
            raise ValueError("--interval is seconds between 0 and 3600")
    except (KeyRefused, ValueError) as problem:
        return print_usage(str(problem))
    if is_new_database(common.db):  # a mistyped --db is not created to find that out
        return _no_ledger(common, f"no ledger {common.ledger!r} in {common.db}")
    store = open_store(common.db)
    try:
        return asyncio.run(_run(store, feed, common, nats_url, follow=follow, interval=interval))
    finally:
        store.close()


async def _run(
    store: Store, feed: Feed, common: Common, url: str, *, follow: bool, interval: float
) -> int:
    import nats
    from nats.js.errors import APIError, NoStreamResponseError

    from tally.publish import FeedRefused, Published, ensure_stream, publish_new

    try:
        connection = await nats.connect(
            url,
            connect_timeout=connect_timeout_s,
            allow_reconnect=False,
            max_reconnect_attempts=1,  # one try (0 would try for ever)
            reconnect_time_wait=0.5,
            error_cb=_quiet,  # nats-py logs each failed attempt with a traceback otherwise
        )
    except (TimeoutError, OSError, nats.errors.Error) as error:
        errors.print(
            Text.assemble(
                ("unavailable", "red"), f" NATS at {url}: {error or type(error).__name__}"
            )
        )
        return 5
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    try:
        js = connection.jetstream()
        await ensure_stream(js, feed)
        total: Published | None = None
        while True:
            try:
                done = await publish_new(js, store, feed, common.ledger, stop)
            except LookupError as missing:
                return _no_ledger(common, str(missing))
            total = (
                done if total is None else Published(done.ledger, total.after_seq, done.last_seq)
            )
            if not follow or stop.is_set():
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            if stop.is_set():
                break
    except APIError as refused:  # the stream's own refusal: limits, permissions, ...
        errors.print(Text.assemble(("refused", "red"), f" JetStream: {refused}"))
        return 1
    except (nats.errors.NoRespondersError, NoStreamResponseError):  # --stream takes it not
        subject = feed.subject(common.ledger)
        errors.print(
            Text.assemble(
                ("refused", "red"),
                f" JetStream: no stream takes subject {subject} (not among --stream's subjects)",
            )
        )
        return 1
    except FeedRefused as refused:
        errors.print(Text.assemble(("refused", "red"), f" {refused}"))
        return 1
    except (nats.errors.Error, OSError) as lost:  # the connection closed, timed out, ...
        errors.print(
            Text.assemble(("unavailable", "red"), f" NATS at {url}: {lost or type(lost).__name__}")
        )
        return 5
    finally:
        with contextlib.suppress(nats.errors.Error, OSError):
            await connection.close()
    _report(common, feed, total)
    return 0


async def _quiet(_: Exception) -> None:
    """Connection errors are reported once, by the command."""


def _no_ledger(common: Common, problem: str) -> int:
    return print_refusal(Refusal.LEDGER_UNKNOWN, "ledger", problem, as_json=common.json)


def _report(common: Common, feed: Feed, done: Published | None) -> None:
    if done is None:
        return
    view = {
        "ledger": done.ledger,
        "stream": feed.stream,
        "subject": feed.subject(done.ledger),
        "published": done.count,
        "last_seq": done.last_seq,
    }
    if common.json:
        print_json(view)
    else:
        console.print(
            f"published {done.count} events of ledger {done.ledger} to {feed.subject(done.ledger)}"
            f" (stream {feed.stream}, now up to seq {done.last_seq})"
        )

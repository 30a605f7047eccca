"""Releasing expired holds: what gives their money back.

A hold that expired can no longer be captured (`hold_expired`), but its money stays in its
account until a release moves it back: no event is written without a command. This sweep is
that command for every open hold that expired: `tally serve` runs it every minute
(`--release-expired-every`, `sweep_forever`), and an operator can run it by hand or from cron
(`tally release-expired`). Each release carries the idempotency key `tally:expired:<hold_id>`,
so two sweeps at once (two processes, a retry) release a hold once: the second one's release
is the first one's, replayed. A hold released or captured meanwhile by someone else is
refused `hold_settled`, which the sweep counts as done.
"""

from __future__ import annotations

import asyncio
import time
from typing import NamedTuple

import structlog

from tally.domain.commands import Envelope, Release
from tally.domain.rejections import Rejected, Rejection
from tally.engine.engine import Engine
from tally.engine.results import Committed

EXPIRED_REASON = "expired"
KEY_PREFIX = "tally:expired:"
SERVER_ACTOR = "tally-serve"  # the actor of the releases a server's sweep writes

log = structlog.get_logger(__name__)


class Sweep(NamedTuple):
    released: list[Committed]  # by this sweep (or by one beside it, under the same key)
    settled_meanwhile: list[str]  # hold ids captured or released by someone else first
    refused: list[tuple[str, Rejected]]  # anything else: the hold is still open


def release_expired(engine: Engine, ledger: str, *, now_us: int, actor: str = "cli") -> Sweep:
    """Release every hold of `ledger` that is still open and expired by `now_us`.

    The holds are those the ledger's writer knows once caught up with the log, which it does
    when it starts: call this on an engine whose writer for `ledger` is new, or idle (the
    CLI's), not beside a server's live writer in the same process."""
    expired = engine.writer(ledger).state.expired_holds(now_us)
    envelopes = [
        Envelope(
            idempotency_key=f"{KEY_PREFIX}{hold.hold_id}",
            command=Release(hold_id=hold.hold_id, reason=EXPIRED_REASON),
            actor=actor,
        )
        for hold in expired
    ]
    sweep = Sweep([], [], [])
    outcomes = engine.execute_many(ledger, envelopes) if envelopes else []
    for hold, outcome in zip(expired, outcomes, strict=True):
        if isinstance(outcome, Committed):
            sweep.released.append(outcome)
        elif outcome.reason is Rejection.HOLD_SETTLED:
            sweep.settled_meanwhile.append(hold.hold_id)
        else:
            sweep.refused.append((hold.hold_id, outcome))
    return sweep


async def sweep_forever(engine: Engine, *, every_s: float) -> None:
    """Every `every_s` seconds, release the expired holds of every ledger of the engine's
    store, on a worker thread (each sweep waits for its commit). A sweep that fails is
    logged and tried again at the next turn: a server never stops for it."""
    while True:
        await asyncio.sleep(every_s)
        try:
            for ledger in await asyncio.to_thread(engine.store.ledgers):
                sweep = await asyncio.to_thread(
                    release_expired,
                    engine,
                    ledger,
                    now_us=time.time_ns() // 1000,
                    actor=SERVER_ACTOR,
                )
                for committed in sweep.released:
                    log.info(
                        "expired hold released",
                        ledger=ledger,
                        hold_id=getattr(committed.event, "hold_id", None),
                        transaction_id=committed.event.transaction_id,
                    )
                for hold_id, refused in sweep.refused:
                    log.warning(
                        "expired hold not released",
                        ledger=ledger,
                        hold_id=hold_id,
                        error=refused.reason.code,
                        detail=refused.detail,
                    )
        except Exception:
            log.exception("releasing expired holds failed; trying again at the next turn")

"""Releasing expired holds: what gives their money back.

A hold that expired can no longer be captured (`hold_expired`), but its money stays in its
account until a release moves it back: no event is written without a command. This sweep is
that command for every open hold that expired, run by an operator or from cron
(`tally release-expired`). Each release carries the idempotency key `tally:expired:<hold_id>`,
so two sweeps at once (two processes, a retry) release a hold once: the second one's release
is the first one's, replayed. A hold released or captured meanwhile by someone else is
refused `hold_settled`, which the sweep counts as done.
"""

from __future__ import annotations

from typing import NamedTuple

from tally.domain.commands import Envelope, Release
from tally.domain.rejections import Rejected, Rejection
from tally.engine.engine import Engine
from tally.engine.results import Committed

EXPIRED_REASON = "expired"
KEY_PREFIX = "tally:expired:"


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

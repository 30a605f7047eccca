"""The writer's per-command CPU without a database: decide, evolve, encode, chain; then the
answer's view and decoding the canonical bytes again (what replay and verify do).

    .venv/bin/python -m bench.fold [--expenses N] [--wallets N] [--rounds N]

For A/B work on the fold on a noisy machine: CPU time of this process (`time.process_time`),
one expense of one order each, over `--wallets` funded wallets; the best of `--rounds`.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import NamedTuple

from bench import host
from tally.audit.canonical import command_digest, decode_event, encode_event
from tally.audit.chain import GENESIS_HASH, link
from tally.bootstrap import tune_runtime
from tally.domain.commands import Envelope, Expense, OrderLine, Recharge
from tally.domain.decide import Stamp, decide, recall
from tally.domain.state import LedgerState, evolve
from tally.engine.results import Committed
from tally.views import committed_transaction

LEDGER = "bench"
CURRENCIES = frozenset({"USD"})


class Timing(NamedTuple):
    fold_us: float  # digest, recall, decide, evolve, encode, chain: the writer's share
    view_us: float  # the transaction view of the answer
    decode_us: float  # canonical bytes back to an event


def _fold(state: LedgerState, envelopes: list[Envelope]) -> list[Committed]:
    head = GENESIS_HASH
    committed = []
    for index, envelope in enumerate(envelopes):
        digest = command_digest(envelope.command)
        if recall(state, envelope, digest) is not None:
            raise RuntimeError(f"{envelope.idempotency_key} was used before")
        stamp = Stamp(state.seq + 1, f"txn_{state.seq + 1}", 1_700_000_000_000_000 + index, digest)
        event = decide(state, envelope, stamp, currencies=CURRENCIES)
        entries = evolve(state, event)
        head = link(head, encode_event(LEDGER, event))
        committed.append(Committed(LEDGER, event, head, tuple(entries)))
    return committed


def _cpu_us(work: Callable[[], object], count: int) -> float:
    started = time.process_time()
    work()
    return (time.process_time() - started) / count * 1e6


def measure(expenses: int, wallets: int) -> Timing:
    users = [f"u{i}" for i in range(wallets)]
    state = LedgerState(LEDGER)
    funding = [
        Envelope(
            idempotency_key=f"fund-{user}",
            command=Recharge(user_id=user, amount=10**12, currency="USD", gateway="paypal"),
        )
        for user in users
    ]
    _fold(state, funding)
    paying = [
        Envelope(
            idempotency_key=f"e{i}",
            command=Expense(
                user_id=users[i % wallets],
                currency="USD",
                orders=(OrderLine(order_id=f"o{i}", amount=100, merchant_id="shop"),),
            ),
        )
        for i in range(expenses)
    ]
    committed: list[Committed] = []
    fold_us = _cpu_us(lambda: committed.extend(_fold(state, paying)), expenses)
    view_us = _cpu_us(lambda: [committed_transaction(c) for c in committed], expenses)
    bodies = [encode_event(LEDGER, c.event) for c in committed]
    decode_us = _cpu_us(lambda: [decode_event(body) for body in bodies], expenses)
    return Timing(fold_us, view_us, decode_us)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--expenses", type=int, default=60_000)
    parser.add_argument("--wallets", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    tune_runtime()
    host.report()
    timings = [measure(args.expenses, args.wallets) for _ in range(args.rounds)]
    best = Timing(*(min(values) for values in zip(*timings, strict=True)))
    print(
        f"per expense, CPU (best of {args.rounds}): fold {best.fold_us:.1f} µs, "
        f"view {best.view_us:.1f} µs, decode {best.decode_us:.1f} µs"
    )


if __name__ == "__main__":
    main()

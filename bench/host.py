"""How fast this host runs Python today, to read a run's absolute figures against.

    .venv/bin/python -m bench.host

This machine is shared and its speed has varied by 4x from one day to the next (the same
code, the same benchmark): every run records this figure beside its own, so that figures of
different days can be compared with the host's speed in view.
"""

from __future__ import annotations

import time

loop_additions = 10_000_000


def python_loop_s() -> float:
    """CPU seconds for a pure-Python loop of `loop_additions` integer additions (best of 3)."""
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        total = 0
        for i in range(loop_additions):
            total += i
        best = min(best, time.process_time() - started)
    return best


def describe(loop_s: float) -> str:
    """One line for a report."""
    return f"host speed: a {loop_additions:,}-addition Python loop took {loop_s:.2f} s of CPU"


def report() -> None:
    """Measure and print the line, first thing in a benchmark's output."""
    print(describe(python_loop_s()), flush=True)


if __name__ == "__main__":
    report()

"""Prometheus metrics, on a registry of the app's own (several apps may share a process)."""

from __future__ import annotations

import bisect
import gc
import itertools
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]


class GcPauses(Collector):
    """`tally_gc_pause_seconds`: the passes of Python's cyclic garbage collector, by
    generation, as a histogram.

    Counted in plain lists, not a prometheus_client Histogram: the hook runs inside a pass,
    in whichever thread allocated, and a Histogram's lock (also taken to render /metrics)
    could be held by that very thread. A pass runs with the GIL held, one at a time."""

    bounds = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

    def __init__(self) -> None:
        # Per generation: passes per bucket (not cumulative; the last is above every bound).
        self._counts = [[0] * (len(self.bounds) + 1) for _ in range(3)]
        self._sums = [0.0, 0.0, 0.0]
        self._started: float | None = None

    def on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        started, self._started = self._started, None
        if started is None:  # hooked in the middle of a pass
            return
        elapsed = time.perf_counter() - started
        generation = info["generation"]
        self._counts[generation][bisect.bisect_left(self.bounds, elapsed)] += 1
        self._sums[generation] += elapsed

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(
            "tally_gc_pause_seconds",
            "Passes of Python's cyclic garbage collector, by generation: each stops every "
            "thread of the server (a long one shows in every request in flight).",
            labels=("generation",),
        )
        for generation in range(3):
            counts = list(itertools.accumulate(self._counts[generation]))
            finite = zip(self.bounds, counts[:-1], strict=True)
            buckets = [(str(bound), float(n)) for bound, n in finite]
            buckets.append(("+Inf", float(counts[-1])))
            family.add_metric([str(generation)], buckets, self._sums[generation])
        yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "tally_http_requests",
            "HTTP requests answered, by route and status.",
            ("method", "route", "status"),
            registry=self.registry,
        )
        self.duration = Histogram(
            "tally_http_request_duration_seconds",
            "Time to answer an HTTP request.",
            ("method", "route"),
            registry=self.registry,
        )
        self.commands = Counter(
            "tally_commands",
            "Commands the API submitted, by type and outcome (committed, replayed, a code).",
            ("type", "outcome"),
            registry=self.registry,
        )

        self.gc_pauses = GcPauses()
        self.registry.register(self.gc_pauses)

    def watch_gc(self) -> None:
        """Time the collector's passes from now on (a process-wide hook; see unwatch_gc)."""
        if self.gc_pauses.on_gc not in gc.callbacks:
            gc.callbacks.append(self.gc_pauses.on_gc)

    def unwatch_gc(self) -> None:
        if self.gc_pauses.on_gc in gc.callbacks:
            gc.callbacks.remove(self.gc_pauses.on_gc)

    def render(self) -> bytes:
        return generate_latest(self.registry)

"""Prometheus metrics, on a registry of the app's own (several apps may share a process)."""

from __future__ import annotations

import gc
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]


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

        self.gc_pauses = Histogram(
            "tally_gc_pause_seconds",
            "Passes of Python's cyclic garbage collector, by generation: each stops every "
            "thread of the server (a long one shows in every request in flight).",
            ("generation",),
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )
        self._gc_observers = [self.gc_pauses.labels(str(generation)) for generation in range(3)]
        self._gc_started = 0.0

    def watch_gc(self) -> None:
        """Time the collector's passes from now on (a process-wide hook; see unwatch_gc)."""
        if self._on_gc not in gc.callbacks:
            gc.callbacks.append(self._on_gc)

    def unwatch_gc(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        # A pass runs with the GIL held, one at a time: start and stop pair up.
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self._gc_observers[info["generation"]].observe(time.perf_counter() - self._gc_started)

    def render(self) -> bytes:
        return generate_latest(self.registry)

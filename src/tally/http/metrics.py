"""Prometheus metrics, on a registry of the app's own (several apps may share a process)."""

from __future__ import annotations

import time
from typing import Any

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
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

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def middleware(self, app: ASGIApp) -> ASGIApp:
        """Count and time every routed HTTP request."""

        async def measured(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != ScopeType.HTTP:
                await app(scope, receive, send)
                return
            handler: Any = scope.get("route_handler")
            route = min(handler.paths) if handler is not None and handler.paths else "?"
            method = str(scope.get("method", "?"))
            status = 500
            started = time.perf_counter()

            async def sending(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                await send(message)

            try:
                await app(scope, receive, sending)
            finally:
                self.duration.labels(method, route).observe(time.perf_counter() - started)
                self.requests.labels(method, route, str(status)).inc()

        return measured

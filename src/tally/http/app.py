"""The HTTP API as a Litestar app: routes, limits, errors, OpenAPI, docs and metrics.

    app = create_app(Services(engine=engine, keys=keys))

Limits: request bodies over `request_body_bytes_max` are refused unread (413).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from typing import Any, cast

import anyio.to_thread
import msgspec
import structlog
from litestar import Litestar, MediaType, Request, Response, get, head
from litestar.enums import ScopeType
from litestar.exceptions import ClientException, SerializationException
from litestar.openapi.config import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.types import (
    HTTPScope,
    LifeSpanReceive,
    LifeSpanScope,
    LifeSpanSend,
    Message,
    Receive,
    Scope,
    Send,
)
from prometheus_client import Counter, Histogram

from tally import __version__, expiry
from tally.console.pages import console_router
from tally.http import docs, models, reads, writes
from tally.http.direct import STATEMENT_ROUTE, DirectWrites, statement_user
from tally.http.metrics import CONTENT_TYPE_LATEST, Metrics
from tally.http.models import Health
from tally.http.problems import EXCEPTION_HANDLERS, PROBLEM_JSON, EdgeProblem, problem
from tally.http.services import Services, services_of
from tally.http.writes import Sent

log = structlog.get_logger(__name__)

request_body_bytes_max = 64 * 1024


@get("/healthz", summary="Liveness", tags=["operations"], security=[{}])
async def healthz() -> Health:
    return Health(status="ok")


_HEALTH_LENGTH = str(len(msgspec.json.encode(Health(status="ok"))))


@head("/healthz", summary="Liveness, without a body", tags=["operations"], security=[{}])
async def healthz_head() -> Response[None]:
    """For load balancers and uptime checks that probe with HEAD (RFC 9110: GET's status and
    headers, no body); Litestar answers no HEAD for a GET route by itself."""
    return Response(None, headers={"content-length": _HEALTH_LENGTH})


@get("/metrics", include_in_schema=False)
async def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
    return Response(services_of(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)


@get("/docs", include_in_schema=False, media_type=MediaType.HTML)
async def docs_page(request: Request[Any, Any, Any]) -> str:
    return docs.render(request.app.openapi_schema.to_schema())


@get("/docs/style.css", include_in_schema=False, media_type="text/css")
async def docs_style() -> str:
    return docs.STYLE


class _Request(Request[Any, Any, Any]):
    """Litestar's request, whose JSON body nested too deeply to decode (the decoder's
    `RecursionError`) or holding a string that is not UTF-8 (`UnicodeDecodeError`) is
    malformed JSON like any other: 400 `json_malformed`, not a 500; and whose form (the
    console's sign-in) holding a part that is not UTF-8 is a 400 too."""

    async def form(self) -> Any:
        try:
            return await super().form()
        except UnicodeDecodeError as error:
            raise ClientException(f"the form is not UTF-8: {error.reason}") from error

    async def json(self) -> Any:
        try:
            return await super().json()
        except RecursionError as error:
            raise SerializationException("JSON is nested too deeply") from error
        except UnicodeDecodeError as error:
            raise SerializationException(f"the body is not UTF-8: {error.reason}") from error


class _MeasuredApp(Litestar):
    """The app, counting and timing every routed HTTP request from one wrapper around it all.

    A Litestar middleware would run per route, inside an exception layer of its own that
    Litestar adds for it, and with the metrics' label lookups it cost about a tenth of a
    write's CPU. Here each (route, method, status) resolves its labelled metrics once.
    Requests that match no route (404, 405) are not counted, as before.
    """

    def __init__(self, *, metrics: Metrics, direct: DirectWrites | None, **config: Any) -> None:
        super().__init__(**config)
        self._metrics = metrics
        self.direct = direct  # None: every write goes through Litestar
        self._routes = {} if direct is None else direct.routes
        self._measures: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    async def __call__(
        self,
        scope: Scope | LifeSpanScope,
        receive: Receive | LifeSpanReceive,
        send: Send | LifeSpanSend,
    ) -> None:
        if scope["type"] != ScopeType.HTTP:
            await super().__call__(scope, receive, send)
            return
        answer = cast(Send, send)
        status = 500
        started = time.perf_counter()

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await answer(message)

        http = cast(HTTPScope, scope)
        if http["method"] == "GET" and self.direct is not None:
            user_id = statement_user(http["path"])
            if user_id is not None:
                answered = await self.direct.statement(http, user_id, answer)
                if answered is not None:
                    self._measure(STATEMENT_ROUTE, "GET", answered, time.perf_counter() - started)
                    return
        direct = self._routes.get(http["path"]) if http["method"] == "POST" else None
        if direct is not None:
            assert self.direct is not None
            answered, receive = await self.direct.answer(
                direct, http, cast(Receive, receive), answer
            )
            if answered is not None:
                self._measure(http["path"], "POST", answered, time.perf_counter() - started)
                return
        if http["path"].startswith(_SCHEMA_SUBPATHS) and http["path"] != _SCHEMA_SUBPATHS:
            # The schema router's catch-all would answer an HTML page.
            await _NOT_FOUND(http, cast(Receive, receive), answer)
            return
        try:
            await super().__call__(scope, receive, sending)
        finally:
            handler: Any = scope.get("route_handler")
            if handler is not None:
                route = min(handler.paths) if handler.paths else "?"
                self._measure(route, http["method"], status, time.perf_counter() - started)

    def _measure(self, route: str, method: str, status: int, seconds: float) -> None:
        measures = self._measures.get((route, method, status))
        if measures is None:
            measures = (
                self._metrics.requests.labels(method, route, str(status)),
                self._metrics.duration.labels(method, route),
            )
            self._measures[(route, method, status)] = measures
        requests, duration = measures
        requests.inc()
        duration.observe(seconds)


_SCHEMA_SUBPATHS = "/openapi.json/"
_NOT_FOUND = Sent(
    404,
    {},
    msgspec.json.encode(problem(EdgeProblem.NOT_FOUND, "Not Found")),
    PROBLEM_JSON.encode(),
)


def create_app(
    services: Services, *, direct_writes: bool = True, release_expired_every_s: float = 60.0
) -> Litestar:
    """The app. `direct_writes=False` leaves every write to Litestar (tests compare both).
    Every `release_expired_every_s` seconds (0: never) it releases every expired hold still
    open (`tally.expiry.sweep_forever`)."""
    sweeping: list[asyncio.Task[None]] = []
    openapi = OpenAPIConfig(
        title="tally",
        version=__version__,
        description="Event-sourced, hash-chained wallet ledger. Amounts are decimal strings.",
        # The schema's router lives at /openapi.json itself: mounted at "/", its catch-all
        # answered every unknown path with an HTML page instead of a problem document.
        path="/openapi.json",
        render_plugins=[JsonRenderPlugin(path="/")],
        components=Components(
            security_schemes={
                "bearer": SecurityScheme(
                    type="http", scheme="bearer", description="An API key from `tally key create`"
                )
            }
        ),
        security=[{"bearer": []}],
    )

    async def warm() -> None:
        try:
            await _warm()
        except BaseException as error:  # for `tally serve` to exit with what it means
            services.startup_error = error
            raise
        if release_expired_every_s > 0:
            sweep = expiry.sweep_forever(services.engine, every_s=release_expired_every_s)
            sweeping.append(asyncio.create_task(sweep))

    async def _warm() -> None:
        # Catch every ledger's writer up with its log before the first request, not during it.
        # The state folded from the log (several objects per event) lives as long as the
        # server and holds no reference cycles: the cyclic collector is off while it is built
        # (as for `tally replay`: a tenth or so of a fold's CPU), then it is frozen out of the
        # collector's reach, whose full passes would otherwise traverse all of it (72 ms at
        # 300,000 events, docs/benchmarks.md) in the middle of some request.
        for warning in await anyio.to_thread.run_sync(services.engine.store.server_warnings):
            log.warning(warning)
        if services.loop_reads is not None:  # closed by `close`, on this loop
            await services.loop_reads.open_loop_reads()
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            ledgers = await anyio.to_thread.run_sync(services.engine.store.ledgers)
            for ledger in ledgers:
                await services.writer(ledger)
            gc.collect()
            gc.freeze()
        finally:
            if was_enabled:
                gc.enable()
        services.metrics.watch_gc()

    async def close() -> None:
        for task in sweeping:  # before the engine closes under it
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        services.metrics.unwatch_gc()
        try:
            if services.loop_reads is not None:  # on this loop, before the store closes
                await services.loop_reads.close_loop_reads()
        finally:
            services.close_readers()
            services.engine.close()
            services.engine.store.close()
            services.keys.close()

    app = _MeasuredApp(
        metrics=services.metrics,
        direct=DirectWrites(services, body_bytes_max=request_body_bytes_max)
        if direct_writes
        else None,
        route_handlers=[
            healthz,
            healthz_head,
            metrics,
            docs_page,
            docs_style,
            *writes.ROUTES,
            *reads.ROUTES,
            console_router(),  # the web console, /console (tally/console)
        ],
        openapi_config=openapi,
        exception_handlers=EXCEPTION_HANDLERS,
        request_class=_Request,
        request_max_body_size=request_body_bytes_max,
        on_startup=[warm],
        on_shutdown=[close],
        debug=False,
    )
    app.state["tally"] = services
    _forbid_unknown_fields(app)
    return app


def _forbid_unknown_fields(app: Litestar) -> None:
    """Say in the schema what the decoder does: request bodies refuse unknown fields."""
    strict = {cls.__name__ for cls in models.strict_request_types()}
    for name, component in (app.openapi_schema.components.schemas or {}).items():
        if name in strict:
            component.additional_properties = False

"""The HTTP API as a Litestar app: routes, limits, errors, OpenAPI, docs and metrics.

    app = create_app(Services(engine=engine, keys=keys))

Limits: request bodies over `request_body_bytes_max` are refused unread (413).
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from litestar import Litestar, MediaType, Request, Response, get
from litestar.openapi.config import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme

from tally import __version__
from tally.http import docs, models, reads, writes
from tally.http.metrics import CONTENT_TYPE_LATEST
from tally.http.models import Health
from tally.http.problems import EXCEPTION_HANDLERS
from tally.http.services import Services, services_of

request_body_bytes_max = 64 * 1024


@get("/healthz", summary="Liveness", tags=["operations"], security=[{}])
async def healthz() -> Health:
    return Health(status="ok")


@get("/metrics", include_in_schema=False)
async def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
    return Response(services_of(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)


@get("/docs", include_in_schema=False, media_type=MediaType.HTML)
async def docs_page(request: Request[Any, Any, Any]) -> str:
    return docs.render(request.app.openapi_schema.to_schema())


@get("/docs/style.css", include_in_schema=False, media_type="text/css")
async def docs_style() -> str:
    return docs.STYLE


def create_app(services: Services) -> Litestar:
    openapi = OpenAPIConfig(
        title="tally",
        version=__version__,
        description="Event-sourced, hash-chained wallet ledger. Amounts are decimal strings.",
        path="/",
        render_plugins=[JsonRenderPlugin(path="/openapi.json")],
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
        # Catch every ledger's writer up with its log before the first request, not during it.
        ledgers = await anyio.to_thread.run_sync(services.engine.store.ledgers)
        for ledger in ledgers:
            await services.writer(ledger)

    def close() -> None:
        services.engine.close()
        services.engine.store.close()
        services.keys.close()

    app = Litestar(
        route_handlers=[healthz, metrics, docs_page, docs_style, *writes.ROUTES, *reads.ROUTES],
        openapi_config=openapi,
        exception_handlers=EXCEPTION_HANDLERS,
        request_max_body_size=request_body_bytes_max,
        middleware=[services.metrics.middleware],
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

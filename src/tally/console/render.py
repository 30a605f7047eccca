"""Templates and files of the console: Jinja2 with autoescape always on, and the static
files (htmx, the style sheet) read once from the package."""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from litestar import MediaType, Response

# What a console page may load or send to: itself only. No inline script or style (htmx's
# own indicator style is switched off in base.html), no frames, no plugins.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "object-src 'none'"
)

_ENVIRONMENT = Environment(
    loader=PackageLoader("tally.console", "templates"),
    autoescape=True,  # every template, whatever its name: ids and metadata are outside data
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)

# Pages show one ledger's money: no cache may keep them.
_PAGE_HEADERS = {"Cache-Control": "no-store"}


def page(template: str, *, status_code: int = 200, **context: Any) -> Response[str]:
    """A rendered page (or fragment) as an HTML response."""
    html = _ENVIRONMENT.get_template(template).render(**context)
    return Response(html, status_code=status_code, media_type=MediaType.HTML, headers=_PAGE_HEADERS)


def _static(name: str) -> bytes:
    return (files("tally.console") / "static" / name).read_bytes()


STATIC_FILES = {
    "htmx.min.js": (_static("htmx.min.js"), "text/javascript; charset=utf-8"),
    "htmx.LICENSE": (_static("htmx.LICENSE"), "text/plain; charset=utf-8"),
    "console.css": (_static("console.css"), "text/css; charset=utf-8"),
}

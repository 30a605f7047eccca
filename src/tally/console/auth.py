"""Who may see the console: the bearer of an API key with the `read` scope, kept in a cookie.

The key is checked exactly as the API checks a bearer key (`Services.authenticate`, with its
cache), on every request: a revoked key stops working within the cache's time, as it does
for the API. The cookie is HttpOnly (no script reads it), SameSite=Strict (no other site's
page sends it) and scoped to `/console`, Secure when the request came over https: its own
scheme, or the `X-Forwarded-Proto: https` of a proxy that ended TLS (`tally serve` parses no
proxy headers; trusting this one costs nothing, as a Secure flag can only withhold a cookie).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from litestar import Request, Response
from litestar.datastructures import Cookie
from litestar.response import Redirect

from tally.api_keys import ApiKey, Scope, secret_length_max
from tally.http.services import services_of

COOKIE = "tally_console_key"
PATH = "/console"
LOGIN = "/console/login"


async def key_for(request: Request[Any, Any, Any], secret: str) -> ApiKey | None:
    """The live key `secret` is, or None (empty, too long, unknown or revoked)."""
    secret = secret.strip()
    if not secret or len(secret) > secret_length_max:
        return None
    return await services_of(request).authenticate(secret)


def read_only(key: ApiKey) -> bool:
    """Whether `key` may sign in to the console: it reads and can do nothing else. The
    cookie holds the key's secret, which a browser keeps; a key that could write or adjust
    would leave a credential that moves money wherever the browser's cookies go."""
    return key.scopes == frozenset({Scope.READ})


async def signed_in(request: Request[Any, Any, Any]) -> Response[Any] | None:
    """A before-request hook: the page's key (kept in the request's state), or, when the
    cookie holds no live read-only key, a 303 to the login page (for htmx's fragment
    requests a 401 telling htmx to go there: a redirect would put the login form inside
    the page's table)."""
    key = await key_for(request, request.cookies.get(COOKIE, ""))
    if key is None or not read_only(key):
        if request.headers.get("hx-request") == "true":
            return Response(b"", status_code=401, headers={"HX-Redirect": LOGIN})
        return Redirect(LOGIN, status_code=303)
    request.scope["state"]["tally_console_key"] = key
    return None


def key_of(request: Request[Any, Any, Any]) -> ApiKey:
    key: ApiKey = request.scope["state"]["tally_console_key"]
    return key


def same_site(request: Request[Any, Any, Any]) -> bool:
    """False for a form posted from another site's page (its `Origin` names another host):
    nobody may sign a browser in, or out, from elsewhere."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc == request.headers.get("host", "")


def _over_https(request: Request[Any, Any, Any]) -> bool:
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return request.url.scheme == "https" or forwarded == "https"


def key_cookie(request: Request[Any, Any, Any], secret: str | None) -> Cookie:
    """The cookie holding `secret`, or (None) the one that clears it."""
    return Cookie(
        key=COOKIE,
        value=secret or "",
        path=PATH,
        httponly=True,
        samesite="strict",
        secure=_over_https(request),
        max_age=None if secret is not None else 0,
    )

"""Signing in to the console: pages need a live key with the `read` scope in an HttpOnly,
SameSite=Strict cookie scoped to /console; a bad key, a key without `read` and a form
posted from another site are refused and set nothing; a key sees its own ledger only;
signing out (or revoking the key) sends the browser back to the login form."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
import pytest

from tally.api_keys import Scope

if TYPE_CHECKING:
    from console_fixtures import Console

pytest_plugins = ["console_fixtures"]


def _pages(console: Console) -> list[str]:
    story = console.story
    return [
        "/console/",
        "/console/search?kind=user&id=ada",
        f"/console/users/{story.user_id}",
        f"/console/users/{story.paged_user_id}/statement?currency=USD&cursor=MS4w",
        f"/console/orders/{story.order_id}",
        f"/console/holds/{story.captured_hold_id}",
        f"/console/transactions/{story.expense_id}",
        "/console/events",
        "/console/events/rows?after_seq=0",
    ]


@pytest.mark.parametrize("cookie", [None, "", "tally_key_0000_nope", "x" * 500])
def test_every_page_sends_a_visitor_without_a_live_key_to_sign_in(
    console: Console, cookie: str | None
) -> None:
    cookies = {} if cookie is None else {"tally_console_key": cookie}
    with httpx.Client(base_url=console.url, cookies=cookies) as http:
        for path in _pages(console):
            answer = http.get(path)
            assert (answer.status_code, answer.headers.get("location")) == (
                303,
                "/console/login",
            ), path
            assert "ada" not in answer.text


def test_the_login_form_and_the_static_files_need_no_key(console: Console) -> None:
    with console.browser(None) as http:
        form = http.get("/console/login")
        assert form.status_code == 200
        assert '<form method="post" action="/console/login">' in form.text
        assert 'name="key"' in form.text
        assert http.get("/console/static/htmx.min.js").status_code == 200


def test_signing_in_sets_a_strict_http_only_cookie_for_the_console_only(console: Console) -> None:
    with console.browser(None) as http:
        signed = http.post("/console/login", data={"key": console.keys["read"]})
        assert (signed.status_code, signed.headers["location"]) == (303, "/console/")
        cookie = signed.headers["set-cookie"]
        attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
        assert cookie.startswith(f"tally_console_key={console.keys['read']};")
        assert {"httponly", "samesite", "path"} <= attributes
        assert "Path=/console" in cookie
        assert "samesite=strict" in cookie.lower()
        assert "secure" not in attributes  # plain http: a Secure cookie would never come back
        assert http.get("/console/").status_code == 200


def test_the_cookie_is_secure_when_the_request_came_over_https(console: Console) -> None:
    # behind a proxy that ended TLS (tally serve itself speaks plain http)
    with console.browser(None) as http:
        signed = http.post(
            "/console/login",
            data={"key": console.keys["read"]},
            headers={"X-Forwarded-Proto": "https"},
        )
        assert signed.status_code == 303
        assert "Secure" in signed.headers["set-cookie"]


@pytest.mark.parametrize("secret", ["", "tally_key_0000_nope", "x" * 500])
def test_a_bad_key_shows_the_form_again_with_401_and_sets_nothing(
    console: Console, secret: str
) -> None:
    with console.browser(None) as http:
        refused = http.post("/console/login", data={"key": secret})
        assert refused.status_code == 401
        assert "unknown or revoked API key" in refused.text
        assert 'name="key"' in refused.text
        assert "set-cookie" not in refused.headers
        assert http.get("/console/").status_code == 303


@pytest.mark.parametrize("name", ["write", "admin", "read_write"])
def test_only_a_read_only_key_signs_in(console: Console, name: str) -> None:
    """The cookie holds the key's secret: a key that can move money never goes there."""
    with console.browser(None) as http:
        refused = http.post("/console/login", data={"key": console.keys[name]})
        assert refused.status_code == 403
        assert "the &#39;read&#39; scope and no other" in refused.text
        assert "set-cookie" not in refused.headers
    # nor does such a key planted in the cookie open a page
    cookies = {"tally_console_key": console.keys[name]}
    with httpx.Client(base_url=console.url, cookies=cookies) as http:
        assert http.get("/console/").status_code == 303


def test_a_fragment_asked_for_without_a_live_key_tells_htmx_to_sign_in(
    console: Console,
) -> None:
    with httpx.Client(base_url=console.url) as http:
        fragment = http.get("/console/events/rows?after_seq=0", headers={"HX-Request": "true"})
        assert fragment.status_code == 401
        assert fragment.headers["HX-Redirect"] == "/console/login"
        assert fragment.text == ""


def test_a_form_that_is_not_utf8_is_refused_not_a_500(console: Console) -> None:
    boundary = "b0undary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="key"\r\n\r\n'
            f"{console.keys['read']}\r\n--{boundary}\r\n"
            f'Content-Disposition: form-data; name="x"\r\n\r\n'
        ).encode()
        + b"\xff\r\n"
        + f"--{boundary}--\r\n".encode()
    )
    with httpx.Client(base_url=console.url) as http:
        refused = http.post(
            "/console/login",
            content=body,
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        assert refused.status_code == 400
        assert "set-cookie" not in refused.headers


def test_a_form_posted_from_another_site_signs_nobody_in(console: Console) -> None:
    with console.browser(None) as http:
        refused = http.post(
            "/console/login",
            data={"key": console.keys["read"]},
            headers={"Origin": "https://evil.example"},
        )
        assert refused.status_code == 403
        assert "set-cookie" not in refused.headers
        same = http.post(
            "/console/login", data={"key": console.keys["read"]}, headers={"Origin": console.url}
        )
        assert same.status_code == 303


def test_a_key_sees_its_own_ledger_only(console: Console) -> None:
    story = console.story
    with console.browser("other_read") as http:
        overview = http.get("/console/")
        assert overview.status_code == 200
        assert "Ledger other" in overview.text
        assert '<dd id="head-seq">0</dd>' in overview.text
        for path in _pages(console)[2:7]:
            assert http.get(path).status_code == 404, path
        assert story.expense_id not in http.get("/console/events").text
    with console.browser("read") as http:
        assert "Ledger shop" in http.get("/console/").text
        assert story.expense_id in http.get("/console/events").text


def test_signing_out_clears_the_cookie(console: Console) -> None:
    with console.browser("read") as http:
        assert http.get("/console/").status_code == 200
        out = http.post("/console/logout")
        assert (out.status_code, out.headers["location"]) == (303, "/console/login")
        assert 'tally_console_key="";' in out.headers["set-cookie"] or (
            "tally_console_key=;" in out.headers["set-cookie"]
        )
        assert "Max-Age=0" in out.headers["set-cookie"]
        assert http.get("/console/").status_code == 303


def test_a_revoked_key_no_longer_opens_a_page(console: Console) -> None:
    key_id = console.services.keys.create("shop", frozenset({Scope.READ}))
    with httpx.Client(base_url=console.url) as http:
        assert http.post("/console/login", data={"key": key_id.secret}).status_code == 303
        assert http.get("/console/").status_code == 200
        console.services.keys.revoke(key_id.key.key_id)  # the fixture caches no key
        assert http.get("/console/").status_code == 303

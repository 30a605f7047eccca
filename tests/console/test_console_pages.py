"""The console's pages show what the API's GET routes show, as HTML: the figures the views
produce (decimal strings), links between a user, a transaction, an order and a hold, a
statement and the log paged by htmx fragments, 404 pages for ids not in the key's ledger;
every outside value escaped, the Content-Security-Policy on every page, htmx served by
tally itself and no URL of another site anywhere."""

from __future__ import annotations

import hashlib
import re
from importlib.resources import files
from typing import TYPE_CHECKING

import httpx
import pytest

if TYPE_CHECKING:
    from console_fixtures import Console

pytest_plugins = ["console_fixtures"]

_ROW = re.compile(r'<tr class="line">(.*?)</tr>', re.S)
_CELL = re.compile(r"<td[^>]*>(.*?)</td>", re.S)
_TAG = re.compile(r"<[^>]+>")
_CURSOR = re.compile(r"cursor=([A-Za-z0-9_-]+)")


def _lines(html: str) -> list[list[str]]:
    """The statement lines on a page or fragment: each one's cells as text."""
    return [
        [_TAG.sub("", cell).strip() for cell in _CELL.findall(row)] for row in _ROW.findall(html)
    ]


def _get(http: httpx.Client, path: str, status: int = 200) -> str:
    answer = http.get(path)
    assert answer.status_code == status, (path, answer.status_code, answer.text[:500])
    return answer.text


def test_the_overview_shows_the_ledger_and_its_head(console: Console) -> None:
    head = console.services.engine.store.head("shop")
    assert head is not None
    with console.browser() as http:
        page = _get(http, "/console/")
    assert "<h1>Ledger shop</h1>" in page
    assert f'<dd id="head-seq">{head.seq}</dd>' in page
    assert f"<code>{bytes(head.hash).hex()}</code>" in page


@pytest.mark.parametrize(
    ("kind", "attribute", "plural"),
    [
        ("user", "user_id", "users"),
        ("order", "order_id", "orders"),
        ("hold", "captured_hold_id", "holds"),
        ("transaction", "refund_id", "transactions"),
    ],
)
def test_the_search_goes_to_the_page_of_what_it_finds(
    console: Console, kind: str, attribute: str, plural: str
) -> None:
    wanted = getattr(console.story, attribute)
    with console.browser() as http:
        found = http.get("/console/search", params={"kind": kind, "id": f" {wanted} "})
        assert (found.status_code, found.headers["location"]) == (
            303,
            f"/console/{plural}/{wanted}",
        )
        assert http.get(found.headers["location"]).status_code == 200
        missing = http.get("/console/search", params={"kind": kind, "id": "nobody-here"})
        assert missing.status_code == 404
        assert f"no {kind} &#39;nobody-here&#39; in this ledger" in missing.text
        other = "user" if kind != "user" else "order"  # the id, looked for as something else
        assert http.get("/console/search", params={"kind": other, "id": wanted}).status_code == 404


def test_the_user_page_shows_balances_and_the_statement_with_its_links(console: Console) -> None:
    story = console.story
    with console.browser() as http:
        page = _get(http, f"/console/users/{story.user_id}")
    assert '<td class="amount balance">49.00</td>' in page
    lines = _lines(page)
    # seq, time, event, amount, balance after, links, metadata, transaction: oldest first
    assert [(line[2], line[3], line[4]) for line in lines] == [
        ("recharge", "100.00", "100.00"),
        ("expense", "-30.00", "70.00"),
        ("expense", "-20.00", "50.00"),
        ("refund", "5.00", "55.00"),
        ("hold", "-10.00", "45.00"),
        ("capture", "10.00", "55.00"),
        ("capture", "-6.00", "49.00"),
        ("hold", "-4.00", "45.00"),
        ("release", "4.00", "49.00"),
    ]
    assert [line[7] for line in lines[:4]] == [
        story.recharge_id,
        story.expense_id,
        story.expense_id,
        story.refund_id,
    ]
    assert f'<a href="/console/transactions/{story.refund_id}">' in page
    assert f'<a href="/console/orders/{story.order_id}">' in page
    assert f'<a href="/console/holds/{story.captured_hold_id}">' in page
    assert 'class="more"' not in page  # one page holds all nine lines
    holds = re.findall(r'<tr class="hold">(.*?)</tr>', page, re.S)
    assert [[_TAG.sub("", cell).strip() for cell in _CELL.findall(row)] for row in holds] == [
        [story.captured_hold_id, "captured", "10.00 EUR", "6.00", "4.00", "never"],
        [story.released_hold_id, "released", "4.00 EUR", "0.00", "4.00", "never"],
    ]


def test_the_statement_is_paged_by_fragments_as_the_api_pages_it(console: Console) -> None:
    user = console.story.paged_user_id
    with console.browser() as http:
        page = _get(http, f"/console/users/{user}")
        first = _lines(page)
        assert [line[4] for line in first] == [f"{n}.00" for n in range(1, 51)]
        (cursor,) = _CURSOR.findall(page)
        assert f'hx-get="/console/users/{user}/statement?currency=USD&amp;cursor={cursor}"' in page
        with console.api() as api:
            by_api = api.get(f"/v1/users/{user}/statement", params={"currency": "USD", "limit": 50})
        assert by_api.json()["next_cursor"] == cursor
        fragment = _get(http, f"/console/users/{user}/statement?currency=USD&cursor={cursor}")
    assert "<html" not in fragment  # rows only, to append in the table
    rest = _lines(fragment)
    assert [line[4] for line in rest] == [f"{n}.00" for n in range(51, 61)]
    assert [line[3] for line in rest] == ["1.00"] * 10
    assert 'class="more"' not in fragment  # the last page


def test_a_bad_statement_fragment_is_refused(console: Console) -> None:
    user = console.story.paged_user_id
    with console.browser() as http:
        bad = http.get(f"/console/users/{user}/statement?currency=USD&cursor=@@")
        assert bad.status_code == 400
        unknown = http.get(f"/console/users/{user}/statement?currency=XXX&cursor=MS4w")
        assert unknown.status_code == 404
        nobody = http.get("/console/users/nobody/statement?currency=USD&cursor=MS4w")
        assert nobody.status_code == 404


def test_the_order_page_shows_what_it_was_paid_and_refunded(console: Console) -> None:
    story = console.story
    with console.browser() as http:
        page = _get(http, f"/console/orders/{story.order_id}")
        second = _get(http, f"/console/orders/{story.second_order_id}")
    assert '<dd class="amount" id="paid">30.00 EUR</dd>' in page
    assert '<dd class="amount" id="refunded">5.00 EUR</dd>' in page
    assert '<dd class="amount" id="refundable">25.00 EUR</dd>' in page
    assert f'<a href="/console/users/{story.user_id}">' in page
    assert page.count(f'<a href="/console/transactions/{story.expense_id}">') == 2  # paid by
    assert f'<a href="/console/transactions/{story.refund_id}">' in page
    assert "<dd>acme</dd>" in second
    assert '<dd class="amount" id="refundable">20.00 EUR</dd>' in second


def test_the_hold_pages_show_a_capture_and_a_release(console: Console) -> None:
    story = console.story
    with console.browser() as http:
        captured = _get(http, f"/console/holds/{story.captured_hold_id}")
        released = _get(http, f"/console/holds/{story.released_hold_id}")
    assert '<dd id="status">captured</dd>' in captured
    assert '<dd class="amount" id="amount">10.00 EUR</dd>' in captured
    assert '<dd class="amount" id="captured">6.00 EUR</dd>' in captured
    assert '<dd class="amount" id="released">4.00 EUR</dd>' in captured
    assert f'<a href="/console/orders/{story.held_order_id}">' in captured
    assert f'<a href="/console/transactions/{story.capture_id}">' in captured
    assert '<dd id="status">released</dd>' in released
    assert '<dd class="amount" id="captured">0.00 EUR</dd>' in released
    assert '<dd class="amount" id="released">4.00 EUR</dd>' in released


def test_the_transaction_pages_link_orders_holds_and_what_a_refund_reverses(
    console: Console,
) -> None:
    story = console.story
    with console.browser() as http:
        expense = _get(http, f"/console/transactions/{story.expense_id}")
        refund = _get(http, f"/console/transactions/{story.refund_id}")
        capture = _get(http, f"/console/transactions/{story.capture_id}")
    assert '<dd id="event-type">expense</dd>' in expense
    assert '<dd class="amount" id="amount">-50.00 EUR</dd>' in expense
    assert '<dd class="amount" id="balance-after">50.00 EUR</dd>' in expense
    assert f'<a href="/console/orders/{story.order_id}">' in expense
    assert f'<a href="/console/orders/{story.second_order_id}">' in expense
    assert '<dd class="amount" id="amount">5.00 EUR</dd>' in refund
    assert f'refund of <a href="/console/transactions/{story.expense_id}">' in refund
    assert f'<dd><a href="/console/holds/{story.captured_hold_id}">' in capture
    assert '<dd class="amount" id="balance-after">49.00 EUR</dd>' in capture


def test_a_transfer_page_lists_every_posting_and_the_receiver_sees_the_line(
    console: Console,
) -> None:
    with console.browser() as http:
        page = _get(http, f"/console/transactions/{console.story.transfer_id}")
        receiver = _get(http, "/console/users/ben?currency=USD")
    assert '<dd id="event-type">transfer</dd>' in page
    assert '<dd class="amount" id="amount">-2.00 USD</dd>' in page
    postings = page.split('<table id="postings">')[1].split("</table>")[0]
    rows = [
        [_TAG.sub("", cell).strip() for cell in _CELL.findall(row)]
        for row in re.findall(r"<tr>(.*?)</tr>", postings, re.S)
        if "<td" in row
    ]
    assert rows == [
        ["cy (wallet)", "-2.00", "8.00"],
        ["ben (wallet)", "1.50", "1.50"],
        ["revenue:platform:USD", "0.50", "0.50"],
    ]
    assert '<a href="/console/users/ben">' in postings
    assert any("transfer" in line and "1.50" in line for line in _lines(receiver))


def test_the_finance_report_page_shows_the_api_s_report(console: Console) -> None:
    with console.browser() as http:
        page = _get(http, "/console/report")
        empty = _get(http, "/console/report?from=9999-01-01T00:00:00Z")
        bad = _get(http, "/console/report?from=yesterday", status=400)
        long = _get(http, "/console/report?to=" + "9" * 65, status=400)
        backwards = _get(
            http, "/console/report?from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z", 400
        )
    with console.api() as api:
        report = api.get("/v1/reports/finance").json()
    eur = next(part for part in report["currencies"] if part["currency"] == "EUR")
    section = page.split('<section class="currency" id="currency-EUR">')[1].split("</section>")[0]
    rows = [
        [_TAG.sub("", cell).strip() for cell in _CELL.findall(row)]
        for row in re.findall(r'<tr class="account">(.*?)</tr>', section, re.S)
    ]
    assert rows == [
        [
            line["kind"],
            line["owner"] or "(all)",
            str(line["accounts"]),
            line["opening"],
            line["debits"],
            line["credits"],
            line["closing"],
        ]
        for line in eur["accounts"]
    ]
    # ada: 100 in, 50 paid, 5 back, 10 held (back), 6 captured, 4 held (back): 49 left
    assert ["wallet", "(all)", "1", "0.00", "70.00", "119.00", "49.00"] in rows
    assert 'trial balance <span class="amount">0.00</span> (balanced)' in section
    assert "No money has moved" not in empty
    assert '<tr class="movement">' not in empty  # an empty period moved nothing
    assert "from/to:" in bad
    assert "from/to: at most 64 characters" in long
    assert "from must come before to" in backwards
    assert '<a href="/console/report">report</a>' in page


def test_the_log_is_paged_by_fragments(console: Console) -> None:
    head = console.services.engine.store.head("shop")
    assert head is not None
    assert head.seq > 50
    with console.browser() as http:
        page = _get(http, "/console/events")
        assert page.count('<tr class="event">') == 50
        assert 'hx-get="/console/events/rows?after_seq=50"' in page
        rest = _get(http, "/console/events/rows?after_seq=50")
        assert http.get("/console/events/rows?after_seq=-1").status_code == 400
    assert "<html" not in rest
    assert rest.count('<tr class="event">') == head.seq - 50
    assert f"<td>{head.seq}</td>" in rest
    assert bytes(head.hash).hex() in rest


@pytest.mark.parametrize("kind", ["users", "orders", "holds", "transactions"])
@pytest.mark.parametrize("the_id", ["nobody-here", "no%20such", "%3Cscript%3E", "-dash", "x" * 300])
def test_ids_not_in_the_ledger_or_not_identifiers_are_404_pages(
    console: Console, kind: str, the_id: str
) -> None:
    with console.browser() as http:
        answer = http.get(f"/console/{kind}/{the_id}")
    assert answer.status_code == 404
    assert "<h1>Not found</h1>" in answer.text
    assert "<script>" not in answer.text
    assert answer.headers["content-security-policy"].startswith("default-src 'self'")


def test_metadata_and_reasons_holding_markup_are_shown_escaped(console: Console) -> None:
    story = console.story
    with console.browser() as http:
        pages = {
            "user": _get(http, f"/console/users/{story.user_id}"),
            "recharge": _get(http, f"/console/transactions/{story.recharge_id}"),
            "log": _get(http, "/console/events"),  # the refund's reason, in its event
        }
    for name, page in pages.items():
        assert "<script>alert" not in page, name
        assert page.count("<script") == 1, name  # htmx's own tag only
    assert "note=&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in pages["user"]
    assert "note=&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in pages["recharge"]
    assert "&#34;reason&#34;:&#34;&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in pages["log"]


def _every_page(console: Console) -> list[str]:
    story = console.story
    return [
        "/console/login",
        "/console/",
        f"/console/users/{story.user_id}",
        f"/console/users/{story.paged_user_id}",
        f"/console/orders/{story.order_id}",
        f"/console/holds/{story.captured_hold_id}",
        f"/console/transactions/{story.refund_id}",
        "/console/events",
        "/console/users/nobody",
    ]


def test_every_page_carries_the_content_security_policy(console: Console) -> None:
    with console.browser() as http:
        for path in _every_page(console):
            answer = http.get(path)
            policy = answer.headers["content-security-policy"]
            directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
            assert directives["default-src"] == "'self'", path
            assert directives["script-src"] == "'self'", path
            assert directives["style-src"] == "'self'", path
            assert "unsafe" not in policy
            assert answer.headers["x-content-type-options"] == "nosniff"
            assert answer.headers["cache-control"] == "no-store"


_URL = re.compile(r'(?:src|href|action|hx-get)="([^"]*)"')


def test_htmx_is_served_by_tally_and_no_page_names_another_site(console: Console) -> None:
    vendored = (files("tally.console") / "static" / "htmx.min.js").read_bytes()
    with console.browser() as http:
        htmx = http.get("/console/static/htmx.min.js")
        assert htmx.status_code == 200
        assert htmx.headers["content-type"].startswith("text/javascript")
        assert hashlib.sha256(htmx.content).digest() == hashlib.sha256(vendored).digest()
        assert b"htmx" in htmx.content[:2000]
        license_text = http.get("/console/static/htmx.LICENSE")
        assert license_text.status_code == 200
        assert "Zero-Clause BSD" in license_text.text
        assert http.get("/console/static/console.css").status_code == 200
        assert http.get("/console/static/nothing.js").status_code == 404
        for path in _every_page(console):
            page = http.get(path).text
            assert '<script src="/console/static/htmx.min.js"></script>' in page, path
            assert "http://" not in page, path
            assert "https://" not in page, path
            for url in _URL.findall(page):
                assert url.startswith("/console/"), (path, url)

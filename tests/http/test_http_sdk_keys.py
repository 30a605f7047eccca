"""The SDK's keys travel as HTTP headers: one that cannot is refused at once, before anything
is sent and without a retry, by both clients alike."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tally.client import AsyncClient, Client, InvalidArgument, TallyError, TransportError

pytest_plugins = ["http_fixtures"]

_PRINTABLE_ASCII = "".join(map(chr, range(0x21, 0x7F)))  # '!' to '~'; ' ' only inside

# (argument, value): values httpx cannot send as they are. Over HTTP/1.1 it refuses a
# control character or a space at either end only as it writes the request; a non-ASCII
# character with UnicodeEncodeError (and the server would read UTF-8 bytes as latin-1).
_UNSENDABLE = [
    ("idempotency_key", "line\nbreak"),
    ("idempotency_key", "carriage\rreturn"),
    ("idempotency_key", "nul\x00"),
    ("idempotency_key", "tab\tinside"),
    ("idempotency_key", "del\x7f"),
    ("idempotency_key", " padded"),
    ("idempotency_key", "padded "),
    ("idempotency_key", ""),
    ("idempotency_key", "café"),
    ("idempotency_key", "€uro"),
    ("idempotency_key", "nel\x85"),
    ("idempotency_key", "no-break\xa0space"),
    ("api_key", "tally_key_1_secret\n"),
    ("api_key", "tally_key_1 secret "),
    ("api_key", ""),
    ("api_key", "tally_key_1_sécret"),
]
_IDS = [
    "key-newline",
    "key-carriage-return",
    "key-nul",
    "key-tab",
    "key-del",
    "key-leading-space",
    "key-trailing-space",
    "key-empty",
    "key-latin-1",
    "key-euro",
    "key-nel",
    "key-no-break-space",
    "api-key-newline",
    "api-key-trailing-space",
    "api-key-empty",
    "api-key-non-ascii",
]


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A port whose connections the kernel accepts and nobody reads or answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        sock.setblocking(False)
        yield sock


def _connections_made(sock: socket.socket) -> int:
    made = 0
    while True:
        try:
            connection, _ = sock.accept()
        except BlockingIOError:
            return made
        connection.close()
        made += 1


def _write(kind: str, url: str, *, api_key: str, idempotency_key: str, batch: bool = False) -> None:
    """One write, with the blocking or the asyncio client over a real transport."""
    if kind == "sync":
        with Client(url, api_key, timeout_s=0.5) as tally:
            if batch:
                tally.batch([], idempotency_key=idempotency_key)
            else:
                tally.recharge(
                    "alice", "1.00", "USD", gateway="paypal", idempotency_key=idempotency_key
                )
        return

    async def run() -> None:
        async with AsyncClient(url, api_key, timeout_s=0.5) as tally:
            if batch:
                await tally.batch([], idempotency_key=idempotency_key)
            else:
                await tally.recharge(
                    "alice", "1.00", "USD", gateway="paypal", idempotency_key=idempotency_key
                )

    asyncio.run(run())


@pytest.mark.parametrize("batch", [False, True], ids=["recharge", "batch"])
@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize(("argument", "value"), _UNSENDABLE, ids=_IDS)
def test_a_key_no_header_can_carry_is_refused_before_anything_is_sent(
    listener: socket.socket, kind: str, batch: bool, argument: str, value: str
) -> None:
    """Before: httpx raised as it wrote the request, the SDK took that for the network,
    retried it three times and raised TransportError (or let UnicodeEncodeError out)."""
    url = "http://{}:{}".format(*listener.getsockname())
    keys = {"api_key": "tally_key_1_secret", "idempotency_key": "fine", argument: value}
    with pytest.raises(InvalidArgument) as caught:
        _write(
            kind, url, api_key=keys["api_key"], idempotency_key=keys["idempotency_key"], batch=batch
        )
    refused = caught.value
    assert isinstance(refused, ValueError)
    assert isinstance(refused, TallyError)
    assert refused.argument == argument
    assert str(refused).startswith(f"{argument} ")
    if argument == "idempotency_key":
        assert repr(value) in str(refused)
    elif value:
        assert value not in str(refused)  # an API key's secret is never shown
    assert _connections_made(listener) == 0


def test_a_long_refused_key_is_shown_cut() -> None:
    key = "k" * 1000 + "\n"
    with Client("http://tally.test", "s") as tally, pytest.raises(InvalidArgument) as caught:
        tally.recharge("alice", "1.00", "USD", gateway="paypal", idempotency_key=key)
    assert f"{'k' * 64!r}..." in str(caught.value)
    assert len(str(caught.value)) < 300


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_every_printable_ascii_key_is_sent_as_it_is(kind: str) -> None:
    key = f"{_PRINTABLE_ASCII} inner space"
    api_key = f"tally_{_PRINTABLE_ASCII}"
    seen: list[tuple[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.headers["Idempotency-Key"], request.headers["Authorization"]))
        return httpx.Response(200, json={"results": []})

    if kind == "sync":
        with Client("http://tally.test", api_key, transport=httpx.MockTransport(handler)) as tally:
            tally.batch([], idempotency_key=key)
    else:

        async def run() -> None:
            async with AsyncClient(
                "http://tally.test", api_key, transport=httpx.MockTransport(handler)
            ) as tally:
                await tally.batch([], idempotency_key=key)

        asyncio.run(run())
    assert seen == [(key, f"Bearer {api_key}")]


def test_the_server_takes_every_key_the_sdk_sends(live: Any, unique: Callable[[str], str]) -> None:
    user = unique("u")
    key = f"{unique('k')} {_PRINTABLE_ASCII}"
    with Client(live.url, live.keys["write"]) as tally:
        made = tally.recharge(user, "1.00", "USD", gateway="paypal", idempotency_key=key)
        again = tally.recharge(user, "1.00", "USD", gateway="paypal", idempotency_key=key)
    assert made.idempotency_key == key
    assert again.replayed
    assert again.transaction_id == made.transaction_id


@pytest.mark.parametrize(
    "base_url", ["ftp://tally.test", "127.0.0.1:8000", "localhost:8000", "http://", "http:/x"]
)
def test_a_base_url_that_is_not_http_is_refused_when_the_client_is_made(base_url: str) -> None:
    """httpx's UnsupportedProtocol came only at the first request, which the retries took for
    a network failure: four attempts, then TransportError."""
    with pytest.raises(InvalidArgument) as sync_refused:
        Client(base_url, "secret")
    with pytest.raises(InvalidArgument) as async_refused:
        AsyncClient(base_url, "secret")
    assert sync_refused.value.argument == async_refused.value.argument == "base_url"


@pytest.mark.parametrize("raised", [httpx.LocalProtocolError, httpx.UnsupportedProtocol])
def test_a_request_httpx_cannot_form_is_not_retried(raised: type[httpx.TransportError]) -> None:
    attempts: list[httpx.Request] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        attempts.append(request)
        raise raised("cannot send this")

    async def refuse_async(request: httpx.Request) -> httpx.Response:
        return refuse(request)

    with (
        Client("http://tally.test", "s", transport=httpx.MockTransport(refuse)) as tally,
        pytest.raises(TransportError),
    ):
        tally.balances("alice")
    assert len(attempts) == 1

    async def run() -> None:
        transport = httpx.MockTransport(refuse_async)
        async with AsyncClient("http://tally.test", "s", transport=transport) as tally:
            await tally.balances("alice")

    with pytest.raises(TransportError):
        asyncio.run(run())
    assert len(attempts) == 2


def test_a_network_failure_is_still_retried() -> None:
    attempts: list[httpx.Request] = []

    def fail(request: httpx.Request) -> httpx.Response:
        attempts.append(request)
        raise httpx.ConnectError("refused")

    transport = httpx.MockTransport(fail)
    with (
        Client("http://tally.test", "s", transport=transport, retries_max=2) as tally,
        pytest.raises(TransportError),
    ):
        tally.balances("alice")
    assert len(attempts) == 3

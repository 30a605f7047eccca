"""`tally serve`'s HTTP protocol (tally.http.wire) writes a response's head and body in one
send, and never reorders, loses or keeps back a byte.

The transport is checked alone over a recording transport; then uvicorn serves an ASGI app
with every shape of answer (a body, no body, HEAD, a stream of chunks, a body larger than the
socket's buffers, pipelined requests, `Connection: close`) through the protocol, and the
socket's writes are counted."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import httpx
import pytest
import uvicorn

from tally.http.wire import OneWriteHttpProtocol, OneWriteTransport

pytest_plugins = ["http_fixtures"]

BIG = 5 * 1024 * 1024  # larger than the socket's buffers: sent over many turns of the loop


class _Recording(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: Any) -> None:
        self.sent.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_write_buffer_size(self) -> int:
        return 0


async def _next_turn() -> None:
    await asyncio.sleep(0)


def test_two_writes_in_a_row_leave_as_one_and_a_lone_one_on_the_next_turn() -> None:
    async def scenario() -> None:
        inner = _Recording()
        transport = OneWriteTransport(inner, asyncio.get_running_loop())
        transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        assert inner.sent == []
        assert transport.get_write_buffer_size() == 38
        transport.write(b"ok")
        assert inner.sent == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"]
        transport.write(b"HTTP/1.1 200 OK\r\n\r\n")  # say, a HEAD answer: nothing follows
        assert len(inner.sent) == 1
        await _next_turn()
        assert inner.sent[1:] == [b"HTTP/1.1 200 OK\r\n\r\n"]
        transport.write(memoryview(b"a"))
        transport.write(bytearray(b"b"))
        transport.write(b"c")
        await _next_turn()
        assert b"".join(inner.sent[2:]) == b"abc"  # in order, nothing kept back
        assert transport.get_write_buffer_size() == 0

    asyncio.run(scenario())


def test_close_sends_what_is_held_first_and_abort_drops_it() -> None:
    async def scenario() -> None:
        inner = _Recording()
        transport = OneWriteTransport(inner, asyncio.get_running_loop())
        transport.write(b"last words")
        transport.close()
        assert inner.sent == [b"last words"]
        assert inner.closed
        assert transport.is_closing()
        await _next_turn()
        assert inner.sent == [b"last words"]  # the scheduled turn finds nothing more

        inner = _Recording()
        transport = OneWriteTransport(inner, asyncio.get_running_loop())
        transport.write(b"never")
        transport.abort()
        await _next_turn()
        assert inner.sent == []
        assert inner.aborted

    asyncio.run(scenario())


def test_a_write_held_while_the_transport_closes_itself_still_goes_out() -> None:
    # uvloop closes a transport itself on the peer's EOF and sends what it is given until its
    # buffer is empty: a write held meanwhile must not be dropped.
    async def scenario() -> None:
        inner = _Recording()
        transport = OneWriteTransport(inner, asyncio.get_running_loop())
        transport.write(b"still wanted")
        inner.closed = True
        await _next_turn()
        assert inner.sent == [b"still wanted"]

    asyncio.run(scenario())


def test_once_the_connection_is_lost_nothing_held_or_new_is_written() -> None:
    async def scenario() -> None:
        inner = _Recording()
        transport = OneWriteTransport(inner, asyncio.get_running_loop())
        transport.write(b"head")
        transport.lost()  # the protocol's connection_lost: the socket is closed
        transport.write(b"body")
        transport.close()  # uvicorn may still close it: no write to the closed socket
        await _next_turn()
        assert inner.sent == []
        assert inner.closed

    asyncio.run(scenario())


# -- over a real socket ------------------------------------------------------------------
async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    path = scope["path"]
    if path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for part in (b"one,", b"two,", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
            await asyncio.sleep(0.01)
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    if path == "/bigstream":  # more than the socket's buffers, in chunks: drained as it goes
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for index in range(300):
            chunk = b"%09d," % index * 1000
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    if path == "/echo":  # reads its body: a client that sent `Expect: 100-continue` waits
        received = b""
        while True:
            message = await receive()
            received += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = [(b"content-length", str(len(received)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": received})
        return
    if path == "/empty":
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    body = b"x" * BIG if path == "/big" else f"hello {path}".encode()
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _Counting(OneWriteHttpProtocol):
    """The protocol under test, the socket's writes counted beneath it."""

    writes: ClassVar[list[bytes]] = []

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_CountedWrites(transport, self.writes))  # type: ignore[arg-type]


class _CountedWrites:
    def __init__(self, transport: asyncio.Transport, writes: list[bytes]) -> None:
        self._transport = transport
        self._writes = writes

    def write(self, data: bytes) -> None:
        self._writes.append(bytes(data))
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


@pytest.fixture
def server() -> Iterator[str]:
    _Counting.writes = []
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        _app,
        loop="uvloop",
        http=_Counting,
        ws="none",
        lifespan="off",
        log_level="warning",
        access_log=False,
    )
    served = uvicorn.Server(config)
    thread = threading.Thread(target=served.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not served.started:
        assert time.monotonic() < deadline, "the server did not start"
        assert thread.is_alive(), "the server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        served.should_exit = True
        thread.join(timeout=20)
        sock.close()


def test_each_answer_with_a_body_is_one_write_on_the_socket(server: str) -> None:
    # A short timeout: a lone write left held would only go out when the keep-alive timer
    # closes the connection, seconds later.
    with httpx.Client(base_url=server, timeout=1) as client:
        for index in range(20):
            answer = client.get(f"/n{index}")
            assert answer.status_code == 200
            assert answer.text == f"hello /n{index}"
        empty = client.get("/empty")
        assert empty.status_code == 204
        assert empty.content == b""
        head = client.head("/n0")
        assert head.status_code == 200
        assert head.content == b""
        assert head.headers["content-length"] == str(len("hello /n0"))
    writes = list(_Counting.writes)
    # 20 answers with a body, the 204 and the HEAD answer: each its head (and body) at once
    assert len(writes) == 22
    for index, write in enumerate(writes[:20]):
        assert write.startswith(b"HTTP/1.1 200 OK\r\n")
        assert write.endswith(b"\r\n\r\nhello /n%d" % index)
    assert writes[20].startswith(b"HTTP/1.1 204 No Content\r\n")
    assert writes[21].startswith(b"HTTP/1.1 200 OK\r\n")
    assert writes[21].endswith(b"\r\n\r\n")


def test_a_stream_a_large_body_and_pipelined_requests_arrive_whole_and_in_order(
    server: str,
) -> None:
    with httpx.Client(base_url=server) as client:
        streamed = client.get("/stream")
        assert streamed.status_code == 200
        assert streamed.text == "one,two,three"
        big = client.get("/big")
        assert big.status_code == 200
        assert big.content == b"x" * BIG
    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        requests = b"".join(b"GET /p%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(5))
        raw.sendall(requests + b"GET /bye HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        received = b""
        while chunk := raw.recv(65536):  # the server closes after the last answer
            received += chunk
    bodies = [f"hello /p{i}".encode() for i in range(5)] + [b"hello /bye"]
    position = 0
    for body in bodies:
        found = received.find(body, position)
        assert found > position, (body, received)
        position = found + len(body)
    assert received.count(b"HTTP/1.1 200 OK\r\n") == 6
    assert received.endswith(b"hello /bye")


def test_a_long_stream_arrives_whole_and_a_100_continue_is_not_held(server: str) -> None:
    with httpx.Client(base_url=server, timeout=10) as client:
        streamed = client.get("/bigstream")
    assert streamed.content == b"".join(b"%09d," % i * 1000 for i in range(300))
    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=1) as raw:
        raw.sendall(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        interim = raw.recv(65536)  # within the timeout, or the test fails
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        raw.sendall(b"hello")
        answer = b""
        while not answer.endswith(b"hello"):
            chunk = raw.recv(65536)
            assert chunk, answer
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")


def test_the_served_api_names_no_server(live: Any) -> None:
    """`tally serve`'s options (`SERVE_OPTIONS`, which the live server runs with)."""
    with live.client() as http:
        answer = http.get("/healthz")
    assert answer.status_code == 200
    assert "server" not in answer.headers
    assert "date" in answer.headers

"""The HTTP protocol `tally serve` runs: uvicorn's httptools protocol, whose connections write
a response's head and body to the socket together.

ASGI sends a response as two messages (its status and headers, then its body), and uvicorn
writes each to the transport as it comes: two `send` system calls a response, and on loopback
the first one already wakes the client for a read that finds only the headers (on a network,
with TCP_NODELAY, it is a packet of its own). The two writes were about a fifth of the
server's GIL time under single expenses (docs/benchmarks.md, "Where the server's time
goes"); halving them bought little throughput there (within noise to +3.5%). Here the
connection's transport holds a write until the next one arrives (the body, written in the
same step of the same task) and sends both at once; a write that nothing follows (a HEAD
answer, the last chunk of a stream) goes out on the loop's next turn. Bytes leave in the order
they were written; `close` sends what is held first, and a connection once lost drops it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_COPY_MAX = 256 * 1024  # bytes a body may have to be copied behind its head


class OneWriteTransport(asyncio.Transport):
    """A connection's transport that sends two writes in a row as one (see the module)."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None
        self._flush_scheduled = False
        self._lost = False  # the connection is gone: hold nothing more, send nothing more

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._lost:  # (uvicorn writes nothing once disconnected; the socket is closed)
            return
        held = self._held
        if held is None:
            self._held = bytes(data)
            if not self._flush_scheduled:
                self._flush_scheduled = True
                self._loop.call_soon(self._flush_on_turn)
            return
        self._held = None
        if len(held) + len(data) > _COPY_MAX:  # large: two sends cost less than a copy
            self._transport.write(held)
            self._transport.write(data)
        else:
            self._transport.write(held + data)

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def flush(self) -> None:
        """Send what is held now."""
        held, self._held = self._held, None
        if held:
            self._transport.write(held)

    def _flush_on_turn(self) -> None:
        # Even when the transport is closing: uvloop closes it itself on the peer's EOF and
        # still sends what it is given until its buffer is empty.
        self._flush_scheduled = False
        self.flush()

    def lost(self) -> None:
        """The connection is gone (the protocol's `connection_lost`): drop what is held, so
        that nothing is written to the closed socket later (uvloop would raise)."""
        self._lost = True
        self._held = None

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.flush()  # the new protocol writes to the socket as it pleases
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + len(self._held or b"")

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)


class OneWriteHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over a `OneWriteTransport` (`uvicorn.run(http=...)`)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._one_write = OneWriteTransport(transport, self.loop)
        super().connection_made(self._one_write)

    def connection_lost(self, exc: Exception | None) -> None:
        self._one_write.lost()
        super().connection_lost(exc)


# How `tally serve` runs uvicorn (and the tests' live server with it).
SERVE_OPTIONS: dict[str, Any] = {
    "loop": "uvloop",
    "http": OneWriteHttpProtocol,  # httptools, a response's head and body in one send
    "access_log": False,
    # tally reads no client address, so X-Forwarded-* need not be parsed per request
    # (uvicorn's ProxyHeadersMiddleware), and it does not name its server in its answers:
    # together -1.6% (PostgreSQL) to -5.3% (SQLite) server CPU a single expense.
    "proxy_headers": False,
    "server_header": False,
}

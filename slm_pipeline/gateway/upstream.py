"""The gateway's HTTP/1.1 client to its upstream: keep-alive connections on asyncio protocols,
responses parsed by httptools (llhttp, the parser uvicorn uses for the gateway's own side).

Why not aiohttp or httpx: at 50 concurrent calls the general-purpose clients cost 130-2,700 µs of
CPU per request (benchmarks/RESULTS.md), more than the rest of the gateway together, and every
microsecond of it is added to a call's latency when calls arrive together. This client does only
what a proxy needs: POST or GET a body with headers, read the answer whole or chunk by chunk
(server-sent events), reuse connections, and fail with a clear error.

    client = UpstreamClient("https://api.openai.com/v1", headers={"authorization": "Bearer ..."})
    response = await client.request("POST", "chat/completions", body, {"openai-beta": "..."})
    try:
        body = await response.read()          # or: async for chunk in response.chunks()
    finally:
        response.release()                    # the connection goes back to the pool when it can

Errors: `UpstreamError` when the upstream cannot be reached, breaks off or answers something that
is not HTTP; `TimeoutError` when connecting takes longer than `connect_timeout_s` or the upstream
sends nothing for `read_timeout_s`. A request that fails on a reused keep-alive connection before a
single byte of the answer arrived (the upstream closed the idle connection) is sent once more on a
new connection: the upstream never saw it.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Mapping
from urllib.parse import urlsplit

import httptools

_PAUSE_AT = 1 << 20  # bytes of an answer buffered before the client stops reading the socket


class UpstreamError(Exception):
    """The upstream could not be reached, broke off, or did not answer in HTTP."""


class _StaleConnection(UpstreamError):
    """A reused keep-alive connection closed before a byte of the answer came: the upstream had let it go."""


class UpstreamResponse:
    """One answer: status and headers at once, the body by `read()` or `chunks()`; `release()` after."""

    __slots__ = ("status", "headers", "_connection", "_chunks", "_buffered", "_complete", "_error", "_waiter",
                 "_received", "_until_close")

    def __init__(self, connection: _Connection) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}  # names lowercased; of a repeated header, the last value
        self._connection = connection
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._complete = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._received = False  # any byte of the answer
        self._until_close = False  # neither Content-Length nor chunked: the body ends when the connection does

    # --- filled by the connection ----------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: BaseException) -> None:
        if not self._complete and self._error is None:
            self._error = error
            self._wake()

    # --- read by the gateway ---------------------------------------------------------------

    async def _wait(self) -> None:
        """Until the connection reports something (headers, body, the end, an error), at most the read timeout."""
        if self._error is not None:
            raise self._error
        loop = self._connection.loop
        self._waiter = waiter = loop.create_future()
        timer = loop.call_later(self._connection.client.read_timeout_s, self._timed_out)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None
        if self._error is not None:
            raise self._error

    def _timed_out(self) -> None:
        self._fail(TimeoutError(f"the upstream sent nothing for {self._connection.client.read_timeout_s:g} s"))

    async def _headers(self) -> None:
        while not self.status:
            await self._wait()

    def _take(self) -> bytes:
        chunk = b"".join(self._chunks) if len(self._chunks) != 1 else self._chunks[0]
        self._chunks.clear()
        if self._buffered >= _PAUSE_AT:
            self._connection.transport.resume_reading()
        self._buffered = 0
        return chunk

    async def read(self) -> bytes:
        """The whole body."""
        parts = []
        while not self._complete:
            if self._buffered >= _PAUSE_AT:  # reading was paused: take what waits, so that it goes on
                parts.append(self._take())
            await self._wait()
        body = self._take()
        return b"".join((*parts, body)) if parts else body

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives (chunked transfer decoded)."""
        while True:
            if self._chunks:
                yield self._take()
            elif self._complete:
                return
            else:
                await self._wait()

    def release(self) -> None:
        """Give the connection back: to the pool when the answer was read to its end and the
        upstream keeps the connection alive, else closed."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.done(reusable=self._complete and self._error is None)


class _Connection(asyncio.Protocol):
    """One keep-alive connection; it carries one exchange at a time."""

    def __init__(self, client: UpstreamClient) -> None:
        self.client, self.loop = client, client.loop
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # set by connection_made
        self.parser = httptools.HttpResponseParser(self)
        self.response: UpstreamResponse | None = None
        self.closed = False
        self.keep_alive = False  # the last answer let the connection be reused

    # --- asyncio -----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None:  # nothing was asked: the connection is out of step, never reuse it
            self.transport.close()
            return
        response._received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            response._fail(UpstreamError(f"the upstream's answer is not valid HTTP/1.1: {exc}"))
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        response = self.response
        if response is not None and not response._complete:
            if response._until_close and response.status:
                response._complete = True  # its body ends here
                response._wake()
            else:
                reason = f": {exc}" if exc else ""
                response._fail(UpstreamError(f"the upstream closed the connection before the answer ended{reason}"))

    # --- httptools ---------------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.response.headers[name.decode("latin-1").lower()] = value.decode("latin-1")  # type: ignore[union-attr]

    def on_headers_complete(self) -> None:
        response = self.response
        assert response is not None
        response.status = self.parser.get_status_code()
        headers = response.headers
        response._until_close = ("content-length" not in headers and "chunked" not in headers.get("transfer-encoding", "")
                                 and response.status not in (204, 304))
        response._wake()

    def on_body(self, body: bytes) -> None:
        response = self.response
        assert response is not None
        response._chunks.append(body)
        response._buffered += len(body)
        if response._buffered >= _PAUSE_AT:  # the agent reads slower than the upstream writes
            self.transport.pause_reading()
        response._wake()

    def on_message_complete(self) -> None:
        response = self.response
        assert response is not None
        response._complete = True
        self.keep_alive = self.parser.should_keep_alive()  # llhttp forgets it once this callback returns
        response._wake()

    # --- the pool ----------------------------------------------------------------------------

    def done(self, reusable: bool) -> None:
        self.response = None
        if reusable and self.keep_alive and not self.closed:
            self.client._idle.append(self)
        else:
            self.closed = True
            self.transport.close()
        self.client._slots.release()


class UpstreamClient:
    """A pool of keep-alive connections to one base URL (http or https), at most `max_connections`."""

    def __init__(self, base_url: str, *, headers: Mapping[str, str] | None = None, max_connections: int = 512,
                 connect_timeout_s: float = 10.0, read_timeout_s: float = 120.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"the upstream URL must be http(s)://host[:port][/path], got {base_url!r}")
        self.host = url.hostname
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self.ssl = (ssl_context or ssl.create_default_context()) if url.scheme == "https" else None
        self.path = url.path.rstrip("/") + "/"
        authority = url.netloc.rsplit("@", 1)[-1]
        self._head = f"Host: {authority}\r\n" + "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        self.connect_timeout_s, self.read_timeout_s = connect_timeout_s, read_timeout_s
        self.max_connections = max_connections
        self._idle: list[_Connection] = []
        self._slots: asyncio.Semaphore | None = None  # made on first use, on the serving loop
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]

    async def request(self, method: str, path: str, body: bytes = b"",
                      headers: Mapping[str, str] | None = None) -> UpstreamResponse:
        """Send a request (`path` relative to the base URL) and return once the answer's headers
        arrived. The caller reads the body and must `release()` the response."""
        if self._slots is None:
            self.loop, self._slots = asyncio.get_running_loop(), asyncio.Semaphore(self.max_connections)
        head = [f"{method} {self.path}{path} HTTP/1.1\r\n{self._head}Content-Length: {len(body)}\r\n"]
        for name, value in (headers or {}).items():
            if "\r" not in value and "\n" not in value:  # a header cannot smuggle a second one in
                head.append(f"{name}: {value}\r\n")
        head.append("\r\n")
        message = "".join(head).encode("latin-1", "replace") + body
        await self._slots.acquire()
        try:
            try:
                return await self._send(message, fresh=False)
            except _StaleConnection:  # the upstream never saw it: once more, on a new connection
                return await self._send(message, fresh=True)
        except BaseException:
            self._slots.release()
            raise

    async def _send(self, message: bytes, fresh: bool) -> UpstreamResponse:
        connection, reused = await self._connection(fresh)
        response = connection.response = UpstreamResponse(connection)
        connection.keep_alive = False
        connection.transport.write(message)
        try:
            await response._headers()
        except BaseException as exc:
            response._connection = None
            connection.closed = True
            connection.transport.close()
            if isinstance(exc, UpstreamError) and reused and not response._received:
                raise _StaleConnection from exc
            raise
        return response

    async def _connection(self, fresh: bool) -> tuple[_Connection, bool]:
        while self._idle and not fresh:
            connection = self._idle.pop()  # the most recently used: the least likely to have been closed
            if not connection.closed and not connection.transport.is_closing():
                return connection, True
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                _, connection = await self.loop.create_connection(
                    lambda: _Connection(self), self.host, self.port, ssl=self.ssl,
                    server_hostname=self.host if self.ssl else None)
        except TimeoutError:
            raise TimeoutError(f"could not connect to {self.host}:{self.port} within {self.connect_timeout_s:g} s"
                               ) from None
        except OSError as exc:
            raise UpstreamError(f"could not connect to {self.host}:{self.port}: {exc}") from exc
        return connection, False

    async def close(self) -> None:
        """Close the idle connections (answers still being read keep theirs until released)."""
        while self._idle:
            self._idle.pop().transport.close()

"""The gateway's upstream client against real sockets: servers that answer byte for byte as scripted."""

from __future__ import annotations

import asyncio
import datetime
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from slm_pipeline.gateway.upstream import UpstreamClient, UpstreamError

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n{\"ok\": true}"
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "Server"], Awaitable[None]]


class Server:
    """A raw HTTP server on 127.0.0.1: `handler` talks to each connection; it counts connections and requests."""

    def __init__(self, handler: Handler) -> None:
        self.handler, self.connections, self.requests, self.open_now, self.most_open = handler, 0, [], 0, 0

    async def __aenter__(self) -> Server:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            self.open_now += 1
            self.most_open = max(self.most_open, self.open_now)
            try:
                await self.handler(reader, writer, self)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                self.open_now -= 1
                writer.close()

        self.server = await asyncio.start_server(serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        return self

    async def __aexit__(self, *_: object) -> None:
        self.server.close()

    async def request(self, reader: asyncio.StreamReader) -> bytes:
        """The next request on a connection (head and Content-Length body); recorded."""
        head = await reader.readuntil(b"\r\n\r\n")
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        request = head + await reader.readexactly(length)
        self.requests.append(request)
        return request


async def exchange(client: UpstreamClient, method: str = "POST", path: str = "chat/completions",
                   body: bytes = b"{}") -> tuple[int, bytes]:
    """One request: its status and whole body, the connection released."""
    response = await client.request(method, path, body)
    try:
        return response.status, await response.read()
    finally:
        response.release()


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 30))


async def keep_alive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
    while True:
        await server.request(reader)
        writer.write(OK)


def test_connections_are_kept_alive_and_reused():
    async def test() -> None:
        async with Server(keep_alive) as server:
            client = UpstreamClient(server.url, headers={"authorization": "Bearer up"})
            for _ in range(20):
                response = await client.request("POST", "chat/completions", b'{"a": 1}', {"openai-beta": "x"})
                assert (response.status, await response.read()) == (200, b'{"ok": true}')
                assert response.headers["content-type"] == "application/json"
                response.release()
            assert server.connections == 1 and len(server.requests) == 20
            first = server.requests[0].decode()
            assert first.startswith("POST /v1/chat/completions HTTP/1.1\r\n")
            for line in (f"Host: 127.0.0.1:{server.port}", "authorization: Bearer up", "Content-Length: 8",
                         "openai-beta: x"):
                assert f"\r\n{line}\r\n" in first
            assert first.endswith('\r\n\r\n{"a": 1}')
            await client.close()

    run(test)


def test_the_pool_holds_at_most_max_connections():
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        while True:
            await server.request(reader)
            await asyncio.sleep(0.05)
            writer.write(OK)

    async def test() -> None:
        async with Server(slow) as server:
            client = UpstreamClient(server.url, max_connections=2)
            answers = await asyncio.gather(*(exchange(client, "GET", "models") for _ in range(6)))
            assert answers == [(200, b'{"ok": true}')] * 6
            assert server.most_open == 2 and server.connections == 2

    run(test)


def test_a_chunked_stream_arrives_chunk_by_chunk():
    sent_second = asyncio.Event

    async def test() -> None:
        go_on = sent_second()

        async def events(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
            await server.request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"d\r\ndata: first\n\n\r\n")
            await go_on.wait()  # the second event only after the client has read the first
            writer.write(b"e\r\ndata: second\n\n\r\n0\r\n\r\n")
            await server.request(reader)
            writer.write(OK)

        async with Server(events) as server:
            client = UpstreamClient(server.url)
            response = await client.request("POST", "chat/completions", b"{}")
            assert response.headers["content-type"] == "text/event-stream"
            received = []
            async for chunk in response.chunks():
                received.append(chunk)
                go_on.set()
            response.release()
            assert received == [b"data: first\n\n", b"data: second\n\n"]
            assert await exchange(client, "GET", "models") == (200, b'{"ok": true}')  # reused after a chunked answer
            assert server.connections == 1

    run(test)


def test_a_body_that_ends_with_the_connection_is_read_whole_and_not_reused():
    async def until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await server.request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + b"x" * 100_000)
        await writer.drain()
        writer.close()

    async def test() -> None:
        async with Server(until_close) as server:
            client = UpstreamClient(server.url)
            for _ in range(2):
                assert await exchange(client) == (200, b"x" * 100_000)
            assert server.connections == 2

    run(test)


def test_connection_close_means_a_new_connection_next_time():
    async def closing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await server.request(reader)
        writer.write(b"HTTP/1.1 503 Busy\r\nConnection: close\r\nContent-Length: 4\r\n\r\nbusy")

    async def test() -> None:
        async with Server(closing) as server:
            client = UpstreamClient(server.url)
            for _ in range(3):
                assert await exchange(client) == (503, b"busy")
            assert server.connections == 3 and len(server.requests) == 3

    run(test)


@pytest.mark.parametrize("pause_s", [0, 0.05])
def test_a_keep_alive_connection_the_upstream_closed_is_replaced_and_the_request_sent_once(pause_s: float):
    async def one_per_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await server.request(reader)
        writer.write(OK)  # says nothing of closing, then closes: an idle timeout on the upstream's side
        await writer.drain()

    async def test() -> None:
        async with Server(one_per_connection) as server:
            client = UpstreamClient(server.url)
            for _ in range(3):
                assert await exchange(client) == (200, b'{"ok": true}')
                await asyncio.sleep(pause_s)  # the close reaches the client before the next request, or not
            assert len(server.requests) == 3

    run(test)


def test_a_request_the_upstream_dropped_unanswered_on_a_reused_connection_is_sent_again():
    """The race the retry is for: the upstream closes a connection it deems idle just as a request
    arrives on it, and answers nothing."""
    answered = []

    async def drops_the_second(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        first_connection = server.connections == 1
        while True:
            request = await server.request(reader)
            if first_connection and len(server.requests) == 2:
                return  # closed, unanswered
            answered.append(request)
            writer.write(OK)

    async def test() -> None:
        async with Server(drops_the_second) as server:
            client = UpstreamClient(server.url)
            for body in (b'{"n": 1}', b'{"n": 2}'):
                assert await exchange(client, body=body) == (200, b'{"ok": true}')
            assert server.connections == 2
            assert [request.rsplit(b"\r\n\r\n", 1)[1] for request in answered] == [b'{"n": 1}', b'{"n": 2}']

    run(test)


def test_when_every_idle_connection_went_stale_the_retry_takes_a_new_one():
    async def drops_its_second(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        pooled = server.connections <= 2
        await server.request(reader)
        await asyncio.sleep(0.05)  # the two first requests overlap: two connections in the pool
        writer.write(OK)
        while True:
            await server.request(reader)
            if pooled:
                return  # closed, unanswered
            writer.write(OK)

    async def test() -> None:
        async with Server(drops_its_second) as server:
            client = UpstreamClient(server.url)
            assert await asyncio.gather(exchange(client), exchange(client)) == [(200, b'{"ok": true}')] * 2
            assert len(client._idle) == 2
            assert await exchange(client) == (200, b'{"ok": true}')
            assert server.connections == 3

    run(test)


@pytest.mark.parametrize("answer", [b"", b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{\"partial"])
def test_a_fresh_connection_closed_before_the_answer_ended_is_an_error_not_a_retry(answer: bytes):
    async def breaks_off(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await server.request(reader)
        writer.write(answer)
        await writer.drain()

    async def test() -> None:
        async with Server(breaks_off) as server:
            client = UpstreamClient(server.url)
            with pytest.raises(UpstreamError, match="closed the connection before the answer ended"):
                response = await client.request("POST", "chat/completions", b"{}")
                await response.read()
            assert len(server.requests) == 1

    run(test)


def test_silence_is_a_timeout_and_frees_the_connection_slot():
    async def silent_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        while True:
            await server.request(reader)
            if len(server.requests) > 1:
                writer.write(OK)

    async def test() -> None:
        async with Server(silent_once) as server:
            client = UpstreamClient(server.url, max_connections=1, read_timeout_s=0.2)
            with pytest.raises(TimeoutError, match="sent nothing for 0.2 s"):
                await client.request("POST", "chat/completions", b"{}")
            assert await exchange(client) == (200, b'{"ok": true}')  # the one slot is free again
            assert server.connections == 2  # the silent connection was dropped, not reused

    run(test)


def test_silence_in_the_middle_of_a_body_is_a_timeout_too():
    async def stalls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await server.request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{\"half")
        await asyncio.sleep(5)

    async def test() -> None:
        async with Server(stalls) as server:
            client = UpstreamClient(server.url, read_timeout_s=0.2)
            response = await client.request("POST", "chat/completions", b"{}")
            with pytest.raises(TimeoutError):
                await response.read()
            response.release()
            assert client._idle == []

    run(test)


def test_an_unreachable_upstream_and_an_answer_that_is_not_http_are_upstream_errors():
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await server.request(reader)
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")

    async def test() -> None:
        async with Server(garbage) as server:
            with pytest.raises(UpstreamError, match="not valid HTTP/1.1"):
                await UpstreamClient(server.url).request("POST", "chat/completions", b"{}")
            port = server.port
        with pytest.raises(UpstreamError, match=f"could not connect to 127.0.0.1:{port}"):
            await UpstreamClient(f"http://127.0.0.1:{port}/v1").request("POST", "chat/completions", b"{}")

    run(test)


def test_a_header_value_cannot_smuggle_another_header():
    async def test() -> None:
        async with Server(keep_alive) as server:
            client = UpstreamClient(server.url)
            response = await client.request("POST", "chat/completions", b"{}",
                                            {"x-a": "1\r\nx-injected: yes", "x-b": "2"})
            await response.read()
            response.release()
            assert b"x-injected" not in server.requests[0] and b"\r\nx-b: 2\r\n" in server.requests[0]

    run(test)


def test_an_answer_released_before_its_end_closes_its_connection():
    async def in_two_parts(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        while True:
            await server.request(reader)
            writer.write(OK[:-4])
            await asyncio.sleep(0.1)
            writer.write(OK[-4:])

    async def test() -> None:
        async with Server(in_two_parts) as server:
            client = UpstreamClient(server.url)
            for _ in range(2):
                (await client.request("POST", "chat/completions", b"{}")).release()
            assert server.connections == 2

    run(test)


def test_a_large_answer_arrives_whole_read_at_once_or_slowly():
    """The client stops reading the socket while 1 MiB waits unread, and resumes as it is taken."""
    body = bytes(range(256)) * (12 * 1024)  # 3 MiB

    async def large(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        while True:
            await server.request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            await writer.drain()

    async def test() -> None:
        async with Server(large) as server:
            client = UpstreamClient(server.url)
            response = await client.request("GET", "models")
            received = b""
            async for chunk in response.chunks():
                received += chunk
                await asyncio.sleep(0.01)
            response.release()
            assert received == body
            assert await exchange(client, "GET", "models") == (200, body)
            assert server.connections == 1

    run(test)


def test_https_upstreams_are_verified(tmp_path: Path):
    certificate, key = self_signed_certificate(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(certificate, key)

    async def test() -> None:
        server = await asyncio.start_server(lambda r, w: keep_alive(r, w, Server(keep_alive)), "127.0.0.1", 0,
                                            ssl=server_context)
        port = server.sockets[0].getsockname()[1]
        try:
            trusting = ssl.create_default_context(cafile=str(certificate))
            client = UpstreamClient(f"https://localhost:{port}/v1", ssl_context=trusting)
            assert await exchange(client) == (200, b'{"ok": true}')
            with pytest.raises(UpstreamError, match="CERTIFICATE_VERIFY_FAILED"):
                await UpstreamClient(f"https://localhost:{port}/v1").request("POST", "chat/completions", b"{}")
        finally:
            server.close()

    run(test)


def test_a_base_url_that_is_not_http_is_refused():
    with pytest.raises(ValueError, match="must be http"):
        UpstreamClient("ftp://example.com/v1")


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
                   .not_valid_after(now + datetime.timedelta(hours=1))
                   .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .sign(key, hashes.SHA256()))
    (folder / "cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    return folder / "cert.pem", folder / "key.pem"

"""A do-nothing TCP relay: the floor under any proxy's added latency on this machine.

    python benchmarks/tcp_relay.py --port 9001 --upstream-port 9000

Each accepted connection gets its own connection to the upstream, and bytes are copied both ways
as they come (uvloop protocols, no parsing, no logging). `gateway_latency.py --relay` puts it
side by side with the gateway: what the relay adds is the cost of one more process and loopback
hop on these cores (scheduling, waking, the kernel's TCP work), which no proxy can avoid; what the
gateway adds beyond it is the gateway's own work.
"""

from __future__ import annotations

import argparse
import asyncio

import uvloop


class Pipe(asyncio.Protocol):
    """One side of a relayed connection: what arrives is written to the other side."""

    def __init__(self, peer: Pipe | None = None) -> None:
        self.peer, self.transport, self.pending = peer, None, []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        if self.peer is not None:
            self.peer.peer = self
            for data in self.peer.pending:
                transport.write(data)  # type: ignore[attr-defined]
            self.peer.pending.clear()

    def data_received(self, data: bytes) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.write(data)  # type: ignore[attr-defined]
        else:
            self.pending.append(data)  # the upstream connection is still being made

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


async def relay(port: int, upstream_port: int) -> None:
    loop = asyncio.get_running_loop()

    def accept() -> Pipe:
        client = Pipe()
        loop.create_task(loop.create_connection(lambda: Pipe(client), "127.0.0.1", upstream_port))
        return client

    server = await loop.create_server(accept, "127.0.0.1", port)
    await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream-port", type=int, required=True)
    args = parser.parse_args()
    uvloop.run(relay(args.port, args.upstream_port))


if __name__ == "__main__":
    main()

"""Build the gateway from its config and run it on uvicorn (uvloop + httptools)."""

from __future__ import annotations

import logging
import socket
import sys

import uvicorn
from fastapi import FastAPI
from uvicorn.supervisors.multiprocess import Multiprocess

from slm_pipeline.core.crypto import KEYS_ENV, KeyRing
from slm_pipeline.core.store import LogStore
from slm_pipeline.gateway.app import create_app
from slm_pipeline.gateway.auth import KeyCache
from slm_pipeline.gateway.calllog import CallLog
from slm_pipeline.gateway.config import GatewayConfig
from slm_pipeline.gateway.spool import Spool


class GatewaySetupError(RuntimeError):
    """The gateway cannot start; the message says what to set."""


def build_app(config: GatewayConfig, key_ring: KeyRing | None = None) -> FastAPI:
    """The app with its log store, key ring, spool and call log (opened, not started)."""
    key_ring = key_ring or KeyRing.from_environment()
    if key_ring is None:
        raise GatewaySetupError(f"the gateway encrypts every payload before it is stored: set {KEYS_ENV} "
                                "(generate a key with `slm-pipeline new-encryption-key`) or "
                                "SLM_PIPELINE_ENCRYPTION_KEY_FILE")
    url = config.resolved_database_url()
    store = LogStore(url, create=url.startswith("sqlite"))  # on Postgres the gateway's role cannot migrate
    store.check_schema()
    call_log = CallLog(store, key_ring, Spool(config.resolved_spool_dir()), queue_size=config.queue_size,
                       batch_size=config.batch_size, flush_interval_s=config.flush_interval_s,
                       retry_interval_s=config.retry_interval_s)
    router = None
    if config.routing:
        from slm_pipeline.core.settings import Settings
        from slm_pipeline.gateway.routing import Router

        router = Router(Settings().resolved_lake_url, refresh_s=config.routing_refresh_s)
    return create_app(config, KeyCache(store, config.key_refresh_s), call_log, router)


def app_from_environment() -> FastAPI:
    """The app as configured by the environment: what each uvicorn worker process builds."""
    return build_app(GatewayConfig())


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A listening socket of its own for one worker: with SO_REUSEPORT the kernel spreads new connections over
    the workers' sockets by their addresses. (uvicorn's workers share one socket, and every keep-alive connection
    of a busy client can end up on the same worker, which then does all the work: benchmarks/RESULTS.md.)"""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class SocketPerWorker(Multiprocess):
    """uvicorn's worker supervisor (health checks, restarts, signals), each worker on its own SO_REUSEPORT
    socket. uvicorn hands `self.sockets` to every worker it starts, first or replacement, so each read of it
    binds a new socket; the parent's copy closes with the worker's `Process` when it is replaced."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config, sockets=[])

    @property
    def sockets(self) -> list[socket.socket]:
        return [reuse_port_socket(self.config.host, self.config.port)]

    @sockets.setter
    def sockets(self, value: list[socket.socket]) -> None:
        pass  # the base class's empty list: every worker binds its own


def serve(app: FastAPI | None, host: str = "127.0.0.1", port: int = 8080, *, workers: int = 1,
          access_log: bool = False, log_level: str = "info") -> None:
    """Run the gateway. With `workers` > 1, each worker process builds its own app from the
    environment (`app` is then unused): its own upstream pool, call log and spool file."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The call log's writer thread seals batches while the event loop serves requests: a shorter GIL
    # switch interval (default 5 ms) keeps the writer from delaying replies (benchmarks/RESULTS.md).
    sys.setswitchinterval(0.0005)
    # No proxy-headers middleware: the gateway never uses the client's address, and it costs every call.
    options = {"host": host, "port": port, "loop": "uvloop", "http": "httptools", "access_log": access_log,
               "log_level": log_level, "timeout_graceful_shutdown": 30, "proxy_headers": False}
    if workers > 1:
        reuse_port_socket(host, port).close()  # a port taken by another program fails here, before any worker
        SocketPerWorker(uvicorn.Config("slm_pipeline.gateway.server:app_from_environment", factory=True,
                                       workers=workers, **options)).run()
    else:
        uvicorn.run(app, **options)

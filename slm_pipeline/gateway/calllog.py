"""The gateway's call log: the reply never waits for the database.

Request handlers `submit` finished calls to a bounded in-memory queue (a non-blocking put). A writer
thread seals them (validation as canonical records, AES-GCM encryption), and inserts them in
batches. While the store is unreachable, batches go to the spool (sealed, fsynced) and are replayed
when it answers again; a full queue spools too. Inserts are idempotent on `call_id`, so a row is
stored once however often it is retried.

Counters (`stats`) reconcile: submitted = inserted + duplicate + rejected + waiting, where waiting
is what is still queued or spooled.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import orjson
import sqlalchemy as sa
from pydantic import ValidationError

from slm_pipeline.core.crypto import KeyRing
from slm_pipeline.core.importer import seal_payloads
from slm_pipeline.core.records import describe_validation_error
from slm_pipeline.core.store import LogStore, StoredCall
from slm_pipeline.gateway.chat_payloads import response_kind
from slm_pipeline.gateway.spool import Spool

log = logging.getLogger(__name__)
SOURCE = "gateway"


@dataclass
class FinishedCall:
    """A proxied call as the handler saw it; sealed into a store row off the request path."""

    call_id: str
    agent_id: str
    timestamp: datetime
    latency_ms: float
    human_facing: bool
    workload_id: str | None
    model: str
    tags: dict[str, Any]
    request: bytes  # the agent's JSON body, as sent (the handler validated it as a chat request)
    response: bytes | dict[str, Any]  # the upstream's JSON body, or what the gateway made of the answer
    upstream_started: float | None = None  # perf_counter() when the request left for the upstream
    source: str = SOURCE  # "otlp": received as a span (gateway/traces.py)


@dataclass
class CallLogStats:
    submitted: int = 0
    inserted: int = 0
    duplicate: int = 0
    spooled: int = 0  # rows written to the spool (outage or full queue)
    replayed: int = 0  # spooled rows read back and inserted (or found already stored)
    overflow: int = 0  # calls spooled because the queue was full
    rejected: int = 0  # rows the store refused for their content (kept in the rejected spool)
    store_up: bool = True
    last_error: str | None = None


def _is_outage(exc: sa.exc.DBAPIError) -> bool:
    """Anything but a row the store refuses for its content: connection lost, server down, missing grant..."""
    return not isinstance(exc, (sa.exc.DataError, sa.exc.IntegrityError)) or exc.connection_invalidated


def seal(call: FinishedCall, key_ring: KeyRing | None) -> StoredCall:
    """The store row of a call, payloads encrypted. The request was validated when it arrived; here
    the response is (an answer that is not a chat completion is logged as a failed call)."""
    tags = call.tags
    try:
        failed = response_kind(call.response) == "error"
        response = call.response if isinstance(call.response, bytes) else orjson.dumps(call.response)
    except ValidationError as exc:
        _, where, message = describe_validation_error(exc)
        original = call.response if isinstance(call.response, dict) else (
            response_json(call.response) or call.response[:4096].decode("utf-8", "replace"))
        response = orjson.dumps({"error": {"message": f"the upstream's answer is not a chat completion ({message})",
                                           "type": "invalid_upstream_response", "code": None},
                                 "upstream_response": original})
        failed, tags = True, {**tags, "invalid_upstream_response": where}
    key_id, request, response = seal_payloads(call.call_id, call.request, response, key_ring)
    return StoredCall(call_id=call.call_id, agent_id=call.agent_id, workload_id=call.workload_id,
                      timestamp=call.timestamp, latency_ms=call.latency_ms, human_facing=call.human_facing,
                      # Postgres text cannot hold NUL; the sealed request keeps the model name as it came
                      status="error" if failed else "ok", model=call.model.replace("\x00", "\ufffd"), tags=tags,
                      request_payload=request,
                      response_payload=response, payload_key_id=key_id, source=call.source,
                      ingested_at=datetime.now(timezone.utc))


class CallLog:
    def __init__(self, store: LogStore, key_ring: KeyRing | None, spool: Spool, *, queue_size: int = 20_000,
                 batch_size: int = 500, flush_interval_s: float = 0.05, retry_interval_s: float = 1.0) -> None:
        self.store, self.key_ring, self.spool = store, key_ring, spool
        self.rejected_spool = Spool(spool.folder / "rejected")
        self.batch_size, self.flush_interval_s, self.retry_interval_s = batch_size, flush_interval_s, retry_interval_s
        self.stats = CallLogStats()
        self._queue: queue.Queue[FinishedCall] = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="slm-gateway-calllog", daemon=True)
        self._last_retry = 0.0
        self._spool_pending = False  # rows in the spool (known without listing the folder on every loop)

    # --- the request side ----------------------------------------------------------------

    def submit(self, call: FinishedCall) -> None:
        """Hand a call over for logging; never blocks on the database."""
        self.stats.submitted += 1
        try:
            self._queue.put_nowait(call)
        except queue.Full:
            self.stats.overflow += 1
            self._spool([seal(call, self.key_ring)])

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> CallLog:
        self._thread.start()
        return self

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every submitted call was inserted or spooled; True when it was."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self._queue.unfinished_tasks

    def close(self, timeout: float = 30.0) -> None:
        """Log what is queued (to the store, else the spool), stop the writer and close the store."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self.store.close()

    # --- the writer thread ---------------------------------------------------------------

    def _run(self) -> None:
        self._spool_pending = self.spool.has_rows()  # left by an earlier process
        if self._spool_pending:
            self._replay()
        while True:
            batch = self._take()
            if batch:
                try:
                    self._write([seal(call, self.key_ring) for call in batch])
                finally:
                    for _ in batch:
                        self._queue.task_done()
            elif self._stop.is_set():
                break
            if (not self.stats.store_up or self._spool_pending) and (
                    time.monotonic() - self._last_retry >= self.retry_interval_s or self._stop.is_set()):
                self._replay()

    def _take(self) -> list[FinishedCall]:
        """The next batch: the first call, and whatever arrives within `flush_interval_s` after it
        (up to `batch_size`). The writer sleeps through that interval instead of waking for every
        call, so that a busy gateway pays one thread switch per batch, not per call."""
        try:
            batch = [self._queue.get(timeout=self.flush_interval_s)]
        except queue.Empty:
            return []
        if not self._stop.is_set() and self._queue.qsize() < self.batch_size:
            time.sleep(self.flush_interval_s)
        while len(batch) < self.batch_size:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _write(self, rows: list[StoredCall]) -> None:
        if not self.stats.store_up:
            self._spool(rows)
            return
        try:
            inserted = self.store.append(rows)
        except sa.exc.DBAPIError as exc:
            if _is_outage(exc):
                self._down(exc)
                self._spool(rows)
            else:
                self._write_one_by_one(rows)
            return
        self.stats.inserted += inserted
        self.stats.duplicate += len(rows) - inserted

    def _write_one_by_one(self, rows: list[StoredCall]) -> None:
        """A batch the store refused for its content: keep every row it accepts, set aside the others."""
        for row in rows:
            try:
                inserted = self.store.append([row])
            except sa.exc.DBAPIError as exc:
                if _is_outage(exc):
                    self._down(exc)
                    self._spool([row])
                    continue
                self.stats.rejected += 1
                self.rejected_spool.append([row])
                log.error("call %s of agent %s was refused by the log store and kept (sealed) in %s: %s",
                          row["call_id"], row["agent_id"], self.rejected_spool.path, exc.orig)
                continue
            self.stats.inserted += inserted
            self.stats.duplicate += 1 - inserted

    def _spool(self, rows: list[StoredCall]) -> None:
        self.spool.append(rows)
        self._spool_pending = True
        self.stats.spooled += len(rows)

    def _down(self, exc: Exception) -> None:
        if self.stats.store_up:
            log.warning("log store unreachable (%s); spooling calls to %s until it answers", exc.__class__.__name__,
                        self.spool.folder)
        self.stats.store_up = False
        self.stats.last_error = str(getattr(exc, "orig", exc)).strip().splitlines()[0][:300]
        self._last_retry = time.monotonic()

    def _replay(self) -> None:
        self._last_retry = time.monotonic()
        self._spool_pending = False  # before reading: rows spooled meanwhile set it again
        try:
            read, inserted = self.spool.replay(self.store.append, self.batch_size)
        except sa.exc.DBAPIError as exc:
            self._spool_pending = True
            self._down(exc)
            return
        if not self.stats.store_up:
            log.warning("log store is back; replayed %d spooled calls", read)
        self.stats.store_up = True
        self.stats.replayed += read
        self.stats.inserted += inserted
        self.stats.duplicate += read - inserted


def response_json(body: bytes) -> dict[str, Any] | None:
    """The upstream's body as a JSON object, or None."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None

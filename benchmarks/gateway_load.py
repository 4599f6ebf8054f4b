"""Reliability: the gateway under sustained load, open loop, with every call accounted for.

    python benchmarks/gateway_load.py [--rate 500] [--seconds 60] [--store postgres|sqlite]
        [--upstream-delay-ms 0] [--upstream-jitter-ms 0]

Starts, as separate processes, the fake OpenAI-compatible upstream
(`slm_pipeline.gateway.fake_upstream`) and the real `slm-pipeline gateway` in front of it, logging
to a throw-away Postgres database on the local server (as the other benchmarks make theirs;
`--store sqlite` for the embedded store), payloads encrypted. Then an open-loop load generator
(aiohttp on uvloop) sends real demo-agent requests (with tools, ~2.5 KB) at a fixed rate: request i
leaves at start + i / rate whether or not the earlier ones were answered, so a slow gateway faces a
growing backlog instead of a politely slower client (no coordinated omission). Latency is measured
from the moment each request was due, so the generator's own lag counts against the gateway.

Printed: the target and achieved rate, p50/p99/max latency, errors by kind, the generator's lag,
and a reconciliation: requests sent = answered 200 = counted by the gateway (`/metrics`) = rows in
the log store = distinct call ids in the store, and the call ids the clients got back
(`x-slm-call-id`) are exactly the stored ones. The gateway is stopped with SIGTERM (which drains
its call log) before the store is counted. Exits 1 when anything does not reconcile.
`run_load` is the same code at any scale (the test suite runs it at 200/s for 5 s).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import httpx
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gateway_latency import BIN, free_port, percentile, requests, throwaway_store, wait_ready  # noqa: E402

from slm_pipeline.core.crypto import new_key  # noqa: E402
from slm_pipeline.core.store import LogStore  # noqa: E402
from slm_pipeline.core.store.keys import create_key  # noqa: E402


@dataclass
class LoadResult:
    rate: float  # target requests/s
    seconds: float  # target duration
    sent: int = 0
    answered: int = 0  # status 200
    wall_s: float = 0.0  # from the first request due to the last answer
    latencies_ms: list[float] = field(default_factory=list)  # of answered calls, from when each was due
    errors: Counter[str] = field(default_factory=Counter)  # "status 502", "ClientConnectorError", ...
    max_lag_ms: float = 0.0  # the latest a request left after it was due
    call_ids: list[str] = field(default_factory=list)  # x-slm-call-id of every answer
    gateway_received: int | None = None  # slm_gateway_requests_received_total
    gateway_logged: int | None = None  # slm_gateway_calls_logged_total
    gateway_spooled: int | None = None  # slm_gateway_calllog_spooled_total
    stored: int = 0  # rows in the store
    distinct_stored: int = 0  # distinct call ids in the store
    ids_match: bool = False  # the call ids answered are exactly the ones stored

    @property
    def achieved_rate(self) -> float:
        return self.answered / self.wall_s if self.wall_s else 0.0

    @property
    def reconciles(self) -> bool:
        return (self.sent == self.answered == self.gateway_received == self.gateway_logged == self.stored
                == self.distinct_stored == len(set(self.call_ids)) and self.ids_match and not self.errors)

    def table(self) -> str:
        p50, p99 = (percentile(self.latencies_ms, 50), percentile(self.latencies_ms, 99)) if self.latencies_ms \
            else (float("nan"), float("nan"))
        rows = [
            ("target rate", f"{self.rate:,.0f} requests/s for {self.seconds:g} s"),
            ("achieved rate", f"{self.achieved_rate:,.1f} requests/s ({self.answered:,} answered in {self.wall_s:.2f} s)"),
            ("latency p50 / p99 / max", f"{p50:.2f} / {p99:.2f} / {max(self.latencies_ms, default=0):.2f} ms"),
            ("generator lag (max)", f"{self.max_lag_ms:.2f} ms"),
            ("errors", ", ".join(f"{k}: {v:,}" for k, v in sorted(self.errors.items())) or "0"),
            ("requests sent", f"{self.sent:,}"),
            ("answered 200", f"{self.answered:,}"),
            ("received by the gateway", f"{self.gateway_received:,}" if self.gateway_received is not None else "?"),
            ("logged by the gateway", f"{self.gateway_logged:,}" if self.gateway_logged is not None else "?"),
            ("spooled (store unreachable)", f"{self.gateway_spooled:,}" if self.gateway_spooled is not None else "?"),
            ("rows in the log store", f"{self.stored:,}"),
            ("distinct call ids stored", f"{self.distinct_stored:,}"),
            ("answered ids = stored ids", "yes" if self.ids_match else "NO"),
            ("reconciliation", "nothing lost, no duplicates" if self.reconciles else "MISMATCH"),
        ]
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}} | {value}" for name, value in rows)


async def open_loop(url: str, headers: dict[str, str], bodies: list[bytes], rate: float, seconds: float,
                    result: LoadResult) -> None:
    """Send `rate * seconds` requests, request i due at start + i / rate, each on its own task.
    Times are `perf_counter` (uvloop's `loop.time()` has millisecond resolution)."""
    clock = time.perf_counter
    total = round(rate * seconds)
    timeout = aiohttp.ClientTimeout(total=60)
    # no connection limit: an open-loop client never waits for a free connection
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as session:

        async def one(index: int, due: float) -> None:
            result.max_lag_ms = max(result.max_lag_ms, (clock() - due) * 1000)
            try:
                async with session.post(url, data=bodies[index % len(bodies)], headers=headers) as response:
                    await response.read()
                    if response.status != 200:
                        result.errors[f"status {response.status}"] += 1
                        return
                    result.call_ids.append(response.headers.get("x-slm-call-id", ""))
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                result.errors[type(exc).__name__] += 1
                return
            result.answered += 1
            result.latencies_ms.append((clock() - due) * 1000)

        start = clock() + 0.05
        tasks = []
        for index in range(total):
            due = start + index / rate
            if due > clock():
                await asyncio.sleep(due - clock())
            tasks.append(asyncio.create_task(one(index, due)))
            result.sent += 1
        await asyncio.gather(*tasks)
        result.wall_s = clock() - start


def _run(coroutine) -> None:  # noqa: ANN001
    try:
        import uvloop
    except ImportError:
        asyncio.run(coroutine)
    else:
        uvloop.run(coroutine)


def _metric(text: str, name: str) -> int | None:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return int(float(line.split()[1]))
    return None


def run_load(store_url: str, rate: float, seconds: float, *, work: Path | None = None, upstream_delay_ms: float = 0,
             upstream_jitter_ms: float = 0) -> LoadResult:
    """Start the fake upstream and `slm-pipeline gateway` on `store_url` (an empty store), run the open
    loop, stop the gateway with SIGTERM and reconcile against the store."""
    work = work or Path(tempfile.mkdtemp(prefix="slm_bench_load_"))
    with LogStore(store_url) as store:
        _, key = create_key(store, "load-agent")
    up_port, gw_port = free_port(), free_port()
    env = {**os.environ, "SLM_PIPELINE_HOME": str(work), "SLM_PIPELINE_ENCRYPTION_KEYS": new_key("load"),
           "SLM_PIPELINE_GATEWAY_DATABASE_URL": store_url, "SLM_PIPELINE_GATEWAY_SPOOL_DIR": str(work / "spool")}
    processes: list[subprocess.Popen] = []
    result = LoadResult(rate, seconds)
    try:
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "slm_pipeline.gateway.fake_upstream", "--port", str(up_port),
             "--delay-ms", str(upstream_delay_ms), "--jitter-ms", str(upstream_jitter_ms)],
            stdout=(work / "upstream.log").open("w"), stderr=subprocess.STDOUT))
        gateway = subprocess.Popen(
            [str(BIN / "slm-pipeline"), "gateway", "--upstream", f"http://127.0.0.1:{up_port}/v1",
             "--port", str(gw_port)], env=env, stdout=(work / "gateway.log").open("w"), stderr=subprocess.STDOUT)
        processes.append(gateway)
        base = f"http://127.0.0.1:{gw_port}"
        wait_ready(f"http://127.0.0.1:{up_port}/v1/models", processes[0])
        wait_ready(f"{base}/healthz", gateway)
        headers = {"content-type": "application/json", "authorization": f"Bearer {key}"}
        _run(open_loop(f"{base}/v1/chat/completions", headers, requests(200), rate, seconds, result))
        metrics = httpx.get(f"{base}/metrics", timeout=10).text
        result.gateway_received = _metric(metrics, "slm_gateway_requests_received_total")
        result.gateway_logged = _metric(metrics, "slm_gateway_calls_logged_total")
        result.gateway_spooled = _metric(metrics, "slm_gateway_calllog_spooled_total")
        gateway.send_signal(signal.SIGTERM)  # a graceful stop drains the call log into the store
        if gateway.wait(60) not in (0, -signal.SIGTERM):  # uvicorn re-raises the signal once it has shut down
            raise RuntimeError(f"the gateway exited with {gateway.returncode}; see {work / 'gateway.log'}")
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
                process.wait(30)
    with LogStore(store_url) as store, store.engine.connect() as connection:
        stored_ids = connection.execute(sa.text("SELECT call_id FROM agent_calls")).scalars().all()
    result.stored, result.distinct_stored = len(stored_ids), len(set(stored_ids))
    result.ids_match = set(stored_ids) == set(result.call_ids)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=500.0, help="requests per second (open loop)")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to send")
    parser.add_argument("--store", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--upstream-delay-ms", type=float, default=0.0, help="simulated LLM time per call")
    parser.add_argument("--upstream-jitter-ms", type=float, default=0.0, help="plus uniform random 0..J ms")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="slm_bench_load_"))
    print(f"open loop at {args.rate:g} requests/s for {args.seconds:g} s, demo requests with tools, store "
          f"{args.store}, payloads encrypted, upstream delay {args.upstream_delay_ms:g} ms + "
          f"0..{args.upstream_jitter_ms:g} ms, 1 gateway worker; {os.cpu_count()} CPUs shared by all\n", flush=True)
    started = time.monotonic()
    with throwaway_store(args.store, work, "slm_bench_load") as store_url:
        result = run_load(store_url, args.rate, args.seconds, work=work, upstream_delay_ms=args.upstream_delay_ms,
                          upstream_jitter_ms=args.upstream_jitter_ms)
    print(result.table())
    print(f"\n({time.monotonic() - started:.0f} s in all; gateway log: {work / 'gateway.log'})")
    sys.exit(0 if result.reconciles else 1)


if __name__ == "__main__":
    main()

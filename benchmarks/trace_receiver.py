"""Throughput of the gateway's OTLP trace receiver (POST /v1/traces) into Postgres, beside the proxy's logging
rate, and an outage of the log store that loses nothing.

    python benchmarks/trace_receiver.py [--seconds 20] [--spans-per-request 256] [--clients 16] [--workers 2]
        [--no-outage]

Starts the fake upstream and the real `slm-pipeline gateway` (`--workers` processes, payloads encrypted) on a throw-away
Postgres database of the local server. Then, for `--seconds` each, closed loops of `--clients` clients send

1. OTLP/HTTP protobuf requests (gzip, as the OTLP exporter sends them) of `--spans-per-request` LLM spans in the
   GenAI conventions (`gen_ai.input.messages` / `gen_ai.output.messages` / `gen_ai.tool.definitions`), built from
   the demo agents' requests with tools and the fake upstream's answers; each span carries one call;
2. chat completions through the proxy (the same demo requests), which the gateway logs.

For each: calls stored per second (from the first request until the last row is in Postgres, counted there),
and the ratio. The outage part runs the receiver on a private Postgres server (initdb in a temporary folder: the
shared server is never touched), stops that server while spans keep arriving, starts it again, and checks that
every span sent is stored once (the call log spools and replays, as for proxied calls).

Where the CPU goes: for each path, the CPU seconds (user + system) that the gateway's processes, the fake
upstream, the Postgres server's processes and this process (the load-generating clients) spent, and what the
rest of the machine spent, over the same wall time, as cores busy. On a machine whose cores are all busy the
receiver's rate is bounded by its own share, not by its code.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import itertools
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import aiohttp
import httpx
import orjson
import psutil
import sqlalchemy as sa
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gateway_latency import BIN, closed_loop, free_port, requests, throwaway_store, wait_ready  # noqa: E402

from slm_pipeline.core.crypto import new_key  # noqa: E402
from slm_pipeline.core.store import LogStore  # noqa: E402
from slm_pipeline.core.store.keys import create_key  # noqa: E402
from slm_pipeline.gateway.fake_upstream import completion  # noqa: E402

_ids = itertools.count(1)


def _parts(message: dict) -> dict:
    parts = []
    if message.get("content"):
        parts.append({"type": "text", "content": message["content"]})
    for call in message.get("tool_calls") or []:
        parts.append({"type": "tool_call", "id": call["id"], "name": call["function"]["name"],
                      "arguments": orjson.loads(call["function"]["arguments"])})
    if message.get("role") == "tool":
        return {"role": "tool", "parts": [{"type": "tool_call_response", "id": message.get("tool_call_id"),
                                           "response": message.get("content")}]}
    return {"role": message["role"], "parts": parts}


def span_attributes(request: dict) -> dict:
    answer = completion(request)["choices"][0]
    return {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": request["model"],
            "gen_ai.input.messages": orjson.dumps([_parts(m) for m in request["messages"]]).decode(),
            "gen_ai.output.messages": orjson.dumps([{**_parts(answer["message"]),
                                                     "finish_reason": answer["finish_reason"]}]).decode(),
            "gen_ai.tool.definitions": orjson.dumps(request.get("tools") or []).decode(),
            "gen_ai.response.id": "chatcmpl-fake", "gen_ai.usage.input_tokens": 42, "gen_ai.usage.output_tokens": 7}


def trace_bodies(count: int, spans_per_request: int) -> tuple[list[bytes], int]:
    """`count` gzipped OTLP protobuf requests of distinct spans (distinct ids: each stores once)."""
    attributes = [span_attributes(orjson.loads(body)) for body in requests(50)]
    bodies = []
    now = time.time_ns()
    for _ in range(count):
        request = ExportTraceServiceRequest()
        resource = request.resource_spans.add()
        resource.resource.attributes.append(KeyValue(key="service.name"))
        resource.resource.attributes[0].value.string_value = "bench-agent"
        scope = resource.scope_spans.add()
        scope.scope.name = "opentelemetry.instrumentation.openai_v2"
        for i in range(spans_per_request):
            n = next(_ids)
            span = scope.spans.add(trace_id=n.to_bytes(16, "big"), span_id=n.to_bytes(8, "big"), name="chat gpt-4o",
                                   kind=3, start_time_unix_nano=now + n, end_time_unix_nano=now + n + 250_000_000)
            for key, value in attributes[i % len(attributes)].items():
                kv = span.attributes.add(key=key)
                if isinstance(value, int):
                    kv.value.int_value = value
                else:
                    kv.value.string_value = value
        bodies.append(gzip.compress(request.SerializeToString(), compresslevel=1))
    return bodies, count * spans_per_request


def stored(url: str, source: str) -> int:
    with LogStore(url) as store, store.engine.connect() as connection:
        return connection.execute(sa.text("SELECT count(*) FROM agent_calls WHERE source = :s"), {"s": source}).scalar()


class Gateway:
    """The fake upstream and `slm-pipeline gateway`, as separate processes, on `store_url`."""

    def __init__(self, store_url: str, work: Path, workers: int = 1) -> None:
        self.store_url, self.work, self.workers = store_url, work, workers
        work.mkdir(parents=True, exist_ok=True)
        with LogStore(store_url) as store:
            _, self.key = create_key(store, "bench-agent")
        self.up_port, self.port = free_port(), free_port()
        self.env = {**os.environ, "SLM_PIPELINE_HOME": str(work), "SLM_PIPELINE_ENCRYPTION_KEYS": new_key("bench"),
                    "SLM_PIPELINE_GATEWAY_DATABASE_URL": store_url, "SLM_PIPELINE_GATEWAY_SPOOL_DIR": str(work / "spool"),
                    "SLM_PIPELINE_GATEWAY_RETRY_INTERVAL_S": "0.5", "SLM_PIPELINE_GATEWAY_ROUTING": "false"}
        self.upstream = subprocess.Popen([sys.executable, "-m", "slm_pipeline.gateway.fake_upstream", "--port",
                                          str(self.up_port)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        self.process = self.start()

    def start(self) -> subprocess.Popen:
        process = subprocess.Popen(
            [str(BIN / "slm-pipeline"), "gateway", "--upstream", f"http://127.0.0.1:{self.up_port}/v1", "--port",
             str(self.port), "--workers", str(self.workers)], env=self.env, stdout=(self.work / "gateway.log").open("a"), stderr=subprocess.STDOUT)
        wait_ready(f"http://127.0.0.1:{self.up_port}/v1/models", self.upstream)
        wait_ready(f"{self.url}/healthz", process)
        return process

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def headers(self, content_type: str) -> dict[str, str]:
        headers = {"content-type": content_type, "authorization": f"Bearer {self.key}"}
        return {**headers, "content-encoding": "gzip"} if content_type == "application/x-protobuf" else headers

    def stop(self) -> None:
        for process in (self.process, self.upstream):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(60)
                except subprocess.TimeoutExpired:
                    process.kill()


def wait_stored(url: str, source: str, expected: int, timeout: float = 300) -> float:
    """Seconds until `expected` rows of `source` are in the store (polled)."""
    started = time.perf_counter()
    while stored(url, source) < expected:
        if time.perf_counter() - started > timeout:
            raise SystemExit(f"only {stored(url, source)} of {expected} {source} rows stored after {timeout:g} s")
        time.sleep(0.05)
    return time.perf_counter() - started


class CpuMeter:
    """CPU seconds spent by each party of the benchmark between `start()` and `stop()`, read from the kernel."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.before: dict[str, float] = {}

    def _parties(self) -> dict[str, float]:
        def seconds(processes: list[psutil.Process]) -> float:
            total = 0.0
            for process in processes:
                try:
                    times = process.cpu_times()
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                total += times.user + times.system + times.children_user + times.children_system
            return total

        def tree(pid: int) -> list[psutil.Process]:
            root = psutil.Process(pid)
            return [root, *root.children(recursive=True)]

        postgres = [p for p in psutil.process_iter(["name"]) if p.info["name"] in ("postgres", "postmaster")]
        parties = {"gateway": seconds(tree(self.gateway.process.pid)),
                   "fake upstream": seconds(tree(self.gateway.upstream.pid)),
                   "postgres": seconds(postgres), "clients (this process)": seconds([psutil.Process()])}
        machine = psutil.cpu_times()
        parties["whole machine"] = machine.user + machine.nice + machine.system + machine.irq + machine.softirq
        return parties

    def start(self) -> None:
        self.before, self.started = self._parties(), time.perf_counter()

    def stop(self) -> dict[str, float]:
        """Cores busy per party (CPU seconds / wall seconds), with the rest of the machine as 'other'."""
        after, wall = self._parties(), time.perf_counter() - self.started
        busy = {k: (after[k] - self.before[k]) / wall for k in after}
        busy["other"] = busy.pop("whole machine") - sum(busy.values())
        return busy


def run(coroutine):  # noqa: ANN001, ANN201
    import uvloop

    return uvloop.run(coroutine)


def throughput(gateway: Gateway, seconds: float, spans_per_request: int, clients: int) -> dict[str, float]:
    # Client i sends bodies i, i + clients, ...: a client that is answered faster than the others (connections
    # spread over workers) must not wrap around into bodies already sent, whose spans the gateway stores once.
    count = clients * max(4, int(seconds * 40))
    bodies, _ = trace_bodies(count, spans_per_request)
    meter = CpuMeter(gateway)
    meter.start()
    started = time.perf_counter()
    _, errors, _, sent = run(closed_loop(f"{gateway.url}/v1/traces", gateway.headers("application/x-protobuf"),
                                         bodies, clients, seconds))
    if sent * clients > len(bodies):
        raise SystemExit(f"{sent} requests sent: a client may have wrapped around the {len(bodies)} distinct bodies "
                         "(sending spans already stored): raise the count")
    spans = sent * spans_per_request
    wait_stored(gateway.store_url, "otlp", spans)
    traces_s = time.perf_counter() - started
    traces_cpu = meter.stop()

    proxied_before = stored(gateway.store_url, "gateway")
    meter.start()
    started = time.perf_counter()
    _, proxy_errors, _, calls = run(closed_loop(f"{gateway.url}/v1/chat/completions",
                                                gateway.headers("application/json"), requests(200), clients * 4,
                                                seconds))
    wait_stored(gateway.store_url, "gateway", proxied_before + calls)
    proxy_s = time.perf_counter() - started
    return {"spans": spans, "span_rate": spans / traces_s, "trace_errors": errors, "calls": calls,
            "call_rate": calls / proxy_s, "proxy_errors": proxy_errors, "traces_cpu": traces_cpu,
            "proxy_cpu": meter.stop()}


def outage(work: Path, spans_per_request: int) -> dict[str, int | float]:
    from slm_pipeline_tests.servers import TempPostgres

    server = TempPostgres()
    gateway = None
    try:
        with LogStore(server.url, create=True):
            pass
        gateway = Gateway(server.url, work / "outage")
        bodies, spans = trace_bodies(60, spans_per_request)
        statuses: list[int] = []

        def send(chunk: list[bytes]) -> None:
            for body in chunk:
                statuses.append(httpx.post(f"{gateway.url}/v1/traces", content=body, timeout=60,
                                           headers=gateway.headers("application/x-protobuf")).status_code)

        send(bodies[:20])
        server.stop()  # the store goes away while spans keep arriving
        sender = threading.Thread(target=send, args=(bodies[20:40],))
        sender.start()
        sender.join()
        spooled = int(next((line.split()[1] for line in httpx.get(f"{gateway.url}/metrics").text.splitlines()
                            if line.startswith("slm_gateway_calllog_spooled_total ")), 0))
        server.start()
        send(bodies[40:])
        seconds = wait_stored(server.url, "otlp", spans, timeout=300)
        with LogStore(server.url) as store, store.engine.connect() as connection:
            ids = connection.execute(sa.text("SELECT call_id FROM agent_calls")).scalars().all()
        return {"sent": spans, "spooled": spooled, "stored": len(ids), "distinct": len(set(ids)),
                "ok": statuses.count(200), "requests": len(statuses), "replay_s": seconds}
    finally:
        if gateway is not None:
            gateway.stop()
        server.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--spans-per-request", type=int, default=256)
    parser.add_argument("--clients", type=int, default=16, help="connections (the kernel spreads them over the workers)")
    parser.add_argument("--workers", type=int, default=2, help="gateway worker processes (one per core of this machine)")
    parser.add_argument("--no-outage", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="slm_bench_traces_"))
    print(f"{args.clients} clients for {args.seconds:g} s each; {args.spans_per_request} LLM spans per OTLP request "
          f"(protobuf, gzip); Postgres; payloads encrypted; {args.workers} gateway worker(s); {os.cpu_count()} CPUs shared; "
          f"load average {os.getloadavg()[0]:.1f}\n",
          flush=True)
    started = time.monotonic()
    with throwaway_store("postgres", work, "slm_bench_traces") as url:
        with LogStore(url, create=True):
            pass
        gateway = Gateway(url, work, args.workers)
        try:
            result = throughput(gateway, args.seconds, args.spans_per_request, args.clients)
        finally:
            gateway.stop()
    print(f"{'path':<34}{'calls stored':>14}{'calls/s into Postgres':>24}{'errors':>8}")
    print(f"{'OTLP /v1/traces (1 call per span)':<34}{result['spans']:>14,}{result['span_rate']:>24,.0f}"
          f"{result['trace_errors']:>8}")
    print(f"{'proxy /v1/chat/completions':<34}{result['calls']:>14,}{result['call_rate']:>24,.0f}"
          f"{result['proxy_errors']:>8}")
    print(f"ratio spans/s : proxied calls/s = {result['span_rate'] / result['call_rate']:.1f}x; "
          f"target >= 5,000 spans/s: {'met' if result['span_rate'] >= 5000 else 'NOT met'}")
    print(f"\ncores busy over each path's wall time ({os.cpu_count()} on this machine):")
    print(f"{'party':<24}{'OTLP':>8}{'proxy':>8}")
    for party in result["traces_cpu"]:
        print(f"{party:<24}{result['traces_cpu'][party]:>8.2f}{result['proxy_cpu'][party]:>8.2f}")
    print(f"{'all':<24}{sum(result['traces_cpu'].values()):>8.2f}{sum(result['proxy_cpu'].values()):>8.2f}")
    ok = result["trace_errors"] == 0 and result["proxy_errors"] == 0
    if not args.no_outage:
        lost = outage(work, args.spans_per_request)
        print(f"\noutage: {lost['sent']:,} spans sent ({lost['ok']}/{lost['requests']} requests answered 200), "
              f"{lost['spooled']:,} spooled while Postgres was down, {lost['stored']:,} stored "
              f"({lost['distinct']:,} distinct) {lost['replay_s']:.1f} s after the last request")
        ok = ok and lost["stored"] == lost["distinct"] == lost["sent"] and lost["ok"] == lost["requests"]
    print(f"\n({time.monotonic() - started:.0f} s in all; gateway log: {work / 'gateway.log'})")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

"""Gateway overhead: added latency and throughput against calling the upstream directly, side by side.

    python benchmarks/gateway_latency.py [--seconds 10] [--warmup 1] [--rounds 3] [--levels 1,50,200]
        [--upstream-delay-ms 0] [--upstream-jitter-ms 0] [--workers 1] [--gateway-cpus 1]
        [--store postgres|sqlite] [--relay]

The script starts, as separate processes, the fake OpenAI-compatible upstream
(`slm_pipeline.gateway.fake_upstream`) and `slm-pipeline gateway` in front of it, logging to a
throw-away Postgres database on the local server (`--store sqlite` for the embedded store), payloads
encrypted. For each number of concurrent clients it runs the same closed loop on each path in
turn, `--rounds` times: straight to the upstream (the baseline), through the gateway and, with
`--relay`, through a do-nothing TCP relay (`tcp_relay.py`: what one more hop costs on this machine,
whatever the proxy); the first `--warmup` seconds of every run are run but not measured. Requests
are real demo-agent calls (system prompt, tools, ~2 KB). Printed per level: requests/s, p50 and p99
latency of both (over all rounds), and the gateway's added latency, two ways: *added*, gateway minus
direct per percentile (and the added p99 of each round, min..max, to show the noise); and *beyond
upstream*, per call, the client's latency minus the time the upstream says it spent
(`openai-processing-ms`, which the gateway passes on), for both paths and their difference, so
that the upstream's own jitter cancels out. At the end the gateway's call log is reconciled
against what was sent: calls sent = calls stored, no duplicates.

Targets (issue 7): p99 added <= 5 ms at 50 concurrent clients, >= 1,000 requests/s, zero lost records.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import httpx
import orjson
import psycopg

from slm_pipeline.core.crypto import new_key
from slm_pipeline.core.demo import generate
from slm_pipeline.core.store import LogStore
from slm_pipeline.core.store.keys import create_key

ADMIN_URL = os.environ.get("SLM_PIPELINE_TEST_POSTGRES_URL", "postgresql://slm_pipeline@127.0.0.1:5432/slm_pipeline")
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read() if process.stdout else "(see gateway.log in the work folder)"
            raise SystemExit(f"{' '.join(map(str, process.args))} exited with {process.returncode}: {output}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not answer within 60 s")


def requests(count: int) -> list[bytes]:
    bodies = []
    for call in generate(count * 3, seed=11):
        request = call.record["request"]
        if request.get("tools"):
            bodies.append(orjson.dumps(request))
        if len(bodies) == count:
            break
    return bodies


async def closed_loop(url: str, headers: dict[str, str], bodies: list[bytes], clients: int, seconds: float,
                      beyond: list[float] | None = None, warmup: float = 0.0) -> tuple[list[float], int, float, int]:
    """`clients` clients, each sending its next request as soon as the last answered, for `warmup`
    seconds unmeasured (connections being made, caches filling), then `seconds` measured. Returns
    the measured latencies (ms), errors, the measured wall time and every request sent. `beyond`
    collects, per measured call, the latency minus the upstream's `openai-processing-ms`."""
    latencies: list[float] = []
    errors = sent = 0
    measure_from = time.perf_counter() + warmup
    stop_at = measure_from + seconds
    connector = aiohttp.TCPConnector(limit=clients, force_close=False)

    async def client(session: aiohttp.ClientSession, index: int) -> None:
        nonlocal errors, sent
        n = index
        while time.perf_counter() < stop_at:
            body = bodies[n % len(bodies)]
            n += clients
            started = time.perf_counter()
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                if response.status != 200:
                    errors += 1
            sent += 1
            if started >= measure_from:
                latencies.append((time.perf_counter() - started) * 1000)
                if beyond is not None and "openai-processing-ms" in response.headers:
                    beyond.append(latencies[-1] - float(response.headers["openai-processing-ms"]))

    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(client(session, i) for i in range(clients)))
        wall = time.perf_counter() - measure_from
    return latencies, errors, wall, sent


def cpu_seconds(root: int) -> float:
    """User + system CPU time of a process and its descendants (Linux): the gateway's workers included."""
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])))
    tree, grew = {root}, True
    while grew:
        grew = False
        for pid, (parent, _) in stats.items():
            if parent in tree and pid not in tree:
                tree.add(pid)
                grew = True
    return sum(stats[pid][1] for pid in tree if pid in stats) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def throwaway_store(kind: str, work: Path, prefix: str) -> Iterator[str]:
    """A log-store URL for one benchmark run: a new Postgres database (dropped after) or a SQLite file."""
    if kind != "postgres":
        yield f"sqlite:///{work / 'store.sqlite'}"
        return
    database = f"{prefix}_{os.getpid()}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{database}"')
    try:
        yield ADMIN_URL.rsplit("/", 1)[0] + f"/{database}"
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


class Run:
    """One path's latencies (ms) over the rounds of a level."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.beyond: list[float] = []  # per call: latency minus the upstream's own time
        self.latest: list[float] = []
        self.errors, self.wall, self.sent = 0, 0.0, 0

    def add(self, latencies: list[float], errors: int, wall: float, sent: int) -> list[float]:
        self.latencies += latencies
        self.latest, self.errors, self.wall, self.sent = latencies, self.errors + errors, self.wall + wall, self.sent + sent
        return latencies

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.wall

    def p(self, q: float) -> float:
        return percentile(self.latencies, q)

    def beyond_p(self, q: float) -> float:
        return percentile(self.beyond, q)


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 10) - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each run")
    parser.add_argument("--warmup", type=float, default=1.0,
                        help="seconds at the start of each run that are run but not measured: every run opens "
                             "new client connections, and the gateway's pooled upstream connections may have "
                             "timed out while the other path ran")
    parser.add_argument("--rounds", type=int, default=3,
                        help="runs of each path per level, in turn (direct, gateway, direct, ...); percentiles "
                             "are over all of them, and the added p99 of each round is shown as a range")
    parser.add_argument("--levels", default="1,50,200", help="numbers of concurrent clients")
    parser.add_argument("--upstream-delay-ms", type=float, default=0.0, help="simulated LLM time per call")
    parser.add_argument("--upstream-jitter-ms", type=float, default=0.0,
                        help="plus uniform random 0..J ms per call: real LLM times vary, and a fixed time makes "
                             "closed-loop clients arrive in lockstep waves")
    parser.add_argument("--store", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--workers", type=int, default=1, help="gateway worker processes")
    parser.add_argument("--relay", action="store_true",
                        help="a third path: a do-nothing TCP relay in front of the upstream (benchmarks/tcp_relay.py), "
                             "the floor under any proxy's added latency on this machine")
    parser.add_argument("--gateway-cpus", default=None,
                        help="pin the gateway to these CPUs (taskset list, e.g. 1) and the load generator and "
                             "upstream to the others: the gateway then has cores of its own, as in production")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="slm_bench_gateway_"))
    with throwaway_store(args.store, work, "slm_bench_gateway") as store_url:
        run(args, work, store_url)


def run(args: argparse.Namespace, work: Path, store_url: str) -> None:
    processes: list[subprocess.Popen] = []
    gateway_pin: list[str] = []
    if args.gateway_cpus:
        gateway_cpus = {int(c) for c in args.gateway_cpus.split(",")}
        os.sched_setaffinity(0, set(os.sched_getaffinity(0)) - gateway_cpus)  # this process and the upstream
        gateway_pin = ["taskset", "-c", args.gateway_cpus]
    try:
        with LogStore(store_url) as store:
            _, key = create_key(store, "bench-agent")
        up_port, gw_port = free_port(), free_port()
        env = {**os.environ, "SLM_PIPELINE_HOME": str(work), "SLM_PIPELINE_ENCRYPTION_KEYS": new_key("bench"),
               "SLM_PIPELINE_GATEWAY_DATABASE_URL": store_url}
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "slm_pipeline.gateway.fake_upstream", "--port", str(up_port),
             "--delay-ms", str(args.upstream_delay_ms), "--jitter-ms", str(args.upstream_jitter_ms)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        processes.append(subprocess.Popen(
            [*gateway_pin, str(BIN / "slm-pipeline"), "gateway", "--upstream", f"http://127.0.0.1:{up_port}/v1",
             "--port", str(gw_port), "--workers", str(args.workers)], env=env,
            stdout=(work / "gateway.log").open("w"), stderr=subprocess.STDOUT))
        direct = f"http://127.0.0.1:{up_port}/v1/chat/completions"
        gateway = f"http://127.0.0.1:{gw_port}/v1/chat/completions"
        relay = None
        if args.relay:
            relay_port = free_port()
            processes.append(subprocess.Popen([*gateway_pin, sys.executable, str(Path(__file__).parent / "tcp_relay.py"),
                                               "--port", str(relay_port), "--upstream-port", str(up_port)]))
            relay = f"http://127.0.0.1:{relay_port}/v1/chat/completions"
            wait_ready(f"http://127.0.0.1:{relay_port}/v1/models", processes[-1])
        wait_ready(f"http://127.0.0.1:{up_port}/v1/models", processes[0])
        wait_ready(f"http://127.0.0.1:{gw_port}/healthz", processes[1])
        bodies = requests(200)
        size = statistics.mean(len(b) for b in bodies)
        headers = {"content-type": "application/json", "authorization": f"Bearer {key}"}
        print(f"{len(bodies)} demo requests ({size:,.0f} bytes on average), {args.rounds} x {args.seconds:g} s per "
              "level and path, "
              f"upstream delay {args.upstream_delay_ms:g} ms + 0..{args.upstream_jitter_ms:g} ms, store {args.store}, "
              f"payloads encrypted, {args.workers} gateway worker(s)"
              + (f" pinned to CPU {args.gateway_cpus}" if args.gateway_cpus else "") + "\n")
        _, _, _, sent = asyncio.run(closed_loop(gateway, headers, bodies, 10, 2.0))  # warm-up (connections, caches)
        asyncio.run(closed_loop(direct, headers, bodies, 10, 1.0))
        print(f"{'clients':>7} | {'direct rps':>10} {'p50 ms':>7} {'p99 ms':>7} | {'gateway rps':>11} {'p50 ms':>7} "
              f"{'p99 ms':>7} | {'added p50':>9} {'p99':>6} | {'p99 by round':>14} | beyond upstream p50/p99: "
              f"{'direct':>11} {'gateway':>11} {'added':>11} | {'gw CPU us/call':>14}")
        paths = {"direct": direct, "gateway": gateway, **({"relay": relay} if args.relay else {})}
        for clients in (int(c) for c in args.levels.split(",")):
            runs = {name: Run() for name in paths}
            cpu = 0.0
            round_added: list[float] = []
            for _ in range(args.rounds):  # the paths in turn: slow drifts of the machine hit them all
                for name, url in paths.items():
                    cpu_before = cpu_seconds(processes[1].pid)
                    latencies = runs[name].add(*asyncio.run(closed_loop(
                        url, headers, bodies, clients, args.seconds, runs[name].beyond, args.warmup)))
                    if name == "gateway":
                        cpu += cpu_seconds(processes[1].pid) - cpu_before
                        round_added.append(percentile(latencies, 99) - percentile(runs["direct"].latest, 99))
            base, via = runs["direct"], runs["gateway"]
            sent += via.sent
            b50, b99, g50, g99 = base.p(50), base.p(99), via.p(50), via.p(99)
            o50, o99, v50, v99 = base.beyond_p(50), base.beyond_p(99), via.beyond_p(50), via.beyond_p(99)
            print(f"{clients:>7} | {base.rps:>10,.0f} {b50:>7.2f} {b99:>7.2f} | {via.rps:>11,.0f} "
                  f"{g50:>7.2f} {g99:>7.2f} | {g50 - b50:>9.2f} {g99 - b99:>6.2f} | "
                  f"{min(round_added):>6.2f}..{max(round_added):<6.2f} | "
                  f"{o50:>5.2f}/{o99:<5.2f} {v50:>5.2f}/{v99:<5.2f} {v50 - o50:>5.2f}/{v99 - o99:<5.2f} | "
                  f"{cpu / len(via.latencies) * 1e6:>14,.0f}"
                  + (f"  errors: direct {base.errors}, gateway {via.errors}" if base.errors or via.errors else ""),
                  flush=True)
            if args.relay:
                bare = runs["relay"]
                print(f"{'':>7} | relay: {bare.rps:,.0f} requests/s, p50 {bare.p(50):.2f}, p99 {bare.p(99):.2f} ms: "
                      f"adds {bare.p(50) - b50:.2f}/{bare.p(99) - b99:.2f} ms p50/p99 to direct, per call "
                      f"{bare.beyond_p(50) - o50:.2f}/{bare.beyond_p(99) - o99:.2f}; the gateway adds "
                      f"{g50 - bare.p(50):.2f}/{g99 - bare.p(99):.2f} to the relay, per call "
                      f"{v50 - bare.beyond_p(50):.2f}/{v99 - bare.beyond_p(99):.2f}", flush=True)
        processes[1].terminate()  # a graceful stop flushes the call log
        processes[1].wait(60)
        with LogStore(store_url) as store, store.engine.connect() as connection:
            import sqlalchemy as sa

            stored, distinct = connection.execute(
                sa.text("SELECT count(*), count(DISTINCT call_id) FROM agent_calls")).one()
        print(f"\nreconciliation: {sent:,} calls sent through the gateway (warm-up included), {stored:,} stored, "
              f"{distinct:,} distinct call ids -> "
              + ("nothing lost, no duplicates" if sent == stored == distinct else "MISMATCH"))
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
                process.wait(30)


if __name__ == "__main__":
    main()

"""Why the gateway has its own upstream client: CPU per request of httpx, aiohttp and the gateway's
`UpstreamClient` (slm_pipeline/gateway/upstream.py), side by side.

    python benchmarks/upstream_client.py [--requests 4000] [--concurrency 1,50]

Starts the fake upstream (`slm_pipeline.gateway.fake_upstream`) in its own process, then sends the
same 2 KB chat request through each client with the given concurrency, as the gateway does
(keep-alive pool, body read whole), twice each, in turn, on uvloop as in the gateway. Printed: CPU
time of this process per request and requests/s, and each client's CPU per request as a multiple of
the gateway's client (best of 2 runs each).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import subprocess
import sys
import time

import aiohttp
import httpx
import orjson
import uvloop

from slm_pipeline.gateway.upstream import UpstreamClient

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from gateway_latency import free_port, wait_ready  # noqa: E402

BODY = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * 2000}]})
HEADERS = {"content-type": "application/json"}


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def with_httpx(url: str, requests: int, concurrency: int) -> None:
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=512)
    async with httpx.AsyncClient(base_url=url, limits=limits) as client:
        gate = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with gate:
                response = await client.send(client.build_request("POST", "chat/completions", content=BODY,
                                                                  headers=HEADERS), stream=True)
                await response.aread()
                await response.aclose()

        await asyncio.gather(*(one() for _ in range(requests)))


async def with_aiohttp(url: str, requests: int, concurrency: int) -> None:
    async with aiohttp.ClientSession(base_url=url, connector=aiohttp.TCPConnector(limit=512)) as session:
        gate = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with gate, session.post("chat/completions", data=BODY, headers=HEADERS) as response:
                await response.read()

        await asyncio.gather(*(one() for _ in range(requests)))


async def with_upstream_client(url: str, requests: int, concurrency: int) -> None:
    client = UpstreamClient(url, max_connections=512)
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            response = await client.request("POST", "chat/completions", BODY, HEADERS)
            try:
                await response.read()
            finally:
                response.release()

    await asyncio.gather(*(one() for _ in range(requests)))
    await client.close()


CLIENTS = {"httpx": with_httpx, "aiohttp": with_aiohttp, "gateway": with_upstream_client}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", default="1,50")
    args = parser.parse_args()
    port = free_port()
    upstream = subprocess.Popen([sys.executable, "-m", "slm_pipeline.gateway.fake_upstream", "--port", str(port)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}/v1/"
        wait_ready(url + "models", upstream)
        print(f"{'concurrency':>11} | {'client':<8} {'CPU us/request':>14} {'requests/s':>10}")
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            cost: dict[str, list[float]] = {name: [] for name in CLIENTS}
            for name, run in list(CLIENTS.items()) * 2:
                before, started = cpu(), time.perf_counter()
                uvloop.run(run(url, args.requests, concurrency))
                per_request = (cpu() - before) / args.requests * 1e6
                cost[name].append(per_request)
                print(f"{concurrency:>11} | {name:<8} {per_request:>14,.0f} "
                      f"{args.requests / (time.perf_counter() - started):>10,.0f}", flush=True)
            ours = min(cost["gateway"])
            print(f"{concurrency:>11} | CPU per request against the gateway's client (best of 2 each): "
                  + ", ".join(f"{name} {min(cost[name]) / ours:.1f}x" for name in ("httpx", "aiohttp")))
    finally:
        upstream.terminate()
        upstream.wait(30)


if __name__ == "__main__":
    main()

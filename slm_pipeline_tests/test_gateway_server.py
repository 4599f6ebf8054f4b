"""`slm-pipeline gateway` as its users run it: a process that refuses to run unsafely and stops without loss."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from slm_pipeline.core.crypto import new_key
from slm_pipeline.core.store import LogStore
from slm_pipeline.core.store.keys import create_key
from slm_pipeline_tests.servers import free_port

SCRIPT = shutil.which("slm-pipeline") or str(Path(sys.executable).parent / "slm-pipeline")


def test_the_gateway_will_not_store_plaintext(embedded_home: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLM_PIPELINE_ENCRYPTION")}
    result = subprocess.run([SCRIPT, "gateway", "--upstream", "http://127.0.0.1:9/v1"], capture_output=True,
                            text=True, timeout=60, env=env)
    assert result.returncode == 2
    assert "SLM_PIPELINE_ENCRYPTION_KEYS" in result.stderr and "new-encryption-key" in result.stderr


def test_sigterm_drains_the_call_log(embedded_home: Path, fake_upstream: str):
    with LogStore(f"sqlite:///{embedded_home / 'logstore.sqlite'}") as store:
        _, key = create_key(store, "support-bot")
    port = free_port()
    env = {**os.environ, "SLM_PIPELINE_ENCRYPTION_KEYS": new_key("k1"),
           "SLM_PIPELINE_GATEWAY_FLUSH_INTERVAL_S": "2", "SLM_PIPELINE_GATEWAY_BATCH_SIZE": "10000"}
    process = subprocess.Popen([SCRIPT, "gateway", "--upstream", fake_upstream, "--port", str(port)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{url}/healthz").raise_for_status()
                break
            except httpx.HTTPError:
                assert process.poll() is None and time.monotonic() < deadline, process.stdout.read()
                time.sleep(0.2)
        with httpx.Client(base_url=url, headers={"authorization": f"Bearer {key}"}) as client:
            ids = [client.post("/v1/chat/completions", json={"model": "m", "messages": [
                {"role": "user", "content": f"call {n}"}]}).headers["x-slm-call-id"] for n in range(50)]
        process.send_signal(signal.SIGTERM)  # within the 2 s flush interval: the calls are still queued
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    # uvicorn shuts down gracefully, then re-raises the signal so that supervisors see why it stopped
    assert process.returncode in (0, -signal.SIGTERM) and "Application shutdown complete" in output, output
    with LogStore(f"sqlite:///{embedded_home / 'logstore.sqlite'}") as store:
        assert store.count("support-bot") == 50
        assert {row["call_id"] for batch in store.iter_calls("support-bot") for row in batch} == set(ids)


def test_the_upstream_key_comes_from_the_environment_and_never_from_agents(monkeypatch):
    from slm_pipeline.gateway.config import GatewayConfig

    monkeypatch.delenv("SLM_PIPELINE_GATEWAY_UPSTREAM_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-openai-env")
    assert GatewayConfig().upstream_headers()["authorization"] == "Bearer sk-from-openai-env"
    monkeypatch.setenv("SLM_PIPELINE_GATEWAY_UPSTREAM_API_KEY", "sk-gateway")
    config = GatewayConfig()
    assert config.upstream_headers()["authorization"] == "Bearer sk-gateway"
    assert "sk-gateway" not in repr(config)  # a secret: hidden in reprs and logs


def _listening_sockets(port: int) -> int:
    """LISTEN sockets on `port` (IPv4 and IPv6), from the kernel's tables."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            next(rows)
            for row in rows:
                local, state = row.split()[1], row.split()[3]
                count += state == "0A" and int(local.rsplit(":", 1)[1], 16) == port
    return count


def test_workers_listen_on_their_own_sockets_and_a_replaced_worker_leaves_no_dead_socket(embedded_home: Path,
                                                                                        fake_upstream: str):
    port = free_port()
    env = {**os.environ, "SLM_PIPELINE_ENCRYPTION_KEYS": new_key("k1")}
    process = subprocess.Popen([SCRIPT, "gateway", "--upstream", fake_upstream, "--port", str(port), "--workers",
                                "2"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/healthz"

    def workers_answering(expected: int) -> set[int]:
        """The workers that answer new connections (each request on a connection of its own)."""
        seen: set[int] = set()
        deadline = time.monotonic() + 90
        while len(seen) < expected:
            assert process.poll() is None and time.monotonic() < deadline, (seen, process.stdout.read())
            try:
                seen.add(httpx.get(url, timeout=5).json()["worker"])
            except httpx.HTTPError:
                time.sleep(0.2)
        return seen

    try:
        first = workers_answering(2)
        # One socket per worker: the kernel spreads connections over them (uvicorn's shared socket let one
        # worker take every connection of a busy client).
        assert _listening_sockets(port) == 2
        os.kill(min(first), signal.SIGKILL)
        deadline = time.monotonic() + 60
        while True:
            answering = workers_answering(2)
            if min(first) not in answering:
                break
            assert time.monotonic() < deadline, "the killed worker was not replaced"
        assert answering & first == first - {min(first)}
        assert _listening_sockets(port) == 2  # the killed worker's socket is closed, not left queueing
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output

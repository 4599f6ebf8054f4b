"""The gateway proxies chat completions (streaming and not), logs every call encrypted, and refuses bad input."""

from __future__ import annotations

import time

import httpx
import orjson
import pytest
import sqlalchemy as sa

from slm_pipeline.core.collect import open_payloads, rows_to_frame
from slm_pipeline.core.records import CallRecord
from slm_pipeline.core.store import LogStore
from slm_pipeline.core.store.keys import create_key, revoke_key
from slm_pipeline.core.store.schema import agent_calls
from slm_pipeline.gateway.fake_upstream import completion

TOOLS = [{"type": "function", "function": {"name": "lookup_order", "parameters": {"type": "object"}}}]
CANARY = "canary-jane.doe.4711@example.org"


def chat(**extra) -> dict:  # noqa: ANN003
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": f"where is my order? {CANARY}"}],
            "tools": TOOLS, **extra}


def stored(store: LogStore) -> list[dict]:
    with store.engine.connect() as connection:
        return [dict(r) for r in connection.execute(sa.select(agent_calls).order_by(agent_calls.c.seq)).mappings()]


def test_calls_are_proxied_and_logged_encrypted_under_the_keys_agent(store: LogStore, run_gateway, key_ring,
                                                                     fake_upstream: str):
    _, key = create_key(store, "support-bot")
    direct = httpx.post(f"{fake_upstream}/chat/completions", json=chat())
    with run_gateway(store.url) as gw, httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {key}"}) as client:
        # a client cannot choose its agent id: only the key says who it is
        reply = client.post("/v1/chat/completions", json=chat(), headers={"x-agent-id": "data-analyst"})
        streamed = client.post("/v1/chat/completions", json=chat(stream=True, stream_options={"include_usage": True}))
        direct_stream = httpx.post(f"{fake_upstream}/chat/completions",
                                   json=chat(stream=True, stream_options={"include_usage": True}))
        models = client.get("/v1/models")
        assert gw.call_log.flush()
    assert reply.status_code == 200 and reply.content == direct.content
    assert streamed.headers["content-type"].startswith("text/event-stream")
    assert streamed.content == direct_stream.content  # server-sent events pass through unchanged
    assert models.json()["data"][0]["id"] == "fake-llm"

    rows = stored(store)
    assert [r["call_id"] for r in rows] == [reply.headers["x-slm-call-id"], streamed.headers["x-slm-call-id"]]
    for row in rows:
        assert row["agent_id"] == "support-bot" and row["source"] == "gateway" and row["status"] == "ok"
        assert row["payload_key_id"] == "k1" and row["latency_ms"] > 0 and row["model"] == "gpt-4o"
        assert CANARY.encode() not in row["request_payload"] + row["response_payload"]  # sealed at rest
    frame = open_payloads(rows_to_frame(rows, key_ring), key_ring)  # S1 collect's rows, opened as S2 does
    assert orjson.loads(frame["request"][0]) == chat()
    responses = [orjson.loads(r) for r in frame["response"]]
    assert responses[0] == reply.json()
    # the streamed answer is logged as the completion it adds up to, tool-call deltas joined
    expected = completion(chat())
    assert responses[1]["choices"][0]["message"]["tool_calls"] == expected["choices"][0]["message"]["tool_calls"]
    assert responses[1]["usage"] == expected["usage"]
    assert all(CallRecord.model_validate({"timestamp": r["timestamp"], "agent_id": r["agent_id"],
                                          "request": orjson.loads(q), "response": orjson.loads(a)})
               for r, q, a in zip(rows, frame["request"], frame["response"]))
    tags = [r["tags"] for r in rows]
    assert tags[0]["stream"] is False and tags[1]["stream"] is True and tags[1]["ttft_ms"] > 0
    assert all(0 < row["tags"]["upstream_ms"] <= row["latency_ms"] for row in rows)  # the gateway's share is the rest


def test_unknown_revoked_and_missing_keys_get_401_in_openais_shape(store: LogStore, run_gateway):
    record, key = create_key(store, "support-bot")
    with run_gateway(store.url, key_refresh_s=0.2) as gw, httpx.Client(base_url=gw.url) as client:
        ok = client.post("/v1/chat/completions", json=chat(), headers={"authorization": f"Bearer {key}"})
        missing = client.post("/v1/chat/completions", json=chat())
        unknown = client.post("/v1/chat/completions", json=chat(), headers={"authorization": f"Bearer {key[:-2]}xx"})
        revoke_key(store, record.key_id)
        time.sleep(0.6)
        revoked = client.post("/v1/chat/completions", json=chat(), headers={"authorization": f"Bearer {key}"})
        models = client.get("/v1/models", headers={"authorization": f"Bearer {key}"})
        # a key created while the gateway runs works at once
        _, fresh = create_key(store, "travel-planner")
        new = client.post("/v1/chat/completions", json=chat(), headers={"authorization": f"Bearer {fresh}"})
        assert gw.call_log.flush()
        metrics = client.get("/metrics").text
    assert ok.status_code == 200 and new.status_code == 200
    for response in (missing, unknown, revoked, models):
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key" and response.json()["error"]["message"]
    assert key not in unknown.text
    assert [r["agent_id"] for r in stored(store)] == ["support-bot", "travel-planner"]
    assert 'slm_gateway_requests_rejected_total{reason="invalid_api_key"} 3' in metrics


def test_bad_requests_get_4xx_in_openais_shape_and_are_counted(tmp_path, run_gateway):
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    with LogStore(url) as store:
        _, key = create_key(store, "support-bot")
    auth = {"authorization": f"Bearer {key}"}
    cases = [  # (body, headers, status, code, param)
        (b'{"model": "gpt-4o", "messages": [', {"content-type": "application/json"}, 400, "invalid_json", None),
        (b'["not", "an", "object"]', {"content-type": "application/json"}, 400, "invalid_json", None),
        (orjson.dumps({"model": "gpt-4o"}), {"content-type": "application/json"}, 400,
         "missing_required_parameter", "messages"),
        (orjson.dumps({"model": "gpt-4o", "messages": [{"role": "wizard", "content": "x"}]}),
         {"content-type": "application/json"}, 400, "invalid_value", "messages[0].role"),
        (orjson.dumps(chat()), {"content-type": "text/plain"}, 415, "unsupported_media_type", None),
        (orjson.dumps(chat(padding="x" * 5000)), {"content-type": "application/json"}, 413, "request_too_large", None),
        (orjson.dumps(chat()), {"content-type": "application/json", "x-slm-human-facing": "maybe"}, 400,
         "invalid_header", "x-slm-human-facing"),
    ]
    with run_gateway(url, max_body_bytes=4096) as gw, httpx.Client(base_url=gw.url, headers=auth) as client:
        for body, headers, status, code, param in cases:
            response = client.post("/v1/chat/completions", content=body, headers=headers)
            assert response.status_code == status, (body[:40], response.text)
            error = response.json()["error"]
            assert (error["code"], error["param"]) == (code, param) and error["type"] == "invalid_request_error"
        # a body larger than the limit is refused while it streams in, without a Content-Length
        chunked = client.post("/v1/chat/completions", content=iter([b"{" + b" " * 3000] * 3),
                              headers={"content-type": "application/json"})
        good = client.post("/v1/chat/completions", json=chat())
        assert gw.call_log.flush()
        gateway = gw.gateway
    assert chunked.status_code == 413 and good.status_code == 200
    assert gateway.received == len(cases) + 2 == sum(gateway.rejected.values()) + gateway.logged
    with LogStore(url) as store:
        assert len(stored(store)) == 1  # rejected requests are not calls


def test_upstream_failures_are_returned_faithfully_and_logged_as_failed_calls(tmp_path, run_gateway, key_ring):
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    with LogStore(url) as store:
        _, key = create_key(store, "support-bot")
        _, human_key = create_key(store, "concierge", human_facing=True)
    with run_gateway(url, upstream_timeout_s=0.3) as gw, httpx.Client(base_url=gw.url) as client:
        auth = {"authorization": f"Bearer {key}"}
        unavailable = client.post("/v1/chat/completions", json=chat(), headers={**auth, "x-fake-status": "503"})
        rate_limited = client.post("/v1/chat/completions", json=chat(stream=True),
                                   headers={**auth, "x-fake-status": "429"})
        slow = client.post("/v1/chat/completions", json=chat(), headers={**auth, "x-fake-delay-ms": "1500"})
        garbage = client.post("/v1/chat/completions", json=chat(), headers={**auth, "x-fake-body": "garbage"})
        human = client.post("/v1/chat/completions", json=chat(), headers={"authorization": f"Bearer {human_key}"})
        not_human = client.post("/v1/chat/completions", json=chat(),
                                headers={"authorization": f"Bearer {human_key}", "x-slm-human-facing": "false"})
        marked = client.post("/v1/chat/completions", json=chat(), headers={**auth, "x-slm-human-facing": "true"})
        assert gw.call_log.flush()
    assert unavailable.status_code == 503 and unavailable.json()["error"]["message"] == "fake upstream failure 503"
    assert rate_limited.status_code == 429
    assert slow.status_code == 504 and slow.json()["error"]["code"] == "upstream_timeout"
    assert garbage.status_code == 200 and garbage.text == "<html>not json</html>"  # passed on as the upstream said
    with LogStore(url) as store:
        rows = {r["call_id"]: r for r in stored(store)}
    frame = {r["call_id"]: r for r in open_payloads(rows_to_frame(rows.values(), key_ring), key_ring)
             .iter_rows(named=True)}

    def logged(response: httpx.Response) -> tuple[dict, dict]:
        row = rows[response.headers["x-slm-call-id"]]
        return row, orjson.loads(frame[row["call_id"]]["response"])

    for response, code in ((unavailable, 503), (rate_limited, 429)):
        row, body = logged(response)
        assert row["status"] == "error" and body["error"]["code"] == code and row["tags"]["upstream_status"] == code
    row, body = logged(slow)
    assert row["status"] == "error" and body["error"]["code"] == "upstream_timeout" and row["latency_ms"] >= 250
    row, body = logged(garbage)
    assert row["status"] == "error" and body["error"]["type"] == "invalid_upstream_response"
    assert [logged(r)[0]["human_facing"] for r in (human, not_human, marked)] == [True, False, True]
    assert logged(unavailable)[0]["human_facing"] is False


def test_a_client_that_hangs_up_mid_stream_is_still_logged(tmp_path, run_gateway):
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    with LogStore(url) as store:
        _, key = create_key(store, "support-bot")
    with run_gateway(url) as gw:
        with httpx.Client(base_url=gw.url) as client, client.stream(
                "POST", "/v1/chat/completions", json=chat(stream=True),
                headers={"authorization": f"Bearer {key}", "x-fake-chunk-delay-ms": "300"}) as response:
            first = next(response.iter_raw())
        assert first.startswith(b"data: ")
        deadline = time.monotonic() + 10
        while gw.gateway.logged < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gw.call_log.flush()
    with LogStore(url) as store:
        [row] = stored(store)
    assert row["tags"]["client_disconnected"] is True and row["tags"]["stream_complete"] is False


def test_a_client_that_hangs_up_before_its_body_arrived_is_counted_and_not_logged(tmp_path, run_gateway):
    import socket

    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    with LogStore(url) as store:
        _, key = create_key(store, "support-bot")
    with run_gateway(url) as gw:
        host, port = gw.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
                         "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"model\": ".encode())
            time.sleep(0.2)
        deadline = time.monotonic() + 10
        while not gw.gateway.rejected and time.monotonic() < deadline:
            time.sleep(0.05)
        metrics = httpx.get(f"{gw.url}/metrics").text
    assert 'slm_gateway_requests_rejected_total{reason="client_disconnected"} 1' in metrics
    assert "slm_gateway_requests_received_total 1" in metrics and "slm_gateway_calls_logged_total 0" in metrics
    with LogStore(url) as store:
        assert stored(store) == []


@pytest.mark.parametrize("route", ["/v1/chat/completions"])
def test_the_openapi_schema_describes_the_request_body(tmp_path, run_gateway, route: str):
    with run_gateway(f"sqlite:///{tmp_path / 'store.sqlite'}") as gw:
        schema = httpx.get(f"{gw.url}/openapi.json").json()
    body = schema["paths"][route]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "messages" in body["required"]

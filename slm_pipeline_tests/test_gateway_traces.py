"""The gateway's OTLP/HTTP receiver (POST /v1/traces): the key decides the agent, each LLM span is logged once
like a proxied call, everything else is counted with a reason, and bad bodies get clear OTLP errors."""

from __future__ import annotations

import gzip
import time

import httpx
import orjson
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from slm_pipeline.core.collect import open_payloads, rows_to_frame
from slm_pipeline.core.quarantine import read_quarantine
from slm_pipeline.core.store import LogStore
from slm_pipeline.core.store.keys import create_key
from slm_pipeline.core.trace_formats import otlp
from slm_pipeline_tests import otlp_spans as S
from slm_pipeline_tests.test_gateway_proxy import chat, stored

PROTOBUF = {"content-type": "application/x-protobuf"}


def protobuf(document: dict) -> bytes:
    return otlp.from_json_document(orjson.loads(orjson.dumps(document))).SerializeToString()


def partial(reply: httpx.Response) -> tuple[int, str]:
    answer = ExportTraceServiceResponse()
    answer.ParseFromString(reply.content)
    return answer.partial_success.rejected_spans, answer.partial_success.error_message


def test_llm_spans_are_logged_under_the_keys_agent_and_the_rest_is_counted(store: LogStore, run_gateway, key_ring,
                                                                           tmp_path):
    _, key = create_key(store, "support-bot")
    attributes, events = S.genai_events()
    document = S.request(S.span(S.openllmetry()), S.span(attributes, events=events),
                         S.span({"http.method": "GET"}, name="GET /"),
                         S.span({"gen_ai.operation.name": "chat", "gen_ai.request.model": "m"}),  # capture off
                         S.span(S.genai_messages(**{"gen_ai.input.messages": "[{broken"})),
                         service="data-analyst")  # a span cannot choose its agent
    auth = {"authorization": f"Bearer {key}"}
    with run_gateway(store.url, quarantine_dir=tmp_path / "q") as gw, httpx.Client(base_url=gw.url) as client:
        reply = client.post("/v1/traces", content=protobuf(document), headers={**PROTOBUF, **auth})
        again = client.post("/v1/traces", content=gzip.compress(orjson.dumps(document)),
                            headers={"content-type": "application/json", "content-encoding": "gzip", **auth})
        proxied = client.post("/v1/chat/completions", json=chat(), headers=auth)
        assert gw.call_log.flush()
        metrics = client.get("/metrics").text
    assert reply.status_code == 200 and reply.headers["content-type"] == "application/x-protobuf"
    rejected, message = partial(reply)
    assert rejected == 2  # the LLM span without content and the broken one; the HTTP span is no LLM call
    assert "1 broken_attribute_json" in message and "1 no_content" in message and "1 not_llm_call" in message
    assert again.status_code == 200 and again.json()["partialSuccess"]["rejectedSpans"] == "2"
    assert proxied.status_code == 200

    rows = stored(store)
    spans = [r for r in rows if r["source"] == "otlp"]
    assert len(spans) == 2, "each span once, though it was sent twice"
    assert all(r["agent_id"] == "support-bot" and r["tags"]["service_name"] == "data-analyst" for r in spans)
    assert all(r["payload_key_id"] == "k1" and b"where is order" not in r["request_payload"] for r in spans)
    frame = open_payloads(rows_to_frame(spans, key_ring), key_ring)
    request = orjson.loads(frame["request"][0])
    assert request["tools"] == [S.TOOL] and request["messages"][1]["content"] == "where is order 7?"
    assert [r["source"] for r in rows].count("gateway") == 1

    assert "slm_gateway_spans_received_total 10" in metrics and "slm_gateway_spans_logged_total 4" in metrics
    assert 'slm_gateway_spans_quarantined_total{reason="broken_attribute_json"} 2' in metrics
    (entry, _) = read_quarantine(next((tmp_path / "q").glob("otlp-*.jsonl")))
    assert entry["reason"] == "broken_attribute_json" and entry["field"] == "gen_ai.input.messages"
    assert entry["record"].startswith("sealed:k1:")  # the gateway writes no plaintext payload


def test_bad_requests_get_otlp_errors_and_never_stop_the_receiver(store: LogStore, run_gateway):
    _, key = create_key(store, "support-bot")
    auth = {"authorization": f"Bearer {key}"}
    good = protobuf(S.request(S.span(S.openllmetry())))
    with run_gateway(store.url, max_body_bytes=200_000) as gw, httpx.Client(base_url=gw.url) as client:
        replies = {
            "no key": client.post("/v1/traces", content=good, headers=PROTOBUF),
            "wrong type": client.post("/v1/traces", content=good, headers={"content-type": "text/plain", **auth}),
            "malformed": client.post("/v1/traces", content=b"\x0a\xff\xff\xff", headers={**PROTOBUF, **auth}),
            "bad json": client.post("/v1/traces", content=b"{", headers={"content-type": "application/json", **auth}),
            "too large": client.post("/v1/traces", content=b"\0" * 300_000, headers={**PROTOBUF, **auth}),
            "gzip bomb": client.post("/v1/traces", content=gzip.compress(b"\0" * 3_000_000),
                                     headers={**PROTOBUF, "content-encoding": "gzip", **auth}),
            "brotli": client.post("/v1/traces", content=good, headers={**PROTOBUF, "content-encoding": "br", **auth}),
        }
        after = client.post("/v1/traces", content=good, headers={**PROTOBUF, **auth})
        assert gw.call_log.flush()
    statuses = {name: reply.status_code for name, reply in replies.items()}
    assert statuses == {"no key": 401, "wrong type": 415, "malformed": 400, "bad json": 400, "too large": 413,
                        "gzip bomb": 413, "brotli": 415}
    assert replies["bad json"].json()["message"].startswith("The body is not an OTLP trace request")
    assert b"malformed protobuf" in replies["malformed"].content  # a google.rpc.Status
    assert after.status_code == 200 and partial(after) == (0, "")
    assert len(stored(store)) == 1


@pytest.mark.parametrize("content_type", ["application/json", "application/x-protobuf"])
def test_an_empty_request_is_accepted(store: LogStore, run_gateway, content_type):
    _, key = create_key(store, "support-bot")
    body = b"{}" if content_type == "application/json" else b""
    with run_gateway(store.url) as gw:
        reply = httpx.post(f"{gw.url}/v1/traces", content=body,
                           headers={"content-type": content_type, "authorization": f"Bearer {key}"})
    assert reply.status_code == 200


def test_spans_spool_while_postgres_is_down_and_are_stored_once_after(run_gateway, tmp_path):
    from slm_pipeline_tests.servers import TempPostgres

    server = TempPostgres()
    try:
        with LogStore(server.url) as owner:
            _, key = create_key(owner, "support-bot")
        headers = {**PROTOBUF, "authorization": f"Bearer {key}"}
        bodies = [protobuf(S.request(*(S.span(S.openllmetry()) for _ in range(20)))) for _ in range(6)]
        config = {"retry_interval_s": 0.2, "key_refresh_s": 0.5}
        with run_gateway(server.url, **config) as gw, httpx.Client(base_url=gw.url, headers=headers) as client:
            statuses = [client.post("/v1/traces", content=b).status_code for b in bodies[:2]]
            assert gw.call_log.flush()
            server.stop()
            statuses += [client.post("/v1/traces", content=b).status_code for b in bodies[2:4]]
            assert gw.call_log.flush() and gw.call_log.stats.spooled >= 40
            server.start()
            statuses += [client.post("/v1/traces", content=b).status_code for b in bodies[4:]]
            deadline = time.monotonic() + 60
            while not (gw.call_log.stats.store_up and not gw.call_log.spool.has_rows()):
                assert time.monotonic() < deadline
                time.sleep(0.1)
            assert gw.call_log.flush()
        assert statuses == [200] * 6
        with LogStore(server.url) as owner:
            ids = [r["call_id"] for r in stored(owner)]
        assert len(ids) == len(set(ids)) == 120  # nothing lost, nothing twice
    finally:
        server.remove()

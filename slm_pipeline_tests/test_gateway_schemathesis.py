"""The real gateway fuzzed from its own OpenAPI schema (schemathesis): no 5xx of its own, OpenAI's error
shape on every 4xx, responses as the schema says, and every call that reached the upstream logged once.

The gateway runs on uvicorn in a thread (`run_gateway`) in front of the deterministic fake upstream, on
SQLite and on Postgres; requests carry a valid agent key made in the store. Schema-valid bodies
(positive, half of them streamed) must be answered 200 and schema-invalid ones (negative) refused with
a 4xx. Generation is derandomised (the same cases every run) and bounded: seconds per store."""

from __future__ import annotations

import time
from collections import Counter

import orjson
import requests
import schemathesis
import sqlalchemy as sa
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)

from slm_pipeline.core.store import LogStore
from slm_pipeline.core.store.keys import create_key
from slm_pipeline.core.store.schema import agent_calls

CHAT = "/v1/chat/completions"
EXAMPLES = {GenerationMode.POSITIVE: 200, GenerationMode.NEGATIVE: 150}
SCHEMA_CHECKS = [status_code_conformance, content_type_conformance, response_schema_conformance]


def _error_shape(response: schemathesis.Response) -> None:
    """OpenAI's error body: `{"error": {"message", "type", "code", "param"}}`, nothing else."""
    body = orjson.loads(response.content)
    assert isinstance(body, dict) and set(body) == {"error"}, response.text_lossy()[:300]
    error = body["error"]
    assert isinstance(error, dict) and set(error) == {"message", "type", "code", "param"}, response.text_lossy()[:300]
    assert isinstance(error["message"], str) and error["message"] and isinstance(error["type"], str)
    assert error["code"] is None or isinstance(error["code"], str)
    assert error["param"] is None or isinstance(error["param"], str)


def test_the_gateway_keeps_its_openapi_contract_under_generated_requests(store_url: str, run_gateway):
    with LogStore(store_url) as store:
        _, key = create_key(store, "fuzz-agent")
    auth = {"authorization": f"Bearer {key}"}
    sent: Counter[str] = Counter()  # requests per operation
    statuses: Counter[tuple[str, int]] = Counter()  # (generation mode, status) of the chat requests
    call_ids: list[str] = []  # x-slm-call-id of every chat request the gateway took as a call
    relayed_5xx: list[tuple[str, int]] = []  # (call id, status): must be the upstream's own, see the log
    with run_gateway(store_url) as gw, requests.Session() as session:
        schema = schemathesis.openapi.from_url(f"{gw.url}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert {op.label for op in operations} >= {f"POST {CHAT}", "GET /v1/models", "GET /healthz", "GET /metrics"}
        for mode, examples in EXAMPLES.items():
            for operation in operations:
                chat = operation.path == CHAT
                if mode is GenerationMode.NEGATIVE and not chat:
                    continue  # the GETs take no input: nothing to get wrong

                @settings(max_examples=examples if chat else 5, deadline=None, derandomize=True, database=None,
                          phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
                @given(case=operation.as_strategy(generation_mode=mode))
                def exercise(case: schemathesis.Case) -> None:
                    # every other schema-valid body streamed (still valid; answered as server-sent events): by
                    # count, not drawn, since hypothesis's draws shift with what other tests left in its caches
                    if mode is GenerationMode.POSITIVE and isinstance(case.body, dict) and sent[case.operation.label] % 2:
                        case.body["stream"] = True
                    response = case.call(base_url=gw.url, session=session, headers=auth, timeout=30)
                    sent[case.operation.label] += 1
                    headers = {name.lower(): values for name, values in response.headers.items()}
                    call_id = (headers.get("x-slm-call-id") or [None])[0]
                    if case.operation.path == CHAT:
                        statuses[mode.value, response.status_code] += 1
                        if call_id:
                            call_ids.append(call_id)
                    if response.status_code >= 500:  # only an upstream's own answer, relayed as it came
                        assert case.operation.path == CHAT and call_id, (response.status_code, response.text_lossy())
                        relayed_5xx.append((call_id, response.status_code))
                    if 400 <= response.status_code < 500:
                        _error_shape(response)
                    checks = list(SCHEMA_CHECKS)
                    if case.operation.path == CHAT:
                        checks.append(positive_data_acceptance if mode is GenerationMode.POSITIVE
                                      else negative_data_rejection)
                    case.validate_response(response, checks=checks, headers=auth)

                exercise()
        deadline = time.monotonic() + 10  # a streamed call is logged when its relay ends, just after the last byte
        while gw.gateway.logged < len(call_ids) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert gw.call_log.flush()
        gateway = gw.gateway
        metrics = session.get(f"{gw.url}/metrics").text

    chats = sent[f"POST {CHAT}"]
    assert chats >= sum(EXAMPLES.values()) * 0.9, sent
    assert statuses["positive", 200] > 100 and statuses["negative", 400] > 100, statuses  # both kinds exercised
    # every request is counted once: refused by the gateway itself (a 4xx, not a call) or logged as a call
    assert gateway.received == chats == sum(gateway.rejected.values()) + gateway.logged
    assert gateway.logged == len(call_ids) == len(set(call_ids)) > 0
    assert gateway.call_log.stats.rejected == 0  # no call set aside because the store refused its row
    assert f"slm_gateway_calls_logged_total {gateway.logged}" in metrics
    with LogStore(store_url) as store, store.engine.connect() as connection:
        rows = connection.execute(sa.select(agent_calls.c.call_id, agent_calls.c.agent_id, agent_calls.c.tags)
                                  ).mappings().all()
    assert Counter(row["call_id"] for row in rows) == Counter(call_ids)  # each call stored once, nothing else
    assert {row["agent_id"] for row in rows} == {"fuzz-agent"}
    tags = {row["call_id"]: row["tags"] for row in rows}
    assert sum(bool(t.get("stream")) for t in tags.values()) > 50  # streamed calls were logged too
    for call_id, status in relayed_5xx:
        assert tags[call_id].get("upstream_status") == status

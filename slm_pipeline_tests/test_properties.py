"""Property tests (hypothesis): the record parser and the tool-argument scrubber, on inputs nobody wrote by hand."""

from __future__ import annotations

import copy
import re

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slm_pipeline.core.importer import _Rejected, parse_line
from slm_pipeline.core.curate.scrub import UnscrubbableCall, scrub_calls
from slm_pipeline_tests.test_records import record
from slm_pipeline_tests.test_curate_scrub import call

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


@given(st.binary(max_size=400))
@settings(max_examples=300, deadline=None)
def test_any_bytes_are_a_record_or_a_named_rejection(data: bytes):
    try:
        parsed, raw = parse_line(data)
    except _Rejected as rejected:
        assert rejected.reason in {"invalid_utf8", "invalid_json", "wrong_type", "missing_field", "invalid_value",
                                   "unknown_role"} and rejected.message
    else:
        assert parsed.agent_id and isinstance(raw, dict)


@given(field=st.sampled_from(["timestamp", "agent_id", "request", "response", "latency_ms", "tags", "call_id"]),
       value=json_values)
@settings(max_examples=300, deadline=None)
def test_any_value_in_any_field_is_accepted_or_rejected_with_that_field_named(field: str, value):
    raw = record()
    raw[field] = value
    try:
        parse_line(orjson.dumps(raw))
    except _Rejected as rejected:
        assert rejected.field and rejected.field.split(".")[0].split("[")[0].split(" ")[0] in {field, "<record>"}


emails = st.from_regex(r"[a-z]{3,8}\.[a-z]{3,8}@(gmail|yahoo|outlook)\.com", fullmatch=True)
ssns = st.from_regex(r"[1-5][0-9]{2}-[1-9][0-9]-[1-9][0-9]{3}", fullmatch=True)
keys = st.from_regex(r"sk-proj-[A-Za-z0-9]{32}", fullmatch=True)
identifiers = st.one_of(emails, ssns, keys)
filler = st.text(alphabet=st.characters(categories=["L", "N", "Zs"]), max_size=20)


def _has_control_characters(value) -> bool:
    if isinstance(value, str):
        return re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffd]", value) is not None
    if isinstance(value, dict):
        return any(_has_control_characters(k) or _has_control_characters(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_control_characters(v) for v in value)
    return False


@st.composite
def arguments_with_identifiers(draw):
    secrets = draw(st.lists(identifiers, min_size=1, max_size=4))
    nested = draw(json_values)
    arguments = {"note": f"{draw(filler)} {secrets[0]} {draw(filler)}", "extra": nested,
                 "list": [f"contact {s}" for s in secrets[1:]]}
    return arguments, secrets


@given(arguments_with_identifiers())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_scrubbing_tool_arguments_never_crashes_keeps_json_and_removes_identifiers(pii_analyzer, case):
    arguments, secrets = case
    request, response = call("Please handle this.", arguments)
    [result] = scrub_calls([(copy.deepcopy(request), copy.deepcopy(response))], pii_analyzer, b"salt")
    if isinstance(result, UnscrubbableCall):  # control characters: quarantined, with that reason
        assert result.reason == "binary_content" and _has_control_characters(arguments)
        return
    scrubbed_arguments = result.response["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
    parsed = orjson.loads(scrubbed_arguments)  # still valid JSON
    assert set(parsed) == {"note", "extra", "list"}
    text = orjson.dumps(parsed).decode()
    for secret in secrets:
        assert secret not in text, secret
    assert not re.search(r"[a-z]{3,8}\.[a-z]{3,8}@(gmail|yahoo|outlook)\.com", text)

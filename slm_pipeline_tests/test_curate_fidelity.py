"""S2 on traffic like real users' (issue 17): values that identify no one reach the dataset unchanged,
tool definitions are never rewritten, and a residual identifier quarantines one call, not the partition.

Every text here was written for these tests."""

from __future__ import annotations

import copy
from datetime import datetime, timezone

import orjson
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slm_pipeline.core.collect import RAW_SCHEMA
from slm_pipeline.core.curate.analyzer import AnalyzerConfig, SegmentAnalyzer
from slm_pipeline.core.curate.leaks import find_structured_identifiers
from slm_pipeline.core.curate.nonpersonal import non_personal
from slm_pipeline.core.curate.pipeline import RESIDUAL_IDENTIFIER, CurationConfig, curate_calls
from slm_pipeline.core.curate.scrub import UnscrubbableCall, resolve_overlaps, scrub_calls

SALT = b"fidelity-salt"


def tool(name: str, properties: dict, description: str = "Does one thing.") -> dict:
    return {"type": "function", "function": {"name": name, "description": description,
                                             "parameters": {"type": "object", "properties": properties}}}


def exchange(user: str, tools: list[dict], calls: list[tuple[str, dict]] | None = None,
             answer: str | None = None) -> tuple[dict, dict]:
    request = {"model": "m", "messages": [{"role": "user", "content": user}], "tools": tools}
    message: dict = {"role": "assistant", "content": answer}
    if calls:
        message["tool_calls"] = [{"id": f"t{i}", "type": "function",
                                  "function": {"name": n, "arguments": orjson.dumps(a).decode()}}
                                 for i, (n, a) in enumerate(calls)]
    return request, {"choices": [{"index": 0, "finish_reason": "stop", "message": message}]}


def scrub_one(analyzer, request, response, **options):
    [result] = scrub_calls([(copy.deepcopy(request), copy.deepcopy(response))], analyzer, SALT, **options)
    return result


def arguments(result, index: int = 0) -> dict:
    return orjson.loads(result.response["choices"][0]["message"]["tool_calls"][index]["function"]["arguments"])


def raw_frame(pairs: list[tuple[dict, dict]]) -> pl.DataFrame:
    now = datetime(2026, 3, 1, tzinfo=timezone.utc)
    rows = [{"seq": i + 1, "call_id": f"c{i}", "agent_id": "a", "workload_id": None, "timestamp": now,
             "latency_ms": 1.0, "model": "m", "human_facing": False, "tags": None,
             "request": orjson.dumps(req).decode(), "response": orjson.dumps(resp).decode()}
            for i, (req, resp) in enumerate(pairs)]
    frame = pl.DataFrame(rows)
    return frame.select([pl.col(c).cast(t) if c in frame.columns else pl.lit(None, t).alias(c)
                         for c, t in RAW_SCHEMA.items()])


SIGNUP = tool("create_account", {"contact": {"type": "string", "default": "owner@example.com",
                                             "description": "Where receipts go, e.g. billing@example.org"},
                                 "server": {"type": "string", "default": "http://10.0.4.17:8080/api"}},
              description="Creates an account. Support: helpdesk@example.net, +1 555-0142.")


def test_a_tool_schema_with_example_defaults_passes_and_is_kept_as_sent(pii_analyzer):
    pairs = [exchange(f"Open an account for the garden club number {i}.", [SIGNUP],
                      [("create_account", {"contact": "owner@example.com", "server": "http://10.0.4.17:8080/api"})])
             for i in range(3)]
    result = curate_calls(raw_frame(pairs), pii_analyzer, SALT, CurationConfig(near_duplicate_threshold=None))
    assert result.curated.height == 3 and result.reconciles and result.residuals.height == 0
    for row in result.curated.iter_rows(named=True):
        request, response = orjson.loads(row["request"]), orjson.loads(row["response"])
        assert request["tools"] == [SIGNUP]
        args = orjson.loads(response["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"])
        assert args == {"contact": "owner@example.com", "server": "http://10.0.4.17:8080/api"}


@pytest.mark.parametrize(("key", "value"), [
    ("city_name", "Seattle"),
    ("region", "Nagoya, Aichi"),
    ("song_title", "Mambo Mambo Mambo"),
    ("fabric", "Harris Tweed"),
    ("job_title", "Senior Barista"),
    ("host", "192.168.12.40"),
    ("docs_address", "203.0.113.9"),
])
def test_values_that_identify_no_one_reach_the_dataset_unchanged(pii_analyzer, key, value):
    request, response = exchange("Look this up for me, please.", [tool("lookup", {key: {"type": "string"}})],
                                 [("lookup", {key: value})])
    result = scrub_one(pii_analyzer, request, response)
    assert arguments(result) == {key: value}


def test_a_city_in_the_prompt_and_the_arguments_survives(pii_analyzer):
    request, response = exchange("What will the weather be like in Seattle tomorrow morning?",
                                 [tool("forecast", {"city": {"type": "string"}})], [("forecast", {"city": "Seattle"})])
    result = scrub_one(pii_analyzer, request, response)
    assert arguments(result) == {"city": "Seattle"} and "Seattle" in result.request["messages"][0]["content"]


def test_an_international_phone_number_and_a_signature_name_are_scrubbed(pii_analyzer):
    user = ("Please move my dentist appointment to Thursday, you can reach me on +44 20 7946 0321.\n\n"
            "Kind regards,\nMargarethe Vollbrecht")
    request, response = exchange(user, [tool("reschedule", {"day": {"type": "string"}})],
                                 [("reschedule", {"day": "Thursday"})])
    result = scrub_one(pii_analyzer, request, response)
    text = result.request["messages"][0]["content"]
    assert "7946 0321" not in text and "Vollbrecht" not in text and "Margarethe" not in text
    assert "Thursday" in text and arguments(result) == {"day": "Thursday"}
    assert result.entities.get("PHONE_NUMBER") == 1 and result.entities.get("PERSON") == 1


@pytest.mark.parametrize("phone", ["+33 6 12 48 90 57", "0161 496 0718", "212-555-7731x204"])
def test_phone_numbers_in_other_layouts_are_found(pii_analyzer, phone):
    [found] = pii_analyzer.analyze([f"Text the courier at {phone} before noon."])
    spans = {("Text the courier at " + phone)[s:e] for s, e, t, _ in found if t == "PHONE_NUMBER"}
    assert any(phone in s or s in phone and len(s) >= len(phone) - 4 for s in spans), (phone, found)


@pytest.mark.parametrize(("text", "phone"), [
    ("The pharmacy is not answering at 612 33 918, is it closed?", "612 33 918"),
    ("Mobile: 47 906215\nOffice: 0222 55 11 90", "47 906215"),
    ("Ottilie Brenner\n58 14 27 office\n", "58 14 27"),
])
def test_national_digit_groups_beside_a_phone_word_are_found(pii_analyzer, text, phone):
    [found] = pii_analyzer.analyze([text])
    assert phone in {text[s:e] for s, e, t, _ in found if t == "PHONE_NUMBER"}


@pytest.mark.parametrize("text", ["Call up the goal numbers of the 2021-2022 season for the club.",
                                  "Call the method on ImportQueuedMessage7Handler, not on the proxy."])
def test_seasons_and_code_names_are_not_personal_data(pii_analyzer, text):
    [found] = pii_analyzer.analyze([text])
    assert [text[s:e] for s, e, t, _ in found] == []


@pytest.mark.parametrize(("text", "address"), [
    ("Please post the refund to 2207 Kastanjelaan 18\n Apt. 4\n Zwolle\n\n Netherlands 8011", None),
    ("The warehouse moved: 88 Vesilinnantie 12 Suite 5, Tampere, Finland 33100", None),
    ("My aunt lives on Tõnismägi 7 these days.", "Tõnismägi 7"),
    ("Leave it with Ms. Aurelie Brandt Apt. 12 301 Rosenweg 4\nBern", "301 Rosenweg 4\nBern"),
])
def test_street_addresses_outside_the_us_are_found_whole(pii_analyzer, text, address):
    [found] = pii_analyzer.analyze([text])
    spans = {text[s:e] for s, e, t, _ in resolve_overlaps(found, text) if t == "STREET_ADDRESS"}
    expected = address or text.split(": ")[-1].split(" to ")[-1]
    assert any(expected in span for span in spans), spans


def test_a_title_that_holds_a_first_name_survives_under_its_key(pii_analyzer):
    request, response = exchange("Book two seats for 'Annie Hall' on Friday and order the 'Penne Rosa' after.",
                                 [tool("book", {"movie_title": {"type": "string"}}),
                                  tool("order", {"recipeName": {"type": "string"}})],
                                 [("book", {"movie_title": "Annie Hall"}), ("order", {"recipeName": "Penne Rosa"})])
    result = scrub_one(pii_analyzer, request, response)
    assert arguments(result, 0) == {"movie_title": "Annie Hall"}
    assert arguments(result, 1) == {"recipeName": "Penne Rosa"}
    assert "'Annie Hall'" in result.request["messages"][0]["content"]


def test_a_name_found_once_is_scrubbed_where_it_recurs_alone(pii_analyzer):
    user = "Please forward the contract to ms. Okonkwo-Reyes today. Thaddeus Wexley signed it; Wexley wants a copy too."
    request, response = exchange(user, [tool("forward", {"document": {"type": "string"}})],
                                 [("forward", {"document": "contract"})])
    text = scrub_one(pii_analyzer, request, response).request["messages"][0]["content"]
    assert "Okonkwo" not in text and "Wexley" not in text and "Thaddeus" not in text, text


def test_overlapping_findings_of_two_types_split_where_they_meet():
    text = "Ms. Lisa Douglas Apt. 606 157 Mühle 88"
    person = (text.index("Lisa"), text.index(". 606"), "PERSON", 0.85)  # spaCy's span: `Lisa Douglas Apt`
    address = (text.index("Apt"), len(text), "STREET_ADDRESS", 0.6)
    assert [text[s:e] for s, e, _, _ in resolve_overlaps([person, address], text)] == [
        "Lisa Douglas Apt", "606 157 Mühle 88"]  # the higher score keeps its span
    assert [text[s:e] for s, e, _, _ in resolve_overlaps([person[:3] + (0.5,), address], text)] == [
        "Lisa Douglas", "Apt. 606 157 Mühle 88"]
    assert [(text[s:e], t) for s, e, t, _ in resolve_overlaps([person, address])] == [
        ("Lisa Douglas Apt. 606 157 Mühle 88", "PERSON")]  # without the text: merged, as before


def test_a_secret_in_a_tool_definition_quarantines_the_call_with_the_reason(pii_analyzer):
    leaky = tool("deploy", {"token": {"type": "string", "default": "ghp_Q7rT2mZx9LwB4nV8cKd3Hs6Yp1Fj5Ge0Ua2W"}})
    result = scrub_one(pii_analyzer, *exchange("Deploy it.", [leaky], [("deploy", {})]))
    assert isinstance(result, UnscrubbableCall) and result.reason == "secret_in_tool_definition"
    assert "request.tools[0].function.parameters.properties.token.default" in str(result)
    assert "ghp_" not in str(result)


def test_a_residual_identifier_quarantines_its_call_and_the_partition_goes_on():
    """A detector that looks for names only lets an e-mail through: the re-scan catches it in that call."""
    names_only = SegmentAnalyzer(AnalyzerConfig(entities=("PERSON",)), workers=1)
    pairs = [exchange(f"Add the tulip bulbs to order {n}.", [tool("add_item", {"order": {"type": "integer"}})],
                      [("add_item", {"order": n})]) for n in (311, 312, 313)]
    pairs.append(exchange("Send the invoice to quentin.marlowe@fastmail.com", [tool("send", {"to": {"type": "string"}})],
                          [("send", {"to": "quentin.marlowe@fastmail.com"})]))
    try:
        result = curate_calls(raw_frame(pairs), names_only, SALT, CurationConfig(near_duplicate_threshold=None))
    finally:
        names_only.close()
    assert result.curated.height == 3 and result.reconciles
    [row] = result.residuals.iter_rows(named=True)
    assert row["call_id"] == "c3" and row["reason"] == RESIDUAL_IDENTIFIER
    assert "fastmail" not in row["detail"]  # the field and the type, never the value
    summary = result.residual_summary()
    assert summary["types"] == {"EMAIL_ADDRESS": 2}
    assert set(summary["fields"]) == {"request.messages[].content",
                                      "response.choices[].message.tool_calls[].function.arguments.to"}
    assert result.residual_share == pytest.approx(0.25)


def test_the_allow_list_applies_to_the_detector_and_the_re_scan():
    allowed = ("orders@tulip-shop.com",)
    analyzer = SegmentAnalyzer(AnalyzerConfig(allow_list=allowed), workers=1)
    pair = exchange("Forward the receipt to orders@tulip-shop.com please.", [tool("fwd", {"to": {"type": "string"}})],
                    [("fwd", {"to": "orders@tulip-shop.com"})])
    config = CurationConfig(near_duplicate_threshold=None, analyzer=analyzer.config)
    try:
        result = curate_calls(raw_frame([pair]), analyzer, SALT, config)
    finally:
        analyzer.close()
    assert result.curated.height == 1 and "orders@tulip-shop.com" in result.curated["request"][0]
    assert find_structured_identifiers("orders@tulip-shop.com", allow_list=allowed) == {}
    assert find_structured_identifiers("orders@tulip-shop.com") == {"EMAIL_ADDRESS": 1}


@pytest.mark.parametrize(("entity", "value", "expected"), [
    ("EMAIL_ADDRESS", "ops@example.com", True), ("EMAIL_ADDRESS", "ops@mail.example.org", True),
    ("EMAIL_ADDRESS", "ops@intranet.test", True), ("EMAIL_ADDRESS", "ops@examples.com", False),
    ("IP_ADDRESS", "172.20.1.5", True), ("IP_ADDRESS", "198.51.100.23", True), ("IP_ADDRESS", "2001:db8::7", True),
    ("IP_ADDRESS", "81.2.69.160", False),
    ("PHONE_NUMBER", "(312) 555-0187", True), ("PHONE_NUMBER", "312-555-0287", False),
    ("PERSON", "Seattle", True), ("PERSON", "Margarethe Vollbrecht", False),
])
def test_non_personal_values(entity, value, expected):
    assert non_personal(entity, value) is expected


words = st.text(alphabet=st.characters(categories=["L", "N", "Zs", "P"]), max_size=40)
personal_text = st.sampled_from([
    "owner: Rosalind Ferreira-Quist, rosalind.fq@gmail.com", "call +49 30 901820 42", "SSN 523-71-4409",
    "ships to 48 Larkspur Lane, Boise, ID 83702", "card 4532 7153 3790 4256", "ask for Joaquim",
])


@given(description=st.lists(st.one_of(words, personal_text), min_size=1, max_size=3).map(" ".join),
       default=st.one_of(words, personal_text), key=st.from_regex(r"[a-z_]{1,12}", fullmatch=True))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_a_tool_definition_is_never_rewritten(pii_analyzer, description, default, key):
    definition = tool("act", {key: {"type": "string", "default": default, "description": description}},
                      description=description)
    request, response = exchange(f"Please act now. {default}", [definition], [("act", {key: default})])
    result = scrub_one(pii_analyzer, request, response)
    assert not isinstance(result, UnscrubbableCall)
    assert result.request["tools"] == [definition]
    assert orjson.dumps(result.request["tools"]) == orjson.dumps([definition])
